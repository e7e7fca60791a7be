"""Lower a Brevitas QAT model to integer layers in TFLite terms (int8, NHWC).

Every number comes from the trained model; nothing is calibrated:

  input     uint8 pixel p enters as int8 p - 128 at scale 1/255, zero point -128
  conv/fc   int8 weights per output channel = Brevitas integers times a power of
            two (weight_gain); BatchNorm's factor a_c = gamma_c / sqrt(var_c + eps)
            is folded into the weight scale (s_w[c] * |a_c|; a negative a_c negates
            the channel), its shift into the int32 bias at scale s_in * s_w'[c].
            The output is int8 at the scale of the quantizer that follows:
            an unsigned a-bit QuantReLU (zero point 0 -> int8 zero point -128,
            fused RELU, plus a MINIMUM at -128 + 2^a - 1 when a < 8), or the
            signed 8-bit quantizer of a residual addition (zero point 0)
  maxpool   MAX_POOL_2D on int8 with the input's quantization
  avgpool   a global average pool followed by its QuantReLU is a depthwise
            convolution over the whole map with constant weights at scale 1/(64 H W):
            the exact integer sum, requantized once to the QuantReLU's scale, as
            Brevitas computes it (MEAN's int8 kernels round twice and differ
            between LiteRT and TFLM)
  residual  ADD of the two int8 operands of the shared residual quantizer; an
            identity shortcut is first requantized to it (QUANTIZE int8 -> int8),
            as Brevitas rounds it (measured: feeding it to the ADD at its own
            scale instead doubled the end-to-end mismatch rate)
  flatten   RESHAPE; the next Linear's columns are reordered NCHW -> NHWC
  fc_out    per-tensor weights, no bias, int8 logits with zero point 0 at a
            data-free scale that covers the worst-case accumulator

Tensor names are the qualified names of the Brevitas modules whose output they
hold, so a verification can hook the QAT model and compare tensor by tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from sdk.data import INPUT_SCALE
from sdk.errors import TfliteConversionError

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INPUT_NAME = "input"


@dataclass
class Layer:
    """One operation of the int8 graph, with every number exactly as it is stored.

    op: fc | conv | dw | maxpool | avgpool | reshape | add | requant. Shapes leave out the
    batch: (H, W, C) or (features,).
    """

    name: str  # output tensor = the Brevitas module whose output it holds
    op: str
    inputs: list[str]
    shape: list[int]
    scale: float  # output quantization (float32 value)
    zero_point: int
    relu: bool = False  # fused RELU (clamps at the zero point)
    clamp_max: int | None = None  # int8 top of an a-bit activation (a MINIMUM follows)
    weights: np.ndarray | None = None  # int8: fc (O, I), conv (O, kh, kw, I), dw (1, kh, kw, C)
    weight_scales: np.ndarray | None = None  # float32 (O,) per channel or (1,)
    bias: np.ndarray | None = None  # int32 (O,) at scale input_scale * weight_scales
    input_scale: float | None = None
    input_zero_point: int | None = None
    stride: int = 1
    kernel: int = 1  # maxpool window
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (PyTorch's zero padding)
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_gain: int = 1  # stored weights = Brevitas integers * weight_gain
    negated_channels: int = 0  # channels whose BatchNorm factor was negative
    compared: bool = True  # has a QAT-model counterpart to compare with
    weight_type: str = "int8"  # how the weights are stored: int8, or int4 (packed two per byte)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "op": self.op,
            "inputs": self.inputs,
            "shape": self.shape,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "clamp_max": self.clamp_max,
        }
        if self.weights is not None:
            out |= {
                "weight_shape": list(self.weights.shape),
                "weight_bits": self.weight_bits,
                "act_bits": self.act_bits,
                "per_channel": len(self.weight_scales) > 1,
                "stride": self.stride,
                "pads": list(self.pads),
                "weight_gain": self.weight_gain,
                "negated_channels": self.negated_channels,
                "weight_scale_min": float(self.weight_scales.min()),
                "weight_scale_max": float(self.weight_scales.max()),
            }
        return out


@dataclass
class LoweredModel:
    """The integer graph: its input and its layers in execution order."""

    input_shape: list[int]  # (H, W, C) or (features,)
    layers: list[Layer] = field(default_factory=list)

    @property
    def logits(self) -> Layer:
        return self.layers[-1]


@dataclass
class _Current:
    """The tensor the next layer reads: name, shape, quantization, and its largest value above the zero point."""

    name: str
    shape: list[int]
    scale: np.float32
    zero_point: int
    span: int


@dataclass
class _OutQuant:
    scale: np.float32
    zero_point: int
    relu: bool
    clamp_max: int | None
    bits: int
    span: int


# ---------------------------------------------------------------- Brevitas quantities


def _weight_ints(module: nn.Module, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Brevitas integer weights, their float32 scales (O,) or (1,), and the bit width."""
    if getattr(module, "bias", None) is not None:
        raise TfliteConversionError(
            f"Layer {name} has a bias; the writer folds only BatchNorm shifts into the int32 bias.",
            where=f"layer {name}",
            fix="build the layer with bias=False and a BatchNorm after it (as the zoo does)",
        )
    qw = module.quant_weight()
    bits = int(qw.bit_width)
    if bits < 2:
        raise TfliteConversionError(
            f"Layer {name} has {bits}-bit (binary) weights; int8 TFLite has no exact bipolar weights.",
            where=f"layer {name}",
            fix="train with 2..8 weight bits (e.g. --bits w2a2), or deploy 1-bit models to FINN",
        )
    if bits > 8:
        raise TfliteConversionError(
            f"Layer {name} has {bits}-bit weights; int8 TFLite holds at most 8.",
            where=f"layer {name}",
            fix="train with 2..8 weight bits",
        )
    if float(qw.zero_point.abs().max()) != 0.0:
        raise TfliteConversionError(
            f"Layer {name} has asymmetric weights.", where=f"layer {name}", fix="use symmetric weight quantizers"
        )
    ints = np.rint(qw.int().detach().cpu().numpy()).astype(np.int64)
    return ints, qw.scale.detach().cpu().numpy().astype(np.float32).reshape(-1), bits


def _out_quant(act: nn.Module, name: str) -> _OutQuant:
    """The int8 quantization of a quantizer's output: unsigned QuantReLU, or the signed residual quantizer."""
    from brevitas.nn import QuantIdentity, QuantReLU

    quant = getattr(act, "act_quant", None)
    if quant is None or not hasattr(quant, "bit_width"):
        raise TfliteConversionError(
            f"Layer {name} ({type(act).__name__}) is not a Brevitas quantizer, so its output has no int8 scale.",
            where=f"layer {name}",
            fix="follow every conv / linear with a Brevitas QuantReLU (or the zoo's quant_act)",
        )
    bits = int(quant.bit_width())
    if bits < 2 or bits > 8 or not isinstance(act, (QuantReLU, QuantIdentity)) or float(quant.zero_point()) != 0.0:
        raise TfliteConversionError(
            f"Activation {name} is a {bits}-bit {type(act).__name__}; the TFLite writer needs a 2..8-bit quantizer "
            "with zero point 0.",
            where=f"layer {name}",
            fix="train with 2..8 activation bits (e.g. --bits w2a2); 1-bit (bipolar) models deploy to FINN",
        )
    scale = np.float32(float(quant.scale().detach()))
    if isinstance(act, QuantReLU) and not quant.is_signed:
        clamp = INT8_MIN + 2**bits - 1
        return _OutQuant(scale, INT8_MIN, True, clamp if clamp < INT8_MAX else None, bits, 2**bits - 1)
    if quant.is_signed and bits == 8 and not quant.is_narrow_range:
        return _OutQuant(scale, 0, False, None, bits, INT8_MAX)
    raise TfliteConversionError(
        f"Quantizer {name} is {'signed' if quant.is_signed else 'unsigned'} {bits}-bit; only unsigned QuantReLU "
        "and the signed 8-bit residual quantizer map to int8 here.",
        where=f"layer {name}",
        fix="use the zoo's quantizers",
    )


INT4_MAX = 7


def weight_gain(ints: np.ndarray, limit: int = INT8_MAX) -> int:
    """Largest power of two k with k * max|w| <= limit (127; 7 for int4 weights).

    TFLite puts the bias on the accumulator's scale s_in * s_w. With 2..4-bit
    weights after low-bit activations one accumulator step is a large part of an
    output LSB, so the rounded BatchNorm shift alone would move outputs across
    rounding boundaries. Weights k * w at scale s_w / k are the same real numbers
    (k is a power of two: exact in float32), and the bias gets k times finer.
    """
    top = max(int(np.abs(ints).max()), 1)
    return 2 ** int(math.floor(math.log2(limit / top)))


def _storage(ints: np.ndarray, bits: int, name: str, int4: bool) -> tuple[str, int]:
    """int8, or int4 where asked for: (weight type, the largest stored magnitude)."""
    if not int4:
        return "int8", INT8_MAX
    if bits > 4 or int(np.abs(ints).max()) > INT4_MAX:
        raise TfliteConversionError(
            f"--int4-weights: layer {name} has {bits}-bit weights, int4 holds 4 (-7..7).",
            where=f"layer {name}",
            fix="train with at most 4 weight bits (e.g. --bits w4a4, or --layer-bits for this layer), "
            "or deploy without --int4-weights",
        )
    return "int4", INT4_MAX


def _bias_ints(shift: np.ndarray, input_scale: np.float32, weight_scales: np.ndarray, name: str) -> np.ndarray:
    bias = np.rint(shift / (np.float64(input_scale) * weight_scales.astype(np.float64)))
    if bias.min() < INT32_MIN or bias.max() > INT32_MAX:
        raise TfliteConversionError(
            f"The folded BatchNorm shift of {name} overflows the int32 bias.",
            where=f"layer {name}",
            fix="the BatchNorm has an extreme shift or a near-zero scale; retrain with weight decay",
        )
    return bias.astype(np.int32)


def _nhwc_columns(ints: np.ndarray, chw: list[int]) -> np.ndarray:
    """Linear weights (O, C*H*W) read after PyTorch's NCHW flatten, reordered for TFLite's NHWC flatten."""
    channels, height, width = chw
    return ints.reshape(len(ints), channels, height, width).transpose(0, 2, 3, 1).reshape(len(ints), -1)


def _to_tflite_layout(ints: np.ndarray, op: str) -> np.ndarray:
    """fc (O, I) stays; conv OIHW -> OHWI; depthwise (C, 1, kh, kw) -> (1, kh, kw, C)."""
    if op == "conv":
        return ints.transpose(0, 2, 3, 1)
    if op == "dw":
        return ints.transpose(1, 2, 3, 0)
    return ints


# ---------------------------------------------------------------- layers


def _conv_geometry(
    module: nn.Module, cur: _Current, name: str
) -> tuple[str, int, int, tuple[int, int, int, int], list[int]]:
    """op, kernel, stride, pads and output shape of a QuantConv2d."""
    kernel, stride, padding = module.kernel_size, module.stride, module.padding
    if (
        kernel[0] != kernel[1]
        or stride[0] != stride[1]
        or not isinstance(padding, tuple)
        or padding[0] != padding[1]
        or module.dilation != (1, 1)
    ):
        raise TfliteConversionError(
            f"Conv {name} has kernel {kernel}, stride {stride}, padding {padding}, dilation {module.dilation}.",
            where=f"layer {name}",
            fix="use square kernels, equal strides and padding, no dilation",
        )
    height, width, channels = cur.shape
    groups = module.groups
    if groups == 1:
        op = "conv"
    elif groups == channels == module.out_channels:
        op = "dw"
    else:
        raise TfliteConversionError(
            f"Conv {name} is grouped ({groups} groups, {channels} -> {module.out_channels} channels).",
            where=f"layer {name}",
            fix="use plain or depthwise (groups = channels, multiplier 1) convolutions",
        )
    k, s, p = kernel[0], stride[0], padding[0]
    out_h, out_w = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
    return op, k, s, (p, p, p, p), [out_h, out_w, module.out_channels]


def _compute(
    name: str,
    module: nn.Module,
    bn: nn.Module | None,
    out: _OutQuant,
    cur: _Current,
    widen: bool,
    reorder_from: list[int] | None = None,
    int4: bool = False,
) -> Layer:
    """conv / depthwise / fc (+ folded BatchNorm) writing int8 at `out`'s quantization."""
    from brevitas.nn import QuantConv2d

    ints, w_scales, w_bits = _weight_ints(module, name)
    if isinstance(module, QuantConv2d):
        op, _, stride, pads, shape = _conv_geometry(module, cur, name)
    else:
        op, stride, pads, shape = "fc", 1, (0, 0, 0, 0), [module.out_features]
        if reorder_from is not None:  # the flatten of an (C, H, W) map: columns NCHW -> NHWC
            ints = _nhwc_columns(ints, reorder_from)
    # LiteRT 2.3's reference resolver has no DEPTHWISE_CONV_2D version 7 (int4): depthwise weights stay int8
    weight_type, limit = _storage(ints, w_bits, name, int4 and op != "dw")
    factor = (
        np.ones(len(ints))
        if bn is None
        else bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    )
    shift = (
        np.zeros(len(ints))
        if bn is None
        else bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * factor
    )
    if w_scales.size == 1 and bn is not None:
        w_scales = np.repeat(w_scales, len(ints))
    sign = np.where(factor < 0, -1, 1).reshape(-1, *[1] * (ints.ndim - 1))
    dead = factor == 0  # the channel is the constant shift: zero weights keep the plain scale
    gain = weight_gain(ints, limit) if widen else 1
    weights = np.where(dead.reshape(sign.shape), 0, ints * sign * gain)
    scales = (np.where(dead, 1.0, np.abs(factor)) * w_scales.astype(np.float64) / gain).astype(np.float32)
    bias = None if bn is None else _bias_ints(shift, cur.scale, scales, name)
    return Layer(
        name,
        op,
        [cur.name],
        shape,
        float(out.scale),
        out.zero_point,
        out.relu,
        out.clamp_max,
        _to_tflite_layout(weights, op).astype(np.int8),
        scales,
        bias,
        float(cur.scale),
        cur.zero_point,
        stride,
        pads=pads,
        weight_bits=w_bits,
        act_bits=out.bits,
        weight_gain=gain,
        negated_channels=int((factor < 0).sum()),
        weight_type=weight_type,
    )


def _classifier(
    name: str,
    module: nn.Module,
    cur: _Current,
    logits_scale: float | None,
    int4: bool = False,
    reorder_from: list[int] | None = None,
) -> Layer:
    """The last Linear: float logits = s_in * s_w * acc, written as int8 logits at a data-free scale."""
    ints, w_scales, w_bits = _weight_ints(module, name)
    if reorder_from is not None:  # the flatten of an (C, H, W) map: columns NCHW -> NHWC
        ints = _nhwc_columns(ints, reorder_from)
    weight_type, _ = _storage(ints, w_bits, name, int4)
    if w_scales.size != 1:
        raise TfliteConversionError(
            f"The classifier {name} has per-channel weight scales.",
            where=f"layer {name}",
            fix="use per-tensor weights there (zoo default)",
        )
    if logits_scale is None:
        positive, negative = np.clip(ints, 0, None).sum(axis=1), np.clip(-ints, 0, None).sum(axis=1)
        bound = max(
            int(np.maximum(positive, negative).max()) * cur.span, 1
        )  # inputs lie in [0, span] above the zero point
        logits_scale = float(np.float64(cur.scale) * np.float64(w_scales[0]) * bound / INT8_MAX)
    return Layer(
        name,
        "fc",
        [cur.name],
        [module.out_features],
        float(np.float32(logits_scale)),
        0,
        weights=ints.astype(np.int8),
        weight_scales=w_scales,
        input_scale=float(cur.scale),
        input_zero_point=cur.zero_point,
        weight_bits=w_bits,
        weight_type=weight_type,
    )


AVERAGE_GAIN = 64


def _global_average(name: str, out: _OutQuant, cur: _Current) -> Layer:
    """Global average pool + QuantReLU as a depthwise conv with weights 64 at scale 1/(64 H W).

    Weights of 1 would be the same real numbers, but the kernels' two-step
    requantization rounds the product of a small accumulator to a few integer
    steps first (sum 15 -> 13 -> 6.5 -> 7 where the mean is 6.47); 64 times the
    accumulator makes that first rounding 64 times finer.
    """
    height, width, channels = cur.shape
    scales = np.full(channels, np.float32(1.0 / (AVERAGE_GAIN * height * width)), dtype=np.float32)
    return Layer(
        name,
        "dw",
        [cur.name],
        [1, 1, channels],
        float(out.scale),
        out.zero_point,
        out.relu,
        out.clamp_max,
        np.full((1, height, width, channels), AVERAGE_GAIN, np.int8),
        scales,
        None,
        float(cur.scale),
        cur.zero_point,
        act_bits=out.bits,
        weight_gain=AVERAGE_GAIN,
    )


def _advance(layer: Layer, span: int) -> _Current:
    return _Current(layer.name, layer.shape, np.float32(layer.scale), layer.zero_point, span)


# ---------------------------------------------------------------- walking the model


def _sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules in forward order, by qualified name (the zoo models are sequential; residual blocks are one item)."""
    items: list[tuple[str, nn.Module]] = []
    for part in ("body", "features", "stem", "stages", "pool", "act_pool", "head", "fc_out"):
        module = getattr(model, part, None)
        if isinstance(module, nn.Sequential):
            items += [(f"{part}.{name}", child) for name, child in module.named_children()]
        elif module is not None:
            items.append((part, module))
    covered = {id(p) for _, module in items for p in module.parameters()}
    skipped = sorted({name.split(".")[0] for name, p in model.named_parameters() if id(p) not in covered})
    if not items or skipped:
        what = f"its layers {', '.join(skipped)} would be skipped" if items and skipped else "it has none of them"
        raise TfliteConversionError(
            f"{type(model).__name__} is not laid out as the TFLite writer reads models (the zoo's body / features / "
            f"stem / stages / head attributes, in forward order): {what}.",
            where=f"model {type(model).__name__}",
            fix="deploy it to an FPGA board (the FINN flow reads the exported graph), or lay it out as the zoo "
            "models are (`sdk models`); the TFLite writer reading the exported graph is planned",
        )
    return items


def _residual(name: str, block: nn.Module, cur: _Current, widen: bool, int4: bool) -> tuple[list[Layer], _Current]:
    """conv1-bn1-act1-conv2-bn2 and the shortcut into the shared quantizer, ADD, then act_out."""
    add, act1 = _out_quant(block.add_quant, f"{name}.add_quant"), _out_quant(block.act1, f"{name}.act1")
    conv1 = _compute(f"{name}.act1", block.conv1, block.bn1, act1, cur, widen, int4=int4)
    main = _compute(f"{name}.add_quant#0", block.conv2, block.bn2, add, _advance(conv1, act1.span), widen, int4=int4)
    if block.shortcut is not None:
        skip = _compute(f"{name}.add_quant#1", block.shortcut[0], block.shortcut[1], add, cur, widen, int4=int4)
    else:
        skip = Layer(
            f"{name}.add_quant#1",
            "requant",
            [cur.name],
            cur.shape,
            float(add.scale),
            add.zero_point,
            input_scale=float(cur.scale),
            input_zero_point=cur.zero_point,
        )
    layers = [conv1, main, skip]
    out = _out_quant(block.act_out, f"{name}.act_out")
    total = Layer(
        f"{name}.act_out",
        "add",
        [main.name, skip.name],
        main.shape,
        float(out.scale),
        out.zero_point,
        out.relu,
        out.clamp_max,
        act_bits=out.bits,
    )
    return layers + [total], _advance(total, out.span)


@dataclass
class _Walk:
    """The lowering in progress: the modules in forward order, the next one, the tensor it reads, the result."""

    items: list[tuple[str, nn.Module]]
    index: int
    cur: _Current
    lowered: LoweredModel
    logits_scale: float | None
    widen: bool
    int4: bool
    done: bool = False

    def following(self, offset: int = 1) -> tuple[str, nn.Module] | tuple[None, None]:
        j = self.index + offset
        return self.items[j] if j < len(self.items) else (None, None)


def _flatten_before_linear(walk: _Walk, name: str, module: nn.Module) -> list[int] | None:
    """A Linear after a (H, W, C) map: a RESHAPE, and the NCHW -> NHWC column order to apply to its weights."""
    cur = walk.cur
    if int(np.prod(cur.shape)) != module.in_features:
        raise TfliteConversionError(
            f"Layer {name} takes {module.in_features} features; the map before it has "
            f"{'x'.join(map(str, cur.shape))} = {int(np.prod(cur.shape))} values.",
            where="model card input_shape",
            fix="pass the card of the run the model was trained in (its image size)",
        )
    flat_layer = Layer(
        f"{name}/flatten",
        "reshape",
        [cur.name],
        [int(np.prod(cur.shape))],
        float(cur.scale),
        cur.zero_point,
        compared=False,
    )
    walk.lowered.layers.append(flat_layer)
    walk.cur = _Current(flat_layer.name, flat_layer.shape, cur.scale, cur.zero_point, cur.span)
    return [cur.shape[2], cur.shape[0], cur.shape[1]] if cur.shape[:2] != [1, 1] else None


def _lower_weighted(walk: _Walk, name: str, module: nn.Module) -> None:
    """QuantConv2d / QuantLinear (+ BatchNorm) + its activation quantizer, or the final classifier."""
    reorder = (
        _flatten_before_linear(walk, name, module)
        if hasattr(module, "in_features") and len(walk.cur.shape) == 3
        else None
    )
    _, following = walk.following()
    bn = following if isinstance(following, nn.BatchNorm1d | nn.BatchNorm2d) else None
    act_name, act = walk.following(1 + (bn is not None))
    if act is None:  # the classifier
        if bn is not None:
            raise TfliteConversionError(
                f"The classifier {name} is followed by a BatchNorm.",
                where=f"layer {name}",
                fix="end the model with a QuantLinear without BatchNorm or activation",
            )
        walk.lowered.layers.append(_classifier(name, module, walk.cur, walk.logits_scale, walk.int4, reorder))
        walk.done = True
        return
    out = _out_quant(act, act_name)
    layer = _compute(act_name, module, bn, out, walk.cur, walk.widen, reorder, walk.int4)
    walk.lowered.layers.append(layer)
    walk.cur, walk.index = _advance(layer, out.span), walk.index + 2 + (bn is not None)


def _lower_max_pool(walk: _Walk, name: str, module: nn.Module) -> None:
    cur = walk.cur
    k, s = module.kernel_size, module.stride
    if not isinstance(k, int) or module.padding != 0 or k != s or cur.shape[0] % k or cur.shape[1] % k:
        raise TfliteConversionError(
            f"MaxPool {name} has kernel {k}, stride {s}, padding {module.padding} on a "
            f"{cur.shape[0]}x{cur.shape[1]} map.",
            where=f"layer {name}",
            fix="use non-overlapping pools that tile the map",
        )
    shape = [cur.shape[0] // k, cur.shape[1] // k, cur.shape[2]]
    layer = Layer(name, "maxpool", [cur.name], shape, float(cur.scale), cur.zero_point, kernel=k, stride=s)
    walk.lowered.layers.append(layer)
    walk.cur, walk.index = _advance(layer, cur.span), walk.index + 1


def _lower_global_pool(walk: _Walk, name: str, module: nn.Module) -> None:
    """AdaptiveAvgPool2d(1) + its quantizer."""
    act_name, act = walk.following()
    if module.output_size not in (1, (1, 1)) or act is None:
        raise TfliteConversionError(
            f"{name} pools to {module.output_size}; only global average pooling followed by a quantizer maps.",
            where=f"layer {name}",
            fix="use AdaptiveAvgPool2d(1) followed by a QuantReLU / QuantIdentity",
        )
    out = _out_quant(act, act_name)
    layer = _global_average(act_name, out, walk.cur)
    walk.lowered.layers.append(layer)
    walk.cur, walk.index = _advance(layer, out.span), walk.index + 2


def _lower_residual(walk: _Walk, name: str, module: nn.Module) -> None:
    layers, walk.cur = _residual(name, module, walk.cur, walk.widen, walk.int4)
    walk.lowered.layers += layers
    walk.index += 1


def lowering_table() -> dict[type, Callable[[_Walk, str, nn.Module], None]]:
    """One entry per module type the writer lowers (imported lazily: Brevitas is heavy)."""
    from brevitas.nn import QuantConv2d, QuantLinear

    from sdk.zoo.resnet import ResidualBlock

    return {
        QuantConv2d: _lower_weighted,
        QuantLinear: _lower_weighted,
        nn.MaxPool2d: _lower_max_pool,
        nn.AdaptiveAvgPool2d: _lower_global_pool,
        ResidualBlock: _lower_residual,
    }


def lower(
    model: nn.Module,
    input_shape: list[int] | tuple[int, ...],
    logits_scale: float | None = None,
    widen_weights: bool = True,
    int4_weights: bool = False,
    flat: bool | None = None,
) -> LoweredModel:
    """The int8 graph of a zoo model in eval mode; input_shape is the model card's (C, H, W).

    flat: the model takes its input flattened (an MLP); default: the zoo model's own `flat_input`.
    int4_weights stores the conv and fc weights as int4 (each must have at most 4 bits); depthwise
    weights stay int8, since LiteRT's reference kernels have no int4 DEPTHWISE_CONV_2D (version 7)."""
    channels, height, width = input_shape
    flat = bool(getattr(model, "flat_input", False)) if flat is None else flat
    shape = [channels * height * width] if flat else [height, width, channels]
    lowered = LoweredModel(shape)
    cur = _Current(INPUT_NAME, shape, np.float32(INPUT_SCALE), INT8_MIN, 255)
    walk = _Walk(_sequence(model), 0, cur, lowered, logits_scale, widen_weights, int4_weights)
    table = lowering_table()
    while walk.index < len(walk.items) and not walk.done:
        name, module = walk.items[walk.index]
        handler = table.get(type(module))
        if handler is None:
            raise TfliteConversionError(
                f"Layer {name} ({type(module).__name__}) has no int8 TFLite mapping here.",
                where=f"layer {name}",
                fix="use the zoo's building blocks: QuantConv2d/QuantLinear + BatchNorm + QuantReLU, MaxPool2d, "
                "AdaptiveAvgPool2d(1), residual blocks",
            )
        handler(walk, name, module)
    if not lowered.layers or lowered.layers[-1].act_bits is not None or lowered.layers[-1].op != "fc":
        raise TfliteConversionError(
            f"{type(model).__name__} does not end in a classifier Linear.",
            where="--model",
            fix="end the model with a QuantLinear without activation",
        )
    return lowered
