"""Fully connected nets in the spirit of FINN's TFC / SFC / LFC."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from sdk.zoo.bits import BitsConfig
from sdk.zoo.layers import quant_act, quant_linear


class QuantMLP(nn.Module):
    """fc -> BatchNorm -> quantized activation, repeated; a classifier at the end.

    Takes flat input (N, C*H*W): the flattening happens in the data pipeline,
    so the exported graph starts with the first MatMul.
    """

    flat_input = True

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int], bits: BitsConfig):
        super().__init__()
        in_features = 1
        for dim in input_shape:
            in_features *= dim
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, width in enumerate(hidden):
            layer_bits = bits.for_layer(f"fc{i}")
            layers[f"fc{i}"] = quant_linear(in_features, width, layer_bits.weight)
            layers[f"bn{i}"] = nn.BatchNorm1d(width)
            layers[f"act{i}"] = quant_act(layer_bits.act)
            in_features = width
        layers["fc_out"] = quant_linear(in_features, num_classes, bits.for_layer("fc_out").weight, per_channel=False)
        self.body = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
