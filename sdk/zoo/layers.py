"""Brevitas building blocks shared by the zoo models.

Choices that make the same trained model map to FINN and to int8 TFLite:
- weights: signed, narrow range, float scale per output channel (1 bit: bipolar);
  the classifier layer uses one scale per tensor so its output is an integer
  accumulator times a single float;
- activations: unsigned with a learned per-tensor scale after ReLU (1 bit: bipolar sign);
- residual additions: both operands pass through one shared signed quantizer, so
  the addition happens on integers of the same scale;
- no biases in compute layers: BatchNorm carries the offset, FINN folds it into thresholds.
"""

from __future__ import annotations

from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedBinaryWeightPerTensorConst,
    Uint8ActPerTensorFloat,
)
from torch import nn

RESIDUAL_BITS = 8


def _weight_quant(bits: int, per_channel: bool) -> dict:
    if bits == 1:
        return {"weight_quant": SignedBinaryWeightPerTensorConst}
    quant = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
    return {"weight_quant": quant, "weight_bit_width": bits}


def quant_linear(in_features: int, out_features: int, weight_bits: int, per_channel: bool = True) -> QuantLinear:
    return QuantLinear(in_features, out_features, bias=False, **_weight_quant(weight_bits, per_channel))


def quant_conv(
    in_ch: int, out_ch: int, kernel: int, weight_bits: int, stride: int = 1, padding: int = 0, groups: int = 1
) -> QuantConv2d:
    return QuantConv2d(
        in_ch,
        out_ch,
        kernel,
        stride=stride,
        padding=padding,
        groups=groups,
        bias=False,
        **_weight_quant(weight_bits, per_channel=True),
    )


def quant_act(bits: int) -> nn.Module:
    """Output activation of a compute layer: unsigned ReLU, or bipolar sign at 1 bit."""
    if bits == 1:
        return QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
    return QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=bits)


def residual_quant() -> QuantIdentity:
    """Shared quantizer of both operands of a residual addition."""
    return QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=RESIDUAL_BITS)
