"""Integer golden model of the runtimes' kernels, for the ops the TFLite writer emits.

It reads the .tflite file itself (never the writer's state), so a test against it checks what is on disk, and runs
each operator through its op spec (ops.py): the kernel arithmetic (kernels.py) in the rounding form the runtime
modelled uses for that op (`OpSpec.rounding`: measured against ai-edge-litert's BUILTIN_REF kernels and
tflite-micro). All of it is vectorised over the batch with int64 numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sdk.errors import SDKError
from targets.tflite.errors import GoldenModelError
from targets.tflite.kernels import FIXED_OUTPUT_QUANT, Tensor, quantize_multiplier, unpack_int4
from targets.tflite.ops import OP_SPECS, RUNTIMES
from targets.tflite.reader import MAX_TFLITE_BYTES, parse_tflite, tensor_name
from targets.tflite.schema import OP_NAMES, TYPE_NAMES, builtin_code

__all__ = [  # the kernel names others read here as well
    "FIXED_OUTPUT_QUANT",
    "RUNTIME_ROUNDING",
    "GoldenGraph",
    "golden_graph",
    "load_model",
    "quantize_multiplier",
    "run_golden",
]

_DTYPES = {
    schema.TensorType.INT8: np.int8,
    schema.TensorType.INT4: np.int8,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.UINT8: np.uint8,
}


# Rounding form of each op per runtime ("*": any other op), from the op specs.
RUNTIME_ROUNDING: dict[str, dict[str, str]] = {
    runtime: {spec.name: spec.rounding[runtime] for spec in OP_SPECS.values()} | {"*": "double"} for runtime in RUNTIMES
}


def _tensors(model: schema.ModelT) -> list[Tensor]:
    out = []
    for t in model.subgraphs[0].tensors:
        dtype = _DTYPES.get(t.type)
        if dtype is None:
            raise GoldenModelError(f"tensor {t.name!r}: type {t.type} not implemented")
        q = t.quantization
        scales = np.asarray(q.scale, np.float32) if q is not None and q.scale is not None and len(q.scale) else None
        zps = (
            np.asarray(q.zeroPoint, np.int64)
            if q is not None and q.zeroPoint is not None and len(q.zeroPoint)
            else None
        )
        raw = model.buffers[t.buffer].data if t.buffer else None
        shape = [] if t.shape is None else [int(d) for d in t.shape]
        data = None
        if raw is not None and len(raw) and t.type == schema.TensorType.INT4:
            data = unpack_int4(np.asarray(raw, np.uint8), math.prod(shape)).reshape(shape)
        elif raw is not None and len(raw):
            data = np.frombuffer(bytes(np.asarray(raw, np.uint8)), dtype=np.dtype(dtype).newbyteorder("<")).reshape(
                shape
            )
        out.append(Tensor(tensor_name(t), dtype, scales, zps, data))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Reading a file: every malformed flatbuffer is an SDKError before any value of it is used

_GOLDEN_FIX = "write the .tflite again with the SDK (sdk deploy); the file was damaged or not written by the SDK"


def load_model(tflite_path: Path | str) -> schema.ModelT:
    """The .tflite file, checked for what the golden model reads from it; a GoldenModelError when it is malformed."""
    path = Path(tflite_path)
    try:
        if not path.is_file():
            raise GoldenModelError(f"No .tflite file at {path}.", where=str(path), fix=_GOLDEN_FIX)
        if path.stat().st_size > MAX_TFLITE_BYTES:
            raise GoldenModelError("The file is larger than a flatbuffer can be.", where=str(path), fix=_GOLDEN_FIX)
        buf = path.read_bytes()
    except OSError as exc:
        raise GoldenModelError(
            f"The .tflite file cannot be read: {exc.strerror or exc}.", where=str(path), fix=_GOLDEN_FIX
        ) from None
    model = parse_tflite(buf, GoldenModelError, str(path), _GOLDEN_FIX)
    for t in model.subgraphs[0].tensors:
        if t.type not in _DTYPES:
            raise GoldenModelError(
                f"The golden model cannot read this file: tensor {tensor_name(t)[:60]!r} is "
                f"{TYPE_NAMES.get(t.type, t.type)}.",
                where=str(path),
                fix=_GOLDEN_FIX,
            )
    return model


@dataclass(frozen=True)
class GoldenGraph:
    """A .tflite read once for the golden model (a loaded package runs it on many batches): the checked flatbuffer
    and its tensors, constants decoded (read-only arrays: no op can change them for the next run)."""

    model: schema.ModelT
    tensors: list[Tensor]
    where: str


def golden_graph(tflite_path: Path | str) -> GoldenGraph:
    model = load_model(tflite_path)
    return GoldenGraph(model, _tensors(model), str(tflite_path))


def _run_op(
    code: int,
    op: schema.OperatorT,
    ins: list[Tensor | None],
    args: list[np.ndarray | None],
    out: Tensor,
    rounding: str,
) -> np.ndarray:
    if code not in OP_SPECS:
        raise GoldenModelError(
            f"The golden model has no {OP_NAMES.get(code, code)} op.",
            where=f"tensor {out.name}",
            fix=f"the golden model computes {', '.join(OP_NAMES[c] for c in OP_SPECS)}",
        )
    return OP_SPECS[code].golden(op, ins, args, out, rounding)


def run_golden(
    tflite_path: Path | str | GoldenGraph,
    x: np.ndarray,
    rounding: str | dict[str, str] = "litert",
    feed: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every tensor the graph computes (and its input), by name, for a batch of inputs.

    rounding: the runtime to model ("litert": ai-edge-litert's BUILTIN_REF kernels,
    "tflm": tflite-micro), or one form ("single", "double") for every op, or a
    dict op name -> form. feed: tensors to substitute, by name. An op still
    reports its own result, but the ops after it read the fed value: with the QAT
    model's tensors fed in, every op is checked on its own, without the error of
    the ops before it.
    """
    rounding = RUNTIME_ROUNDING.get(rounding, rounding) if isinstance(rounding, str) else rounding
    read = tflite_path if isinstance(tflite_path, GoldenGraph) else golden_graph(tflite_path)
    model, tensors, where = read.model, read.tensors, read.where
    graph = model.subgraphs[0]
    x = np.asarray(x)
    first = model.subgraphs[0].tensors[graph.inputs[0]]
    expected = list(first.shape if first.shape is not None else [])[1:]
    if x.ndim != len(expected) + 1 or list(x.shape[1:]) != expected:
        raise GoldenModelError(
            f"The input batch has shape {x.shape}; the file's input {tensors[graph.inputs[0]].name!r} takes "
            f"(batch, {', '.join(map(str, expected))}).",
            where=where,
            fix="feed the file's input layout (targets.tflite.writer.tflite_input)",
        )
    values: dict[int, np.ndarray] = {i: t.data for i, t in enumerate(tensors) if t.data is not None}
    values[graph.inputs[0]] = x
    computed: dict[str, np.ndarray] = {tensors[graph.inputs[0]].name: values[graph.inputs[0]]}
    codes = [builtin_code(code) for code in model.operatorCodes or []]
    for op in graph.operators or []:
        out = tensors[op.outputs[0]]
        op_inputs = list(op.inputs) if op.inputs is not None else []
        unset = [tensors[i].name for i in op_inputs if i >= 0 and i not in values]
        if unset:
            raise GoldenModelError(
                f"{OP_NAMES.get(codes[op.opcodeIndex], '?')} producing {out.name!r} reads {unset[0]!r} before any "
                "operator computes it (the operators are out of order, or it has no data).",
                where=where,
                fix=_GOLDEN_FIX,
            )
        ins = [tensors[i] if i >= 0 else None for i in op_inputs]
        args = [values[i] if i >= 0 else None for i in op_inputs]
        code = codes[op.opcodeIndex]
        name = OP_NAMES.get(code, str(code))
        mode = rounding.get(name, rounding.get("*", "single")) if isinstance(rounding, dict) else rounding
        try:
            result = _run_op(code, op, ins, args, out, mode)
        except SDKError:
            raise
        except _OP_FAULTS as exc:  # shapes or quantization of the file that do not fit the op
            raise GoldenModelError(
                f"{name} producing {out.name!r} cannot be computed from the file's tensors: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
                where=where,
                fix=_GOLDEN_FIX,
            ) from exc
        computed[out.name] = result
        values[op.outputs[0]] = feed[out.name].astype(result.dtype) if feed and out.name in feed else result
    return computed


# What numpy raises when a file's shapes or quantization do not fit an op (a missing scale: TypeError on None).
_OP_FAULTS = (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, MemoryError, FloatingPointError)
