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
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdk.data import INPUT_SCALE, load_dataset
from sdk.errors import CheckpointError, ExportError
from sdk.package import sha256_file
from sdk.qat import CHECKPOINT_NAME, METRICS_NAME, TrainConfig, load_checkpoint, model_input

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
    return json.loads(path.read_text())


def run_qonnx(onnx_path: Path | str, x_uint8: np.ndarray, flat: bool) -> np.ndarray:
    """Execute a QONNX file with qonnx's executor, one sample at a time."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(onnx_path))
    inp, out = model.graph.input[0].name, model.graph.output[0].name
    xs = x_uint8.reshape(len(x_uint8), -1) if flat else x_uint8
    return np.concatenate([execute_onnx(model, {inp: xs[i : i + 1].astype(np.float32)})[out] for i in range(len(xs))])


def _check_against_brevitas(onnx_path: Path, model: nn.Module, x_uint8: np.ndarray) -> dict[str, Any]:
    with torch.no_grad():
        reference = model(model_input(x_uint8, model.flat_input)).numpy()
    exported = run_qonnx(onnx_path, x_uint8, model.flat_input)
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
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    run_dir, out_path = Path(run_dir), Path(out_path)
    checkpoint = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    model, payload = load_checkpoint(checkpoint)
    config = TrainConfig(**payload["config"])
    metrics_path = checkpoint.parent / METRICS_NAME
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    input_shape = list(payload["input_shape"])
    flat = model.flat_input
    graph_shape = [1, int(np.prod(input_shape))] if flat else [1, *input_shape]

    data = load_dataset(config.dataset, seed=config.seed, image_size=config.image_size)
    if data.fingerprint() != payload.get("dataset_fingerprint"):
        raise CheckpointError(
            f"The data set '{config.dataset}' differs from the one this run was trained on.",
            where=str(checkpoint),
            fix="export on the machine and data the run was trained with, or train again",
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as tmp:
        tmp_onnx = Path(tmp) / "model.onnx"
        wrapped = _ScaledInput(model).eval()
        chatter = io.StringIO()  # torch.onnx prints progress to stdout; keep stdout for --json
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" is not news
        try:
            with contextlib.redirect_stdout(chatter):
                export_qonnx(wrapped, input_t=torch.zeros(graph_shape), export_path=str(tmp_onnx))
        except Exception as exc:
            raise ExportError(
                f"Brevitas could not export model '{config.model}': {type(exc).__name__}: {exc}\n"
                f"{chatter.getvalue()[-2000:]}",
                where=str(checkpoint),
                fix="report this with the run folder; the model may use a layer Brevitas cannot export",
            ) from None
        qmodel = cleanup_model(ModelWrapper(str(tmp_onnx)))
        qmodel.set_tensor_datatype(qmodel.graph.input[0].name, DataType["UINT8"])
        qmodel.save(str(tmp_onnx))
        check = _check_against_brevitas(tmp_onnx, model, data.x_test[:check_samples])
        if not check["passed"]:
            raise ExportError(
                "The exported graph disagrees with the Brevitas model "
                f"(max relative diff {check['max_rel_diff']:.2e}).",
                where=str(checkpoint),
                fix="this is a bug in the export; please report it with the run folder",
            )
        card = {
            "format": CARD_FORMAT,
            "model": config.model,
            "bits": config.bits_config().to_dict(),
            "input": {
                "shape": graph_shape,
                "dtype": "uint8",
                "layout": "NC" if flat else "NCHW",
                "image_shape": input_shape,
                "flatten": flat,
            },
            "normalisation": {
                "scale": INPUT_SCALE,
                "offset": 0.0,
                "meaning": "model sees uint8 * scale; the scale is inside the graph",
            },
            "labels": payload["labels"],
            "dataset": {
                "name": config.dataset,
                "image_size": config.image_size,
                "seed": config.seed,
                "fingerprint": payload.get("dataset_fingerprint"),
            },
            "accuracy": {"test": metrics.get("test_accuracy"), "val": payload.get("val_accuracy")},
            "source_checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
            "check": check,
        }
        tmp_card = Path(tmp) / "card.json"
        tmp_card.write_text(json.dumps(card, indent=2))
        card_path = card_path_for(out_path)
        os.replace(tmp_onnx, out_path)
        os.replace(tmp_card, card_path)
    return ExportResult(out_path, card_path, card)
