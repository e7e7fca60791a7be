"""`sdk simulate PACKAGE`: run a deployment package's artifact in the simulator on a data set.

Reports the artifact's accuracy and its agreement with the QAT model the
package was built from (the QONNX model and card travel in the package).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sdk.data import load_dataset
from sdk.errors import SDKError


class PackageError(SDKError):
    """A deployment package is missing, incomplete or corrupt."""


@dataclass
class SimulationReport:
    package: str
    board: str
    flow: str
    data: str
    samples: int
    accuracy: float
    qat_accuracy: float
    agreement: float  # same predicted class as the QAT model
    identical_outputs: float | None  # FPGA: share of samples whose output equals the QAT model's (float32 rounding); None for
                                     # int8 TFLite packages, whose rule is the golden model (runtime_equals_golden) and 1 LSB
    runtime_equals_golden: float | None = None  # TFLite family: share of samples where the runtime equals the golden model

    def to_dict(self) -> dict:
        return asdict(self)


def _manifest(package: Path) -> dict:
    path = package / "manifest.json"
    if not path.is_file():
        raise PackageError(f"{package} is not a deployment package (no manifest.json).", where=str(package),
                           fix="pass the folder written by `sdk deploy`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"manifest.json is corrupt: {exc}", where=str(path), fix="deploy again") from None


def _load_onnx(path: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    if not path.is_file():
        raise PackageError(f"The package lacks {path.name}.", where=str(path), fix="deploy again; packages are written whole")
    try:
        return ModelWrapper(str(path))
    except Exception as exc:  # onnx raises DecodeError and others on a damaged file
        raise PackageError(f"{path.name} cannot be read: {type(exc).__name__}", where=str(path), fix="the file is corrupt; deploy again") from None


def simulate_package(package: Path | str, data: str | None = None, limit: int | None = None) -> SimulationReport:
    from sdk.deploy import ResolvedModel, qat_outputs
    from sdk.verify import FLOAT_RTOL, same_class

    package = Path(package)
    manifest = _manifest(package)
    card = json.loads((package / "model.qonnx.json").read_text())
    spec = card["dataset"]
    dataset = load_dataset(data or spec["name"], seed=spec["seed"], image_size=spec["image_size"])
    x, y = dataset.x_test[:limit], dataset.y_test[:limit]
    expected = tuple(card["input"]["image_shape"])
    if tuple(x.shape[1:]) != expected:
        raise SDKError(f"Data '{data}' has images {x.shape[1:]}, the packaged model takes {expected}.", where="--data",
                       fix="use the data set the model was trained on")
    reference = qat_outputs(ResolvedModel(package / "model.qonnx.onnx", card, None), x)
    if manifest["flow"] in ("tflite", "tflm", "ethosu"):
        outputs, runtime_share = _simulate_tflite(package, manifest["flow"], x)
    else:
        outputs, runtime_share = _simulate_finn(package, card, x), None
    span = float(np.max(np.abs(reference))) or 1.0
    identical = np.max(np.abs(outputs - reference).reshape(len(x), -1), axis=1) / span <= FLOAT_RTOL
    return SimulationReport(str(package), manifest["board"]["name"], manifest["flow"], data or spec["name"], len(x),
                            float(np.mean(outputs.argmax(1) == y)), float(np.mean(reference.argmax(1) == y)),
                            float(np.mean(same_class(outputs, reference))), None if runtime_share is not None else float(np.mean(identical)),
                            runtime_share)


SIMULATION_CHUNK = 256  # samples per golden-model call: its im2col copies grow with the batch


def _simulate_tflite(package: Path, flow: str, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The golden model of the flow's runtime on the package's model.tflite, and the runtime itself beside it."""
    from sdk.sim.tflite_ref import run_golden
    from targets.tflite.deploy import INFO_NAME, MODEL_NAME, runtime_input
    from targets.tflite.runtime import open_tflite, run_litert
    from targets.tflite.writer import dequantized_logits
    from targets.tflm.runtime import run_tflm

    path = package / MODEL_NAME
    open_tflite(path)  # a missing or corrupt file: TfliteFileError (exit 2) before any run
    if not (package / INFO_NAME).is_file():
        raise PackageError(f"The package lacks {INFO_NAME}.", where=str(package), fix="deploy again; packages are written whole")
    info = json.loads((package / INFO_NAME).read_text())
    xin = runtime_input(x, info["input_shape"], info["tensors"][0]["dtype"] == "FLOAT32")
    output, logits, equal = info["output"], [], []
    for start in range(0, len(xin), SIMULATION_CHUNK):
        chunk = xin[start:start + SIMULATION_CHUNK]
        golden = run_golden(path, chunk, "litert" if flow == "tflite" else "tflm")[output]
        runtime = run_litert(path, chunk)[output] if flow == "tflite" else run_tflm(path, chunk, measure_arena=False).outputs[output]
        equal.append(np.all((runtime == golden).reshape(len(chunk), -1), axis=1))
        logits.append(golden)
    return dequantized_logits(np.concatenate(logits), info["layers"][-1]["scale"]), float(np.mean(np.concatenate(equal)))


def _simulate_finn(package: Path, card: dict, x: np.ndarray) -> np.ndarray:
    from sdk.sim import simulate_parent
    from targets.finn.deploy import DATAFLOW_NAME, PARENT_NAME, host_input
    from targets.finn.environment import prepare_finn
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sdk-sim-") as tmp:
        prepare_finn(Path(tmp))
        parent, dataflow = _load_onnx(package / PARENT_NAME), _load_onnx(package / DATAFLOW_NAME)
        return simulate_parent(parent, dataflow, host_input(card, x)).output
