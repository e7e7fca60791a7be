"""`sdk simulate PACKAGE`: run a deployment package's artifact in the simulator on a data set.

Reports the artifact's accuracy and its agreement with the QAT model the
package was built from (the QONNX model and card travel in the package).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.data import load_dataset, load_samples
from sdk.datasets import BUILT_IN
from sdk.errors import ConfigError, DatasetError
from sdk.loaded import load_package


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


def run_package(
    package: Path | str, x: np.ndarray, codes: bool = False, options: dict[str, Any] | None = None
) -> np.ndarray:
    """The packaged artifact's final outputs on a batch `x` (what the model's forward takes, in its input layout;
    codes=True: the device's integer codes), in the simulator; options: the flow's own simulate options. The one-shot
    form of sdk.load: the package is verified and loaded for this call alone."""
    return load_package(package, options).simulate(x, codes)


def _samples(
    card: dict, data: str | None, limit: int | None, codes: bool = False
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """--data (a built-in data set's test split, an .npz or an idx folder, whole), else the card's data set's test
    split; the first `limit` samples."""
    spec = card.get("dataset") or {}
    if data in BUILT_IN or (data is None and spec):
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
        from sdk.model_card import input_map_of

        x, y, _ = load_samples(data, raw=codes or not input_map_of(card).user_pixels)
        what = Path(data).name
    from sdk.deployment import device_codes, in_model_layout

    x = in_model_layout(x, card, f"--data {data}")[:limit]
    return device_codes(x, card, f"--data {data}", codes), (None if y is None else y[:limit]), what


def deploy_failure(package: Path, manifest: dict) -> str | None:
    """Why the package's own deploy failed its exactness rule (from its report), or None where it passed: a run of
    such a package is no run of the model, whatever its accuracy."""
    from sdk.report import REPORT_JSON
    from sdk.verify import describe_failure

    if manifest["verified"]:
        return None
    try:
        failure = json.loads((package / REPORT_JSON).read_text())["data"]["verification"]["failure"]
        reason, fix = describe_failure(failure)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # written by an older SDK, or no reason kept
        reason, fix = "see its report.md", "fix: deploy again; use only a package whose verification PASSED"
    return f"this package's deploy failed its exactness rule: {reason}; {fix}"


def simulate_package(
    package: Path | str, data: str | None = None, limit: int | None = None, codes: bool = False, **options: Any
) -> SimulationReport:
    """`sdk simulate PACKAGE`; options: the package's flow's own simulate options (e.g. as the CLI's flags)."""
    from sdk.deployment import ResolvedModel, check_labels, qat_outputs
    from sdk.verify import FLOAT_RTOL, accuracy, binary_threshold, same_class

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            f"--limit must be a positive integer, got {limit!r}.", where="--limit", fix="e.g. --limit 1000"
        )
    loaded = load_package(package, options)
    package, manifest, card = loaded.path, loaded.manifest, loaded.card
    x, y, what = _samples(card, data, limit, codes)
    reference = qat_outputs(ResolvedModel(package / "model.qonnx.onnx", card, None), x)
    check_labels(y, reference, f"--data {data}" if data else "the model card's data set")
    simulated = loaded.artifact.run(x, True)
    outputs = simulated.outputs
    failed_deploy = deploy_failure(package, manifest)
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
        [failed_deploy, *simulated.failures] if failed_deploy else simulated.failures,
    )
