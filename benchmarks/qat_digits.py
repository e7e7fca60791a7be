"""Quality bar on the embedded default: accuracy and training time on scikit-learn's digits.

Trains TFC and the CNV-style net at w2a2 with the SDK defaults, one after the
other in this process, and prints test accuracy and wall time of each.
Usage: python benchmarks/qat_digits.py [--out benchmarks/results/qat_digits.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sdk import ProgressBars
from sdk.qat import TrainConfig, train

CASES = [("tfc", "w2a2", 0.95), ("cnv", "w2a2", 0.97)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/qat_digits.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, bits, bar in CASES:
            result = train(TrainConfig(model=model, bits=bits), Path(tmp) / model, progress=ProgressBars())
            rows.append(
                {
                    "model": model,
                    "bits": bits,
                    "test_accuracy": result.test_accuracy,
                    "seconds": result.seconds,
                    "bar": bar,
                    "meets_bar": result.test_accuracy >= bar and result.seconds < 180,
                }
            )
    for r in rows:
        print(
            f"{r['model']:4s} {r['bits']}  test accuracy {r['test_accuracy']:.2%}  train time {r['seconds']:.1f} s  "
            f"(bar: >= {r['bar']:.0%} in < 180 s: {'met' if r['meets_bar'] else 'NOT met'})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
