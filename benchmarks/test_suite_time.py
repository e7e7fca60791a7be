"""Wall time of `make test` (what CI runs) at this commit against a reference commit, on this machine, turn by turn.

The reference defaults to 36f5bcf, the last commit whose suite was timed before the speed issue asked for half
its time (597 tests in one process). Each commit is cloned from this repository into a fresh folder and
installed once (`make install`, not timed: a clean clone pays it alike at both commits); then `make test` runs
--runs times at each, with an empty cache folder each time, the two taking turns and the order flipping each
round, so that a change in the machine's load meets both. Reports every run, the medians and their ratio; a run
that fails stops the benchmark (a failing suite's time means nothing).
Usage: python benchmarks/test_suite_time.py [--reference 36f5bcf] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "test_suite_time.json"
PASSED = re.compile(r"(\d+) passed")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def checkout(commit: str, folder: Path) -> Path:
    """A clone of this repository at `commit`, installed as its own Makefile installs it."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    _git("checkout", "-q", commit, cwd=folder)
    done = subprocess.run(["make", "install"], cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"make install at {commit} exited {done.returncode}: {done.stderr[-2000:]}")
    return folder


def make_test(folder: Path, log: Path) -> tuple[float, int]:
    """(seconds, tests passed) of one `make test` in `folder`, its output kept in `log`. Each run gets an empty
    cache folder (XDG_CACHE_HOME), as on a fresh machine: no run reuses what an earlier one cached."""
    cache = log.with_suffix(".cache")
    env = {k: v for k, v in os.environ.items() if k not in ("SDK_CACHE_DIR", "VIRTUAL_ENV")}
    env["XDG_CACHE_HOME"] = str(cache)
    began = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(["make", "test"], cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - began
    shutil.rmtree(cache, ignore_errors=True)
    text = log.read_text()
    if done.returncode != 0:
        raise SystemExit(f"make test in {folder} exited {done.returncode}; see {log}:\n{text[-2000:]}")
    found = PASSED.findall(text)
    return seconds, int(found[-1]) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="36f5bcf", help="the commit to compare with (default: 36f5bcf)")
    parser.add_argument("--runs", type=int, default=3, help="`make test` runs per commit (default: 3)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    head = _git("rev-parse", "--short", "HEAD")
    reference = _git("rev-parse", "--short", args.reference)
    work = args.keep or Path(tempfile.mkdtemp(prefix="sdk-suite-time-"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    try:
        console.print(f"installing {reference} and {head} in {work} (not timed)")
        folders = {reference: checkout(reference, work / reference), head: checkout(head, work / head)}
        times: dict[str, list[float]] = {reference: [], head: []}
        tests: dict[str, int] = {}
        columns = (TextColumn("[bold]make test"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("runs", total=2 * args.runs)
            for round_ in range(args.runs):
                order = (reference, head) if round_ % 2 == 0 else (head, reference)
                for commit in order:
                    seconds, passed = make_test(folders[commit], work / f"{commit}-run{round_ + 1}.log")
                    times[commit].append(seconds)
                    tests[commit] = passed
                    bar.console.print(f"round {round_ + 1}: {commit} {seconds:7.1f} s, {passed} passed")
                    bar.advance(task)
        medians = {commit: statistics.median(values) for commit, values in times.items()}
        ratio = medians[head] / medians[reference]
        print(f"{'commit':<10} {'tests':>6} {'median s':>9}  runs (s)")
        for commit in (reference, head):
            runs = ", ".join(f"{s:.0f}" for s in times[commit])
            print(f"{commit:<10} {tests[commit]:>6} {medians[commit]:>9.1f}  {runs}")
        print(f"{head} takes {ratio:.2f}x the time of {reference} ({1 / ratio:.2f}x faster)")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"times": times, "tests": tests, "medians": medians, "ratio": ratio}, indent=1))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
