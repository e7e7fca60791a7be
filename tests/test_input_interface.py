"""The device interface is the model's own: signed, bipolar and preprocessed inputs, one x for every target.

Models written the way users write them: an audio-feature MLP whose first quantizer is signed INT8 (features take
negative values), a network-intrusion MLP over bits that computes x*2-1 before a bipolar quantizer, the same as a
QONNX file whose input is annotated BIPOLAR (FINN's tutorials), and a QONNX file that scales its input before an
unsigned quantizer. Each goes to an FPGA board, tflite, a Cortex-M board and an Ethos-U board, verified by the full
rule; `sdk.simulate` of each package takes the same float x, the module's own, and gives the module's outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedBinaryWeightPerTensorConst,
    Uint8ActPerTensorFloat,
)
from torch import nn

import sdk
from sdk.errors import ConfigError

pytestmark = pytest.mark.slow

BOARDS = ["pynq-z2", "tflite", "stm32f746g-disco", "ethos-u55-128"]
ROOT = Path(__file__).resolve().parents[1]


class KeywordMLP(nn.Module):
    """Audio features (signed, roughly unit variance) into a signed 8-bit input quantizer."""

    def __init__(self, preprocess: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.preprocess = preprocess
        self.quant_in = QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=False)
        self.fc1 = QuantLinear(40, 32, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)
        self.bn1 = nn.BatchNorm1d(32)
        self.act1 = QuantReLU(bit_width=4)
        self.fc2 = QuantLinear(32, 6, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        if self.preprocess:
            x = x * 2 - 1
        return self.fc2(self.act1(self.bn1(self.fc1(self.quant_in(x)))))


class IntrusionMLP(nn.Module):
    """600 binary features: x*2-1, a bipolar quantizer, 1-bit weights and 2-bit activations (UNSW-NB15 style)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.quant_in = QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=False)
        self.fc1 = QuantLinear(600, 64, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        self.bn1 = nn.BatchNorm1d(64)
        self.act1 = QuantReLU(bit_width=2)
        self.fc2 = QuantLinear(64, 1, bias=False, weight_bit_width=2, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc2(self.act1(self.bn1(self.fc1(self.quant_in(x * 2 - 1)))))


class ScaledInputMLP(nn.Module):
    """Divides its input by 4 and subtracts 0.5 before an unsigned 8-bit quantizer (a mean subtraction); its
    inputs lie in [2, 8)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.quant_in = QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=False)
        self.fc1 = QuantLinear(24, 16, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)
        self.act1 = QuantReLU(bit_width=4)
        self.fc2 = QuantLinear(16, 3, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc2(self.act1(self.fc1(self.quant_in(x / 4 - 0.5))))


def _calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Input quantizer scales set by a few training-mode batches, BatchNorm statistics that spread activations."""
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(x)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):  # sums over 600 bits spread wider than over 40 features
            wide = module.num_features == 64
            module.running_mean.uniform_(-5, 5) if wide else module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(20, 60) if wide else module.running_var.uniform_(0.05, 0.2)
    return model.eval()


def _features(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 40)) * 1.2).astype(np.float32)


def _bits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (n, 600)).astype(np.float32)


MODELS = {
    "signed-int8": (lambda: KeywordMLP(), lambda n, s=0: _features(n, s), 40),
    "x*2-1-int8": (lambda: KeywordMLP(preprocess=True), lambda n, s=0: _features(n, s) / 2, 40),
    "bipolar-bits": (IntrusionMLP, _bits, 600),
    "scaled-uint8": (
        ScaledInputMLP,
        lambda n, s=0: np.random.default_rng(s).uniform(2, 7.9, (n, 24)).astype(np.float32),
        24,
    ),
}


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """Each model as its author would hand it in: a QONNX file written by Brevitas (no model card), its module."""
    folder = tmp_path_factory.mktemp("user_models")
    made = {}
    for name, (make, data, width) in MODELS.items():
        model = _calibrated(make(), torch.from_numpy(data(256, 7)))
        path = folder / f"{name.replace('*', '')}.onnx"
        export_qonnx(model, input_t=torch.zeros(1, width), export_path=str(path), dynamo=False)
        made[name] = (path, model)
    return made


@pytest.fixture(scope="module")
def packages(user_models, tmp_path_factory):
    """Every model to every board through the CLI, with the user's own float samples as --data."""
    out = tmp_path_factory.mktemp("packages")
    built = {}
    for name, (path, _) in user_models.items():
        data = out / f"{path.stem}.npz"
        np.savez(data, x=MODELS[name][1](48, 3))
        proc = _sdk(
            "deploy",
            "--model",
            str(path),
            "--target",
            ",".join(BOARDS),
            "--out",
            str(out / path.stem),
            "--data",
            str(data),
            "--json",
        )
        built[name] = (proc, out / path.stem)
    return built


def _sdk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdk", *args], capture_output=True, text=True, cwd=ROOT)


def _module_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", list(MODELS))
def test_every_board_deploys_the_model_on_its_own_input_verified(packages, name):
    proc, folder = packages[name]
    results = json.loads(proc.stdout)["results"]
    assert proc.returncode == 0, (proc.stderr[-2000:], results)
    assert [r["verified"] for r in results] == [True] * len(BOARDS)
    for board in BOARDS:
        manifest = json.loads((folder / board / "manifest.json").read_text())
        card = json.loads((folder / board / "model.qonnx.json").read_text())
        assert manifest["input"] == card["input"]["map"] and manifest["input"]["source"] != "pixels"
        assert "input" in (folder / board / "report.md").read_text()


@pytest.mark.parametrize("name", list(MODELS))
def test_the_same_float_x_gives_the_modules_outputs_on_every_target(user_models, packages, name):
    """One x for every target: the module's own forward input, never pixels, never codes."""
    _, model = user_models[name]
    _, folder = packages[name]
    x = MODELS[name][1](64, 11)
    expected = _module_outputs(model, x)
    span = float(np.abs(expected).max())
    fpga = sdk.simulate(folder / "pynq-z2", x)
    np.testing.assert_allclose(fpga, expected, rtol=0, atol=1e-5 * span)  # bit-exact up to float32 rounding
    for board in BOARDS[1:]:
        int8 = sdk.simulate(folder / board, x)
        agree = (
            np.mean(int8.argmax(1) == expected.argmax(1))
            if expected.shape[1] > 1
            else np.mean((int8 > 0) == (expected > 0))
        )
        assert np.abs(int8 - expected).max() <= 0.1 * span and agree >= 0.85, board


def test_signed_features_reach_the_device_as_negative_codes(packages):
    """Before: the input was UINT8 pixels, and negative features never reached the device."""
    _, folder = packages["signed-int8"]
    card = json.loads((folder / "tflite" / "model.qonnx.json").read_text())
    assert card["input"]["map"]["dtype"] == "INT8" and card["input"]["map"]["codes"] == [-128, 127]
    x = _features(8)
    negated = sdk.simulate(folder / "pynq-z2", -x)
    assert not np.array_equal(negated, sdk.simulate(folder / "pynq-z2", np.abs(x)))
    info = (
        json.loads((folder / "tflite" / "tflite_info.json").read_text())
        if (folder / "tflite" / "tflite_info.json").is_file()
        else None
    )
    if info is not None:
        assert info["input_zero_point"] == 0


def test_random_verification_samples_cover_the_signs(user_models, tmp_path):
    """Without --data the samples are drawn over the whole range of the input quantizer, negatives included."""
    from sdk.deployment import resolve_model, verification_samples

    path, _ = user_models["signed-int8"]
    resolved = resolve_model(str(path), tmp_path)
    samples = verification_samples(resolved.card, 200)
    assert samples.x.min() == -128 and samples.x.max() == 127
    path, _ = user_models["bipolar-bits"]
    (tmp_path / "b").mkdir()
    resolved = resolve_model(str(path), tmp_path / "b")
    assert set(np.unique(verification_samples(resolved.card, 20).x)) == {-1, 1}


def test_a_value_the_first_quantizer_would_clip_is_refused_not_clipped(packages, tmp_path):
    _, folder = packages["signed-int8"]
    x = _features(4)
    x[2, 5] = 1e3
    for board in ("pynq-z2", "tflite"):
        with pytest.raises(ConfigError, match="outside the model's input range") as info:
            sdk.simulate(folder / board, x)
        assert info.value.where == "x"
    np.savez(tmp_path / "far.npz", x=x)
    proc = _sdk("simulate", str(folder / "tflite"), "--data", str(tmp_path / "far.npz"), "--json")
    assert proc.returncode == 2 and "outside the model's input range" in proc.stdout + proc.stderr


def test_codes_are_taken_only_when_the_call_says_so(packages):
    _, folder = packages["signed-int8"]
    codes = np.random.default_rng(0).integers(-128, 128, (5, 40)).astype(np.int8)
    from_codes = sdk.simulate(folder / "pynq-z2", codes, codes=True)
    card = json.loads((folder / "pynq-z2" / "model.qonnx.json").read_text())
    scale = card["input"]["map"]["scale"]
    from_values = sdk.simulate(folder / "pynq-z2", codes.astype(np.float32) * np.float32(scale))
    np.testing.assert_array_equal(from_codes, from_values)
    with pytest.raises(ConfigError, match="not INT8 input values"):
        sdk.simulate(folder / "pynq-z2", codes.astype(np.float32) + 0.5, codes=True)


def test_a_qonnx_file_whose_input_is_annotated_bipolar_deploys(user_models, tmp_path):
    """FINN's tutorials hand in graphs whose input is annotated BIPOLAR (before: refused everywhere)."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path, model = user_models["bipolar-bits"]
    graph = cleanup_model(ModelWrapper(str(path)))
    name = graph.graph.input[0].name
    tensor = name
    while True:  # x*2-1 and the bipolar quantizer, cut off by hand as a FINN tutorial's export leaves the graph
        node = graph.find_consumer(tensor)
        graph.graph.node.remove(node)
        tensor = node.output[0]
        if node.op_type == "BipolarQuant":
            break
    for node in graph.graph.node:
        node.input[:] = [name if i == tensor else i for i in node.input]
    graph.set_tensor_datatype(name, DataType["BIPOLAR"])
    graph = cleanup_model(graph)
    bipolar = tmp_path / "bipolar_in.onnx"
    graph.save(str(bipolar))
    bits = _bits(16, 4)
    signs = bits * 2 - 1
    expected = _module_outputs(model, bits)
    for board in ("pynq-z2", "tflite"):
        proc = _sdk("deploy", "--model", str(bipolar), "--target", board, "--out", str(tmp_path / board), "--json")
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
        outputs = sdk.simulate(tmp_path / board, signs)
        tolerance = 1e-5 if board == "pynq-z2" else 0.1
        np.testing.assert_allclose(outputs, expected, rtol=0, atol=tolerance * float(np.abs(expected).max()))
    with pytest.raises(ConfigError, match="-1 or \\+1"):
        sdk.simulate(tmp_path / "tflite", bits)  # 0 is no bipolar value: never read as -1 silently


def test_the_python_api_takes_the_modules_own_input(tmp_path):
    """sdk.deploy of a module that quantizes its own input: its forward's x, on an FPGA and on tflite alike."""
    model = _calibrated(KeywordMLP(), torch.from_numpy(_features(256, 7)))
    results = sdk.deploy(model, "pynq-z2,tflite", example_input=torch.zeros(1, 40), out=str(tmp_path), samples=40)
    assert [r.verified for r in results] == [True, True]
    x = _features(32, 9)
    expected = _module_outputs(model, x)
    np.testing.assert_allclose(
        sdk.simulate(results[0].package, x), expected, rtol=0, atol=1e-5 * np.abs(expected).max()
    )
    assert np.mean(sdk.simulate(results[1].package, x).argmax(1) == expected.argmax(1)) >= 0.85


def test_a_module_given_input_scale_takes_pixels(tmp_path):
    """Pixel data into a module that quantizes its own input after preprocessing: input_scale says so, as
    --input-scale does; the pixel scale and the preprocessing become the input map (before: the TFLite targets
    refused the Sub after the pixel scale)."""
    model = _calibrated(ScaledInputMLP(), torch.from_numpy(MODELS["scaled-uint8"][1](256, 7)))
    result = sdk.deploy(
        model, "tflite", example_input=torch.zeros(1, 24), out=str(tmp_path), samples=20, input_scale=1 / 32
    )
    card = json.loads((result.package / "model.qonnx.json").read_text())
    steps = card["input"]["map"]["steps"]
    assert result.verified and card["input"]["map"]["pixels_in"] and card["input"]["dtype"] == "uint8"
    assert [step["op"] for step in steps] == ["Mul", "Div", "Sub"] and steps[0]["constant"] == np.float32(1 / 32)
    pixels = np.random.default_rng(3).integers(64, 250, (16, 24)).astype(np.uint8)  # within its quantizer
    expected = _module_outputs(model, pixels.astype(np.float32) / 32)
    outputs = sdk.simulate(result.package, pixels)
    assert np.abs(outputs - expected).max() <= 0.1 * float(np.abs(expected).max())


@pytest.mark.parametrize("board", ["pynq-z2", "tflite"])
def test_a_qonnx_file_given_input_scale_folds_its_preprocessing_into_the_pixel_map(user_models, tmp_path, board):
    """--input-scale on a graph that computes x*2-1 before its first quantizer: the device takes that quantizer's
    codes, the user passes pixels (before: tflite refused the Sub after the pixel scale)."""
    path, model = user_models["x*2-1-int8"]
    proc = _sdk("deploy", "--model", str(path), "--target", board, "--out", str(tmp_path), "--input-scale", "0.01")
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    card = json.loads((tmp_path / "model.qonnx.json").read_text())
    assert card["input"]["map"]["pixels_in"] and card["input"]["dtype"] == "int8"
    pixels = np.random.default_rng(8).integers(0, 256, (24, 40)).astype(np.uint8)
    expected = _module_outputs(model, pixels.astype(np.float32) * np.float32(0.01))
    outputs = sdk.simulate(tmp_path, pixels)
    np.testing.assert_allclose(outputs, sdk.simulate(tmp_path, pixels.astype(np.float32) / 255), rtol=0, atol=0)
    tolerance = 1e-5 if board == "pynq-z2" else 0.1
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=tolerance * float(np.abs(expected).max()))
