"""Models written the way users write them (their own classes, layer names and forward), through the Python API.

Each goes to a board of each flow it can reach, verified by the full rule, or is refused with exit 2 naming
what cannot be mapped. Weights are random (untrained): exactness does not depend on training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brevitas.nn import QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat
from torch import nn

from sdk import check, deploy, simulate
from sdk.errors import SDKError, TfliteConversionError

pytestmark = pytest.mark.slow


class OddMLP(nn.Module):
    """An MLP with odd widths and 3-bit weights, named and wired the way its author liked."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc1 = QuantLinear(64, 37, bias=False, weight_bit_width=3, weight_quant=Int8WeightPerTensorFloat)
        self.bn1 = nn.BatchNorm1d(37)
        self.relu1 = QuantReLU(bit_width=3)
        self.fc2 = QuantLinear(37, 23, bias=False, weight_bit_width=3, weight_quant=Int8WeightPerTensorFloat)
        self.bn2 = nn.BatchNorm1d(23)
        self.relu2 = QuantReLU(bit_width=3)
        self.head = QuantLinear(23, 5, bias=False, weight_bit_width=3, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.head(self.relu2(self.bn2(self.fc2(self.relu1(self.bn1(self.fc1(x)))))))


class SigmoidClassifier(nn.Module):
    """A binary classifier ending in torch.sigmoid in forward (one output)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.body = nn.Sequential(
            QuantLinear(64, 16, bias=False, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat),
            nn.BatchNorm1d(16),
            QuantReLU(bit_width=4),
            QuantLinear(16, 1, bias=False, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat),
        )

    def forward(self, x):
        return torch.sigmoid(self.body(x))


def _eval(model: nn.Module) -> nn.Module:
    """Random but non-trivial BatchNorm statistics, so activations spread over their range."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.05, 0.2)
    return model.eval()


EXAMPLE = torch.zeros(1, 64)


def test_an_own_mlp_deploys_to_an_fpga_and_simulates_like_the_module(tmp_path):
    model = _eval(OddMLP())
    result = deploy(model, "pynq-z2", example_input=EXAMPLE, out=str(tmp_path / "fpga"), samples=50)
    assert result.verified and result.exit_code == 0
    assert result.summary["accuracy"] is None and "random inputs" in result.summary["accuracy_on"]
    x = np.random.default_rng(1).integers(0, 256, size=(40, 1, 1, 64), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.reshape(40, 64).astype(np.float32) / 255)).numpy()
    outputs = simulate(result.package, x)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def test_an_own_mlp_with_its_own_layer_names_is_refused_by_the_tflite_writer_with_a_reason(tmp_path):
    with pytest.raises(TfliteConversionError, match="OddMLP is not laid out") as info:
        deploy(_eval(OddMLP()), "tflite", example_input=EXAMPLE, out=str(tmp_path / "t"), samples=8)
    assert all(name in info.value.what for name in ("fc1", "fc2", "bn1", "bn2"))
    assert not (tmp_path / "t").exists()


def test_a_sigmoid_the_tflite_file_lacks_fails_verification_at_the_output(tmp_path):
    result = deploy(_eval(SigmoidClassifier()), "tflite", example_input=EXAMPLE, out=str(tmp_path / "t"), samples=30)
    assert not result.verified and result.exit_code == 1
    import json

    checks = json.loads((result.package / "report.json").read_text())["data"]["verification"]["checks"]
    final = next(c for c in checks if c["name"].startswith("final output"))
    assert not final["passed"] and final["first_difference"] == "network output"


class SoftmaxMLP(OddMLP):
    """The odd MLP with a softmax in forward, as a user who wants probabilities writes it."""

    def forward(self, x):
        return torch.softmax(super().forward(x), dim=-1)


@pytest.mark.parametrize("model_class", [SigmoidClassifier, SoftmaxMLP])
def test_a_float_activation_after_the_last_quantizer_runs_on_the_fpga_host_and_is_verified(tmp_path, model_class):
    model = _eval(model_class())
    check(model, "pynq-z2", example_input=EXAMPLE)
    x = np.random.default_rng(4).integers(0, 256, size=(50, 1, 8, 8), dtype=np.uint8)
    y = np.random.default_rng(5).integers(0, 2, size=50)
    np.savez(tmp_path / "labelled.npz", x=x, y=y)
    result = deploy(
        model, "pynq-z2", example_input=EXAMPLE, out=str(tmp_path / "fpga"), data=str(tmp_path / "labelled.npz")
    )
    assert result.verified and result.summary["accuracy"] is not None
    with torch.no_grad():
        expected = model(torch.from_numpy(x.reshape(50, 64).astype(np.float32) / 255)).numpy()
    np.testing.assert_allclose(simulate(result.package, x), expected, rtol=0, atol=1e-6)
    if model_class is SigmoidClassifier:  # one output: a binary classifier, accuracy thresholded at 0.5
        assert result.summary["accuracy"] == pytest.approx(float(np.mean((expected[:, 0] > 0.5) == y)))


def test_a_module_without_an_example_input_is_a_user_error():
    with pytest.raises(SDKError, match="example input"):
        check(OddMLP(), "pynq-z2")


def _user_qonnx(model: nn.Module, example: torch.Tensor, path) -> None:
    """What a user hands over: Brevitas's own export_qonnx of their module (float input, no model card)."""
    from brevitas.export import export_qonnx

    export_qonnx(model, input_t=example, export_path=str(path))


def test_a_qonnx_file_without_a_card_needs_its_input_scale_then_deploys_verified(tmp_path):
    from sdk.deployment import DeployConfig
    from sdk.deployment import check as run_check
    from sdk.errors import ExportError

    model = _eval(OddMLP())
    _user_qonnx(model, EXAMPLE, tmp_path / "mine.onnx")
    with pytest.raises(ExportError, match="is FLOAT32") as info:
        run_check(DeployConfig(target="pynq-z2", model=str(tmp_path / "mine.onnx")))
    assert "--input-scale" in info.value.fix
    x = np.random.default_rng(2).integers(0, 256, size=(60, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", x=x)
    result = deploy(
        str(tmp_path / "mine.onnx"),
        "pynq-z2",
        out=str(tmp_path / "fpga"),
        data=str(tmp_path / "samples.npz"),
        input_scale=1 / 255,
    )
    assert result.verified and result.summary["accuracy_on"].startswith("samples.npz, 60 samples")
    with torch.no_grad():
        expected = model(torch.from_numpy(x.reshape(60, 64).astype(np.float32) / 255)).numpy()
    outputs = simulate(result.package, x)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))
