"""`--fit` against FINN's own SetFolding, on the same model, board and utilisation cap.

A patient FINN user sweeps SetFolding's target (frames/s) and mvau_wwidth_max
and keeps the fastest folding whose estimated resources stay under the cap.
This script does that sweep exhaustively over a grid, then runs the SDK's fit
search once, and prints both side by side (FINN's estimates for both).
Usage: python benchmarks/folding_vs_finn.py [--max-util 0.8]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from sdk.boards import get_board
from sdk.export import export_run
from sdk.qat import TrainConfig, train
from targets.finn import folding, steps
from targets.finn.estimate import estimate_network

CASES = [("tfc", "pynq-z2"), ("tfc", "zcu104"), ("cnv", "pynq-z2"), ("cnv", "zcu104")]
FPS_GRID = np.logspace(2, 8, 25)  # 100 .. 100M frames/s, 4 points per decade
WWIDTH_GRID = [36, 80, 160, 1024]


def fits(est, board, cap) -> bool:
    return all(est.totals[k] <= cap * board.capacity[k] for k in ("lut", "bram18", "uram", "dsp"))


def prepared(model_path: Path, board, workdir: Path) -> ModelWrapper:
    cfg = steps.FinnConfig(board, workdir, fps=1.0)
    return steps.run_steps(steps.load_qonnx(model_path), cfg, stop="minimize_bit_widths_after_folding")


def finn_sweep(base: ModelWrapper, board, cap: float) -> tuple[dict | None, int]:
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    best, tried = None, 0
    for wwidth in WWIDTH_GRID:
        for fps in FPS_GRID:
            model = ModelWrapper(copy.deepcopy(base.model))
            cycles = max(1, int(board.clock_mhz * 1e6 / fps))
            model = model.transform(
                SetFolding(target_cycles_per_frame=cycles, mvau_wwidth_max=wwidth, two_pass_relaxation=True)
            )
            est = estimate_network(model, board)
            tried += 1
            if fits(est, board, cap) and (best is None or est.fps > best["fps"]):
                best = {
                    "fps": est.fps,
                    "target_fps": float(fps),
                    "mvau_wwidth_max": wwidth,
                    "utilisation": est.utilisation,
                }
    return best, tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-util", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/folding_vs_finn.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exported = {}
        for model in sorted({m for m, _ in CASES}):
            train(TrainConfig(model=model, bits="w2a2"), tmp / model, progress=False)
            exported[model] = export_run(tmp / model, tmp / f"{model}.onnx").onnx_path
        for model, board_name in CASES:
            board = get_board(board_name)
            base = prepared(exported[model], board, tmp / f"{model}-{board_name}")
            started = time.perf_counter()
            best, tried = finn_sweep(base, board, args.max_util)
            sweep_s = time.perf_counter() - started
            ours_model = ModelWrapper(copy.deepcopy(base.model))
            started = time.perf_counter()
            folding.fit_folding(ours_model, board, args.max_util)
            fit_s = time.perf_counter() - started
            ours = estimate_network(ours_model, board)
            rows.append(
                {
                    "model": f"{model} w2a2",
                    "board": board_name,
                    "cap": args.max_util,
                    "finn_best_fps": best and best["fps"],
                    "finn_best_point": best and {k: best[k] for k in ("target_fps", "mvau_wwidth_max")},
                    "finn_util": best and best["utilisation"],
                    "finn_configs_tried": tried,
                    "finn_sweep_s": sweep_s,
                    "sdk_fit_fps": ours.fps,
                    "sdk_util": ours.utilisation,
                    "sdk_fit_s": fit_s,
                    "ratio": ours.fps / best["fps"] if best else None,
                }
            )
    header = (
        f"{'model':9s} {'board':8s} {'FINN best fps':>14s} {'LUT/BRAM %':>11s} "
        f"{'SDK fit fps':>13s} {'LUT/BRAM %':>11s} {'ratio':>6s}"
    )
    print(header)
    for r in rows:
        fu, su = r["finn_util"] or {}, r["sdk_util"]
        print(
            f"{r['model']:9s} {r['board']:8s} {r['finn_best_fps'] or 0:>14,.0f} "
            f"{fu.get('lut', 0):>5.0%}/{fu.get('bram18', 0):<5.0%} "
            f"{r['sdk_fit_fps']:>13,.0f} {su['lut']:>5.0%}/{su['bram18']:<5.0%} {r['ratio'] or float('nan'):>6.2f}x"
            f"   (FINN: {r['finn_configs_tried']} SetFolding runs, {r['finn_sweep_s']:.1f} s; "
            f"fit {r['sdk_fit_s']:.1f} s)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
