"""`sdk simulate PACKAGE`: run a deployment package's artifact in the simulator on a data set.

Reports the artifact's accuracy and its agreement with the QAT model the
package was built from (the QONNX model and card travel in the package).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sdk.data import load_dataset
from sdk.errors import PackageError, SDKError
from targets.registry import FLOWS, get_target


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
    identical_outputs: float | None  # share of samples whose output equals the QAT model's (float32 rounding),
    # where the flow's rule is bit-exactness (FPGA); None where it is not (int8 TFLite: golden model and 1 LSB)
    runtime_agreement: dict[str, float] = field(default_factory=dict)  # flow-specific, e.g. runtime = golden model

    def to_dict(self) -> dict:
        return asdict(self)


def _manifest(package: Path) -> dict:
    path = package / "manifest.json"
    if not path.is_file():
        raise PackageError(
            f"{package} is not a deployment package (no manifest.json).",
            where=str(package),
            fix="pass the folder written by `sdk deploy`",
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"manifest.json is corrupt: {exc}", where=str(path), fix="deploy again") from exc
    if not isinstance(manifest, dict) or manifest.get("flow") not in FLOWS or "board" not in manifest:
        raise PackageError(
            "manifest.json does not describe a deployment package (no known flow or board).",
            where=str(path),
            fix="deploy again; packages are written whole",
        )
    return manifest


def _card(package: Path) -> dict:
    path = package / "model.qonnx.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError(
            "The package lacks model.qonnx.json.", where=str(package), fix="deploy again; packages are written whole"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"model.qonnx.json is corrupt: {exc}", where=str(path), fix="deploy again") from exc


def run_package(package: Path | str, x: np.ndarray) -> np.ndarray:
    """The packaged artifact's final outputs on a batch `x` (in the model's input layout), in the simulator."""
    package = Path(package)
    manifest = _manifest(package)
    return get_target(manifest["flow"]).simulate(package, _card(package), np.asarray(x)).outputs


def simulate_package(package: Path | str, data: str | None = None, limit: int | None = None) -> SimulationReport:
    from sdk.deploy import ResolvedModel, qat_outputs
    from sdk.verify import FLOAT_RTOL, same_class

    package = Path(package)
    manifest = _manifest(package)
    card = _card(package)
    spec = card["dataset"]
    dataset = load_dataset(data or spec["name"], seed=spec["seed"], image_size=spec["image_size"])
    x, y = dataset.x_test[:limit], dataset.y_test[:limit]
    expected = tuple(card["input"]["image_shape"])
    if tuple(x.shape[1:]) != expected:
        raise SDKError(
            f"Data '{data}' has images {x.shape[1:]}, the packaged model takes {expected}.",
            where="--data",
            fix="use the data set the model was trained on",
        )
    reference = qat_outputs(ResolvedModel(package / "model.qonnx.onnx", card, None), x)
    simulated = get_target(manifest["flow"]).simulate(package, card, x)
    outputs = simulated.outputs
    identical = None
    if simulated.bit_exact:
        span = float(np.max(np.abs(reference))) or 1.0
        identical = float(np.mean(np.max(np.abs(outputs - reference).reshape(len(x), -1), axis=1) / span <= FLOAT_RTOL))
    return SimulationReport(
        str(package),
        manifest["board"]["name"],
        manifest["flow"],
        data or spec["name"],
        len(x),
        float(np.mean(outputs.argmax(1) == y)),
        float(np.mean(reference.argmax(1) == y)),
        float(np.mean(same_class(outputs, reference))),
        identical,
        simulated.agreement,
    )
