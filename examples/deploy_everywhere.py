"""Deploy one trained model to an FPGA, a CPU, an NPU and a microcontroller, and compare them.

What an embedded engineer's build script runs to choose a target: one package
per board under build/<board>/, one comparison table, and an exit code of
0 (all verified), 1 (a verification failed) or 2 (a user error on a board,
e.g. the model does not fit it; the other boards still deploy).

    python examples/deploy_everywhere.py --model build/run
    python examples/deploy_everywhere.py --model build/run --targets tflite,nrf52840-dk --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import sdk

DEFAULT_TARGETS = "pynq-z2,tflite,ethos-u55-128,stm32f746g-disco"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="training run folder (the TFLite targets need its checkpoint)")
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help="comma-separated boards (sdk boards)")
    parser.add_argument("--samples", type=int, default=100, help="verification samples per board")
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = parser.parse_args()
    try:
        results = sdk.deploy_many(
            sdk.DeployConfig(target=args.targets, model=args.model, out=str(args.out), samples=args.samples),
            progress=None if args.json else sdk.ProgressBars(),
            per_board_folders=True,
        )
    except sdk.SDKError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([dict(zip(sdk.COMPARISON_COLUMNS, row)) for row in sdk.comparison_rows(results)], indent=2))
    else:
        sdk.print_comparison(results)
    return max(r.exit_code for r in results)


if __name__ == "__main__":
    sys.exit(main())
