"""A small residual CNN in the style of ResNet-8 (MLPerf Tiny image classification)."""

from __future__ import annotations

from torch import Tensor, nn

from sdk.zoo.bits import BitsConfig
from sdk.zoo.catalog import RESNET_STAGES as STAGES
from sdk.zoo.catalog import RESNET_STEM_CHANNELS as STEM_CHANNELS
from sdk.zoo.layers import quant_act, quant_conv, quant_linear, residual_quant


class ResidualBlock(nn.Module):
    """conv-bn-act-conv-bn plus a shortcut; both summands share one quantizer."""

    def __init__(self, name: str, in_ch: int, out_ch: int, stride: int, bits: BitsConfig):
        super().__init__()
        b1, b2 = bits.for_layer(f"{name}_conv1"), bits.for_layer(f"{name}_conv2")
        self.conv1 = quant_conv(in_ch, out_ch, 3, b1.weight, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = quant_act(b1.act)
        self.conv2 = quant_conv(out_ch, out_ch, 3, b2.weight, padding=1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            sb = bits.for_layer(f"{name}_shortcut")
            self.shortcut = nn.Sequential(
                quant_conv(in_ch, out_ch, 1, sb.weight, stride=stride), nn.BatchNorm2d(out_ch)
            )
        self.add_quant = residual_quant()
        self.act_out = quant_act(b2.act)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act_out(self.add_quant(y) + self.add_quant(skip))


class QuantResNet8(nn.Module):
    flat_input = False

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, bits: BitsConfig):
        super().__init__()
        stem_bits = bits.for_layer("conv0")
        self.stem = nn.Sequential(
            quant_conv(input_shape[0], STEM_CHANNELS, 3, stem_bits.weight, padding=1),
            nn.BatchNorm2d(STEM_CHANNELS),
            quant_act(stem_bits.act),
        )
        blocks, channels = [], STEM_CHANNELS
        for i, (stride, out_ch) in enumerate(STAGES):
            blocks.append(ResidualBlock(f"s{i}", channels, out_ch, stride, bits))
            channels = out_ch
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.act_pool = quant_act(bits.for_layer(f"s{len(STAGES) - 1}_conv2").act)
        self.fc_out = quant_linear(channels, num_classes, bits.for_layer("fc_out").weight, per_channel=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act_pool(self.pool(self.stages(self.stem(x)))).flatten(1))
