"""Wall time of `sdk deploy` as a user runs it: a new process each time, on the committed TFC w2a2 run.

Targets: tflite, pynq-z2, and the demo's four boards in one deploy. Each is timed with the SDK cache warm
(the second and later deploys of a checkpoint, the usual case) and with it off (SDK_CACHE_DIR=off: the
Brevitas export, the data set's split and FINN's streamlining every time, as before the caches). Median of
--runs runs per case; the cases take turns run by run, so a change in the machine's load meets them all. The
per-step times of the last run come from its report.json (deploy_steps, then deploy_seconds: other, total).
Then `sdk simulate` of a pynq-z2 and a tflite package on 10,000 MNIST-size samples (a TFC at 28x28 trained
for 2 epochs here, random pixel images as the samples): the whole command, reference model included.
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
SIMULATE_SAMPLES = 10_000
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


def _sdk(*args: str, env: dict | None = None) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sdk", *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"sdk {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def simulate_times(work: Path, runs: int) -> dict[str, list[float]]:
    """`sdk simulate` of an MNIST-size TFC's pynq-z2 and tflite packages on 10,000 samples, `runs` times each."""
    import numpy as np

    env = {**os.environ, "SDK_CACHE_DIR": str(work / "cache")}
    run = work / "tfc-784"
    _sdk("train", "tfc", "--image-size", "28", "--epochs", "2", "--out", str(run), env=env)
    samples = work / "mnist-size-10k.npz"
    rng = np.random.default_rng(0)
    np.savez(samples, x=rng.integers(0, 256, size=(SIMULATE_SAMPLES, 28, 28), dtype=np.uint8))
    times: dict[str, list[float]] = {}
    for target in ("pynq-z2", "tflite"):
        _sdk("deploy", "--target", target, "--model", str(run), "--out", str(work / f"sim-{target}"), env=env)
    for attempt in range(runs):
        for target in ("pynq-z2", "tflite"):
            seconds = _sdk("simulate", str(work / f"sim-{target}"), "--data", str(samples), "--json", env=env)
            times.setdefault(target, []).append(seconds)
            print(f"run {attempt + 1}/{runs}: sdk simulate {target}, {SIMULATE_SAMPLES:,} samples: {seconds:.2f} s")
    return times


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
        data = json.loads((last / "report.json").read_text())["data"]
        steps = [*data["deploy_steps"], *({"step": k, "seconds": v} for k, v in data["deploy_seconds"].items())]
        simulated = simulate_times(work, args.runs)
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(f"\nsdk deploy wall time, median of {args.runs} (s)")
    print(f"{'target':28} {'cache warm':>11} {'cache off':>11} {'off / warm':>11}")
    for label in TARGETS:
        warm, off = (statistics.median(times[(label, mode)]) for mode in ("cache warm", "cache off"))
        print(f"{label:28} {warm:11.2f} {off:11.2f} {off / warm:10.2f}x")
    print("\nsteps of the last tflite deploy (cache warm), s:")
    for step in steps:
        print(f"  {step['step']:50} {step['seconds']:.3f}")
    print(f"\nsdk simulate, {SIMULATE_SAMPLES:,} MNIST-size samples (TFC 784-64-64-64-10), median of {args.runs} (s)")
    for target, seconds in simulated.items():
        print(f"  {target:26} {statistics.median(seconds):11.2f}")


if __name__ == "__main__":
    main()
