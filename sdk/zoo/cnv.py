"""A CNV-style conv net (FINN's CNV, scaled to small images): conv pairs and max pools, then fc."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from sdk.errors import ConfigError
from sdk.zoo.bits import BitsConfig
from sdk.zoo.catalog import CNV_CONV_PLAN as CONV_PLAN
from sdk.zoo.catalog import CNV_FC_HIDDEN as FC_HIDDEN
from sdk.zoo.layers import quant_act, quant_conv, quant_linear


class QuantCNV(nn.Module):
    """3x3 'same' convs with BatchNorm and quantized activations, 2x2 max pools, fc head."""

    flat_input = False

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, bits: BitsConfig):
        super().__init__()
        channels, height, width = input_shape
        pools = CONV_PLAN.count("pool")
        if height % (2**pools) or width % (2**pools):
            raise ConfigError(
                f"CNV needs image sides divisible by {2**pools}, got {height}x{width}.",
                where="--image-size",
                fix="use --image-size 8, 16, 28 ...",
            )
        features: OrderedDict[str, nn.Module] = OrderedDict()
        conv_index = 0
        for item in CONV_PLAN:
            if item == "pool":
                features[f"pool{conv_index}"] = nn.MaxPool2d(2)
                height, width = height // 2, width // 2
                continue
            layer_bits = bits.for_layer(f"conv{conv_index}")
            features[f"conv{conv_index}"] = quant_conv(channels, item, 3, layer_bits.weight, padding=1)
            features[f"bn_conv{conv_index}"] = nn.BatchNorm2d(item)
            features[f"act_conv{conv_index}"] = quant_act(layer_bits.act)
            channels = item
            conv_index += 1
        self.features = nn.Sequential(features)
        head: OrderedDict[str, nn.Module] = OrderedDict()
        in_features = channels * height * width
        for i, hidden in enumerate(FC_HIDDEN):
            layer_bits = bits.for_layer(f"fc{i}")
            head[f"fc{i}"] = quant_linear(in_features, hidden, layer_bits.weight)
            head[f"bn_fc{i}"] = nn.BatchNorm1d(hidden)
            head[f"act_fc{i}"] = quant_act(layer_bits.act)
            in_features = hidden
        head["fc_out"] = quant_linear(in_features, num_classes, bits.for_layer("fc_out").weight, per_channel=False)
        self.head = nn.Sequential(head)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))
