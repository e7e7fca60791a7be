"""Exactness rules: what "verified" means for a deployment, and the first place it fails.

FPGA (FINN): the integer tensors of the deployed dataflow graph equal FINN's own
execution of the same layers, layer by layer, and the network's integer output
equals the QAT model's (its float output up to float32 rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

FLOAT_RTOL = 1e-5  # of the output range: float32 rounding of the final scale, nothing more
# What a user can do about a failed check, where the check names nothing more specific: a check that fails is a
# lowering or tool that does not compute the model (the rule holds for every model a target accepts).
FAILED_FIX = (
    "do not use this package: its outputs differ from your model's; this is a bug in the SDK or its tools, not in "
    "your model: report it with the package's report.md and model.qonnx.onnx"
)


@dataclass
class Check:
    """One comparison: what against what, on how many samples, and where it first failed."""

    name: str
    passed: bool
    samples: int
    detail: str
    first_difference: str | None = None
    mismatch_rate: float = 0.0
    ties: int = 0  # samples that differ only where the reference sits on a rounding tie (reported, not failures)
    first_sample: int | None = None  # the first sample that failed, where the check compares per sample
    fix: str | None = None  # what the user can do when it fails, where more is known than FAILED_FIX

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verification:
    rule: str
    checks: list[Check] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No check run is no proof: a verification without checks fails."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)

    def failure(self) -> dict | None:
        """Why the rule failed, for the CLI, --json and the report: the check, the layer (or tensor) where it first
        differs, what differs and by how much, and the fix. None when it passed."""
        if self.passed:
            return None
        check = self.first_failure
        if check is None:
            return {
                "check": "no check ran",
                "layer": None,
                "detail": "the flow compared nothing, so nothing is proven",
                "mismatch_rate": None,
                "first_sample": None,
                "fix": FAILED_FIX,
            }
        return {
            "check": check.name,
            "layer": check.first_difference,
            "detail": check.detail,
            "mismatch_rate": check.mismatch_rate,
            "first_sample": check.first_sample,
            "fix": check.fix or FAILED_FIX,
        }

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "accuracy": self.accuracy,
            "failure": self.failure(),
        }


def describe_failure(failure: dict) -> list[str]:
    """A failure (Verification.failure) as lines for people: where, what differs and by how much, then the fix."""
    where = f" at {failure['layer']}" if failure.get("layer") else ""
    rate = failure.get("mismatch_rate")
    share_failed = f" ({rate:.1%} of the samples)" if rate else ""
    return [f"{failure['check']} failed{where}{share_failed}: {failure['detail']}", f"fix: {failure['fix']}"]


def binary_threshold(reference: np.ndarray) -> float:
    """A one-output model is a binary classifier: 0.5 for probabilities (a sigmoid's), 0 for logits."""
    return 0.5 if reference.size and float(reference.min()) >= 0.0 and float(reference.max()) <= 1.0 else 0.0


def predicted_classes(outputs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """argmax over the classes; a single output column is thresholded (binary classification), not argmaxed."""
    flat = outputs.reshape(len(outputs), -1)
    if flat.shape[1] == 1:
        return (flat[:, 0] > (binary_threshold(flat) if threshold is None else threshold)).astype(np.int64)
    return flat.argmax(1)


def accuracy(outputs: np.ndarray, labels: np.ndarray | None, threshold: float | None = None) -> float | None:
    """Share of samples whose predicted class is the label; None without labels (not measured)."""
    if labels is None or len(labels) == 0:
        return None
    return float(np.mean(predicted_classes(outputs, threshold) == labels))


def share(value: float | None) -> str:
    """A share as a percentage for reports; 'not measured' where there was nothing to measure (no labels)."""
    return "not measured" if value is None else f"{value:.2%}"


def same_class(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample: our predicted class is the reference's, or ties with it (binary nets have exactly tied logits).

    One output column: both sides thresholded at the reference's threshold, with the same tie tolerance."""
    span = float(np.max(np.abs(reference))) or 1.0
    ours, reference = ours.reshape(len(ours), -1), reference.reshape(len(reference), -1)
    if reference.shape[1] == 1:
        threshold = binary_threshold(reference)
        near = np.abs(reference[:, 0] - threshold) <= FLOAT_RTOL * span
        return near | ((ours[:, 0] > threshold) == (reference[:, 0] > threshold))
    predicted = ours.argmax(1)
    chosen = reference[np.arange(len(reference)), predicted]
    return chosen >= reference.max(1) - FLOAT_RTOL * span


def compare_layers(name: str, ours: list[tuple[str, np.ndarray]], theirs: list[np.ndarray], detail: str) -> Check:
    """Layer-by-layer equality of integer tensors; names the first layer that differs."""
    samples = len(ours[0][1]) if ours else 0
    for (layer, mine), reference in zip(ours, theirs):
        if mine.shape != reference.shape:
            detail = f"{detail}; {layer} has shape {mine.shape[1:]} per sample against {reference.shape[1:]}"
            return Check(name, False, samples, detail, first_difference=layer, mismatch_rate=1.0)
        if not np.array_equal(mine, reference):
            differs = (mine != reference).reshape(len(mine), -1)
            rows = np.any(differs, axis=1)
            gap = np.abs(mine.astype(np.float64) - reference.astype(np.float64))
            detail = (
                f"{detail}; {layer} differs in {int(differs.sum())} of {differs.size} values, by up to "
                f"{float(gap.max()):g}; first differing sample: {int(np.argmax(rows))}"
            )
            return Check(
                name,
                False,
                samples,
                detail,
                first_difference=layer,
                mismatch_rate=float(rows.mean()),
                first_sample=int(np.argmax(rows)),
            )
    if len(ours) != len(theirs):
        return Check(
            name,
            False,
            samples,
            f"{detail}; {len(ours)} layers against {len(theirs)}",
            first_difference=ours[min(len(ours), len(theirs)) - 1][0] if ours and theirs else "layer count",
        )
    return Check(name, True, samples, detail)


def _output_check(name: str, mismatch: np.ndarray, ties: np.ndarray | None, detail: str) -> Check:
    """Per-sample mismatches -> a Check. A mismatch on a sample where the QAT model sits on a rounding tie
    (`ties`: its float value within float32 rounding of a quantization boundary) is counted, not a failure."""
    tied = mismatch & ties if ties is not None else np.zeros_like(mismatch)
    bad = mismatch & ~tied
    if tied.any():
        detail += (
            f"; {int(tied.sum())} sample(s) differ where the QAT model sits on a rounding tie "
            "(its float value within float32 rounding of a quantization boundary): counted as ties, not failures"
        )
    if bad.any():
        detail += f"; first differing sample: {int(np.argmax(bad))}"
    return Check(
        name,
        not bad.any(),
        len(mismatch),
        detail,
        first_difference="network output" if bad.any() else None,
        mismatch_rate=float(bad.mean()),
        ties=int(tied.sum()),
        first_sample=int(np.argmax(bad)) if bad.any() else None,
    )


def compare_integer_outputs(
    name: str, ours: np.ndarray, reference: np.ndarray, detail: str, ties: np.ndarray | None = None
) -> Check:
    mismatch = np.any((ours != reference).reshape(len(ours), -1), axis=1)
    if mismatch.any():
        gap = np.abs(np.asarray(ours, np.float64) - np.asarray(reference, np.float64))
        detail = f"{detail}; outputs differ by up to {float(gap.max()):g}"
    return _output_check(name, mismatch, ties, detail)


def compare_float_outputs(
    name: str, ours: np.ndarray, reference: np.ndarray, detail: str, ties: np.ndarray | None = None
) -> Check:
    span = float(np.max(np.abs(reference))) or 1.0
    error = np.max(np.abs(ours - reference).reshape(len(ours), -1), axis=1) / span
    detail = f"{detail}; max relative difference {float(error.max(initial=0.0)):.1e}"
    return _output_check(name, error > FLOAT_RTOL, ties, detail)
