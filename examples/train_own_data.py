"""Train on your own data: an .npz file with arrays x (images), y (labels) and optional labels (names).

x may be uint8 pixels or floats in [0, 1], shaped (N, H, W), (N, C, H, W) or (N, F).
Without --data this script writes a small example file of its own (three
synthetic stroke patterns) so that it runs anywhere, then trains and exports.

    python examples/train_own_data.py --data my_sensor_frames.npz --model cnv --out build/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import sdk


def make_example_npz(path: Path, samples: int = 600, seed: int = 0) -> Path:
    """Three classes of 8x8 frames: a horizontal stroke, a vertical stroke, a diagonal; with noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (samples, 8, 8)).astype(np.uint8)
    y = np.arange(samples) % 3
    for i, label in enumerate(y):
        pos = rng.integers(1, 7)
        if label == 0:
            x[i, pos, 1:7] = 230
        elif label == 1:
            x[i, 1:7, pos] = 230
        else:
            x[i, np.arange(8), np.arange(8)] = 230
    np.savez(path, x=x, y=y, labels=np.array(["horizontal", "vertical", "diagonal"]))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help=".npz with x, y (and labels); default: a generated example")
    parser.add_argument("--model", default="tfc")
    parser.add_argument("--bits", default="w2a2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("build-own"))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    data_path = args.data or make_example_npz(args.out / "example_data.npz")
    try:
        run = sdk.train(
            sdk.TrainConfig(model=args.model, bits=args.bits, dataset=str(data_path), epochs=args.epochs),
            args.out / "run",
            progress=sdk.ProgressBars(),
        )
        exported = sdk.export_run(run.run_dir, args.out / "model.qonnx.onnx")
    except sdk.SDKError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"classes {exported.card['labels']}; test accuracy {run.test_accuracy:.2%}; QONNX: {exported.onnx_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
