"""Simulator throughput: the SDK's dataflow simulator against FINN's python execution and Brevitas.

Same model, same samples, one run: samples/s of
  - the SDK simulator on the folded, specialised accelerator (vectorised over the batch),
  - FINN's python execution of the same layers (the only FINN execution without Vitis HLS / Vivado),
  - the Brevitas model's forward pass (PyTorch, fake-quantized float).
Usage: python benchmarks/simulator_speed.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sdk.boards import get_board
from sdk.data import load_dataset
from sdk.export import export_run
from sdk.qat import TrainConfig, load_checkpoint, model_input, train
from targets.finn import steps
from targets.finn.adapter import graph_input
from targets.finn.simulator import host_input, simulate_parent

FINN_SAMPLES = {"tfc": 200, "cnv": 30}  # FINN's python execution is per sample and slow; its rate is measured on these


def rate(fn, samples: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return samples / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator_speed.json"))
    args = parser.parse_args()
    data = load_dataset("digits")
    board = get_board("pynq-z2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model_name in ("tfc", "cnv"):
            run = tmp / model_name
            train(TrainConfig(model=model_name, bits="w2a2", epochs=5), run, progress=False)
            exported = export_run(run, tmp / f"{model_name}.onnx")
            cfg = steps.FinnConfig(board, tmp / f"w-{model_name}")
            dataflow = steps.run_steps(steps.load_qonnx(exported.onnx_path), cfg, stop="estimate")
            x = data.x_test
            xs = graph_input(exported.card, x)
            sim_rate = rate(lambda cfg=cfg, dataflow=dataflow, xs=xs: simulate_parent(cfg.parent, dataflow, xs), len(x))
            brevitas, _ = load_checkpoint(run)
            xt = model_input(x, brevitas.flat_input)
            with torch.no_grad():
                brevitas_rate = rate(lambda brevitas=brevitas, xt=xt: brevitas(xt), len(x))
            n = FINN_SAMPLES[model_name]
            dataflow_x = host_input(cfg.parent, xs[:n])
            finn_rate = rate(
                lambda cfg=cfg, dataflow_x=dataflow_x: steps.finn_layer_outputs(cfg.dataflow_hw, dataflow_x),
                n,
                repeat=1,
            )
            same = np.array_equal(
                simulate_parent(cfg.parent, dataflow, xs[:n]).dataflow.output,
                steps.finn_layer_outputs(cfg.dataflow_hw, dataflow_x)[-1],
            )
            rows.append(
                {
                    "model": f"{model_name} w2a2",
                    "sdk_sim_per_s": sim_rate,
                    "finn_python_per_s": finn_rate,
                    "brevitas_per_s": brevitas_rate,
                    "sim_vs_finn": sim_rate / finn_rate,
                    "sim_vs_brevitas": sim_rate / brevitas_rate,
                    "outputs_identical": bool(same),
                    "samples": len(x),
                    "finn_samples": n,
                }
            )
    print(
        f"{'model':9s} {'SDK sim /s':>12s} {'FINN python /s':>15s} {'Brevitas /s':>12s} "
        f"{'sim/FINN':>9s} {'sim/Brevitas':>13s}"
    )
    for r in rows:
        print(
            f"{r['model']:9s} {r['sdk_sim_per_s']:>12,.0f} {r['finn_python_per_s']:>15,.1f} "
            f"{r['brevitas_per_s']:>12,.0f} "
            f"{r['sim_vs_finn']:>8,.0f}x {r['sim_vs_brevitas']:>12.2f}x  (outputs identical: {r['outputs_identical']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
