"""`sdk simulate PACKAGE`: run a deployment package's artifact in the simulator on a data set.

Reports the artifact's accuracy and its agreement with the QAT model the
package was built from (the QONNX model and card travel in the package).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sdk.data import load_dataset, load_samples
from sdk.errors import ConfigError, DatasetError, PackageError
from sdk.package import MANIFEST_NAME, verify_package
from targets.registry import FLOWS, get_target


@dataclass
class SimulationReport:
    package: str
    board: str
    flow: str
    data: str
    samples: int
    accuracy: float | None  # None: the samples carry no labels
    qat_accuracy: float | None
    agreement: float  # same predicted class as the QAT model
    identical_outputs: float | None  # share of samples whose output equals the QAT model's (float32 rounding),
    # where the flow's rule is bit-exactness (FPGA); None where it is not (int8 TFLite: golden model and 1 LSB)
    runtime_agreement: dict[str, float] = field(default_factory=dict)  # flow-specific, e.g. runtime = golden model
    failures: list[str] = field(default_factory=list)  # checks of the run that failed (the command exits 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _manifest(package: Path) -> dict:
    """The package's manifest, after verify_package: a changed, added or missing file is refused before it runs."""
    manifest = verify_package(package)
    if manifest.get("flow") not in FLOWS or not isinstance(manifest.get("board"), dict):
        raise PackageError(
            "manifest.json does not describe a deployment package (no known flow or board).",
            where=str(package / MANIFEST_NAME),
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
    from sdk.deployment import model_batch

    card = _card(package)
    return get_target(manifest["flow"]).simulate(package, card, model_batch(x, card)).outputs


BUILTIN_DATASETS = ("digits", "fashion-mnist")


def _samples(card: dict, data: str | None, limit: int | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """--data (a built-in data set's test split, an .npz or an idx folder, whole), else the card's data set's test
    split; the first `limit` samples."""
    spec = card.get("dataset") or {}
    if data in BUILTIN_DATASETS or (data is None and spec):
        name = data or spec["name"]
        dataset = load_dataset(name, seed=spec.get("seed", 0), image_size=spec.get("image_size"))
        x, y, what = dataset.x_test, dataset.y_test, f"{name} (test split)"
    elif data is None:
        raise DatasetError(
            "The packaged model names no data set to simulate it on.",
            where="--data",
            fix="pass your samples: --data samples.npz (x, y optional) or --data folder/ (MNIST idx files)",
        )
    else:
        x, y, _ = load_samples(data)
        what = Path(data).name
    from sdk.deployment import in_model_layout

    x = in_model_layout(x, card, f"--data {data}")
    return x[:limit], (None if y is None else y[:limit]), what


def simulate_package(
    package: Path | str, data: str | None = None, limit: int | None = None, rtlsim: bool = False
) -> SimulationReport:
    from sdk.deployment import ResolvedModel, check_labels, qat_outputs
    from sdk.verify import FLOAT_RTOL, accuracy, binary_threshold, same_class

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            f"--limit must be a positive integer, got {limit!r}.", where="--limit", fix="e.g. --limit 1000"
        )
    package = Path(package)
    manifest = _manifest(package)
    card = _card(package)
    x, y, what = _samples(card, data, limit)
    reference = qat_outputs(ResolvedModel(package / "model.qonnx.onnx", card, None), x)
    check_labels(y, reference, f"--data {data}" if data else "the model card's data set")
    simulated = get_target(manifest["flow"]).simulate(package, card, x, rtlsim)
    outputs = simulated.outputs
    identical = None
    if simulated.bit_exact:
        span = float(np.max(np.abs(reference))) or 1.0
        identical = float(np.mean(np.max(np.abs(outputs - reference).reshape(len(x), -1), axis=1) / span <= FLOAT_RTOL))
    threshold = binary_threshold(reference)
    return SimulationReport(
        str(package),
        manifest["board"]["name"],
        manifest["flow"],
        what,
        len(x),
        accuracy(outputs, y, threshold),
        accuracy(reference, y, threshold),
        float(np.mean(same_class(outputs, reference))),
        identical,
        simulated.agreement,
        simulated.failures,
    )
