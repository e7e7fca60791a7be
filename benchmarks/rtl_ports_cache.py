"""Reading the ports of a `--rtlsim` deploy's RTL layers (what stitching needs): in Verilator, as every deploy did
before the ports were kept with the builds, against the build cache, as a later deploy reads them now.

A user's small conv net (tests/test_rtlsim.py's) is deployed with --rtlsim once, which fills the build cache; then
the ports of each of its RTL layers are read both ways, nothing remembered in memory between reads (the in-process
memo cleared), each timing repeated until it passes 0.5 s. Median of --runs per way, the two taking turns.
Usage: python benchmarks/rtl_ports_cache.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MIN_TIMING_S = 0.5


def _per_read(layers, cache: Path | None) -> float:
    """Seconds per read of every layer's ports, reads repeated until the timing passes MIN_TIMING_S."""
    from targets.finn import verilator

    reads, began = 0, time.perf_counter()
    while reads == 0 or time.perf_counter() - began < MIN_TIMING_S:
        for layer in layers:
            verilator._elaborated_ports.cache_clear()  # as a new process: nothing remembered
            verilator.layer_ports(layer, cache)
        reads += 1
    return (time.perf_counter() - began) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from qonnx.core.modelwrapper import ModelWrapper
    from test_rtlsim import _small_cnn

    from sdk import deploy
    from targets.finn import rtl_layer, verilator
    from targets.finn.rtl_layer import SUPPORTED_RTL_OPS

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SDK_CACHE_DIR"] = str(work / "cache")
        model, example = _small_cnn()
        print("deploying the conv net with --rtlsim (fills the build cache) ...", flush=True)
        package = deploy(model, "pynq-z2", example_input=example, out=str(work / "pkg"), samples=8, rtlsim=True).package
        dataflow = ModelWrapper(str(package / "dataflow_model.onnx"))
        nodes = [node for node in dataflow.graph.node if node.op_type in SUPPORTED_RTL_OPS]
        layers = [rtl_layer.rtl_layer(dataflow, node, package / "sources" / node.name) for node in nodes]
        cache = work / "cache" / "verilator"
        times: dict[str, list[float]] = {"Verilator (before)": [], "build cache (now)": []}
        cached_runs = 0  # Verilator runs while reading from the cache: none expected
        for run in range(args.runs):
            times["Verilator (before)"].append(_per_read(layers, None))
            runs_before = verilator.port_runs()
            times["build cache (now)"].append(_per_read(layers, cache))
            cached_runs += verilator.port_runs() - runs_before
            print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.4f} s" for k, v in times.items()))
    print(f"\nports of the {len(layers)} RTL layers of a --rtlsim deploy, median of {args.runs} (s per deploy)")
    for way, seconds in times.items():
        print(f"  {way:22} {statistics.median(seconds):10.4f}")
    before, now = (statistics.median(v) for v in times.values())
    print(f"  saved per deploy: {before - now:.2f} s ({before / now:,.0f}x)")
    print(f"  Verilator runs while reading from the cache: {cached_runs}")


if __name__ == "__main__":
    main()
