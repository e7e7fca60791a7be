"""The real benchmark set: CNV-style net, w2a2, on Fashion-MNIST (60k train / 10k test).

Needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist);
nothing is downloaded at run time. Prints test accuracy and training time.
For reference, a quantized LeNet-class net reaches about 89-90% on this set.
Usage: python benchmarks/train_fashion_mnist.py [--epochs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sdk import ProgressBars
from sdk.data import load_dataset
from sdk.qat import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--bits", default="w2a2")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fashion_mnist.json"))
    args = parser.parse_args()
    config = TrainConfig(
        model="cnv",
        bits=args.bits,
        dataset="fashion-mnist",
        epochs=args.epochs,
        batch_size=128,
        lr=0.005,
        threads=args.threads,
    )
    data = load_dataset(config.dataset, seed=config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, tmp, data=data, progress=ProgressBars())
    row = {
        "model": "cnv",
        "bits": args.bits,
        "dataset": "fashion-mnist",
        "train": len(data.x_train),
        "val": len(data.x_val),
        "test": len(data.x_test),
        "epochs": args.epochs,
        "test_accuracy": result.test_accuracy,
        "seconds": result.seconds,
        "threads": args.threads,
    }
    print(
        f"cnv {args.bits} on Fashion-MNIST ({row['train']} train / {row['test']} test, {args.epochs} epochs): "
        f"test accuracy {result.test_accuracy:.2%}, training {result.seconds / 60:.1f} min"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
