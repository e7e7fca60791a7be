"""The main job on the embedded default (`make demo`): no downloads, no boards.

Trains TFC w2a2 on scikit-learn's digits (cached in demo-out/ after the first
run), exports it to QONNX checked against Brevitas, and prints a summary with
the boards it can go to.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import sdk

OUT = Path("demo-out")
CONFIG = sdk.TrainConfig(model="tfc", bits="w2a2", dataset="digits")


def cached_run(run_dir: Path) -> bool:
    """A finished run with the same config is reused instead of retrained."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file() or not (run_dir / "checkpoint.pt").is_file():
        return False
    from dataclasses import asdict

    return json.loads(metrics.read_text()).get("config") == asdict(CONFIG)


def main() -> int:
    console = Console()
    run_dir = OUT / f"run-{CONFIG.model}-{CONFIG.bits}"
    try:
        if cached_run(run_dir):
            metrics = json.loads((run_dir / "metrics.json").read_text())
            console.print(f"[dim]reusing trained run {run_dir} (delete it to retrain)[/]")
            accuracy, seconds = metrics["test_accuracy"], metrics["seconds"]
        else:
            result = sdk.train(CONFIG, run_dir)
            accuracy, seconds = result.test_accuracy, result.seconds
        exported = sdk.export_run(run_dir, OUT / "tfc_w2a2.qonnx.onnx")
        boards = sdk.load_boards()
    except sdk.SDKError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    check = exported.card["check"]
    table = Table(title="demo: TFC w2a2 on digits", show_header=False)
    table.add_row("test accuracy", f"{accuracy:.2%} ({len(exported.card['labels'])} classes, trained in {seconds:.0f} s)")
    table.add_row("QONNX model", f"{exported.onnx_path} + {exported.card_path.name}")
    table.add_row("export check", f"qonnx == Brevitas on {check['samples']} test samples (max rel. diff {check['max_rel_diff']:.1e})")
    kinds = {}
    for board in boards.values():
        kinds.setdefault(board.kind, []).append(board.name)
    table.add_row("boards", "; ".join(f"{k}: {len(v)}" for k, v in kinds.items()) + " (sdk boards)")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
