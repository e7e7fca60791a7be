"""The fuzz table of issue #21: tried | clean | traceback | wrongly accepted | hangs, per reader, for this checkout.

    python tests/fuzz_table.py [--out DIR] [-k PYTEST_EXPRESSION]

runs tests/test_fuzz.py's fuzz tests of the readers the issue names (.onnx through `sdk check`, .tflite, TFLite
Micro, a package's graphs, board YAML, .npz; both the fast sample and the slow twin: the whole suite's counts) with
SDK_FUZZ_TABLE set. The tests then fail no case: each case's outcome is appended to DIR/outcomes.jsonl, and every
case that is not clean is kept in DIR/cases (at most three per distinct failure) with its traceback in DIR/details.
Seeds are fixed, so two checkouts are tried on the same cases (as far as their seed files, written by each
checkout's own exporter and writer, are equal). Prints the table and every distinct failure (its exception and the
innermost frame that raised it); exits 1 when a case was not clean.

This module is imported by the tests for `record` only, so it imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KINDS = ("clean", "traceback", "wrongly accepted", "hang")  # fuzz_children's outcome kinds, in the table's order
READERS = "onnx_through_sdk_check or tflite_golden or tflite_litert or tflite_tflm or package_graphs or board or npz"
KEPT_PER_FAILURE = 3


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def record(folder: Path, reader: str, outcome, case: bytes | None, suffix: str = "") -> None:
    """Append one case's outcome (an fuzz_children.Outcome) to folder/outcomes.jsonl; keep a case that is not clean
    (its bytes in folder/cases, its traceback in folder/details), at most KEPT_PER_FAILURE per distinct failure."""
    signature = outcome.signature
    entry = {"reader": reader, "kind": outcome.kind, "signature": signature, "seconds": round(outcome.seconds, 4)}
    if outcome.kind == "clean":
        entry["accepted"] = outcome.detail == "ok"  # else refused with an SDKError
    line = json.dumps(entry) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "outcomes.jsonl", "a", encoding="utf-8") as fh:  # O_APPEND: workers' lines never interleave
        fh.write(line)
    if outcome.kind == "clean":
        return
    key = f"{_slug(reader)}-{zlib.crc32(signature.encode()):08x}"
    details = folder / "details" / f"{key}.txt"
    details.parent.mkdir(exist_ok=True)
    if not details.exists():
        details.write_text(f"{reader}: {outcome.kind}\n{signature}\n\n{outcome.detail}\n", encoding="utf-8")
    if case is not None:
        cases = folder / "cases"
        cases.mkdir(exist_ok=True)
        kept = len(list(cases.glob(f"{key}-*")))
        if kept < KEPT_PER_FAILURE:
            (cases / f"{key}-{kept}{suffix}").write_bytes(case)


def table(outcomes: list[dict]) -> str:
    """The markdown table: one row per reader, and the total."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for entry in outcomes:
        counts[entry["reader"]][entry["kind"]] += 1
    rows = ["| test | tried | clean | traceback | wrongly accepted | hangs |", "|---|---:|---:|---:|---:|---:|"]
    total: Counter = Counter()
    for reader in sorted(counts):
        total.update(counts[reader])
        rows.append(
            f"| {reader} | {sum(counts[reader].values())} | " + " | ".join(str(counts[reader][k]) for k in KINDS) + " |"
        )
    rows.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in KINDS) + " |")
    return "\n".join(rows)


def failures(outcomes: list[dict], folder: Path) -> str:
    """Every distinct failure: reader, kind, how many cases, the signature and a kept reproducer."""
    seen = Counter((e["reader"], e["kind"], e["signature"]) for e in outcomes if e["kind"] != "clean")
    rows = ["| test | kind | cases | failure (exception, innermost frame) | reproducer |", "|---|---|---:|---|---|"]
    for (reader, kind, signature), count in sorted(seen.items(), key=lambda item: (item[0][0], -item[1])):
        key = f"{_slug(reader)}-{zlib.crc32(signature.encode()):08x}"
        kept = sorted((folder / "cases").glob(f"{key}-*"))
        where = str(kept[0]) if kept else str(folder / "details" / f"{key}.txt")
        rows.append(f"| {reader} | {kind} | {count} | {signature.replace('|', '/')} | {where} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for outcomes and reproducers (default: a new temporary one)")
    parser.add_argument("-k", default=READERS, help="which fuzz tests (a pytest -k expression)")
    args = parser.parse_args(argv)
    out = (args.out or Path(tempfile.mkdtemp(prefix="fuzz-table-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "outcomes.jsonl").unlink(missing_ok=True)
    env = {
        **os.environ,
        "SDK_FUZZ_TABLE": str(out),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider", "-k", args.k]
    subprocess.run(command, cwd=ROOT, env=env, check=False)
    seconds = time.monotonic() - started
    lines = (
        (out / "outcomes.jsonl").read_text(encoding="utf-8").splitlines() if (out / "outcomes.jsonl").exists() else []
    )
    outcomes = [json.loads(line) for line in lines]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"\nfuzz table of {ROOT} at {commit.strip() or '?'} ({seconds:.0f} s; cases kept in {out})\n")
    print(table(outcomes))
    if any(e["kind"] != "clean" for e in outcomes):
        print("\ndistinct failures\n")
        print(failures(outcomes, out))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
