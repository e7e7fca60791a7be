"""Start-up and `sdk simulate` wall time as a user meets them: each command in a new process, beside bare peers.

Commands timed (a new process each run; the OS file cache warm, Python's bytecode compiled): `sdk --help`,
`sdk boards`, `sdk check` of a TFC run to pynq-z2 and to tflite (the export cached, as after a first deploy),
and `sdk simulate` of that run's pynq-z2 and tflite packages on 10,000 samples of an .npz (`--data`).
Peers: a bare onnxruntime process and a bare LiteRT process doing the same user-visible work: import the
runtime, load the model, read the same .npz, run the 10,000 samples (one batch), compare with the labels.
The onnxruntime peer runs the package's QONNX model as plain ONNX (QuantToQCDQ, converted once before the
timing: a patient expert keeps that file); the LiteRT peer the package's model.tflite with LiteRT's default
kernels (XNNPACK). Each peer prints its accuracy, checked against what `sdk simulate` reports for the QAT model
(onnxruntime: within 2 points, the QCDQ graph is not bit-exact to qonnx's executor) and the package (LiteRT), so
the peers do the work they claim. `sdk simulate` does more (the QAT
model's reference, the package's hashes, its runtime against its golden model): that is the price measured.

Data: MNIST is not on this machine, so the samples are scikit-learn's digits resized to 28x28 (the SDK's
`digits` set at --image-size 28: MNIST's shape), its 360-sample test split repeated to 10,000, with labels;
the model is TFC w2a2 (784-64-64-64-10) trained here for 2 epochs on that set.
Median of --runs runs per case; the cases take turns run by run, so a change in the machine's load meets them all.
A case under 0.5 s is timed as that many processes back to back that the timing lasts 0.6 s, per process.
Each command also reports whether torch, brevitas or onnxscript was imported (`python -X importtime`).
Usage: python benchmarks/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 10_000
HEAVY = ("torch", "brevitas", "onnxscript")

ORT_PEER = """
import sys, numpy as np, onnxruntime as ort
data = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
x = (data["x"].reshape(len(data["x"]), -1).astype(np.float32) - float(sys.argv[4])) * float(sys.argv[3])
logits = session.run(None, {name: x})[0]
print(float(np.mean(logits.argmax(axis=1) == data["y"])))
"""

LITERT_PEER = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
data = np.load(sys.argv[2])
interpreter = Interpreter(model_path=sys.argv[1])
detail = interpreter.get_input_details()[0]
x = data["x"].reshape(len(data["x"]), -1).astype(np.float32) * float(sys.argv[3])
interpreter.resize_tensor_input(detail["index"], list(x.shape))
interpreter.allocate_tensors()
interpreter.set_tensor(detail["index"], x)
interpreter.invoke()
logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
print(float(np.mean(logits.argmax(axis=1) == data["y"])))
"""


def _run(command: list[str], env: dict) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stdout


def _sdk(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdk", *args]


def _heavy_imports(command: list[str], env: dict) -> list[str]:
    """Which of HEAVY the command imported: -X importtime names every module a process imports (on stderr; -v
    keeps the SDK from hushing the libraries' stderr)."""
    traced = [command[0], "-X", "importtime", *command[1:]]
    if traced[3:5] == ["-m", "sdk"] and len(traced) > 5 and traced[5] not in ("--help",):
        traced.insert(6, "-v")
    done = subprocess.run(traced, env=env, capture_output=True, text=True, check=False)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in names]


def _qcdq(qonnx_path: Path, out: Path) -> None:
    """The QONNX model as plain ONNX for onnxruntime, with a free batch dimension (as benchmarks/simulator_speed)."""
    from onnx import numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

    proto = ModelWrapper(str(qonnx_path)).transform(QuantToQCDQ()).model
    for tensor in (*proto.graph.input, *proto.graph.output):
        tensor.type.tensor_type.shape.dim[0].dim_param = "N"
    del proto.graph.value_info[:]
    reshapes = {node.input[1] for node in proto.graph.node if node.op_type == "Reshape"}
    for init in proto.graph.initializer:
        if init.name in reshapes:
            shape = numpy_helper.to_array(init).copy()
            shape[0] = -1
            init.CopyFrom(numpy_helper.from_array(shape, init.name))
    out.write_bytes(proto.SerializeToString())


def prepare(work: Path, env: dict) -> dict[str, list[str]]:
    """The run, its two packages, the samples and the peers' model; the commands to time, by label."""
    import json

    import numpy as np

    from sdk.data import load_dataset

    run = work / "tfc-784"
    _run(_sdk("train", "tfc", "--image-size", "28", "--epochs", "2", "--out", str(run)), env)
    for target in ("pynq-z2", "tflite"):
        _run(_sdk("deploy", "--target", target, "--model", str(run), "--out", str(work / target)), env)
    digits = load_dataset("digits", seed=0, image_size=28)
    repeat = -(-SAMPLES // len(digits.x_test))
    samples = work / "digits28-10k.npz"
    x, y = np.tile(digits.x_test, (repeat, 1, 1, 1))[:SAMPLES], np.tile(digits.y_test, repeat)[:SAMPLES]
    np.savez(samples, x=x, y=y)
    _qcdq(work / "pynq-z2" / "model.qonnx.onnx", work / "model.qcdq.onnx")
    card = json.loads((work / "pynq-z2" / "model.qonnx.json").read_text())
    graph = card["input"]["map"]  # the QONNX graph takes x = scale * (code - offset)
    info = json.loads((work / "tflite" / "tflite_info.json").read_text())  # its float input: code * input_scale
    return {
        "sdk --help": _sdk("--help"),
        "sdk boards": _sdk("boards"),
        "sdk check pynq-z2": _sdk("check", "--target", "pynq-z2", "--model", str(run)),
        "sdk check tflite": _sdk("check", "--target", "tflite", "--model", str(run)),
        "sdk simulate pynq-z2": _sdk("simulate", str(work / "pynq-z2"), "--data", str(samples), "--json"),
        "bare onnxruntime": [
            *(sys.executable, "-c", ORT_PEER, str(work / "model.qcdq.onnx"), str(samples)),
            *(str(graph["scale"]), str(graph["offset"])),
        ],
        "sdk simulate tflite": _sdk("simulate", str(work / "tflite"), "--data", str(samples), "--json"),
        "bare LiteRT": [
            *(sys.executable, "-c", LITERT_PEER, str(work / "tflite" / "model.tflite"), str(samples)),
            str(info["input_scale"]),
        ],
    }


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdk-bench-startup-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "SDK_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(ROOT)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user's Python: the SDK's bytecode cached, as the peers' is
        commands = prepare(work, env)
        times: dict[str, list[float]] = {}
        printed: dict[str, str] = {}
        repeats = {}
        for label, command in commands.items():
            seconds, _ = _run(command, env)  # once untimed: bytecode compiled, files in the OS cache
            repeats[label] = max(1, math.ceil(0.6 / seconds))
        for attempt in range(args.runs):
            for label, command in commands.items():
                seconds = 0.0
                for _ in range(repeats[label]):
                    took, printed[label] = _run(command, env)
                    seconds += took
                seconds /= repeats[label]
                times.setdefault(label, []).append(seconds)
                print(f"run {attempt + 1}/{args.runs}: {label}: {seconds:.2f} s", flush=True)
        heavy = {label: _heavy_imports(command, env) for label, command in commands.items() if label.startswith("sdk")}
    simulated = {target: json.loads(printed[f"sdk simulate {target}"]) for target in ("pynq-z2", "tflite")}
    # the peers' accuracy beside what `sdk simulate` reports: the QCDQ graph is not bit-exact to qonnx's executor
    # (a few samples near a rounding boundary go the other way), so it may differ by a little, never by much
    peers = {"bare onnxruntime": simulated["pynq-z2"]["qat_accuracy"], "bare LiteRT": simulated["tflite"]["accuracy"]}
    print()
    for label, expected in peers.items():
        got = float(printed[label])
        print(f"{label}: accuracy {got:.4f}; sdk simulate reports {expected:.4f}")
        if abs(got - expected) > 0.02:
            raise SystemExit(f"{label} does not run the packaged model: accuracy {got}, not about {expected}")
    print(f"\nwall time, median of {args.runs} new processes (s); {SAMPLES:,} samples of digits at 28x28")
    print(f"{'command':24} {'median':>8}  {'imports of torch / brevitas / onnxscript'}")
    for label, seconds in times.items():
        note = (", ".join(heavy[label]) or "none") if label in heavy else "-"
        print(f"{label:24} {statistics.median(seconds):8.2f}  {note}")
    for sim, peer in (("sdk simulate pynq-z2", "bare onnxruntime"), ("sdk simulate tflite", "bare LiteRT")):
        ratio = statistics.median(times[sim]) / statistics.median(times[peer])
        print(f"{sim} / {peer}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
