"""Exactness rules: what "verified" means for a deployment, and the first place it fails.

FPGA (FINN): the integer tensors of the deployed dataflow graph equal FINN's own
execution of the same layers, layer by layer, and the network's integer output
equals the QAT model's (its float output up to float32 rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

FLOAT_RTOL = 1e-5  # of the output range: float32 rounding of the final scale, nothing more


@dataclass
class Check:
    """One comparison: what against what, on how many samples, and where it first failed."""

    name: str
    passed: bool
    samples: int
    detail: str
    first_difference: str | None = None
    mismatch_rate: float = 0.0

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

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "accuracy": self.accuracy,
        }


def same_class(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample: our predicted class is the reference's, or ties with it (binary nets have exactly tied logits)."""
    span = float(np.max(np.abs(reference))) or 1.0
    predicted = ours.argmax(1)
    chosen = reference[np.arange(len(reference)), predicted]
    return chosen >= reference.max(1) - FLOAT_RTOL * span


def compare_layers(name: str, ours: list[tuple[str, np.ndarray]], theirs: list[np.ndarray], detail: str) -> Check:
    """Layer-by-layer equality of integer tensors; names the first layer that differs."""
    samples = len(ours[0][1]) if ours else 0
    for (layer, mine), reference in zip(ours, theirs):
        if mine.shape != reference.shape or not np.array_equal(mine, reference):
            rate = (
                float(np.mean(np.any((mine != reference).reshape(len(mine), -1), axis=1)))
                if mine.shape == reference.shape
                else 1.0
            )
            return Check(name, False, samples, detail, first_difference=layer, mismatch_rate=rate)
    if len(ours) != len(theirs):
        return Check(
            name,
            False,
            samples,
            f"{detail}; {len(ours)} layers against {len(theirs)}",
            first_difference=ours[min(len(ours), len(theirs)) - 1][0] if ours and theirs else "layer count",
        )
    return Check(name, True, samples, detail)


def compare_integer_outputs(name: str, ours: np.ndarray, reference: np.ndarray, detail: str) -> Check:
    mismatch = np.any((ours != reference).reshape(len(ours), -1), axis=1)
    return Check(
        name,
        not mismatch.any(),
        len(ours),
        detail,
        first_difference="network output" if mismatch.any() else None,
        mismatch_rate=float(mismatch.mean()),
    )


def compare_float_outputs(name: str, ours: np.ndarray, reference: np.ndarray, detail: str) -> Check:
    span = float(np.max(np.abs(reference))) or 1.0
    error = np.max(np.abs(ours - reference).reshape(len(ours), -1), axis=1) / span
    bad = error > FLOAT_RTOL
    return Check(
        name,
        not bad.any(),
        len(ours),
        f"{detail}; max relative difference {float(error.max(initial=0.0)):.1e}",
        first_difference="network output" if bad.any() else None,
        mismatch_rate=float(bad.mean()),
    )
