"""Verilator builds at -O0 (what `--rtlsim` compiles for short runs) against -Os (Verilator's default).

A user's small conv net (tests/test_rtlsim.py's) is deployed with --rtlsim once to get its generated RTL; then
some of its layers and its first stitched chain are compiled at both levels into fresh caches (Verilator's
runtime objects and the shared precompiled verilated.h copied in, as in a warm cache) and run on enough random
samples that each run takes over 0.5 s. A third build per design compiles at -O0 without the precompiled
header, as every build did before it. Median of --runs compiles and runs per level, the levels taking turns.
Printed per design: compile seconds, run seconds per million cycles, and the break-even run length in cycles,
above which -Os repays its longer compile (verilator.OPTIMIZE_ABOVE_CYCLES is the SDK's choice).
Usage: python benchmarks/rtl_build_levels.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
LAYERS = ("Thresholding_rtl_0", "ConvolutionInputGenerator_rtl_1", "MVAU_rtl_1")
FIRST_CHAIN = 6  # the net's first chain of RTL layers: the first conv up to the pool


def _designs(package: Path):
    """(name, RtlLayer) for the chosen layers and the first chain, from the package's RTL."""
    from qonnx.core.modelwrapper import ModelWrapper

    from targets.finn import rtl_layer, rtl_stitch

    dataflow = ModelWrapper(str(package / "dataflow_model.onnx"))
    sources = package / "sources"
    designs = [(name, rtl_layer.rtl_layer(dataflow, name, sources / name)) for name in LAYERS]
    chain = rtl_stitch.segments(dataflow)[0][:FIRST_CHAIN]
    top = rtl_stitch.stitch(rtl_stitch.segment_layers(dataflow, chain, sources), 0, package.parent / "tops")
    return [*designs, (f"chain of {len(chain)} layers", top)]


def _time_level(layer, optimize: bool, warm: Path, work: Path, samples: int) -> tuple[float, float, int]:
    """Compile seconds, run seconds and cycles of one fresh build in a copy of the warm cache."""
    from targets.finn import fifo_sizing, rtlsim, streams, verilator

    cache = Path(tempfile.mkdtemp(dir=work))
    shutil.rmtree(cache)
    shutil.copytree(warm, cache)
    build = verilator.build_layer(layer, cache, optimize)
    x = fifo_sizing._sizing_input(layer, samples)
    beats = streams.pack_beats(x.reshape(-1, layer.inp.elements), layer.inp.datatype, build.port_bytes(layer.inp.port))
    result = rtlsim.stream(build, layer, beats, samples * layer.out.beats, idle_limit=100_000)
    shutil.rmtree(cache)
    return build.compile_seconds, result.run_seconds, result.cycles


# level name -> (optimize, with the shared precompiled header)
LEVELS = {"-O0": (False, True), "-Os": (True, True), "-O0 no header": (False, False)}


@contextlib.contextmanager
def _shared_header(enabled: bool):
    """Builds as the SDK makes them, or (disabled) as they were before the shared precompiled header."""
    from targets.finn import verilator_pch

    original = verilator_pch.include_flags
    if not enabled:
        verilator_pch.include_flags = lambda *args: ()
    try:
        yield
    finally:
        verilator_pch.include_flags = original


def _warm_cache(deploy_cache: Path, warm: Path, layer) -> Path:
    """Verilator's runtime objects and the precompiled header at both levels, as a cache has them after use."""
    from targets.finn import verilator

    for level in (False, True):
        verilator.build_layer(layer, deploy_cache, optimize=level)
    warm.mkdir()
    for folder in (*deploy_cache.glob("verilator-runtime-*"), *deploy_cache.glob("verilator-pch-*")):
        shutil.copytree(folder, warm / folder.name)
    return warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20_000, help="samples per timed run")
    args = parser.parse_args()
    began = time.perf_counter()
    from test_rtlsim import _small_cnn

    from sdk import deploy

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SDK_CACHE_DIR"] = str(work / "cache")
        model, example = _small_cnn()
        print("deploying the conv net with --rtlsim (its RTL and a warm runtime) ...", flush=True)
        package = deploy(model, "pynq-z2", example_input=example, out=str(work / "pkg"), samples=8, rtlsim=True).package
        designs = _designs(package)
        warm = _warm_cache(work / "cache" / "verilator", work / "warm", designs[0][1])
        print(f"{'design':34} {'level':13} {'compile s':>10} {'run s':>7} {'s / Mcycle':>11} {'Mcycles':>8}")
        for name, layer in designs:
            timings = {level: [] for level in LEVELS}
            for _ in range(args.runs):
                for level, (optimize, header) in LEVELS.items():
                    with _shared_header(header):
                        timings[level].append(_time_level(layer, optimize, warm, work, args.samples))
            per_level = {}
            for level, runs in timings.items():
                compile_s = statistics.median(r[0] for r in runs)
                run_s = statistics.median(r[1] for r in runs)
                cycles = runs[0][2]
                per_level[level] = (compile_s, run_s / cycles)
                per_mcycle = run_s / cycles * 1e6
                print(f"{name:34} {level:13} {compile_s:10.2f} {run_s:7.2f} {per_mcycle:11.3f} {cycles / 1e6:8.2f}")
            (c0, r0), (c1, r1), (c2, _) = (per_level[level] for level in LEVELS)
            even = (c1 - c0) / (r0 - r1) if r0 > r1 else float("inf")
            ratios = f"-O0/-Os compile {c0 / c1:.2f}x, run per cycle {r0 / r1:.2f}x"
            print(f"{'':34} {ratios}, break-even {even / 1e6:.1f}M cycles; the header saves {c2 / c0:.2f}x at -O0")
    print(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
