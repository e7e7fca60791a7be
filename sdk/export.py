"""Export a training run to QONNX, the one interchange format of the SDK.

The exported graph takes uint8 pixels (annotated UINT8) and starts with the
Mul by 1/255 the model was trained behind, so every downstream flow sees the
integer input the device will get. Beside the .onnx file a model card (JSON)
records input spec, normalisation, labels, bits, accuracy and the hash of the
source checkpoint. The export is checked by executing it with qonnx against
the Brevitas model before anything is written to the final path.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdk.data import INPUT_SCALE, load_dataset
from sdk.errors import CheckpointError, ExportError
from sdk.onnx_guard import load_onnx_safely
from sdk.package import sha256_file
from sdk.qat import CHECKPOINT_NAME, TrainConfig, check_out_dir, load_checkpoint, model_input, read_metrics
from sdk.scratch import scratch_dir

CARD_FORMAT = "sdk-model-card/1"
# Floats may differ by accumulation order between PyTorch and onnxruntime. Up to
# 4 bits that stays at float32 rounding (~1e-7 of the output range); at 8 bits
# an activation that lands on a rounding tie can round the other way in one of
# them, one LSB, which moves the output by up to ~1e-3 of its range. Relative:
EXPORT_RTOL = 1e-3


class _ScaledInput(nn.Module):
    """uint8 pixels -> x / 255, in the graph so that the graph input is integer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * INPUT_SCALE)


@dataclass
class ExportResult:
    onnx_path: Path
    card_path: Path
    card: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": str(self.onnx_path),
            "card": str(self.card_path),
            **{k: self.card[k] for k in ("model", "bits", "input", "check")},
        }


def card_path_for(onnx_path: Path) -> Path:
    """model.qonnx.onnx -> model.qonnx.json"""
    return onnx_path.with_suffix(".json")


def read_card(onnx_path: Path) -> dict[str, Any]:
    path = card_path_for(Path(onnx_path))
    if not path.is_file():
        raise ExportError(
            f"The model card {path.name} is missing beside {onnx_path}.",
            where=str(path),
            fix="export with `sdk export RUN --out MODEL.onnx`, which writes both files",
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(
            f"The model card {path.name} is not valid JSON: {exc}",
            where=str(path),
            fix="export again, or delete the card to let the SDK read the input from the graph",
        ) from exc
    problem = _card_problem(card)
    if problem:
        raise ExportError(
            f"The model card {path.name} {problem}.",
            where=str(path),
            fix="export again with `sdk export`, or delete the card to let the SDK read the input from the graph",
        )
    return card


def _card_problem(card: Any) -> str | None:
    """What makes a card unusable, or None: the fields every flow reads must be there, with the right types."""
    if not isinstance(card, dict):
        return "is not a JSON object"
    spec = card.get("input")
    if not isinstance(spec, dict):
        return "has no 'input' object"
    shape = spec.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        return f"has input.image_shape {shape!r}, not three positive integers (C, H, W)"
    if not isinstance(spec.get("flatten"), bool):
        return "has no boolean input.flatten"
    dataset = card.get("dataset")
    if dataset is not None and not (isinstance(dataset, dict) and isinstance(dataset.get("name"), str)):
        return "has a 'dataset' without a name"
    labels = card.get("labels", [])
    if not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)):
        return "has 'labels' that are not a list of names"
    return None


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


def run_qonnx(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool) -> np.ndarray:
    """Execute a QONNX file with qonnx's executor, batched (QONNX_BATCH samples per run).

    A graph whose ops pin the batch to 1 (a Reshape to a literal [1, -1]) runs one sample at a time instead."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(load_onnx_safely(onnx_path, str(onnx_path)))
    inp, out = model.graph.input[0].name, model.graph.output[0].name
    xs = (x_uint8.reshape(len(x_uint8), -1) if flat else x_uint8).astype(np.float32)
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


def _check_against_brevitas(onnx_path: Path, model: nn.Module, x_uint8: np.ndarray, flat: bool) -> dict[str, Any]:
    with torch.no_grad():
        reference = model(model_input(x_uint8, flat)).numpy()
    exported = run_qonnx(onnx_path, x_uint8, flat)
    max_abs = float(np.max(np.abs(exported - reference)))
    span = float(np.max(np.abs(reference))) or 1.0
    # Reported only: binary nets have exactly tied logits, where argmax follows float noise.
    same_class = float(np.mean(exported.argmax(1) == reference.argmax(1)))
    return {
        "samples": int(len(x_uint8)),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / span,
        "argmax_agreement": same_class,
        "passed": bool(max_abs / span <= EXPORT_RTOL),
    }


def export_run(run_dir: Path | str, out_path: Path | str, check_samples: int = 32) -> ExportResult:
    """Export the best checkpoint of a run to QONNX plus its model card, verified."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    if out_path.suffix != ".onnx" or out_path.is_dir():
        raise ExportError(
            f"--out {out_path} must name an .onnx file (its model card goes beside it, as .json).",
            where="--out",
            fix="e.g. --out model.qonnx.onnx",
        )
    check_out_dir(out_path.parent, where="--out")
    checkpoint = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    model, payload = load_checkpoint(checkpoint)
    config = TrainConfig(**payload["config"])
    metrics = read_metrics(checkpoint)
    input_shape = list(payload["input_shape"])
    flat = model.flat_input

    data = load_dataset(config.dataset, seed=config.seed, image_size=config.image_size)
    if data.fingerprint() != payload.get("dataset_fingerprint"):
        raise CheckpointError(
            f"The data set '{config.dataset}' differs from the one this run was trained on.",
            where=str(checkpoint),
            fix="export on the machine and data the run was trained with, or train again",
        )
    card = {
        "format": CARD_FORMAT,
        "model": config.model,
        "bits": config.bits_config().to_dict(),
        "input": _input_spec(input_shape, flat),
        "normalisation": NORMALISATION,
        "labels": payload["labels"],
        "dataset": {
            "name": config.dataset,
            "image_size": config.image_size,
            "seed": config.seed,
            "fingerprint": payload.get("dataset_fingerprint"),
        },
        "accuracy": {"test": metrics.get("test_accuracy"), "val": payload.get("val_accuracy")},
        "source_checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint)},
    }
    return _export_checked(model, card, data.x_test[:check_samples], out_path, str(checkpoint))


NORMALISATION = {
    "scale": INPUT_SCALE,
    "offset": 0.0,
    "meaning": "model sees uint8 * scale; the scale is inside the graph",
}


def _input_spec(input_shape: list[int], flat: bool) -> dict[str, Any]:
    graph_shape = [1, int(np.prod(input_shape))] if flat else [1, *input_shape]
    return {
        "shape": graph_shape,
        "dtype": "uint8",
        "layout": "NC" if flat else "NCHW",
        "image_shape": list(input_shape),
        "flatten": flat,
    }


def _export_checked(
    model: nn.Module, card: dict[str, Any], x_check: np.ndarray, out_path: Path, where: str
) -> ExportResult:
    """Export `model` behind the uint8 -> /255 input scale, check it against the model on x_check, then write the
    .onnx and its card (with the check) atomically."""
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    graph_shape = card["input"]["shape"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir("export", out_path.parent, hidden=True) as tmp:
        tmp_onnx = Path(tmp) / "model.onnx"
        wrapped = _ScaledInput(model).eval()
        chatter = io.StringIO()  # torch.onnx prints progress to stdout; keep stdout for --json
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" is not news
        try:
            with contextlib.redirect_stdout(chatter):
                export_qonnx(wrapped, input_t=torch.zeros(graph_shape), export_path=str(tmp_onnx))
        except Exception as exc:
            raise ExportError(
                f"Brevitas could not export model '{card['model']}': {type(exc).__name__}: {exc}\n"
                f"{chatter.getvalue()[-2000:]}",
                where=where,
                fix="the model may use a layer Brevitas cannot export; export it with brevitas.export.export_qonnx "
                "yourself to see where, and replace that layer",
            ) from exc
        qmodel = cleanup_model(ModelWrapper(str(tmp_onnx)))
        qmodel.set_tensor_datatype(qmodel.graph.input[0].name, DataType["UINT8"])
        qmodel.save(str(tmp_onnx))
        check = _check_against_brevitas(tmp_onnx, model, x_check, card["input"]["flatten"])
        if not check["passed"]:
            raise ExportError(
                "The exported graph disagrees with the Brevitas model "
                f"(max relative diff {check['max_rel_diff']:.2e}).",
                where=where,
                fix="this is a bug in the export; please report it with the model",
            )
        card = {**card, "check": check, "onnx_sha256": sha256_file(tmp_onnx)}
        tmp_card = Path(tmp) / "card.json"
        tmp_card.write_text(json.dumps(card, indent=2))
        card_path = card_path_for(out_path)
        os.replace(tmp_onnx, out_path)
        os.replace(tmp_card, card_path)
    return ExportResult(out_path, card_path, card)
    return ExportResult(out_path, card_path, card)


def export_module(
    model: nn.Module,
    example_input: torch.Tensor | np.ndarray | tuple[int, ...],
    out_path: Path | str,
    labels: list[str] | None = None,
    check_samples: int = 32,
) -> ExportResult:
    """Export a user's own Brevitas module to QONNX plus a model card, checked on random inputs.

    The module takes pixels / 255 (floats in [0, 1]) shaped like `example_input`: (1, C, H, W) for a conv net,
    (1, F) for an MLP. The exported graph takes the uint8 pixels and holds the / 255 itself, like the SDK's own
    exports. The card names no data set: verification samples come from --data, else random inputs."""
    shape = tuple(example_input) if isinstance(example_input, tuple) else tuple(np.shape(example_input))
    if len(shape) not in (2, 4) or shape[0] != 1 or any(int(d) < 1 for d in shape):
        raise ExportError(
            f"The example input has shape {shape}; the SDK takes one sample, (1, C, H, W) or (1, F).",
            where="example_input",
            fix="pass e.g. torch.zeros(1, 1, 28, 28) for a conv net or torch.zeros(1, 784) for an MLP",
        )
    flat = len(shape) == 2
    input_shape = [1, 1, int(shape[1])] if flat else [int(d) for d in shape[1:]]
    model = model.eval()
    with torch.no_grad():
        outputs = model(torch.zeros(1, *([input_shape[-1]] if flat else input_shape))).reshape(1, -1).shape[1]
    card = {
        "format": CARD_FORMAT,
        "model": type(model).__name__,
        "bits": None,
        "input": _input_spec(input_shape, flat),
        "normalisation": NORMALISATION,
        "labels": list(labels) if labels else [str(i) for i in range(outputs)],
        "dataset": None,
        "accuracy": None,
    }
    x_check = np.random.default_rng(0).integers(0, 256, size=(check_samples, *input_shape), dtype=np.uint8)
    return _export_checked(model, card, x_check, Path(out_path), f"model {type(model).__name__}")


def card_from_graph(onnx_path: Path, out_path: Path, input_scale: float | None, where: str) -> dict[str, Any]:
    """A QONNX file without a model card: clean it up (shapes, constants, initializers given as graph inputs), take
    the input's shape and integer type from the graph, and write the graph the SDK deploys to `out_path`.

    The SDK feeds integer pixels. A graph whose input is annotated UINT8 takes them as they are; a float input
    needs `input_scale`: the graph then receives pixel * input_scale (1/255 for a model trained on pixels / 255),
    through a Mul put in front of it, as the SDK's own exports have."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    checked = load_onnx_safely(onnx_path, where)  # before qonnx imports anything a node's domain names
    try:
        model = cleanup_model(ModelWrapper(checked))
    except Exception as exc:
        raise ExportError(
            f"{onnx_path.name} cannot be read as a QONNX graph: {type(exc).__name__}: {exc}",
            where=where,
            fix="pass a .onnx file written by Brevitas's export_qonnx (or another QONNX exporter)",
        ) from exc
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ExportError(
            f"The graph has {len(model.graph.input)} inputs and {len(model.graph.output)} outputs; "
            "the SDK deploys graphs with one of each.",
            where=where,
            fix="export the model with a single input tensor and a single output tensor",
        )
    name = model.graph.input[0].name
    shape = [int(d) for d in (model.get_tensor_shape(name) or [])]
    if len(shape) not in (2, 4) or shape[0] != 1 or any(d < 1 for d in shape):
        raise ExportError(
            f"The graph input '{name}' has shape {shape}; the SDK takes (1, C, H, W) or (1, F).",
            where=f"{where}, input {name}",
            fix="export with one sample of a fixed shape, e.g. torch.zeros(1, 1, 28, 28)",
        )
    datatype = model.get_tensor_datatype(name)
    if datatype == DataType["UINT8"] and input_scale is None:
        pass  # integer pixels, as the SDK's own exports take them
    elif datatype.is_integer() and datatype != DataType["UINT8"]:
        raise ExportError(
            f"The graph input '{name}' is annotated {datatype.name}; the SDK feeds uint8 pixels.",
            where=f"{where}, input {name}",
            fix="export the model with a float input (the SDK puts the pixel scale in front with --input-scale), "
            "or with its input annotated UINT8",
        )
    elif input_scale is None:
        raise ExportError(
            f"The graph input '{name}' is {datatype.name}: the SDK feeds integer pixels (0..255) and must know "
            "what your model expects.",
            where=f"{where}, input {name}",
            fix="pass --input-scale S so that the model receives pixel * S: 0.00392156862745098 (1/255) for a "
            "model trained on pixels / 255, 1 for raw pixel values",
        )
    else:
        if not (np.isfinite(input_scale) and input_scale > 0):
            raise ExportError(
                f"--input-scale must be a finite positive number, got {input_scale}.",
                where="--input-scale",
                fix="e.g. --input-scale 0.00392156862745098 (1/255)",
            )
        pixels, scale = f"{name}_pixels", f"{name}_pixel_scale"
        model.graph.input[0].name = pixels
        model.graph.node.insert(0, helper.make_node("Mul", [pixels, scale], [name], name="PixelScale"))
        model.set_initializer(scale, np.array(input_scale, dtype=np.float32))
        model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        model.set_tensor_datatype(pixels, DataType["UINT8"])
        model = cleanup_model(model)
    flat = len(shape) == 2
    input_shape = [1, 1, shape[1]] if flat else shape[1:]
    out_shape = model.get_tensor_shape(model.graph.output[0].name) or [1, 1]
    outputs = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 1
    model.save(str(out_path))
    card = {
        "format": CARD_FORMAT,
        "model": onnx_path.stem,
        "bits": None,
        "input": _input_spec(input_shape, flat),
        "normalisation": {
            "scale": INPUT_SCALE if input_scale is None else float(input_scale),
            "offset": 0.0,
            "meaning": "the graph receives uint8 pixels; "
            + ("their scale is the graph's own" if input_scale is None else "--input-scale put a Mul in front"),
        },
        "labels": [str(i) for i in range(outputs)],
        "dataset": None,
        "accuracy": None,
    }
    card_path_for(out_path).write_text(json.dumps(card, indent=2))
    return card


def qonnx_tensors(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool, names: list[str]) -> dict[str, np.ndarray]:
    """The named tensors of a QONNX graph on a batch of samples (qonnx's executor, QONNX_BATCH at a time): what
    a flow compares its artifact with, tensor by tensor."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(load_onnx_safely(onnx_path, str(onnx_path)))
    inp = model.graph.input[0].name
    xs = (x_uint8.reshape(len(x_uint8), -1) if flat else x_uint8).astype(np.float32)
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
    xs = (x_uint8.reshape(len(x_uint8), -1) if flat else x_uint8).astype(np.float32)
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
