"""The main job on the embedded default (`make demo`): no downloads, no boards.

Trains TFC w2a2 on scikit-learn's digits (cached in demo-out/ after the first
run), deploys it to the PYNQ-Z2 through FINN with the bit-exact simulation as
proof and prints its summary (verification, fps, latency, utilisation, what
needs Vivado), then deploys the same model to LiteRT, an Ethos-U55 (Vela) and
a Cortex-M7 (TFLite Micro) and ends with one comparison table.

The libraries' own warnings and log lines (Brevitas, qonnx, FINN, LiteRT ...)
are hidden; `--verbose` shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

import sdk

OUT = Path("demo-out")
CONFIG = sdk.TrainConfig(model="tfc", bits="w2a2", dataset="digits")
TARGETS = "pynq-z2,tflite,ethos-u55-128,stm32f746g-disco"


def cached_run(run_dir: Path) -> bool:
    """A finished run with the same config is reused instead of retrained."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file() or not (run_dir / "checkpoint.pt").is_file():
        return False
    from dataclasses import asdict

    return json.loads(metrics.read_text()).get("config") == asdict(CONFIG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' warnings and log lines")
    args = parser.parse_args(argv)
    with sdk.quiet_libraries(verbose=args.verbose):
        return run_demo(Console())


def run_demo(console: Console) -> int:
    """Train (or reuse), deploy to the four boards, print the PYNQ-Z2 summary and the comparison."""
    run_dir = OUT / f"run-{CONFIG.model}-{CONFIG.bits}"
    try:
        if cached_run(run_dir):
            metrics = json.loads((run_dir / "metrics.json").read_text())
            console.print(f"[dim]reusing trained run {run_dir} (delete it to retrain)[/]")
            accuracy, seconds = metrics["test_accuracy"], metrics["seconds"]
        else:
            with sdk.hush_stdout():
                result = sdk.train(CONFIG, run_dir, progress=sdk.ProgressBars())
            accuracy, seconds = result.test_accuracy, result.seconds
        with sdk.hush_stdout():
            results = sdk.deploy_many(
                sdk.DeployConfig(target=TARGETS, model=str(run_dir), out=str(OUT)), progress=sdk.ProgressBars()
            )
    except sdk.SDKError as exc:
        console.print(Text(str(exc), style="red"))  # Text: brackets in the message are not markup
        return exc.exit_code
    result = results[0]
    if result.error:
        console.print(f"[red]{result.error}[/]")
        return 2
    s = result.summary
    table = Table(title="demo: TFC w2a2 on digits -> PYNQ-Z2", show_header=False)
    table.add_row("QAT accuracy, whole digits test split", f"{accuracy:.2%} (trained in {seconds:.0f} s)")
    table.add_row(
        "verification",
        ("[green]PASSED[/]" if result.verified else "[red]FAILED[/]")
        + " (bit-exact simulation vs FINN and the QAT model)",
    )
    table.add_row("throughput", f"{s['fps']:,.0f} frames/s ({s['folding']})")
    table.add_row("latency", f"{s['latency_us']:.2f} us")
    table.add_row("utilisation", ", ".join(f"{k.upper()} {v:.1%}" for k, v in s["utilisation"].items()))
    table.add_row("package", str(result.package))
    console.print(table)
    for message in result.messages:
        console.print(f"[yellow]note:[/] {message}")
    sdk.print_comparison(results)
    return max(r.exit_code for r in results)


if __name__ == "__main__":
    sys.exit(main())
