"""A loaded package (`pkg = sdk.load(package)`; `pkg(x)`) against onnxruntime on the same QONNX model, one thread each.

Per zoo model, one FPGA (pynq-z2) package, and in one run, taking turns run by run:
  loaded       pkg(x): the package verified and its simulator plan prepared once (sdk.load(package, threads=1));
               x is uint8 pixels, as a user hands them (the conversion to device codes is in the call)
  onnxruntime  the package's own source graph (model.qonnx.onnx) as plain ONNX QDQ (qonnx's QuantToQCDQ, as
               benchmarks/simulator_speed.py makes it), intra_op_num_threads=1, fed the float32 codes it takes
  one-shot     sdk.simulate(package, x): verify, read and prepare on every call (batch 1 only: what it was)
at batch 1 on TFC and LFC (goal: the loaded package at least 0.5x onnxruntime's calls/s) and at batch 10,000 on
every zoo model (goal: at least 1.0x its samples/s). Each rate is the median of --runs runs, each calling for at
least --min-seconds. BLAS / OpenMP have one thread (set before numpy starts). The packages are kept in --work.
Usage: python benchmarks/loaded_package.py [--work DIR] [--runs 3] [--models tfc,lfc,...]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulator_speed import median_rates, onnxruntime_session  # noqa: E402

import sdk  # noqa: E402
from sdk.data import load_dataset  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
# zoo model -> (committed training run, or None: trained here for one epoch on digits at 28x28, MNIST's size)
MODELS = {
    "tfc": None,
    "sfc": None,
    "lfc": None,
    "cnv": FIXTURES / "cnv_w2a2_digits",
    "dscnn": FIXTURES / "dscnn_w2a2_digits",
    "resnet8": FIXTURES / "resnet8_w4a4_digits",
}
BATCH_ONE = ("tfc", "lfc")
GOALS = {1: 0.5, 10_000: 1.0}


def package_of(model: str, work: Path) -> Path:
    """The model's pynq-z2 package in `work`, trained (w2a2) and deployed the first time."""
    package = work / model / "pynq-z2"
    if (package / "manifest.json").is_file():
        return package
    run = MODELS[model]
    if run is None:
        run = work / model / "run"
        if not (run / "checkpoint.pt").is_file():
            sdk.train(sdk.TrainConfig(model=model, bits="w2a2", epochs=1, image_size=28), run)
    result = sdk.deploy(str(run), "pynq-z2", out=str(package), samples=20)
    if result.exit_code != 0:
        raise SystemExit(f"{model}: the deploy failed (exit {result.exit_code})")
    return package


def contest(model: str, package: Path, batch: int, runs: int, min_seconds: float) -> dict:
    card = json.loads((package / "model.qonnx.json").read_text())
    c, h, w = card["input"]["image_shape"]
    pixels = np.resize(load_dataset("digits", image_size=h if h != 8 else None).x_test, (batch, c, h, w))
    pixels = pixels.astype(np.uint8)
    pkg = sdk.load(package, threads=1)
    session, name = onnxruntime_session(package / "model.qonnx.onnx", 1)
    codes = pixels.reshape(batch, -1) if card["input"]["flatten"] else pixels
    codes = codes.astype(np.float32)  # what the QONNX graph takes: the device codes, as floats
    ours, theirs = pkg(pixels), session.run(None, {name: codes})[0]
    agree = float(np.mean(ours.argmax(1) == theirs.reshape(len(ours), -1).argmax(1)))
    contestants = {"loaded": lambda: pkg(pixels), "onnxruntime": lambda: session.run(None, {name: codes})}
    if batch == 1:
        contestants["one-shot"] = lambda: sdk.simulate(package, pixels)
    rates = median_rates(contestants, batch, runs, min_seconds)
    return {"model": model, "batch": batch, "per_s": rates, "class_agreement": agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the packages (kept; default: a temporary folder)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loaded_package.json"))
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        packages = {model: package_of(model, work) for model in models}
        rows = [
            contest(model, packages[model], batch, args.runs, args.min_seconds)
            for batch in (1, 10_000)
            for model in models
            if batch != 1 or model in BATCH_ONE
        ]
    print("one thread each; rates are samples/s (calls/s at batch 1), medians of", args.runs, "runs")
    print(f"{'model':8s} {'batch':>6s} {'loaded':>12s} {'onnxruntime':>12s} {'one-shot':>10s} {'ratio':>7s} goal")
    for r in rows:
        rates, goal = r["per_s"], GOALS[r["batch"]]
        r["ratio"] = rates["loaded"] / rates["onnxruntime"]
        one_shot = f"{rates['one-shot']:>10,.0f}" if "one-shot" in rates else f"{'-':>10s}"
        print(
            f"{r['model']:8s} {r['batch']:>6,d} {rates['loaded']:>12,.0f} {rates['onnxruntime']:>12,.0f} {one_shot} "
            f"{r['ratio']:>6.2f}x {'met' if r['ratio'] >= goal else 'MISSED'} (>= {goal}x); "
            f"same class as onnxruntime {r['class_agreement']:.0%}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
