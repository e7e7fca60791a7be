"""The simulator against its own limit: per zoo model and a model with signed activations, one thread each.

For each model, on the same samples (the 8x8 digits, tiled to --samples; one thread for numpy's BLAS, the
simulator's integer GEMM and onnxruntime), the median of --runs timed runs, each at least --min-seconds:
  sim      the SDK simulator on the folded, specialised accelerator, host ops included, plan prepared once;
  limit    the layers' products alone, in the path the plan chose for each (the integer GEMM on its uint8 codes,
           a depthwise product position by position in int16 / int32, float32 BLAS or int64 where neither
           fits), on the layers' real inputs, im2col already made: what a simulator that only multiplied would
           take;
  share    limit / sim: the part of the simulator's time its products would take (1.0: nothing else costs);
  ort      onnxruntime on the same QONNX model (QuantToQCDQ), intra_op_num_threads=1.
With --layers, the simulator's time per op type (kernels timed one by one) is printed too; with --baseline REV, the
simulator as of that git revision takes its turns too (its outputs checked identical first).
The models: the zoo's tfc, sfc, lfc, cnv, dscnn and resnet8 (the committed fixtures where there are, else trained
for one epoch) and an MLP 64-256-256-256-10 with signed 2-bit activations (QuantIdentity after each BatchNorm).
Usage: python benchmarks/simulator_limit.py [--models tfc,cnv] [--samples 10000] [--layers] [--baseline REV]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from simulator_speed import median_rates, onnxruntime_session, simulator_at  # noqa: E402

from targets.finn import kernels  # noqa: E402
from targets.finn.simulator import host_input, host_output, prepare_dataflow  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
ZOO_FIXTURES = {"tfc": "tfc_w2a2_digits", "cnv": "cnv_w2a2_digits", "dscnn": "dscnn_w2a2_digits"}
ZOO_FIXTURES["resnet8"] = "resnet8_w4a4_digits"
MODELS = ["tfc", "sfc", "lfc", "cnv", "dscnn", "resnet8", "signed-a2"]


def signed_mlp():
    """64-256-256-256-10, 2-bit weights, signed 2-bit activations ({-2, -1, 0, 1} times a scale)."""
    import torch
    from brevitas.nn import QuantIdentity, QuantLinear
    from brevitas.quant import Int8WeightPerTensorFloat
    from torch import nn

    torch.manual_seed(0)
    layers, width = [], 64
    for out in (256, 256, 256):
        layers += [
            QuantLinear(width, out, bias=False, weight_bit_width=2, weight_quant=Int8WeightPerTensorFloat),
            nn.BatchNorm1d(out),
            QuantIdentity(bit_width=2),
        ]
        width = out
    layers.append(QuantLinear(width, 10, bias=False, weight_bit_width=2, weight_quant=Int8WeightPerTensorFloat))
    model = nn.Sequential(*layers)
    for module in model.modules():  # activations spread over their range
        if isinstance(module, nn.BatchNorm1d):
            module.running_var.fill_(40.0)
    return model.eval()


def exported(name: str, tmp: Path):
    """The QONNX file and card of a model, exported as the deploy does."""
    from sdk.export import export_module, export_run
    from sdk.qat import TrainConfig, train

    if name == "signed-a2":
        return export_module(signed_mlp(), (1, 64), tmp / "signed.qonnx.onnx", input_scale=1 / 255)
    run = tmp / name
    if name in ZOO_FIXTURES:
        shutil.copytree(FIXTURES / ZOO_FIXTURES[name], run)
    else:
        train(TrainConfig(model=name, bits="w2a2", epochs=1), run, progress=False)
    return export_run(run, tmp / f"{name}.qonnx.onnx")


def dataflow_of(name: str, tmp: Path):
    from sdk.boards import get_board
    from targets.finn import steps

    model = exported(name, tmp)
    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp / f"{name}-finn")
    dataflow = steps.run_steps(steps.load_qonnx(model.onnx_path), cfg, stop="estimate")
    return model, cfg.parent, dataflow


def products(plan, dataflow_x: np.ndarray):
    """Every MVAU / VVAU product alone, on its layer's real input (im2col made), in the path the plan chose."""
    from dataclasses import replace

    values = plan.run(dataflow_x).intermediates
    calls = []
    for step in plan.steps:
        op = kernels.base_op_type(step.node.onnx.op_type)
        if op not in ("MVAU", "VVAU"):
            continue
        name = step.node.onnx.input[0]
        x = dataflow_x if name == plan.in_name else values[name]
        known = step.node.input_range(0)
        if known is not None:  # in the narrow type the simulator holds it in, not the int64 it is read as
            x = x.astype(kernels.narrowest(*known))
        node = replace(step.node, inputs=[x], overflows=[])
        unit = node.prepared(kernels._prepare_mvau if op == "MVAU" else kernels._prepare_vvau)
        product = unit.product
        if op == "VVAU" and product.narrow is not None:  # position by position in int16 / int32
            k_h, k_w = (int(k) for k in step.node.attr("Kernel"))
            x = np.ascontiguousarray(kernels.dense(x)).reshape(*x.shape[:-1], k_h, k_w, product.weights.shape[1])
            narrow = (product.narrow_weights, product.narrow)
            items = max(1, kernels._ACC_BLOCK // max(1, int(np.prod(x.shape[1:-3])) * x.shape[-1]))
            blocks = [x[start : start + items] for start in range(0, len(x), items)]  # in cache, as the kernel
            calls.append(lambda blocks=blocks, narrow=narrow: [kernels._depthwise_sum(b, *narrow) for b in blocks])
        elif op == "VVAU":
            x = kernels.dense(x).reshape(*x.shape[:-1], *product.weights.shape).astype(np.int64)
            x = np.ascontiguousarray(x, dtype=np.float32) if product.static32 else x
            calls.append(lambda x=x, product=product: product(x))
        elif product.gemm is not None:
            codes = product.gemm.codes(x.reshape(-1, product.weights.shape[0]))
            calls.append(lambda codes=codes, gemm=product.gemm: gemm.raw(codes))
        else:
            x = x.reshape(-1, product.weights.shape[0])
            x = x.astype(np.float32) if product.static32 else x
            calls.append(lambda x=x, product=product: product(x))
    return lambda: [call() for call in calls]


def per_op(plan, dataflow_x: np.ndarray, runs: int) -> dict[str, float]:
    """Seconds per op type in one simulation (the best of `runs`), each kernel timed as it runs."""
    totals: dict[str, list[float]] = defaultdict(list)
    originals = [step.kernel for step in plan.steps]
    for _ in range(runs):
        spent: dict[str, float] = defaultdict(float)
        for step, kernel in zip(plan.steps, originals):
            op = kernels.base_op_type(step.node.onnx.op_type)

            def timed(node, kernel=kernel, op=op, spent=spent):
                started = time.perf_counter()
                result = kernel(node)
                spent[op] += time.perf_counter() - started
                return result

            step.kernel = timed
        plan.run(dataflow_x, keep_intermediates=False)
        for op, seconds in spent.items():
            totals[op].append(seconds)
    for step, kernel in zip(plan.steps, originals):
        step.kernel = kernel
    return {op: min(values) for op, values in totals.items()}


def measure(name: str, samples: int, tmp: Path, args, baseline) -> dict:
    from sdk.data import load_dataset
    from targets.finn.adapter import graph_input

    model, parent, dataflow = dataflow_of(name, tmp)
    x = np.resize(load_dataset("digits").x_test, (samples, 1, 8, 8))
    xs = graph_input(model.card, x, parent)
    dataflow_x = host_input(parent, xs)
    plan = prepare_dataflow(dataflow, threads=1)
    paths = []
    for step in plan.steps:
        unit = step.node.memo.get(kernels._prepare_mvau) or step.node.memo.get(kernels._prepare_vvau)
        if unit is not None:
            gemm, narrow = unit.product.gemm, unit.product.narrow
            if gemm is not None:
                paths.append("gemm±" if gemm.offset else "gemm")
            else:
                paths.append(f"dw{narrow.itemsize * 8}" if narrow is not None else "float")

    def simulate():
        return host_output(parent, plan.run(host_input(parent, xs), keep_intermediates=False).output)

    contestants = {"sim": simulate, "limit": products(plan, dataflow_x)}
    if baseline is not None:
        before = baseline.prepare_dataflow(dataflow, threads=1)
        if not np.array_equal(before.run(dataflow_x).output, plan.run(dataflow_x).output):
            raise SystemExit(f"{name}: the simulator at {args.baseline} computes other outputs")
        contestants["before"] = lambda: host_output(parent, before.run(host_input(parent, xs), False).output)
    session, input_name = onnxruntime_session(model.onnx_path, 1)
    ort_x = xs.reshape(len(xs), -1) if model.card["input"]["flatten"] else xs
    contestants["ort"] = lambda: session.run(None, {input_name: ort_x})
    # onnxruntime's QCDQ form of the model rounds some values otherwise than the QONNX model (which the simulator
    # equals: tests/test_sim_finn.py); the share of samples where its output differs is reported beside its time
    expected = session.run(None, {input_name: ort_x[:500]})[0].reshape(min(500, samples), -1)
    ours = simulate()[:500].reshape(expected.shape)
    differing = float(np.mean(np.abs(ours - expected).max(axis=1) > 1e-4 * np.abs(expected).max()))
    rates = median_rates(contestants, samples, args.runs, args.min_seconds)
    row = {
        "model": name,
        "samples": samples,
        "seconds": {key: samples / rate for key, rate in rates.items()},
        "paths": paths,
        "ort_differs_on": differing,
        "load_average": os.getloadavg()[0],
    }
    if args.layers:
        row["per_op"] = per_op(plan, dataflow_x, args.runs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--layers", action="store_true", help="also the simulator's time per op type")
    parser.add_argument("--baseline", metavar="REV", help="also time the simulator as of this git revision")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator_limit.json"))
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = simulator_at(args.baseline, Path(tmp) / "baseline") if args.baseline else None
        for name in args.models.split(","):
            rows.append(measure(name, args.samples, Path(tmp), args, baseline))
            r = rows[-1]
            print(f"{name}: {r['seconds']} paths {r['paths']}", flush=True)
    print(f"\none thread each; seconds for {args.samples:,} samples (median of {args.runs})")
    print(f"{'model':10s} {'sim':>8s} {'limit':>8s} {'share':>6s} {'ort':>8s} {'sim/ort':>8s} {'ort≠':>5s}  products")
    for r in rows:
        s = r["seconds"]
        print(
            f"{r['model']:10s} {s['sim']:8.3f} {s['limit']:8.3f} {s['limit'] / s['sim']:6.2f} {s['ort']:8.3f} "
            f"{s['ort'] / s['sim']:7.2f}x {r['ort_differs_on']:5.0%}  {' '.join(r['paths'])}"
        )
    print("ort≠: samples where onnxruntime's QCDQ model differs from the QONNX model the simulator equals")
    if args.baseline:
        print(f"\nthe simulator at {args.baseline}, seconds (its speed-up since):")
        for r in rows:
            before = r["seconds"]["before"]
            print(f"{r['model']:10s} {before:8.3f} {before / r['seconds']['sim']:6.2f}x")
    print("products: gemm (unsigned codes), gemm± (signed: codes x - low), dw16 / dw32 (depthwise), float (BLAS)")
    if args.layers:
        print("\nsimulator seconds per op type (best of the runs)")
        for r in rows:
            print(f"{r['model']:10s} " + ", ".join(f"{op} {t:.3f}" for op, t in sorted(r["per_op"].items())))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (a shared machine inflates every figure)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
