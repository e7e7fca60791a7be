"""QONNX graphs run with qonnx's executor, batched: the reference every exactness rule compares against.

No torch here: a deploy of an exported graph compares against the graph without loading Brevitas.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from sdk.onnx_guard import load_onnx_safely

QONNX_BATCH = 1024  # samples per batched execution: bounds the memory of the widest intermediate tensor


def _batched(model, batch: int):
    """A copy of the graph with the batch dimension of its input, output and every inferred shape set to `batch`."""
    from qonnx.transformation.infer_shapes import InferShapes

    batched = copy.deepcopy(model)
    for tensor in (*batched.graph.input, *batched.graph.output):
        shape = batched.get_tensor_shape(tensor.name)
        batched.set_tensor_shape(tensor.name, [batch, *shape[1:]])
    for node in batched.get_nodes_by_op_type("Reshape"):  # torch's flatten exports a literal [1, -1] or [1, F]
        target = batched.get_initializer(node.input[1])
        if target is not None and len(target) > 1 and int(target[0]) == 1:
            batched.set_initializer(node.input[1], np.array([batch, *target[1:]], dtype=target.dtype))
    del batched.graph.value_info[:]
    return batched.transform(InferShapes())


def _graph_batch(model, x: np.ndarray, flat: bool) -> np.ndarray:
    """Samples (N, C, H, W) as the graph's input takes them, float32: flat (N, F) for an MLP, (N, C, T) for a
    graph over sequences (a Conv1d's input, whose samples are (C, 1, T)), as they are otherwise."""
    shape = model.get_tensor_shape(model.graph.input[0].name)
    if flat:
        x = x.reshape(len(x), -1)
    elif shape is not None and len(shape) == 3 and x.ndim == 4 and int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        x = x.reshape(len(x), *shape[1:])
    return x.astype(np.float32)


def run_qonnx(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool) -> np.ndarray:
    """Execute a QONNX file with qonnx's executor, batched (QONNX_BATCH samples per run).

    A graph whose ops pin the batch to 1 (a Reshape to a literal [1, -1]) runs one sample at a time instead."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(load_onnx_safely(onnx_path, str(onnx_path)))
    inp, out = model.graph.input[0].name, model.graph.output[0].name
    xs = _graph_batch(model, x_uint8, flat)
    chunks = []
    for start in range(0, len(xs), QONNX_BATCH):
        chunk = xs[start : start + QONNX_BATCH]
        try:
            result = execute_onnx(_batched(model, len(chunk)), {inp: chunk})[out]
            if len(result) != len(chunk):
                raise ValueError(f"batched output has {len(result)} rows for {len(chunk)} samples")
        except Exception:  # the graph pins its batch to 1: run it as exported, sample by sample
            result = np.concatenate([execute_onnx(model, {inp: chunk[i : i + 1]})[out] for i in range(len(chunk))])
        chunks.append(result)
    return np.concatenate(chunks) if chunks else np.zeros((0,), dtype=np.float32)


def qonnx_tensors(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool, names: list[str]) -> dict[str, np.ndarray]:
    """The named tensors of a QONNX graph on a batch of samples (qonnx's executor, QONNX_BATCH at a time): what
    a flow compares its artifact with, tensor by tensor."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(load_onnx_safely(onnx_path, str(onnx_path)))
    inp = model.graph.input[0].name
    xs = _graph_batch(model, x_uint8, flat)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(xs), QONNX_BATCH):
        chunk = xs[start : start + QONNX_BATCH]
        context = execute_onnx(_batched(model, len(chunk)), {inp: chunk}, return_full_exec_context=True)
        for name in names:
            chunks[name].append(np.asarray(context[name]))
    return {name: np.concatenate(parts) for name, parts in chunks.items() if parts}


def activation_codes(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool) -> list[tuple[str, np.ndarray]]:
    """Every activation quantizer of a QONNX graph on a batch, in graph order: (its node, its integer codes per
    sample, channels last as a dataflow accelerator streams them). What a flow's layers are matched against to
    find where an artifact first parts from the source model."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(load_onnx_safely(onnx_path, str(onnx_path)))
    quants = [n for n in model.graph.node if n.op_type == "Quant" and model.get_initializer(n.input[0]) is None]
    values = qonnx_tensors(onnx_path, x_uint8, flat, [n.output[0] for n in quants])
    codes = []
    for node in quants:
        scale, zero = model.get_initializer(node.input[1]), model.get_initializer(node.input[2])
        if scale is None or zero is None:
            continue
        level = np.rint(values[node.output[0]] / scale + zero)
        if level.ndim == 4:
            level = level.transpose(0, 2, 3, 1)
        elif level.ndim == 3:  # (N, C, T) over sequences: time-major, channels last
            level = level.transpose(0, 2, 1)
        codes.append((node.name, level.reshape(len(level), -1).astype(np.int64)))
    return codes


TIE_ULPS = 64  # how close to a rounding boundary counts as a tie: float32 ulps of the value's magnitude


def tie_samples(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool) -> np.ndarray:
    """Per sample: does any activation quantizer of the QONNX graph see a value within float32 rounding of a
    rounding boundary (x / scale + zero point at k + 0.5)? There Brevitas's float arithmetic and an integer
    datapath (FINN's thresholds, TFLite's requantization) may round either way, and both are right."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(load_onnx_safely(onnx_path, str(onnx_path)))
    quants = [
        node for node in model.graph.node if node.op_type == "Quant" and model.get_initializer(node.input[0]) is None
    ]
    inp = model.graph.input[0].name
    xs = _graph_batch(model, x_uint8, flat)
    tied = np.zeros(len(xs), dtype=bool)
    if not quants or len(xs) == 0:
        return tied
    for start in range(0, len(xs), QONNX_BATCH):
        chunk = xs[start : start + QONNX_BATCH]
        batched = _batched(model, len(chunk))
        context = execute_onnx(batched, {inp: chunk}, return_full_exec_context=True)
        for node in quants:
            scale = np.asarray(context[node.input[1]], dtype=np.float64)
            zero = np.asarray(context[node.input[2]], dtype=np.float64)
            level = np.asarray(context[node.input[0]], dtype=np.float64) / scale + zero
            distance = np.abs(level - np.floor(level) - 0.5)
            near = distance <= TIE_ULPS * np.finfo(np.float32).eps * np.maximum(1.0, np.abs(level))
            tied[start : start + len(chunk)] |= near.reshape(len(chunk), -1).any(axis=1)
    return tied
