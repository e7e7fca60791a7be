"""Two parts of a FINN deploy, each against what it replaced, side by side in one run, on the committed CNV w2a2.

1. Code generation: FINN's PrepareIP for the CNV's accelerator (kv260), its weight and threshold files packed
   by FINN's own pack_innermost_dim_as_hex_string against the SDK's vectorised one (targets/finn/fast_packing.py).
   Each timing repeats PrepareIP until it lasts 0.6 s or more; the figure is seconds per PrepareIP.
2. `sdk deploy --target kv260` as a user runs it (a new process), with the export cached: streamlining done by
   FINN (the streamlined-graph cache emptied before the run) against the streamlined graph read from the cache.

Median of --runs runs per case; the cases take turns run by run, so a change in the machine's load meets both.
Usage: python benchmarks/finn_flow_time.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "tests" / "fixtures" / "cnv_w2a2_digits"
BOARD = "kv260"


def _accelerator(work: Path):
    """The CNV's accelerator as code generation receives it (the FINN steps up to the estimates)."""
    from sdk.boards import get_board
    from sdk.export import export_run
    from targets.finn import steps

    export_run(RUN, work / "cnv.qonnx.onnx")
    cfg = steps.FinnConfig(get_board(BOARD), work / "build")
    return steps.run_steps(steps.load_qonnx(work / "cnv.qonnx.onnx"), cfg, stop="estimate"), cfg


MIN_TIMING_S = 0.6  # each timing repeats PrepareIP until at least this long


def codegen_times(work: Path, runs: int) -> dict[str, list[float]]:
    """Seconds per PrepareIP of the CNV's accelerator, per case and run."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    from targets.finn import fast_packing

    model, cfg = _accelerator(work)
    period = 1000.0 / cfg.clock
    cases = {"FINN's packing": contextlib.nullcontext, "vectorised packing": fast_packing.installed}
    times: dict[str, list[float]] = {label: [] for label in cases}
    for run in range(runs):
        for label, packing in cases.items():
            calls, began = 0, time.perf_counter()
            with packing():
                while calls == 0 or time.perf_counter() - began < MIN_TIMING_S:
                    model.transform(PrepareIP(cfg.board.part, period))
                    calls += 1
            total = time.perf_counter() - began
            times[label].append(total / calls)
            print(f"run {run + 1}/{runs}: {label}: {calls} PrepareIP in {total:.2f} s", flush=True)
    return times


def deploy_times(work: Path, runs: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    cache = work / "cache"
    env = {**os.environ, "SDK_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "sdk", "deploy", "--target", BOARD, "--model", str(RUN), "--json"]

    def deploy(out: Path) -> float:
        began = time.perf_counter()
        done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"deploy exited {done.returncode}: {done.stderr[-2000:]}")
        return seconds

    deploy(work / "warm-up")  # the export, cached for every run below
    cases = {"streamlined by FINN": True, "streamlined graph from the cache": False}
    times: dict[str, list[float]] = {label: [] for label in cases}
    streamline: dict[str, float] = {}
    for run in range(runs):
        for label, empty in cases.items():
            if empty:
                shutil.rmtree(cache / "finn-graphs", ignore_errors=True)
            out = work / f"deploy-{run}-{int(empty)}"
            times[label].append(deploy(out))
            report = json.loads((out / "report.json").read_text())["data"]
            streamline[label] = report["step_seconds"]["streamline"]
            print(f"run {run + 1}/{runs}: sdk deploy --target {BOARD}, {label}: {times[label][-1]:.2f} s", flush=True)
    return times, streamline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SDK_CACHE_DIR"] = str(work / "inproc-cache")
        codegen = codegen_times(work, args.runs)
        deploys, streamline = deploy_times(work, args.runs)
    print(f"\nCNV w2a2 on {BOARD}, median of {args.runs} (s)")
    finn, fast = (statistics.median(v) for v in codegen.values())
    print(f"  PrepareIP: FINN's packing {finn:.3f}, vectorised {fast:.3f}: {finn / fast:.1f}x faster")
    fresh, cached = (statistics.median(v) for v in deploys.values())
    print(f"  sdk deploy: streamlined by FINN {fresh:.2f}, from the cache {cached:.2f}: {fresh / cached:.2f}x faster")
    print("  streamline step of the last deploy: " + ", ".join(f"{k} {v:.3f} s" for k, v in streamline.items()))


if __name__ == "__main__":
    main()
