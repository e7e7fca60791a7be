"""1-bit (bipolar) weights on the TFLite family: written the way Brevitas users write them, trained briefly on digits.

Weights of +-1 times a scale are exact in int8 (+-1 times a power-of-two gain, at the scale over the gain), so an MLP
with 1-bit weights and 2-bit activations lowers and verifies by the full rule on LiteRT, TFLite Micro on a Cortex-M
and Vela for an Ethos-U. A bipolar activation stays refused, naming its node, with the reason and a fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from torch import nn

from sdk import check, deploy
from sdk.errors import ExportError
from targets.tflite.errors import TfliteConversionError

pytestmark = pytest.mark.slow

TFLITE_FAMILY = ("tflite", "stm32f746g-disco", "ethos-u55-128")  # LiteRT, TFLite Micro on a Cortex-M, Vela
BINARY = {"bias": False, "weight_quant": SignedBinaryWeightPerTensorConst, "weight_bit_width": 1}
EXAMPLE = torch.zeros(1, 64)


class BinaryWeightMLP(nn.Module):
    """1-bit weights in every layer; 2-bit activations, unsigned (QuantReLU) and signed (QuantIdentity)."""

    def __init__(self, bipolar_activations: bool = False):
        super().__init__()
        self.fc1, self.bn1 = QuantLinear(64, 48, **BINARY), nn.BatchNorm1d(48)
        self.act1 = QuantReLU(bit_width=2)
        self.fc2, self.bn2 = QuantLinear(48, 32, **BINARY), nn.BatchNorm1d(32)
        self.act2 = (
            QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
            if bipolar_activations
            else QuantIdentity(bit_width=2)
        )
        self.classifier = QuantLinear(32, 10, **BINARY)

    def forward(self, x):
        x = self.act1(self.bn1(self.fc1(x)))
        return self.classifier(self.act2(self.bn2(self.fc2(x))))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 pixels (0..16 -> 0..255) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.data * 255 / 16).astype(np.uint8), digits.target


def _trained(seed: int, steps: int = 80) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """A few Adam steps on the first 1500 digits (pixels / 255, as the deploy feeds them); the rest for testing."""
    pixels, labels = _digits()
    torch.manual_seed(seed)
    model = BinaryWeightMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(pixels[:1500].astype(np.float32) / 255), torch.from_numpy(labels[:1500])
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(x), (128,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), pixels[1500:], labels[1500:]


@pytest.mark.parametrize("seed", [0, 1])
def test_one_bit_weights_with_two_bit_activations_deploy_verified_to_the_tflite_family(seed, tmp_path):
    model, x_test, y_test = _trained(seed)
    with torch.no_grad():
        qat_accuracy = float(
            (model(torch.from_numpy(x_test.astype(np.float32) / 255)).argmax(1).numpy() == y_test).mean()
        )
    assert qat_accuracy > 0.5  # it learned something: the outputs are not all alike
    for board in TFLITE_FAMILY:
        check(model, board, example_input=EXAMPLE)  # refused before: "1-bit (bipolar) ... deploy to FINN"
    data = tmp_path / "digits_test.npz"
    np.savez(data, x=x_test, y=y_test)
    results = deploy(model, ",".join(TFLITE_FAMILY), example_input=EXAMPLE, out=str(tmp_path / "d"), data=str(data))
    assert [(r.board, r.exit_code, r.verified) for r in results] == [(b, 0, True) for b in TFLITE_FAMILY]
    for result in results:
        assert result.summary["accuracy"] == pytest.approx(qat_accuracy, abs=0.02)
        report = json.loads((result.package / "report.json").read_text())
        checks = {c["name"]: c for c in report["data"]["verification"]["checks"]}
        assert all(c["passed"] for c in checks.values()) and len(checks) == 3
        final = next(c for name, c in checks.items() if name.startswith("final output"))
        assert "same class on" in final["detail"]
        fc = [layer for layer in report["data"]["tflite"]["layers"] if layer.get("weight_bits") is not None]
        assert [layer["weight_bits"] for layer in fc] == [1, 1, 1]
        assert [layer["act_bits"] for layer in fc] == [2, 2, None]  # the classifier writes its accumulator
        assert all(layer["weight_gain"] == 64 for layer in fc)  # +-1 stored as +-64 at scale / 64


class BinaryWeightConvNet(nn.Module):
    """A plain and a depthwise convolution with 1-bit weights, 2-bit activations, a max pool and a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = QuantConv2d(1, 8, 3, padding=1, **BINARY)
        self.bn, self.act = nn.BatchNorm2d(8), QuantReLU(bit_width=2)
        self.depthwise = QuantConv2d(8, 8, 3, padding=1, groups=8, **BINARY)
        self.bn_dw, self.act_dw = nn.BatchNorm2d(8), QuantReLU(bit_width=2)
        self.pool = nn.MaxPool2d(2)
        self.classifier = QuantLinear(8 * 4 * 4, 10, **BINARY)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        x = self.pool(self.act_dw(self.bn_dw(self.depthwise(x))))
        return self.classifier(x.flatten(1))


def test_one_bit_conv_and_depthwise_weights_deploy_verified_to_the_tflite_family(tmp_path):
    """Untrained (exactness does not depend on training), with BatchNorm statistics that spread the activations."""
    torch.manual_seed(4)
    model = BinaryWeightConvNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-2, 2)
            module.running_var.uniform_(1, 4)
    model.eval()
    example = torch.zeros(1, 1, 8, 8)
    results = deploy(model, ",".join(TFLITE_FAMILY), example_input=example, out=str(tmp_path / "c"), samples=100)
    assert [(r.board, r.exit_code, r.verified) for r in results] == [(b, 0, True) for b in TFLITE_FAMILY]
    layers = json.loads((results[0].package / "report.json").read_text())["data"]["tflite"]["layers"]
    assert [(layer["op"], layer["weight_bits"]) for layer in layers if layer.get("weight_bits")] == [
        ("conv", 1),
        ("dw", 1),
        ("fc", 1),
    ]


def test_the_stored_weights_are_the_signs_times_the_gain(tmp_path):
    """The int8 FULLY_CONNECTED weights of the first layer are exactly sign(w) * 64 (0 counted positive, as QONNX's
    BipolarQuant), in the .tflite that LiteRT runs."""
    from ai_edge_litert.interpreter import Interpreter

    model, _, _ = _trained(seed=2, steps=10)
    result = deploy(model, "tflite", example_input=EXAMPLE, out=str(tmp_path / "t"), samples=50)
    assert result.exit_code == 0 and result.verified
    interpreter = Interpreter(model_path=str(result.package / "model.tflite"))
    interpreter.allocate_tensors()
    signs = np.where(model.fc1.weight.detach().numpy() >= 0, 64, -64)
    stored = [
        interpreter.get_tensor(t["index"])
        for t in interpreter.get_tensor_details()
        if tuple(t["shape"]) == signs.shape and t["dtype"] == np.int8
    ]
    assert len(stored) == 1 and np.array_equal(stored[0], signs)


def test_bipolar_activations_stay_refused_naming_the_node():
    model = BinaryWeightMLP(bipolar_activations=True).eval()
    for board in TFLITE_FAMILY:
        with pytest.raises(TfliteConversionError) as info:
            check(model, board, example_input=EXAMPLE)
        error = info.value
        assert "BipolarQuant" in error.where and "1 bit" in error.what and "sends 0 to +s" in error.what
        assert "2..8-bit activations" in error.fix and "`sdk check --target pynq-z2` accepts it" in error.fix


@pytest.mark.parametrize(
    "quant, says",
    [
        ({}, "only integer"),  # Brevitas's default: signed narrow-range, whose 1-bit scale divides by 0
        ({"weight_narrow_range": False}, "integers -1 / 0"),  # exported as BipolarQuant (-1 / +1) by Brevitas
    ],
)
def test_other_one_bit_weight_quantizers_are_named_with_the_binary_quantizer_as_fix(quant, says):
    """QuantLinear(..., weight_bit_width=1) on Brevitas's integer quantizer computes NaN, or -1 / 0 that Brevitas
    exports as -1 / +1: said naming the layer, not as a NaN in a temporary file or an export "bug"."""
    layer = QuantLinear(64, 16, bias=False, weight_bit_width=1, **quant)
    model = nn.Sequential(layer, nn.BatchNorm1d(16), QuantReLU(bit_width=2)).eval()
    for board in ("tflite", "pynq-z2"):
        with pytest.raises(ExportError) as info:
            check(model, board, example_input=EXAMPLE)
        error = info.value
        assert error.where == "layer 0" and says in error.what
        assert "SignedBinaryWeightPerTensorConst" in error.fix and "sdk-export" not in error.render()
