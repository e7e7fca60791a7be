"""Deploy a trained model to an FPGA board and fail the build when verification fails.

What an embedded engineer's CI runs after training: the package lands in
build/<board>/, and the exit code is 0 (verified), 1 (the simulation of the
accelerator differs from the QAT model) or 2 (a user error, e.g. unknown board).

    python examples/deploy_fpga.py --model build/run --board pynq-z2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sdk
from sdk.deployment import DeployConfig, deploy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="training run folder or QONNX file")
    parser.add_argument("--board", default="pynq-z2")
    parser.add_argument("--max-util", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=Path("build"))
    args = parser.parse_args()
    try:
        result = deploy(
            DeployConfig(
                target=args.board, model=args.model, out=str(args.out / args.board), options={"max_util": args.max_util}
            )
        )
    except sdk.SDKError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not result.verified:
        print(f"verification FAILED for {args.board}: see {result.package}/report.md", file=sys.stderr)
        return 1
    s = result.summary
    print(
        f"{args.board}: verified; {s['fps']:,.0f} fps, latency {s['latency_us']:.2f} us, "
        f"LUT {s['utilisation']['lut']:.0%}; package {result.package}"
    )
    for message in result.messages:
        print(f"note: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
