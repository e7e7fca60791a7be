"""`--fit` against the best point of a wide FINN SetFolding sweep, same model, board and utilisation cap.

A patient FINN user sweeps SetFolding's target (frames/s) and mvau_wwidth_max
and keeps the fastest folding whose estimated resources stay under the cap.
This script does that sweep for each model and board:
- target fps: 1e5 .. 2e7 log-spaced (16 per decade), plus every cycle count a
  layer can take in that range (the points where SetFolding's choice changes),
  extended down to 1e3 fps (a CNV at 100 MHz cannot reach 1e5);
- mvau_wwidth_max: every value in 16 .. 1024 that changes some layer's SIMD
  cap (the same foldings as sweeping every integer);
then runs the SDK's fit once, and prints both side by side (FINN's estimates
for both, after the deploy's minimise-bit-widths step). Weights are random
(untrained): resources and cycles do not depend on training.
Last, on a small MLP (48-12-8-10) at several caps, the exact optimum found by
trying every combination of every layer's (SIMD, PE, memory and multiplier
style), against the fit and the same FINN sweep.

Usage: .venv/bin/python benchmarks/folding_vs_finn.py [--max-util 0.8] [--models tfc,cnv] [--boards pynq-z2,...]
       [--exact-caps 0.025,0.04,...]   (--models "" runs only the exact part)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sdk.boards import get_board
from sdk.export import export_module
from sdk.zoo import build_model, parse_bits
from targets.finn import folding, steps
from targets.finn.estimate import estimate_network

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from folding_models import SMALL_MLP, every_option, exhaustive_optimum, mvau_chain  # noqa: E402

MODELS = {"tfc": (1, 28, 28), "cnv": (3, 32, 32)}  # MNIST-size TFC (784-64-64-64-10), CIFAR-size CNV
BOARDS = ["pynq-z2", "zcu104", "kv260"]
FPS_RANGE = (1e5, 2e7)  # the sweep's target range
FPS_FLOOR = 1e3  # extended down to here
PER_DECADE = 16
WWIDTH_RANGE = (16, 1024)
KEYS = ("lut", "bram18", "uram", "dsp")


def log(message: str) -> None:
    print(message, flush=True)


def fits(est, board, cap: float) -> bool:
    return all(est.totals[k] <= cap * board.capacity[k] + 1e-9 for k in KEYS)


def export(model: str, folder: Path) -> Path:
    """A zoo model with random weights (seed 0), exported to QONNX."""
    import torch

    torch.manual_seed(0)
    shape = MODELS[model]
    net = build_model(model, shape, 10, parse_bits("w2a2"))
    example = (1, int(np.prod(shape))) if model == "tfc" else (1, *shape)
    return export_module(net, example, folder / f"{model}.onnx").onnx_path


def prepared(model_path: Path, board, workdir: Path) -> ModelWrapper:
    """The deploy's steps up to folding (specialised layers, minimised bit widths)."""
    cfg = steps.FinnConfig(board, workdir)
    return steps.run_steps(steps.load_qonnx(model_path), cfg, stop="minimize_bit_widths")


def wwidth_values(base: ModelWrapper) -> list[int]:
    """Every mvau_wwidth_max in range that changes some MVAU's SIMD cap (SIMD * weight bits <= it)."""
    values = {WWIDTH_RANGE[0], WWIDTH_RANGE[1]}
    for node in base.graph.node:
        if node.op_type.startswith("MVAU"):
            op = getCustomOp(node)
            bits = op.get_input_datatype(1).bitwidth()
            values |= {d * bits for d in folding._divisors(op.get_nodeattr("MW"))}
    return sorted(v for v in values if WWIDTH_RANGE[0] <= v <= WWIDTH_RANGE[1])


def cycle_targets(base: ModelWrapper, clock_mhz: float) -> list[int]:
    """Log-spaced fps targets from FPS_FLOOR up, plus every cycle count a layer can take within FPS_RANGE."""
    hz = clock_mhz * 1e6
    decades = np.log10(FPS_RANGE[1] / FPS_FLOOR)
    grid = np.logspace(np.log10(FPS_FLOOR), np.log10(FPS_RANGE[1]), int(decades * PER_DECADE) + 1)
    targets = {max(1, int(hz / fps)) for fps in grid}
    low, high = hz / FPS_RANGE[1], hz / FPS_RANGE[0]
    for node in base.graph.node:
        op = getCustomOp(node)
        dims = folding.knobs(node)
        for values in itertools.product(*[folding._divisors(d) for _, d in dims]):
            for (attr, _), value in zip(dims, values):
                op.set_nodeattr(attr, int(value))
            try:
                cycles = int(op.get_exp_cycles())
            except Exception:
                continue
            if low <= cycles <= high:
                targets.add(cycles)
    return sorted(targets)


def finn_sweep(base: ModelWrapper, board, cap: float, label: str) -> tuple[dict | None, int]:
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    best, tried = None, 0
    widths = wwidth_values(base)
    targets = cycle_targets(ModelWrapper(copy.deepcopy(base.model)), board.clock_mhz)
    total = len(widths) * len(targets)
    log(f"  {label}: FINN sweep, {len(targets)} targets x {len(widths)} mvau_wwidth_max = {total} SetFolding runs")
    started = time.perf_counter()
    for wwidth in widths:
        for cycles in targets:
            model = ModelWrapper(copy.deepcopy(base.model))
            model = model.transform(
                SetFolding(target_cycles_per_frame=cycles, mvau_wwidth_max=wwidth, two_pass_relaxation=True)
            )
            est = estimate_network(model, board)
            tried += 1
            if fits(est, board, cap) and (best is None or est.fps > best["fps"]):
                best = {
                    "fps": est.fps,
                    "target_fps": board.clock_mhz * 1e6 / cycles,
                    "mvau_wwidth_max": wwidth,
                    "utilisation": est.utilisation,
                    "binding": max(KEYS, key=lambda k: est.utilisation[k]),
                }
        log(
            f"    wwidth {wwidth:>4}: {tried}/{total} runs, {time.perf_counter() - started:.0f} s, "
            f"best so far {best['fps'] if best else 0:,.0f} fps"
        )
    return best, tried


def sdk_fit(base: ModelWrapper, board, cap: float, workdir: Path):
    """The fit as a deploy runs it: set_folding, minimise bit widths again, FINN's estimate."""
    cfg = steps.FinnConfig(board, workdir, max_util=cap)
    model = ModelWrapper(copy.deepcopy(base.model))
    started = time.perf_counter()
    model = steps.set_folding(model, cfg)
    seconds = time.perf_counter() - started
    model = steps.minimize_bit_widths(model, cfg)
    return cfg.fit, estimate_network(model, board), seconds


def caps(text: str) -> list[float]:
    return [float(c) for c in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-util", type=float, default=0.8)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--boards", default=",".join(BOARDS))
    parser.add_argument(
        "--exact-caps", type=lambda v: [float(c) for c in v.split(",")], default=[0.025, 0.04, 0.06, 0.1]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/folding_vs_finn.json"))
    args = parser.parse_args()
    logging.getLogger("finn_logger").setLevel(logging.ERROR)  # SetFolding warns on every missed target
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model_name in filter(None, args.models.split(",")):
            log(f"{model_name}: export (random weights)")
            onnx_path = export(model_name, tmp)
            for board_name in args.boards.split(","):
                board, label = get_board(board_name), f"{model_name}/{board_name}"
                base = prepared(onnx_path, board, tmp / f"{model_name}-{board_name}")
                started = time.perf_counter()
                best, tried = finn_sweep(base, board, args.max_util, label)
                sweep_s = time.perf_counter() - started
                fit, ours, fit_s = sdk_fit(base, board, args.max_util, tmp / f"fit-{model_name}-{board_name}")
                log(f"  {label}: SDK fit {ours.fps:,.0f} fps in {fit_s:.2f} s ({fit.limit}: {fit.stop_reason})")
                assert fits(ours, board, args.max_util), f"{label}: the fit is over the cap"
                rows.append(
                    {
                        "model": f"{model_name} w2a2",
                        "board": board_name,
                        "cap": args.max_util,
                        "finn_best_fps": best and best["fps"],
                        "finn_best_point": best and {k: best[k] for k in ("target_fps", "mvau_wwidth_max")},
                        "finn_util": best and best["utilisation"],
                        "finn_binding": best and best["binding"],
                        "finn_configs_tried": tried,
                        "finn_sweep_s": sweep_s,
                        "sdk_fit_fps": ours.fps,
                        "sdk_util": ours.utilisation,
                        "sdk_binding": max(KEYS, key=lambda k: ours.utilisation[k]),
                        "sdk_fit_s": fit_s,
                        "sdk_fit": fit.to_dict(),
                        "ratio": ours.fps / best["fps"] if best else None,
                    }
                )
    print()
    print(
        f"{'model':9s} {'board':8s} {'FINN best fps':>14s} {'binds':>11s} {'SDK fit fps':>13s} {'binds':>11s} "
        f"{'ratio':>6s} {'fit s':>6s}  SDK stop / 100 % / unfolded"
    )
    for r in rows:
        fu, su, fit = r["finn_util"] or {}, r["sdk_util"], r["sdk_fit"]
        finn_bind = f"{r['finn_binding']} {fu.get(r['finn_binding'], 0):.0%}" if r["finn_binding"] else "-"
        sdk_bind = f"{r['sdk_binding']} {su[r['sdk_binding']]:.0%}"
        stop = fit["limit"] + (f" ({'+'.join(fit['limit_resources'])})" if fit["limit_resources"] else "")
        print(
            f"{r['model']:9s} {r['board']:8s} {r['finn_best_fps'] or 0:>14,.0f} {finn_bind:>11s} "
            f"{r['sdk_fit_fps']:>13,.0f} {sdk_bind:>11s} {r['ratio'] or float('nan'):>5.2f}x {r['sdk_fit_s']:>6.2f}  "
            f"{stop} at {fit['limit_layer']} / {fit['fps_at_full_board']:,.0f} / {fit['fps_unfolded']:,.0f}"
        )
    print(
        f"\nFINN: {sum(r['finn_configs_tried'] for r in rows)} SetFolding runs, "
        f"{sum(r['finn_sweep_s'] for r in rows):.0f} s in all; cap {args.max_util:.0%}"
    )
    exact = exact_rows(args.exact_caps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sweep": rows, "exact": exact}, indent=2))


def exact_rows(caps: list[float]) -> list[dict]:
    """The small MLP on PYNQ-Z2: exhaustive optimum, the fit and FINN's best sweep point, per cap."""
    board = get_board("pynq-z2")
    options = every_option(mvau_chain(SMALL_MLP), board)
    combinations = int(np.prod([len(o) for o in options]))
    rows = []
    for cap in caps:
        base = mvau_chain(SMALL_MLP)
        best, _ = finn_sweep(base, board, cap, f"small MLP at {cap:.1%}")
        model = ModelWrapper(copy.deepcopy(base.model))
        fit = folding.fit_folding(model, board, cap)
        optimum = exhaustive_optimum(options, board, cap)
        rows.append(
            {
                "cap": cap,
                "optimum_fps": board.clock_mhz * 1e6 / optimum,
                "sdk_fit_fps": fit.fps,
                "finn_best_fps": best and best["fps"],
            }
        )
    print(f"\nsmall MLP 48-12-8-10 on PYNQ-Z2, every combination of non-dominated layer options ({combinations:,})")
    print(f"{'cap':>6s} {'exact optimum fps':>18s} {'SDK fit fps':>13s} {'FINN best fps':>14s}")
    for r in rows:
        print(
            f"{r['cap']:>6.1%} {r['optimum_fps']:>18,.0f} {r['sdk_fit_fps']:>13,.0f} {r['finn_best_fps'] or 0:>14,.0f}"
        )
    return rows


if __name__ == "__main__":
    main()
