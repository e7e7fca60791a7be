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
    identical_outputs: float  # share of samples whose output equals the QAT model's (float32 rounding)

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
    if manifest["flow"] != "finn":
        raise PackageError(f"Simulation of {manifest['flow']} packages is not available in this SDK version.", where=str(package),
                           fix="simulate an FPGA package")
    from sdk.sim import simulate_parent
    from targets.finn.deploy import DATAFLOW_NAME, PARENT_NAME, host_input
    from targets.finn.environment import prepare_finn
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sdk-sim-") as tmp:
        prepare_finn(Path(tmp))
        parent, dataflow = _load_onnx(package / PARENT_NAME), _load_onnx(package / DATAFLOW_NAME)
        expected = tuple(card["input"]["image_shape"])
        if tuple(x.shape[1:]) != expected:
            raise SDKError(f"Data '{data}' has images {x.shape[1:]}, the packaged model takes {expected}.", where="--data",
                           fix="use the data set the model was trained on")
        outputs = simulate_parent(parent, dataflow, host_input(card, x)).output
        reference = qat_outputs(ResolvedModel(package / "model.qonnx.onnx", card, None), x)
    span = float(np.max(np.abs(reference))) or 1.0
    identical = np.max(np.abs(outputs - reference).reshape(len(x), -1), axis=1) / span <= FLOAT_RTOL
    return SimulationReport(str(package), manifest["board"]["name"], manifest["flow"], data or spec["name"], len(x),
                            float(np.mean(outputs.argmax(1) == y)), float(np.mean(reference.argmax(1) == y)),
                            float(np.mean(same_class(outputs, reference))), float(np.mean(identical)))
