"""Train a zoo model on the embedded digits data and export it to QONNX.

What an embedded engineer's build script does before any board is involved:
the same seed gives the same model, and the export is checked against the
trained model before it is written.

    python examples/train_and_export_digits.py --model tfc --bits w2a2 --out build/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sdk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tfc", help="zoo model (sdk models)")
    parser.add_argument("--bits", default="w2a2")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--min-accuracy", type=float, default=0.0, help="fail the build below this test accuracy")
    parser.add_argument("--out", type=Path, default=Path("build"))
    args = parser.parse_args()

    try:
        run = sdk.train(
            sdk.TrainConfig(model=args.model, bits=args.bits, dataset="digits", epochs=args.epochs),
            args.out / "run",
            progress=sdk.ProgressBars(),
        )
        exported = sdk.export_run(run.run_dir, args.out / f"{args.model}_{args.bits}.qonnx.onnx")
    except sdk.SDKError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"test accuracy {run.test_accuracy:.2%}; QONNX: {exported.onnx_path} "
        f"(matches Brevitas on {exported.card['check']['samples']} samples)"
    )
    if run.test_accuracy < args.min_accuracy:
        print(f"accuracy below the required {args.min_accuracy:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
