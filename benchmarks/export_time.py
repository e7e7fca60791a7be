"""Brevitas's QONNX export through torch's TorchScript exporter (what the SDK uses) against its dynamo exporter.

The zoo models at w2a2 with their initial weights, 28x28 inputs, behind the SDK's uint8 input scale, exported
by brevitas.export.export_qonnx to a file, dynamo=False against dynamo=True, in one process (imports and the
first trace warmed up once per exporter). Each timing repeats the export until it lasts over 0.5 s; median of
--runs timings per exporter, the exporters taking turns. The graphs both write are checked against the Brevitas
model by every SDK export; here only the time is measured.
Usage: python benchmarks/export_time.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ("tfc", "cnv", "dscnn", "resnet8")
MIN_SECONDS = 0.5


def _seconds_per_export(model, example, path: Path, dynamo: bool) -> float:
    from brevitas.export import export_qonnx

    count, began = 0, time.perf_counter()
    while True:
        with contextlib.redirect_stdout(io.StringIO()):
            export_qonnx(model, input_t=example, export_path=str(path), dynamo=dynamo)
        count += 1
        elapsed = time.perf_counter() - began
        if elapsed > MIN_SECONDS:
            return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import torch

    from sdk.export import _ScaledInput
    from sdk.zoo import build_model, parse_bits

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    print(f"{'model':8} {'TorchScript s':>14} {'dynamo s':>9} {'dynamo / TorchScript':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        for name in MODELS:
            zoo_model = build_model(name, (1, 28, 28), 10, parse_bits("w2a2")).eval()
            net = _ScaledInput(zoo_model).eval()
            example = torch.zeros(1, 784) if zoo_model.flat_input else torch.zeros(1, 1, 28, 28)
            timings = {False: [], True: []}
            for dynamo in (False, True):  # warm-up: imports, first trace
                _seconds_per_export(net, example, path, dynamo)
            for _ in range(args.runs):
                for dynamo in (False, True):
                    timings[dynamo].append(_seconds_per_export(net, example, path, dynamo))
            script, dynamo = statistics.median(timings[False]), statistics.median(timings[True])
            print(f"{name:8} {script:14.3f} {dynamo:9.3f} {dynamo / script:20.1f}x", flush=True)


if __name__ == "__main__":
    main()
