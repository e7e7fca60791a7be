"""Simulator throughput: the SDK's bit-exact dataflow simulator against onnxruntime, Brevitas and float32 BLAS.

Same trained models, same samples, one run, samples/s of
  (a) the SDK simulator on the folded, specialised accelerator (host ops included, plan prepared once),
  (b) onnxruntime on the same QONNX model, batched (Quant nodes as QuantizeLinear / Clip / DequantizeLinear),
  (c) the accelerator's matrix products alone in float32 BLAS: the limit for a simulation computing them in float,
  (d) the same products alone in the integer GEMM the simulator uses where it fits (onnxruntime's MatMulInteger,
      uint8 x int8 in int32): the limit for the simulator itself,
  (e) the Brevitas model's forward pass (PyTorch, fake-quantized float).
Models: TFC w2a2 as the MLP 784-64-64-64-10 (trained on digits resized to 28x28), the committed TFC w2a2
fixture (64-64-64-64-10 on 8x8 digits, tests/fixtures/tfc_w2a2_digits) and CNV w2a2 (sdk/zoo/cnv.py, 8x8).
Each rate is the median of --runs timed runs, each repeating its call for at least --min-seconds; the
contestants take turns run by run, so a change in the machine's load meets them all. With --baseline REV
the simulator as of that git revision (e.g. the commit before a speed-up) takes its turns too.
The baseline to compare with is the simulator before its speed-ups, 5cbc9ea (`git log -- targets/finn/simulator.py`).
Usage: python benchmarks/simulator_speed.py [--baseline REV] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sdk.boards import get_board
from sdk.data import load_dataset
from sdk.export import export_run
from sdk.qat import TrainConfig, load_checkpoint, model_input, train
from targets.finn import kernels, steps
from targets.finn.adapter import graph_input
from targets.finn.simulator import host_input, prepare_dataflow, simulate_parent

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tfc_w2a2_digits"
SIMULATOR_FILES = ("kernels", "ops", "simulator")  # targets/finn modules the simulator consists of


@dataclass(frozen=True)
class Model:
    label: str
    zoo: str
    image_size: int | None  # None: the 8x8 digits
    samples_arg: str  # the command-line option giving its number of samples
    fixture: Path | None = None  # a committed training run instead of training one


MODELS = [
    Model("tfc-784 w2a2", "tfc", 28, "tfc_samples"),
    Model("tfc-64 w2a2", "tfc", None, "tfc_samples", FIXTURE),
    Model("cnv w2a2", "cnv", None, "cnv_samples"),
]


def simulator_at(revision: str, folder: Path):
    """The simulator module as of a git revision, imported as its own package (sim_<revision>) beside today's."""
    package = "sim_" + "".join(c if c.isalnum() else "_" for c in revision)
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text("")
    for name in SIMULATOR_FILES:
        source = subprocess.run(
            ["git", "show", f"{revision}:targets/finn/{name}.py"], check=True, capture_output=True, text=True
        ).stdout
        source = source.replace("from targets.finn import kernels", f"from {package} import kernels")
        for module in SIMULATOR_FILES:
            source = source.replace(f"targets.finn.{module} ", f"{package}.{module} ")
        (folder / package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{package}.simulator")


def median_rates(contestants: dict[str, Callable[[], object]], samples: int, runs: int, min_seconds: float) -> dict:
    """samples/s per contestant: the median over `runs` runs, each calling it until `min_seconds` have passed."""
    for fn in contestants.values():
        fn()  # warm-up: first-call allocations, BLAS threads, onnxruntime's session
    rates: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(runs):
        for name, fn in contestants.items():
            calls, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < min_seconds or calls == 0:
                fn()
                calls += 1
            rates[name].append(calls * samples / elapsed)
    return {name: float(np.median(values)) for name, values in rates.items()}


def onnxruntime_session(onnx_path: Path, threads: int | None):
    """The QONNX model as plain ONNX (QuantToQCDQ) with a free batch dimension, in an onnxruntime session."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from onnx import numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

    proto = ModelWrapper(str(onnx_path)).transform(QuantToQCDQ()).model
    for tensor in (*proto.graph.input, *proto.graph.output):
        tensor.type.tensor_type.shape.dim[0].dim_param = "N"
    del proto.graph.value_info[:]
    reshapes = {node.input[1] for node in proto.graph.node if node.op_type == "Reshape"}
    for init in proto.graph.initializer:  # torch's flatten exports a literal [1, F]
        if init.name in reshapes:
            shape = numpy_helper.to_array(init).copy()
            shape[0] = -1
            init.CopyFrom(numpy_helper.from_array(shape, init.name))
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # idle threads sleep rather than spin, as in the simulator's own sessions: fair on a loaded machine
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, proto.graph.input[0].name


def mvau_inputs(plan, dataflow_x: np.ndarray) -> list[tuple[np.ndarray, object]]:
    """Every MVAU's real input (rows, MW) and its step in the plan."""
    result = plan.run(dataflow_x)
    return [
        (np.asarray(result.intermediates.get(step.node.onnx.input[0], dataflow_x)), step)
        for step in plan.steps
        if step.node.onnx.op_type.startswith("MVAU")
    ]


def blas_products(plan, dataflow_x: np.ndarray) -> Callable[[], object]:
    """Every MVAU's product in float32 BLAS, on that layer's real inputs: (rows, MW) @ (MW, MH)."""
    pairs = []
    for x, step in mvau_inputs(plan, dataflow_x):
        weights = plan.model.get_initializer(step.node.onnx.input[1]).astype(np.float32)
        pairs.append((x.astype(np.float32).reshape(-1, weights.shape[0]), weights))
    return lambda: [x @ w for x, w in pairs]


def integer_products(plan, dataflow_x: np.ndarray) -> Callable[[], object] | None:
    """Every MVAU's product in the simulator's integer GEMM (on its uint8 codes), on that layer's real inputs;
    None unless every MVAU of the plan uses it."""
    pairs = []
    for x, step in mvau_inputs(plan, dataflow_x):
        gemm = step.node.memo[kernels._prepare_mvau].product.gemm
        if gemm is None:
            return None
        pairs.append((gemm.codes(x.reshape(-1, gemm.terms)), gemm))  # uint8 codes x - low (signed inputs too)
    return lambda: [gemm.raw(codes) for codes, gemm in pairs]


def measure(model: Model, samples: int, tmp: Path, args, baseline) -> dict:
    run = tmp / model.label.replace(" ", "_")
    if model.fixture:
        shutil.copytree(model.fixture, run)
    else:
        train(TrainConfig(model=model.zoo, bits="w2a2", epochs=5, image_size=model.image_size), run, progress=False)
    exported = export_run(run, run.with_suffix(".onnx"))
    cfg = steps.FinnConfig(get_board("pynq-z2"), run.with_name(run.name + "-finn"))
    dataflow = steps.run_steps(steps.load_qonnx(exported.onnx_path), cfg, stop="estimate")
    side = model.image_size or 8
    x = np.resize(load_dataset("digits", image_size=model.image_size).x_test, (samples, 1, side, side))
    xs = graph_input(exported.card, x, cfg.parent)  # float32, as the deploy hands it to the simulator
    dataflow_x = host_input(cfg.parent, xs)
    started = time.perf_counter()
    plan = prepare_dataflow(dataflow, threads=args.threads)
    prepare_ms = (time.perf_counter() - started) * 1e3
    # the simulator against FINN's own python execution on a few samples: the speed is of an exact simulator
    few = steps.FINN_REFERENCE_SAMPLES
    identical = np.array_equal(
        plan.run(dataflow_x[:few]).output, steps.finn_layer_outputs(cfg.dataflow_hw, dataflow_x[:few])[-1]
    )
    brevitas, _ = load_checkpoint(run)
    xt = model_input(x, brevitas.flat_input)
    contestants = {"sdk_sim": lambda: simulate_parent(cfg.parent, plan, xs)}
    if baseline is not None:
        before = baseline.simulate_parent(cfg.parent, dataflow, xs).integer_output
        if not np.array_equal(before, simulate_parent(cfg.parent, plan, xs).integer_output):
            raise SystemExit(f"{model.label}: the simulator at {args.baseline} computes other outputs")
        contestants["sdk_sim_before"] = lambda: baseline.simulate_parent(cfg.parent, dataflow, xs)
    ort = onnxruntime_session(exported.onnx_path, args.threads)
    if ort is not None:
        session, name = ort
        ort_x = xs.reshape(len(xs), -1) if exported.card["input"]["flatten"] else xs
        contestants["onnxruntime"] = lambda: session.run(None, {name: ort_x})
    contestants["brevitas"] = torch.no_grad()(lambda: brevitas(xt))
    contestants["blas_f32"] = blas_products(plan, dataflow_x)
    gemm = integer_products(plan, dataflow_x)
    if gemm is not None:
        contestants["gemm_int"] = gemm
    rates = median_rates(contestants, samples, args.runs, args.min_seconds)
    return {
        "model": model.label,
        "samples": samples,
        "per_s": rates,
        "sim_vs": {name: rates["sdk_sim"] / rate for name, rate in rates.items() if name != "sdk_sim"},
        "prepare_ms": prepare_ms,
        "identical_to_finn_python": bool(identical),
        "threads": args.threads or "default",
        "load_average": os.getloadavg(),
    }


def limit_threads(threads: int) -> None:
    """The same number of threads for numpy's BLAS and torch (onnxruntime's is set on its session)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator_speed.json"))
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contestant (the median is reported)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="least duration of one timed run")
    parser.add_argument("--tfc-samples", type=int, default=10_000)
    parser.add_argument("--cnv-samples", type=int, default=2_000)
    parser.add_argument("--baseline", metavar="REV", help="also time the simulator as of this git revision")
    parser.add_argument(
        "--threads", type=int, help="threads for BLAS, torch, onnxruntime and the simulator's GEMM (default: theirs)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = simulator_at(args.baseline, Path(tmp) / "baseline") if args.baseline else None
        if args.threads:
            limit_threads(args.threads)
        rows = [measure(m, getattr(args, m.samples_arg), Path(tmp), args, baseline) for m in MODELS]
    columns = [
        ("sdk_sim", "SDK sim"),
        ("sdk_sim_before", f"sim @{args.baseline}"),
        ("onnxruntime", "onnxruntime"),
        ("brevitas", "Brevitas"),
        ("blas_f32", "BLAS f32"),
        ("gemm_int", "int GEMM"),
    ]
    columns = [(key, label) for key, label in columns if any(key in r["per_s"] for r in rows)]
    print(f"samples/s, threads: {args.threads or 'default'}")
    print(f"{'model':13s} {'samples':>8s} " + " ".join(f"{label:>14s}" for _, label in columns))
    for r in rows:
        cells = " ".join(f"{r['per_s'][key]:>14,.0f}" if key in r["per_s"] else f"{'-':>14s}" for key, _ in columns)
        print(f"{r['model']:13s} {r['samples']:>8,d} {cells}")
    print("\nSDK sim speed / each one's (> 1: the simulator is faster)")
    print(f"{'model':13s} {'':8s} " + " ".join(f"{label:>14s}" for key, label in columns if key != "sdk_sim"))
    for r in rows:
        cells = " ".join(
            f"{r['sim_vs'][key]:>13.2f}x" if key in r["sim_vs"] else f"{'-':>14s}" for key, _ in columns[1:]
        )
        print(f"{r['model']:13s} {'':8s} {cells}")
    print()
    for r in rows:
        print(
            f"{r['model']}: plan prepared in {r['prepare_ms']:.1f} ms; outputs identical to FINN's python "
            f"execution: {r['identical_to_finn_python']}; load average {r['load_average'][0]:.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
