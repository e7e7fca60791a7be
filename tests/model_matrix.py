"""The users' models x target table: each model written the way users write them, deployed to an FPGA board, LiteRT,
a Cortex-M board and an Ethos-U board, with the verdict and the end-to-end error of `sdk.simulate` against the
model itself on the same x.

    .venv/bin/python tests/model_matrix.py [--boards pynq-z2,tflite,...] [--only NAME,...]

Prints a markdown table (and writes it to model_matrix.md in the current folder). A refusal (exit 2) is a result,
with its reason; a deploy that fails its rule (exit 1) would be a finding. Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sdk  # noqa: E402
from sdk.errors import SDKError  # noqa: E402

BOARDS = ["pynq-z2", "tflite", "stm32f746g-disco", "ethos-u55-128"]
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """A model as handed in (a module with its example input, or a file), the x its forward takes, and the model's
    own outputs on x (the reference)."""

    name: str
    model: object
    example_input: torch.Tensor | None
    x: np.ndarray
    reference: Callable[[np.ndarray], np.ndarray]
    options: dict


def _module_reference(module: torch.nn.Module, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x.astype(np.float32) * np.float32(scale))).numpy()

    return run


def _digits(n: int, flat: bool) -> np.ndarray:
    """The last n digits as a module trained on pixels / 255 takes them: floats in [0, 1] (which a package of a
    pixel model takes too, as --data does)."""
    from sklearn.datasets import load_digits

    images = (np.rint(load_digits().images[-n:] * 255 / 16) / 255).astype(np.float32)
    return images.reshape(n, -1) if flat else images[:, None]


def cases(folder: Path) -> list[Case]:
    import onnx
    from brevitas.export import export_qonnx
    from test_input_interface import MODELS, IntrusionMLP, KeywordMLP, _calibrated
    from test_legacy_qonnx import _legacy

    made = []
    kws = _calibrated(KeywordMLP(), torch.from_numpy(MODELS["signed-int8"][1](256, 7)))
    made.append(Case("MLP, signed INT8 features", kws, torch.zeros(1, 40), MODELS["signed-int8"][1](200, 5),
                     _module_reference(kws), {}))  # fmt: skip
    nids = _calibrated(IntrusionMLP(), torch.from_numpy(MODELS["bipolar-bits"][1](256, 7)))
    made.append(Case("MLP over 600 bipolar bits (x*2-1)", nids, torch.zeros(1, 600), MODELS["bipolar-bits"][1](200, 5),
                     _module_reference(nids), {}))  # fmt: skip
    pre = _calibrated(KeywordMLP(preprocess=True), torch.from_numpy(MODELS["x*2-1-int8"][1](256, 7)))
    path = folder / "x2-1.onnx"
    export_qonnx(pre, input_t=torch.zeros(1, 40), export_path=str(path), dynamo=False)
    made.append(Case("QONNX file, x*2-1 before its quantizer", str(path), None, MODELS["x*2-1-int8"][1](200, 5),
                     _module_reference(pre), {}))  # fmt: skip
    legacy = folder / "legacy.onnx"
    onnx.save(_legacy(onnx.load(str(path))), str(legacy))
    made.append(Case("QONNX file, legacy finn.custom_op.general domain", str(legacy), None,
                     MODELS["x*2-1-int8"][1](200, 5), _module_reference(pre), {}))  # fmt: skip
    from test_tflite_binary_weights import _trained

    binary_weights, _, _ = _trained(0)
    made.append(Case("MLP, 1-bit weights, 2-bit activations (trained)", binary_weights, torch.zeros(1, 64),
                     _digits(200, True), _module_reference(binary_weights), {}))  # fmt: skip
    from test_binary_mlp import _binary_mlp

    binary = _binary_mlp()
    x = (np.random.default_rng(2).integers(0, 256, (200, 784)) / 255).astype(np.float32)
    made.append(Case("MLP, 1-bit, 784 inputs", binary, torch.zeros(1, 784), x, _module_reference(binary), {}))
    from test_verify_tolerance import _train

    for activation in ("sigmoid", "softmax"):
        trained = _train(activation, 0)
        made.append(Case(f"{activation} classifier (trained)", trained, torch.zeros(1, 64), _digits(200, True),
                         _module_reference(trained), {}))  # fmt: skip
    with contextlib.suppress(ImportError):
        from test_conv1d_fpga import conv1d_case

        made.append(Case(*conv1d_case(), {}))
    from test_residual_fpga import MyResNet, _eval

    resnet = _eval(MyResNet())
    made.append(Case("user ResNet, shared quantizers", resnet, torch.zeros(1, 1, 8, 8), _digits(200, False),
                     _module_reference(resnet), {}))  # fmt: skip
    from conftest import FIXTURES

    run = FIXTURES / "resnet8_w4a4_digits"
    if run.is_dir():
        from sdk.deployment import qat_outputs, resolve_model

        def resnet8(x: np.ndarray, run=run) -> np.ndarray:
            with tempfile.TemporaryDirectory() as tmp:
                return qat_outputs(resolve_model(str(run), Path(tmp)), np.rint(x * 255).astype(np.uint8))

        made.append(Case("zoo resnet8 (training run)", str(run), None, _digits(200, False), resnet8, {}))
    return made


def deploy_row(case: Case, boards: list[str], folder: Path) -> list[str]:
    cells = []
    for board in boards:
        out = folder / f"{abs(hash(case.name))}" / board
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = sdk.deploy(case.model, board, example_input=case.example_input, out=str(out), samples=100)
        except SDKError as exc:
            cells.append(f"refused (exit 2): {exc.what[:140]}")
            continue
        if not result.verified:
            cells.append(f"**FAILED** (exit {result.exit_code})")
            continue
        outputs = sdk.simulate(result.package, case.x)
        expected = case.reference(case.x)
        span = float(np.abs(expected).max()) or 1.0
        error = float(np.abs(outputs - expected).max()) / span
        if expected.shape[1] > 1:
            agree = float(np.mean(outputs.argmax(1) == expected.argmax(1)))
        else:
            agree = float(np.mean((outputs > outputs.mean()) == (expected > expected.mean())))
        cells.append(f"PASSED, error {error:.1e} of range, {agree:.0%} same class")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", default=",".join(BOARDS))
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    boards = args.boards.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [f"| model | {' | '.join(boards)} |", "|---" * (len(boards) + 1) + "|"]
        for case in cases(folder):
            if args.only and not any(part in case.name for part in args.only.split(",")):
                continue
            rows.append(f"| {case.name} | " + " | ".join(deploy_row(case, boards, folder)) + " |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(table)
    Path("model_matrix.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
