"""Wall time of `sdk deploy` as a user runs it: a new process each time, on the committed TFC w2a2 run.

Targets: tflite, pynq-z2, and the demo's four boards in one deploy. Each is timed with the export cache warm
(the second and later deploys of a checkpoint, the usual case) and with it off (SDK_CACHE_DIR=off: the
Brevitas export every time, as before the cache). Median of --runs runs per case; the cases take turns
run by run, so a change in the machine's load meets them all. The per-step times of the last run come from
its report.json (deploy_steps).
Usage: python benchmarks/deploy_time.py [--runs 3]
"""

from __future__ import annotations

import argparse
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
RUN = ROOT / "tests" / "fixtures" / "tfc_w2a2_digits"
TARGETS = {
    "tflite": "tflite",
    "pynq-z2": "pynq-z2",
    "four boards (the demo's)": "pynq-z2,tflite,ethos-u55-128,stm32f746g-disco",
}


def _deploy(target: str, out: Path, cache: str) -> float:
    env = {**os.environ, "SDK_CACHE_DIR": cache}
    command = [sys.executable, "-m", "sdk", "deploy", "--target", target, "--model", str(RUN), "--out", str(out)]
    began = time.perf_counter()
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"deploy to {target} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdk-bench-deploy-") as tmp:
        work, cache = Path(tmp), str(Path(tmp) / "cache")
        _deploy("tflite", work / "warm-up", cache)  # fills the export cache once
        times: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs):
            for label, target in TARGETS.items():
                for mode, setting in (("cache warm", cache), ("cache off", "off")):
                    out = work / f"{run}-{mode}-{target.replace(',', '_')}"
                    times.setdefault((label, mode), []).append(_deploy(target, out, setting))
                    print(f"run {run + 1}/{args.runs}: {label}, {mode}: {times[(label, mode)][-1]:.2f} s", flush=True)
        last = work / f"{args.runs - 1}-cache warm-tflite"
        steps = json.loads((last / "report.json").read_text())["data"]["deploy_steps"]
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(f"\nsdk deploy wall time, median of {args.runs} (s)")
    print(f"{'target':28} {'cache warm':>11} {'cache off':>11} {'off / warm':>11}")
    for label in TARGETS:
        warm, off = (statistics.median(times[(label, mode)]) for mode in ("cache warm", "cache off"))
        print(f"{label:28} {warm:11.2f} {off:11.2f} {off / warm:10.2f}x")
    print("\nsteps of the last tflite deploy (cache warm), s:")
    for step in steps:
        print(f"  {step['step']:50} {step['seconds']:.3f}")


if __name__ == "__main__":
    main()
