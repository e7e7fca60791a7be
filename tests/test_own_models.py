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
from sdk.errors import SDKError
from targets.tflite.errors import TfliteConversionError

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
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
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


TFLITE_FAMILY = "tflite,stm32f746g-disco,ethos-u55-128"  # LiteRT, TFLite Micro on a Cortex-M, Vela for an Ethos-U


def _final_check(package) -> dict:
    import json

    checks = json.loads((package / "report.json").read_text())["data"]["verification"]["checks"]
    return next(c for c in checks if c["name"].startswith("final output"))


def test_a_sigmoid_classifier_deploys_to_the_tflite_family_with_the_sigmoid_in_the_file(tmp_path):
    """The sigmoid in forward becomes an int8 LOGISTIC, and the final output is checked against the module's."""
    model = _eval(SigmoidClassifier())
    results = deploy(model, TFLITE_FAMILY, example_input=EXAMPLE, out=str(tmp_path / "t"), samples=50)
    assert [r.exit_code for r in results] == [0, 0, 0]
    info = __import__("json").loads((results[0].package / "tflite_info.json").read_text())
    assert [op["op"] for op in info["ops"]][-2:] == ["LOGISTIC", "DEQUANTIZE"]
    x = np.random.default_rng(1).integers(0, 256, size=(40, 1, 1, 64), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.reshape(40, 64).astype(np.float32) / 255)).numpy()
    outputs = simulate(results[0].package, x)
    assert outputs.shape == expected.shape and float(np.abs(outputs - expected).max()) < 0.02  # 1/256 steps
    assert _final_check(results[0].package)["passed"]


def test_a_tflite_file_with_its_final_op_dropped_fails_at_the_network_output(tmp_path, monkeypatch):
    """Take the correct lowering of the sigmoid classifier, drop its LOGISTIC: the per-op checks still pass (every
    remaining op is right), the final-output check must not."""
    from targets.tflite import writer

    original = writer.lower

    def lower_without_the_last_op(*args, **kwargs):
        lowered = original(*args, **kwargs)
        assert lowered.layers[-1].op == "logistic"
        lowered.layers.pop()
        return lowered

    monkeypatch.setattr(writer, "lower", lower_without_the_last_op)
    result = deploy(_eval(SigmoidClassifier()), "tflite", example_input=EXAMPLE, out=str(tmp_path / "t"), samples=30)
    assert not result.verified and result.exit_code == 1
    final = _final_check(result.package)
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


class KeywordSpotter(nn.Module):
    """A Conv1d keyword-spotting net over a 64-sample signal, as an audio engineer writes it."""

    def __init__(self):
        super().__init__()
        from brevitas.nn import QuantConv1d

        torch.manual_seed(7)
        self.conv = QuantConv1d(1, 8, 3, bias=False, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)
        self.bn = nn.BatchNorm1d(8)
        self.act = QuantReLU(bit_width=4)
        self.fc = QuantLinear(8 * 62, 4, bias=False, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x.reshape(len(x), 1, -1)))).flatten(1))


def test_a_conv1d_net_over_a_flat_input_deploys_to_an_fpga_verified(tmp_path):
    """The signal reshaped to (N, 1, T) in forward: FINN's 1-D sliding windows (tests/test_conv1d_fpga.py)."""
    result = deploy(_eval(KeywordSpotter()), "pynq-z2", example_input=EXAMPLE, out=str(tmp_path / "p"), samples=50)
    assert result.verified, (tmp_path / "p" / "report.md").read_text()


class MixedPrecisionMLP(nn.Module):
    """8-bit first layer, 2-bit hidden layers: the mix users pick to keep the input layer accurate."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        quant = {"weight_quant": Int8WeightPerTensorFloat, "bias": False}
        self.layers = nn.Sequential(
            QuantLinear(64, 32, weight_bit_width=8, **quant),
            nn.BatchNorm1d(32),
            QuantReLU(bit_width=8),
            QuantLinear(32, 32, weight_bit_width=2, **quant),
            nn.BatchNorm1d(32),
            QuantReLU(bit_width=2),
            QuantLinear(32, 10, weight_bit_width=2, **quant),
        )

    def forward(self, x):
        return self.layers(x)


class OwnResidualCNN(nn.Module):
    """A CNN with a hand-written residual block whose two summands have their own quantizers."""

    def __init__(self):
        super().__init__()
        from brevitas.nn import QuantConv2d

        torch.manual_seed(13)
        quant = {"weight_quant": Int8WeightPerTensorFloat, "bias": False, "weight_bit_width": 4}
        self.stem = QuantConv2d(1, 8, 3, padding=1, **quant)
        self.stem_act = QuantReLU(bit_width=4)
        self.branch = QuantConv2d(8, 8, 3, padding=1, **quant)
        self.branch_act = QuantReLU(bit_width=2)  # a scale of its own (1/3; the stem's is 1/15)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = QuantLinear(8, 10, **quant)

    def forward(self, x):
        x = self.stem_act(self.stem(x))
        x = x + self.branch_act(self.branch(x))
        return self.fc(self.pool(x).flatten(1))


def test_a_mixed_precision_mlp_deploys_to_an_fpga_verified(tmp_path):
    model = _eval(MixedPrecisionMLP())
    result = deploy(model, "pynq-z2", example_input=EXAMPLE, out=str(tmp_path / "fpga"), samples=200)
    assert result.verified, (tmp_path / "fpga" / "report.md").read_text()


def test_a_hand_written_residual_cnn_is_refused_by_the_fpga_check_naming_the_add():
    from sdk.errors import UnsupportedLayersError

    with pytest.raises(UnsupportedLayersError) as info:
        check(_eval(OwnResidualCNN()), "pynq-z2", example_input=torch.zeros(1, 1, 8, 8))
    assert all(layer.why and layer.fix for layer in info.value.layers)
    assert all("shared quantizer" in layer.fix for layer in info.value.layers)  # the root cause, not its echoes
    assert [layer.name for layer in info.value.layers] == ["Add_0"] and "different scales" in info.value.what


def test_an_lstm_is_refused_clearly():
    from brevitas.nn import QuantLSTM

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = QuantLSTM(8, 8, batch_first=True)
            self.fc = QuantLinear(8, 2, bias=False, weight_quant=Int8WeightPerTensorFloat)

        def forward(self, x):
            out, _ = self.lstm(x.reshape(len(x), 8, 8))
            return self.fc(out[:, -1])

    with pytest.raises(SDKError) as info:  # refused at export or at the check, never a crash
        check(Recurrent().eval(), "pynq-z2", example_input=EXAMPLE)
    assert info.value.exit_code == 2 and info.value.fix


class BranchyCNN(nn.Module):
    """Two branches concatenated through one shared quantizer: a non-square kernel with a bias, a dilated conv, a
    depthwise conv, signed 8-bit activations and a max pool, as an inception-style block is written."""

    def __init__(self):
        super().__init__()
        from brevitas.nn import QuantConv2d, QuantIdentity

        torch.manual_seed(17)
        quant = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4}
        self.stem = QuantConv2d(1, 8, (3, 5), padding=(1, 2), bias=True, **quant)
        self.stem_bn = nn.BatchNorm2d(8)
        self.stem_act = QuantReLU(bit_width=4)
        self.dilated = QuantConv2d(8, 8, 3, padding=2, dilation=2, bias=False, **quant)
        self.depthwise = QuantConv2d(8, 8, 3, padding=1, groups=8, bias=False, **quant)
        self.shared = QuantIdentity(bit_width=8)
        self.pool = nn.MaxPool2d(2)
        self.fc = QuantLinear(16 * 4 * 4, 10, bias=True, **quant)

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = torch.cat([self.shared(self.dilated(x)), self.shared(self.depthwise(x))], dim=1)
        return self.fc(self.pool(x).flatten(1))


@pytest.mark.parametrize(
    ("model_class", "example"),
    [
        (OddMLP, EXAMPLE),
        (SoftmaxMLP, EXAMPLE),
        (KeywordSpotter, EXAMPLE),
        (MixedPrecisionMLP, EXAMPLE),
        (BranchyCNN, torch.zeros(1, 1, 8, 8)),
    ],
)
def test_own_models_deploy_to_the_tflite_family_verified(tmp_path, model_class, example):
    """Own layer names, odd widths, 3-bit weights, a softmax, a Conv1d, mixed precision, concatenated branches: all
    lowered from the graph."""
    results = deploy(_eval(model_class()), TFLITE_FAMILY, example_input=example, out=str(tmp_path / "t"), samples=50)
    for result in results:
        assert result.exit_code == 0, (result.package / "report.md").read_text()
        assert _final_check(result.package)["passed"]


def test_a_residual_sum_without_a_quantizer_is_refused_by_the_tflite_writer_naming_the_node(tmp_path):
    with pytest.raises(TfliteConversionError) as info:
        deploy(_eval(OwnResidualCNN()), "tflite", example_input=torch.zeros(1, 1, 8, 8), out=str(tmp_path / "t"))
    assert "Add_0" in info.value.what and "quantizer" in info.value.fix and info.value.exit_code == 2
    assert not (tmp_path / "t").exists()


def _old_style(path) -> None:
    """Rewrite an export the way older exporters wrote graphs: every initializer also a graph input, no shapes."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    listed = {i.name for i in graph.input}
    for init in (init for init in graph.initializer if init.name not in listed):
        graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    del graph.value_info[:]
    onnx.save(model, str(path))


def test_an_old_style_qonnx_export_deploys_to_an_fpga_and_the_tflite_family(tmp_path):
    model = _eval(OddMLP())
    path = tmp_path / "old.onnx"
    _user_qonnx(model, EXAMPLE, path)
    _old_style(path)
    import onnx

    assert len(onnx.load(str(path)).graph.input) > 1  # the initializers are listed as inputs
    results = deploy(
        str(path), "pynq-z2,tflite,stm32f746g-disco", out=str(tmp_path / "o"), samples=40, input_scale=1 / 255
    )
    assert [r.exit_code for r in results] == [0, 0, 0], [r.summary for r in results]
