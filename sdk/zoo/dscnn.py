"""A small depthwise-separable CNN (keyword-spotting DS-CNN / MobileNet style)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from sdk.zoo.bits import BitsConfig
from sdk.zoo.catalog import DSCNN_BLOCKS as BLOCKS
from sdk.zoo.catalog import DSCNN_STEM_CHANNELS as STEM_CHANNELS
from sdk.zoo.layers import quant_act, quant_conv, quant_linear


class QuantDSCNN(nn.Module):
    """Stem conv, then depthwise 3x3 + pointwise 1x1 blocks, global average pool, classifier."""

    flat_input = False

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, bits: BitsConfig):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        stem_bits = bits.for_layer("conv0")
        layers["conv0"] = quant_conv(input_shape[0], STEM_CHANNELS, 3, stem_bits.weight, padding=1)
        layers["bn_conv0"] = nn.BatchNorm2d(STEM_CHANNELS)
        layers["act_conv0"] = quant_act(stem_bits.act)
        channels = STEM_CHANNELS
        for i, (stride, out_channels) in enumerate(BLOCKS):
            dw_bits, pw_bits = bits.for_layer(f"dw{i}"), bits.for_layer(f"pw{i}")
            layers[f"dw{i}"] = quant_conv(
                channels, channels, 3, dw_bits.weight, stride=stride, padding=1, groups=channels
            )
            layers[f"bn_dw{i}"] = nn.BatchNorm2d(channels)
            layers[f"act_dw{i}"] = quant_act(dw_bits.act)
            layers[f"pw{i}"] = quant_conv(channels, out_channels, 1, pw_bits.weight)
            layers[f"bn_pw{i}"] = nn.BatchNorm2d(out_channels)
            layers[f"act_pw{i}"] = quant_act(pw_bits.act)
            channels = out_channels
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        # The mean of quantized values is requantized at the activation width of the last block.
        layers["act_pool"] = quant_act(bits.for_layer(f"pw{len(BLOCKS) - 1}").act)
        self.features = nn.Sequential(layers)
        self.fc_out = quant_linear(channels, num_classes, bits.for_layer("fc_out").weight, per_channel=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.features(x).flatten(1))
