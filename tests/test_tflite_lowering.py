"""The TFLite writer lowers the QONNX graph node by node; what it cannot express is refused naming the node and op.

Models are written the way users write them and exported by Brevitas, as `sdk deploy` does with a module."""

from __future__ import annotations

import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from sdk.export import export_module
from targets.tflite.errors import TfliteConversionError
from targets.tflite.lowering import lower

pytestmark = pytest.mark.slow

Q = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}


def _lower(module: nn.Module, example: tuple, tmp_path):
    path = export_module(module.eval(), example, tmp_path / "m.onnx").onnx_path
    return lower(ModelWrapper(str(path)))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = QuantConv2d(4, 8, 3, groups=2, **Q)
        self.act = QuantReLU(bit_width=4)
        self.fc = QuantLinear(8 * 6 * 6, 3, **Q)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


class TwoScaleConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = QuantIdentity(bit_width=8), QuantIdentity(bit_width=4)
        self.fc = QuantLinear(128, 3, **Q)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x), self.b(x)], dim=1))


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = QuantIdentity(bit_width=8)
        self.fc = QuantLinear(8, 3, **Q)

    def forward(self, x):
        return self.fc(self.act(x).transpose(2, 3).flatten(2).mean(2))


@pytest.mark.parametrize(
    ("module", "example", "node", "words"),
    [
        (Grouped(), (1, 4, 8, 8), "Conv_0 of layer conv (Conv)", "grouped convolution"),  # file name, module layer
        (TwoScaleConcat(), (1, 64), "Concat_0 (Concat)", "different scales"),
        (Transposed(), (1, 8, 4, 4), "(Transpose)", "no int8 TFLite mapping"),
    ],
)
def test_what_the_writer_cannot_express_is_refused_naming_the_node(module, example, node, words, tmp_path):
    with pytest.raises(TfliteConversionError) as info:
        _lower(module, example, tmp_path)
    assert node in info.value.where and words in info.value.what and info.value.fix


def test_every_lowered_layer_names_the_graph_tensor_it_equals(tmp_path):
    from tests.test_own_models import BranchyCNN  # noqa: PLC0415 (a user model shared with the deploy tests)

    lowered = _lower(BranchyCNN(), (1, 1, 8, 8), tmp_path)
    ops = [layer.op for layer in lowered.layers]
    assert ops == ["conv", "conv", "dw", "concat", "maxpool", "reshape", "fc"]
    assert all(layer.source for layer in lowered.layers if layer.compared)
    assert lowered.layers[1].dilation == (2, 2) and lowered.layers[0].weights.shape[1:3] == (3, 5)
    assert lowered.input_scale == pytest.approx(1 / 255)
