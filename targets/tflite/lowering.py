"""Lower a QONNX graph to integer layers in TFLite terms (int8, NHWC), node by node through an op table.

The graph is the one FINN gets (a Brevitas export, or any QONNX file, cleaned up
on load), so a user's own module layout, names and forward all lower alike.
Every number comes from the graph; nothing is calibrated:

  input       the device codes q of the graph's input type (sdk.input_map): uint8
              pixels enter as int8 q - 128 at scale 1, zero point -128; codes
              that fit int8 (signed, bipolar, binary, fewer bits) as q, zero
              point 0; a Mul / Div by a constant after it only changes that scale
  Quant       on a constant: integer weights (1..8 bits, symmetric) and their
              scales (BipolarQuant: the integers +-1 at its scale). On a value:
              the int8 quantization of the layer before it (an unsigned a-bit
              quantizer: zero point -128, fused RELU, MINIMUM at -128 + 2^a - 1;
              a signed one: zero point 0, clamps at its range),
              or a QUANTIZE int8 -> int8 where it requantizes an int8 tensor
  Conv, Gemm  int8 weights per output channel = the integers times a power of two
  MatMul      (weight_gain); BatchNormalization, Mul / Add by constants and biases
              after them fold into the weight scales and the int32 bias at
              s_in * s_w; 1-D convolutions run as 2-D ones of height 1; groups =
              channels is a depthwise convolution
  MaxPool     MAX_POOL_2D on int8 with the input's quantization
  Global /    a mean over the whole map followed by its quantizer is a depthwise
  ReduceMean  convolution with constant weights at scale 1/(64 H W): the exact
              integer sum, requantized once, as the graph computes it
  Add, Sub    ADD / SUB of two int8 tensors, written at the quantizer that follows
  Reshape,    RESHAPE; a (C, H, W) map flattened for a Gemm has that Gemm's
  Flatten     columns reordered NCHW -> NHWC
  Concat      CONCATENATION of int8 tensors quantized alike, along the channels
  Sigmoid,    int8 LOGISTIC / TANH / SOFTMAX at TFLite's fixed output scales
  Tanh,
  Softmax
  output      a Gemm / Conv with no quantizer after it (the classifier) writes int8
              at a data-free scale that covers its worst-case accumulator

Each layer's `source` names the graph tensor it equals, so a verification can
run the graph and compare tensor by tensor. Anything else is refused, naming the
node and its op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sdk.data import INPUT_SCALE
from sdk.graph_names import describe, node_phrase
from targets.tflite.errors import TfliteConversionError
from targets.tflite.kernels import FIXED_OUTPUT_QUANT
from targets.tflite.ops import OP_SPECS

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT4_MAX = 7
INPUT_NAME = "input"
AVERAGE_GAIN = 64
# The graph's activation -> TFLite's int8 op (written at its fixed output quantization, golden.FIXED_OUTPUT_QUANT),
# and its largest slope: how far one LSB of its input moves its output, which the final-output check allows for.
# From the op specs: naming an ONNX op in a fixed-output activation's spec registers its handler here.
FIXED_ACTIVATIONS: dict[str, tuple[str, float]] = {
    onnx: (spec.layer, spec.slope)
    for spec in OP_SPECS.values()
    if spec.layer in FIXED_OUTPUT_QUANT
    for onnx in spec.onnx
}
SUPPORTED = (
    "Quant (activations 2..8 bits, weights 1..8 bits or BipolarQuant), Conv (1-D / 2-D, depthwise), Gemm / MatMul, "
    "BatchNormalization, Relu, Mul / Add / Div by constants, MaxPool, GlobalAveragePool / ReduceMean, Add, Sub, "
    "Concat, Reshape / Flatten, Sigmoid, Tanh, Softmax"
)


@dataclass
class Layer:
    """One operation of the int8 graph, with every number exactly as it is stored.

    op: fc | conv | dw | maxpool | avgpool | reshape | add | sub | concat | requant | logistic | tanh | softmax.
    Shapes leave out the batch: (H, W, C) or (features,).
    """

    name: str  # its output tensor in the .tflite: the graph node it comes from
    op: str
    inputs: list[str]
    shape: list[int]
    scale: float  # output quantization (float32 value)
    zero_point: int
    relu: bool = False  # fused RELU (clamps at the zero point)
    clamp_max: int | None = None  # int8 top of an a-bit range (a MINIMUM follows)
    weights: np.ndarray | None = None  # int8: fc (O, I), conv (O, kh, kw, I), dw (1, kh, kw, C)
    weight_scales: np.ndarray | None = None  # float32 (O,) per channel or (1,)
    bias: np.ndarray | None = None  # int32 (O,) at scale input_scale * weight_scales
    input_scale: float | None = None
    input_zero_point: int | None = None
    strides: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)  # maxpool window
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (the graph's zero padding)
    dilation: tuple[int, int] = (1, 1)
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_gain: int = 1  # stored weights = the graph's integers * weight_gain
    negated_channels: int = 0  # channels whose folded factor was negative
    compared: bool = True  # `source` holds the same value in the graph
    weight_type: str = "int8"  # how the weights are stored: int8, or int4 (packed two per byte)
    clamp_min: int | None = None  # int8 bottom of a signed a-bit range (a MAXIMUM follows)
    source: str = ""  # the graph tensor this layer's output equals
    slope: float = 0.0  # logistic / tanh / softmax: the largest change of the output per unit of input

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "op": self.op,
            "inputs": self.inputs,
            "shape": self.shape,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "clamp_max": self.clamp_max,
            "clamp_min": self.clamp_min,
            "source": self.source,
        }
        if self.weights is not None:
            out |= {
                "weight_shape": list(self.weights.shape),
                "weight_bits": self.weight_bits,
                "act_bits": self.act_bits,
                "per_channel": len(self.weight_scales) > 1,
                "strides": list(self.strides),
                "pads": list(self.pads),
                "dilation": list(self.dilation),
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
    input_scale: float = INPUT_SCALE  # of the int8 input: what the graph multiplies its input codes by
    input_zero_point: int = INT8_MIN  # int8 = code + zero point: -128 for uint8 codes, 0 for codes that fit int8
    input_codes: tuple[int, int] = (0, 255)  # the device codes the input takes (sdk.input_map)

    @property
    def logits(self) -> Layer:
        """The layer whose output is the graph's output."""
        return self.layers[-1]


# ---------------------------------------------------------------- values while walking the graph


@dataclass
class _Int8:
    """A graph tensor that exists in the int8 graph: its name there, NHWC shape, quantization and code range."""

    name: str
    shape: list[int]
    scale: np.float32
    zero_point: int
    low: int  # smallest code minus the zero point
    high: int  # largest code minus the zero point
    nchw: list[int] | None = None  # a flattened (C, H, W) map in NHWC order: the next Gemm reorders its columns


@dataclass
class _Weights:
    """A constant: float values, and where a weight quantizer made them, its integers, scales and bit width."""

    values: np.ndarray
    ints: np.ndarray | None = None
    scales: np.ndarray | None = None
    bits: int | None = None


@dataclass
class _Pending:
    """A value not yet in the int8 graph: real = factor * (the op's exact result) + shift, then relu.

    kind: compute (a conv / fc accumulator), add, sub, mean (a global average) or requant (an int8 tensor
    waiting for its quantizer)."""

    kind: str
    node: Any
    inputs: list[_Int8]
    shape: list[int]
    op: str = ""  # compute: fc | conv | dw
    weights: _Weights | None = None
    factor: np.ndarray | None = None  # (O,)
    shift: np.ndarray | None = None  # (O,)
    relu: bool = False
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    tensor: str = ""  # the graph tensor this value is (the last node folded in)


@dataclass
class _Walk:
    """The lowering in progress: graph tensor -> value, the layers so far, and the options."""

    graph: Any  # qonnx ModelWrapper
    values: dict[str, Any]
    lowered: LoweredModel
    widen: bool
    int4: bool
    names: set[str] = field(default_factory=set)
    input_scale: float = 1.0  # the graph input's scale: 1 (pixels), or a constant it is multiplied by first
    input_read: bool = False

    def value(self, node, index: int = 0) -> Any:
        name = node.input[index]
        if name in self.values:
            return self.values[name]
        init = self.graph.get_initializer(name)
        if init is not None:
            return _Weights(np.asarray(init, dtype=np.float64))
        raise _refuse(node, f"reads {name}, which nothing before it computes")

    def int8(self, node, index: int = 0) -> _Int8:
        value = self.value(node, index)
        if isinstance(value, _Int8):
            return value
        if isinstance(value, _Pending):
            producer = value.node
            raise _refuse(
                node,
                f"reads the output of {describe(producer)} ({producer.op_type}) before any quantizer: it has no int8 "
                "scale",
                "put a Brevitas quantizer (QuantIdentity / QuantReLU, or an input_quant) between the two",
            )
        raise _refuse(node, "takes a constant where the int8 graph needs a computed tensor")

    def add(self, layer: Layer, low: int, high: int, nchw: list[int] | None = None) -> _Int8:
        if INPUT_NAME in layer.inputs:
            self.input_read = True
            if layer.input_scale is not None and np.float32(layer.input_scale) != np.float32(self.input_scale):
                raise TfliteConversionError(
                    "The graph reads its input at two scales.",
                    where=f"node {layer.name}",
                    fix="scale the input once, before every layer that reads it",
                )
        name, n = layer.name, 1
        while name in self.names:
            n += 1
            name = f"{layer.name}#{n}"
        layer.name = name
        self.names.add(name)
        self.lowered.layers.append(layer)
        return _Int8(name, layer.shape, np.float32(layer.scale), layer.zero_point, low, high, nchw)


# What to put in place of an op the writer has no mapping for, where there is a usual answer.
REPLACEMENTS = {
    "LSTM": "replace the recurrence by feed-forward layers (e.g. a Conv1d over the time steps, or the steps unrolled "
    "into linear layers), or run it on the host",
    "Resize": "replace the upsampling by layers the writer lowers (e.g. a convolution over the map), or upsample on "
    "the host",
}
REPLACEMENTS["GRU"] = REPLACEMENTS["RNN"] = REPLACEMENTS["LSTM"]
# Ops without a handler here that FINN's conversion may map (a padding, a pool from a reduction, a label select, a
# transpose its streamlining absorbs): only for these is FINN's check asked whether an FPGA board takes the model.
FPGA_MAY_MAP = frozenset({"Pad", "Transpose", "TopK", "ReduceMax", "ReduceSum", "Trunc", "QuantAvgPool2d"})
REPLACEMENTS["Upsample"] = REPLACEMENTS["Resize"]


def _refuse(node, what: str, fix: str | None = None, fpga_may: bool = False) -> TfliteConversionError:
    """The refusal of one node, named as the user's file names it (sdk.graph_names). fpga_may: what int8 TFLite
    cannot hold (an op, 1-bit activations, wider weights) an FPGA board may run: the core names the FPGA boards
    only if FINN's check accepts the model (sdk/advice.py)."""
    phrase = node_phrase(node)
    error = TfliteConversionError(
        f"{phrase[:1].upper()}{phrase[1:]} {what}.",
        where=phrase,
        fix=fix or f"the TFLite writer lowers {SUPPORTED}; {REPLACEMENTS.get(node.op_type, 'change that layer')}",
    )
    error.alternative = "finn" if fpga_may else None
    return error


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _nhwc(shape: list[int]) -> list[int]:
    """A graph shape without the batch, as the int8 graph holds it: (C, H, W) -> (H, W, C); (C, L) -> (1, L, C)."""
    if len(shape) == 3:
        return [shape[1], shape[2], shape[0]]
    if len(shape) == 2:
        return [1, shape[1], shape[0]]
    return list(shape)


def graph_to_nhwc(value: np.ndarray) -> np.ndarray:
    """A batch of a graph tensor in the int8 graph's layout: NCHW -> NHWC, NCL -> N1LC, flat stays."""
    if value.ndim == 4:
        return value.transpose(0, 2, 3, 1)
    if value.ndim == 3:
        return value.transpose(0, 2, 1)[:, None]
    return value


# ---------------------------------------------------------------- quantizers


MAX_QUANT_BITS = 32  # the widest quantizer qonnx's integer types describe exactly in int64 arithmetic


def _quant_params(walk: _Walk, node) -> tuple[np.ndarray, np.ndarray, int, bool, bool]:
    """scale, zero point, bit width, signed, narrow of a Quant node (its parameters must be constants)."""
    params = [walk.graph.get_initializer(name) for name in node.input[1:4]]
    if any(p is None for p in params):
        raise _refuse(node, "has a scale, zero point or bit width that is computed, not a constant")
    attrs = _attrs(node)
    bits = float(np.asarray(params[2]).reshape(-1)[0])
    if not 1 <= bits <= MAX_QUANT_BITS:  # before 2**bits: a bit width of 2e10 would compute for ever
        raise _refuse(
            node,
            f"has a bit width of {bits:g}; quantizers have 1 to {MAX_QUANT_BITS} bits",
            "export the model again: its file holds a bit width no quantizer has (damaged or edited)",
        )
    if bits != int(bits):
        raise _refuse(node, f"has a fractional bit width {bits}")
    rounding = attrs.get("rounding_mode", b"ROUND")
    rounding_name = rounding.decode("utf-8", "replace") if isinstance(rounding, bytes) else str(rounding)
    if rounding_name.upper() not in ("ROUND", "HALF_EVEN"):
        raise _refuse(node, f"rounds by {rounding!r}; TFLite's requantization rounds to nearest")
    scale = np.asarray(params[0], dtype=np.float32)
    return (
        scale,
        np.asarray(params[1], dtype=np.float64),
        int(bits),
        bool(attrs.get("signed", 1)),
        bool(attrs.get("narrow", 0)),
    )


def _code_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def _weight_quant(walk: _Walk, node, values: np.ndarray) -> _Weights:
    """A weight quantizer on a constant: its integers (round half to even, clipped, as QONNX's Quant)."""
    scale, zero, bits, signed, narrow = _quant_params(walk, node)
    if np.any(zero != 0):
        raise _refuse(node, "quantizes weights asymmetrically (non-zero zero point)", "use symmetric weight quantizers")
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise _refuse(node, "has a weight scale that is zero, negative or not finite")
    try:
        fits = np.broadcast_shapes(values.shape, scale.shape) == values.shape
    except ValueError:
        fits = False
    if not fits:
        raise _refuse(node, f"has a scale of shape {scale.shape} that does not fit its weights of shape {values.shape}")
    low, high = _code_range(bits, signed, narrow)
    ints = np.clip(np.round(values / scale.astype(np.float64)), low, high).astype(np.int64)
    return _Weights((ints * scale).astype(np.float64), ints, scale, bits)


@dataclass
class _OutQuant:
    scale: np.float32
    zero_point: int
    relu: bool
    clamp_min: int | None
    clamp_max: int | None
    bits: int
    low: int
    high: int


def _out_quant(walk: _Walk, node) -> _OutQuant:
    """The int8 quantization of an activation quantizer's output."""
    scale, zero, bits, signed, narrow = _quant_params(walk, node)
    if scale.size != 1 or zero.size != 1 or float(zero.reshape(-1)[0]) != 0.0:
        raise _refuse(
            node,
            "quantizes activations per channel or with a non-zero zero point",
            "use per-tensor activation quantizers with zero point 0 (Brevitas's defaults)",
        )
    if not 2 <= bits <= 8:
        raise _refuse(
            node,
            f"quantizes activations to {bits} bits; the writer lowers activation quantizers of 2..8 bits "
            "(int8 holds at most 8)",
            "train with 2..8 activation bits (1-bit weights lower)",
            fpga_may=True,
        )
    s = np.float32(scale.reshape(-1)[0])
    if not (np.isfinite(s) and s > 0):
        raise _refuse(node, f"has the activation scale {s}")
    low, high = _code_range(bits, signed, narrow)
    if not signed:
        top = INT8_MIN + high
        return _OutQuant(s, INT8_MIN, True, None, top if top < INT8_MAX else None, bits, 0, high)
    return _OutQuant(s, 0, False, low if low > INT8_MIN else None, high if high < INT8_MAX else None, bits, low, high)


# ---------------------------------------------------------------- folding into integer layers


def weight_gain(ints: np.ndarray, limit: int = INT8_MAX) -> int:
    """Largest power of two k with k * max|w| <= limit (127; 7 for int4 weights).

    TFLite puts the bias on the accumulator's scale s_in * s_w. With 2..4-bit
    weights after low-bit activations one accumulator step is a large part of an
    output LSB, so a rounded bias alone would move outputs across rounding
    boundaries. Weights k * w at scale s_w / k are the same real numbers (k is a
    power of two: exact in float32), and the bias gets k times finer.
    """
    top = max(int(np.abs(ints).max(initial=0)), 1)
    return 2 ** int(math.floor(math.log2(limit / top)))


def _bias_ints(shift: np.ndarray, input_scale: np.float32, weight_scales: np.ndarray, name: str) -> np.ndarray:
    bias = np.rint(shift / (np.float64(input_scale) * weight_scales.astype(np.float64)))
    if bias.min(initial=0) < INT32_MIN or bias.max(initial=0) > INT32_MAX:
        raise TfliteConversionError(
            f"The folded bias of {name} overflows the int32 bias.",
            where=f"node {name}",
            fix="the layer has an extreme bias or BatchNorm shift, or a near-zero scale; retrain with weight decay",
        )
    return bias.astype(np.int32)


def _storage(pending: _Pending, walk: _Walk) -> tuple[str, int]:
    """int8, or int4 where asked for: (weight type, the largest stored magnitude)."""
    w = pending.weights
    # LiteRT's reference resolver has no DEPTHWISE_CONV_2D version 7 (int4): depthwise weights stay int8
    if not walk.int4 or pending.op == "dw":
        return "int8", INT8_MAX
    if w.bits > 4 or int(np.abs(w.ints).max(initial=0)) > INT4_MAX:
        raise TfliteConversionError(
            f"--int4-weights: {describe(pending.node)} has {w.bits}-bit weights, int4 holds 4 (-7..7).",
            where=f"node {describe(pending.node)}",
            fix="train with at most 4 weight bits, or deploy without --int4-weights",
        )
    return "int4", INT4_MAX


def _to_tflite_layout(ints: np.ndarray, op: str) -> np.ndarray:
    """fc (O, I) stays; conv OIHW -> OHWI; depthwise (C, 1, kh, kw) -> (1, kh, kw, C)."""
    if op == "conv":
        return ints.transpose(0, 2, 3, 1)
    if op == "dw":
        return ints.transpose(1, 2, 3, 0)
    return ints


def _per_channel_scales(w: _Weights, channels: int, node) -> np.ndarray:
    scales = np.asarray(w.scales, dtype=np.float32).reshape(-1)
    if scales.size == 1:
        return np.repeat(scales, channels)
    if scales.size != channels:
        raise _refuse(node, f"has {scales.size} weight scales for {channels} output channels")
    return scales


def _materialize_compute(walk: _Walk, pending: _Pending, out: _OutQuant | None, quant_node) -> _Int8:
    """conv / depthwise / fc with its folded factor and shift, written at `out`'s quantization, or (out None) the
    classifier at a data-free scale covering its worst-case accumulator."""
    node, source, w = pending.node, pending.inputs[0], pending.weights
    ints = w.ints
    channels = len(ints)
    factor, shift = pending.factor, pending.shift
    w_scales = _per_channel_scales(w, channels, node)
    weight_type, limit = _storage(pending, walk)
    sign = np.where(factor < 0, -1, 1).reshape(-1, *[1] * (ints.ndim - 1))
    dead = factor == 0  # the channel is the constant shift: zero weights keep the plain scale
    gain = weight_gain(ints, limit) if walk.widen else 1
    weights = np.where(dead.reshape(sign.shape), 0, ints * sign * gain)
    scales = (np.where(dead, 1.0, np.abs(factor)) * w_scales.astype(np.float64) / gain).astype(np.float32)
    if out is None:  # the classifier: a data-free int8 scale, zero point 0
        flat = weights.reshape(channels, -1)
        upper = np.maximum(flat * source.low, flat * source.high).sum(axis=1)
        lower = np.minimum(flat * source.low, flat * source.high).sum(axis=1)
        real = np.maximum(np.abs(upper), np.abs(lower)) * np.float64(source.scale) * scales + np.abs(shift)
        out = _OutQuant(
            np.float32(max(float(real.max(initial=0)), 1e-30) / INT8_MAX), 0, False, None, None, 8, -127, 127
        )
        if pending.relu:
            out = replace(out, relu=True, low=0)
    bias = _bias_ints(shift, source.scale, scales, node.name) if np.any(shift != 0) or pending.op != "fc" else None
    layer = Layer(
        node.name,
        pending.op,
        [source.name],
        pending.shape,
        float(out.scale),
        out.zero_point,
        out.relu or pending.relu,
        out.clamp_max,
        _to_tflite_layout(weights, pending.op).astype(np.int8),
        scales,
        bias,
        float(source.scale),
        source.zero_point,
        strides=pending.strides,
        pads=pending.pads,
        dilation=pending.dilation,
        weight_bits=w.bits,
        act_bits=out.bits if quant_node is not None else None,
        weight_gain=gain,
        negated_channels=int((factor < 0).sum()),
        weight_type=weight_type,
        clamp_min=out.clamp_min,
        source=quant_node.output[0] if quant_node is not None else pending.tensor,
    )
    return walk.add(layer, out.low, out.high)


def _materialize(walk: _Walk, pending: _Pending, out: _OutQuant, quant_node) -> _Int8:
    """A pending value through its quantizer: one int8 layer."""
    if pending.kind == "compute":
        return _materialize_compute(walk, pending, out, quant_node)
    common = dict(
        relu=out.relu or pending.relu,
        clamp_max=out.clamp_max,
        clamp_min=out.clamp_min,
        act_bits=out.bits,
        source=quant_node.output[0],
    )
    if pending.kind in ("add", "sub"):
        a, b = pending.inputs
        layer = Layer(
            pending.node.name, pending.kind, [a.name, b.name], pending.shape, float(out.scale), out.zero_point, **common
        )
    elif pending.kind == "mean":
        source = pending.inputs[0]
        height, width, channels = source.shape
        layer = Layer(
            pending.node.name,
            "dw",
            [source.name],
            [1, 1, channels],
            float(out.scale),
            out.zero_point,
            weights=np.full((1, height, width, channels), AVERAGE_GAIN, np.int8),
            weight_scales=np.full(channels, np.float32(1.0 / (AVERAGE_GAIN * height * width)), dtype=np.float32),
            input_scale=float(source.scale),
            input_zero_point=source.zero_point,
            weight_gain=AVERAGE_GAIN,
            kernel=(height, width),
            **common,
        )
    else:  # requant: QUANTIZE has no fused activation, so a relu before a signed quantizer clamps at its zero
        source = pending.inputs[0]
        if common["relu"] and out.zero_point > INT8_MIN:
            common |= {"relu": False, "clamp_min": max(out.clamp_min or INT8_MIN, out.zero_point)}
        layer = Layer(
            quant_node.name,
            "requant",
            [source.name],
            source.shape,
            float(out.scale),
            out.zero_point,
            input_scale=float(source.scale),
            input_zero_point=source.zero_point,
            **common,
        )
    return walk.add(layer, out.low, out.high)


def _materialized(walk: _Walk, node, index: int = 0) -> _Int8:
    """The node's input as an int8 tensor: a pending classifier accumulator is written at its data-free scale."""
    value = walk.value(node, index)
    if isinstance(value, _Pending) and value.kind == "compute":
        return _materialize_compute(walk, value, None, None)
    return walk.int8(node, index)


# ---------------------------------------------------------------- node handlers


def _on_quant(walk: _Walk, node) -> Any:
    value = walk.value(node)
    if isinstance(value, _Weights):
        return _weight_quant(walk, node, value.values)
    out = _out_quant(walk, node)
    if isinstance(value, _Pending):
        return _materialize(walk, value, out, node)
    source = walk.int8(node)
    return _materialize(walk, _Pending("requant", node, [source], source.shape), out, node)


def _compute_weights(walk: _Walk, node, index: int) -> _Weights:
    w = walk.value(node, index)
    if not isinstance(w, _Weights) or w.ints is None:
        raise _refuse(
            node,
            "has weights without a weight quantizer (float weights)"
            if isinstance(w, _Weights)
            else "has computed weights",
            "quantize the layer's weights (Brevitas QuantConv / QuantLinear, 2..8 bits)",
        )
    if not 1 <= w.bits <= 8:
        raise _refuse(
            node,
            f"has {w.bits}-bit weights; int8 TFLite holds exact 1..8-bit weights",
            "train with 1..8 weight bits",
            fpga_may=True,
        )
    return w


def _constant(walk: _Walk, node, index: int) -> np.ndarray | None:
    value = walk.value(node, index)
    return value.values if isinstance(value, _Weights) else None


def _on_gemm(walk: _Walk, node) -> _Pending:
    source = walk.int8(node)
    if len(source.shape) != 1:
        raise _refuse(node, f"multiplies a {'x'.join(map(str, source.shape))} map; the int8 graph needs it flat")
    w = _compute_weights(walk, node, 1)
    attrs = _attrs(node)
    ints, values = w.ints, w.values
    if node.op_type == "MatMul" or not attrs.get("transB", 0):
        ints, values = ints.T, values.T
        if w.scales.size > 1:
            w = replace(w, scales=w.scales.reshape(-1))
    if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
        raise _refuse(node, "has transA or alpha != 1")
    if ints.ndim != 2 or ints.shape[1] != source.shape[0]:
        raise _refuse(node, f"has weights {list(ints.shape)} for {source.shape[0]} inputs")
    if source.nchw is not None:  # the flatten of a (C, H, W) map: columns NCHW -> NHWC
        c, h, wd = source.nchw
        ints = ints.reshape(len(ints), c, h, wd).transpose(0, 2, 3, 1).reshape(len(ints), -1)
    channels = len(ints)
    shift = np.zeros(channels)
    if len(node.input) > 2 and node.input[2]:
        bias = _constant(walk, node, 2)
        if bias is None:
            raise _refuse(node, "has a computed bias")
        shift = shift + float(attrs.get("beta", 1.0)) * np.broadcast_to(bias.reshape(-1), (channels,))
    return _Pending(
        "compute",
        node,
        [source],
        [channels],
        "fc",
        replace(w, ints=ints),
        np.ones(channels),
        shift,
    )


def _on_conv(walk: _Walk, node) -> _Pending:
    source = walk.int8(node)
    w = _compute_weights(walk, node, 1)
    attrs = _attrs(node)
    ints = w.ints
    one_d = ints.ndim == 3
    if one_d:
        ints = ints[:, :, None, :]
    if ints.ndim != 4 or len(source.shape) != 3:
        raise _refuse(node, f"is a {ints.ndim - 2}-D convolution; TFLite convolves 1-D and 2-D maps")
    kernel = [int(k) for k in attrs.get("kernel_shape", ints.shape[2:])]
    strides = [int(s) for s in attrs.get("strides", [1] * len(kernel))]
    dilations = [int(d) for d in attrs.get("dilations", [1] * len(kernel))]
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * len(kernel))]
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if (auto_pad.decode("utf-8", "replace") if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
        raise _refuse(node, f"pads by auto_pad={auto_pad!r}", "export with explicit padding")
    if one_d:
        strides, dilations, pads = [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]]
    height, width, channels = source.shape
    groups = int(attrs.get("group", 1))
    out_channels = len(ints)
    if groups == 1:
        op = "conv"
    elif groups == channels == out_channels:
        op = "dw"
    else:
        raise _refuse(
            node,
            f"is a grouped convolution ({groups} groups, {channels} -> {out_channels} channels); TFLite's int8 "
            "kernels run plain and depthwise (groups = channels, multiplier 1) convolutions",
            "use groups=1 or groups=channels with as many output channels",
        )
    if ints.shape[1] * groups != channels:
        raise _refuse(node, f"has weights {list(w.ints.shape)} for {channels} input channels")
    top, left, bottom, right = pads
    span_h, span_w = (ints.shape[2] - 1) * dilations[0] + 1, (ints.shape[3] - 1) * dilations[1] + 1
    out_h = (height + top + bottom - span_h) // strides[0] + 1
    out_w = (width + left + right - span_w) // strides[1] + 1
    shift = np.zeros(out_channels)
    if len(node.input) > 2 and node.input[2]:
        bias = _constant(walk, node, 2)
        if bias is None:
            raise _refuse(node, "has a computed bias")
        shift = shift + bias.reshape(-1)
    return _Pending(
        "compute",
        node,
        [source],
        [out_h, out_w, out_channels],
        op,
        replace(w, ints=ints),
        np.ones(out_channels),
        shift,
        strides=(strides[0], strides[1]),
        pads=(top, bottom, left, right),
        dilation=(dilations[0], dilations[1]),
    )


def _channel_constant(walk: _Walk, node, pending: _Pending, index: int) -> np.ndarray:
    """A constant operand broadcast per output channel (a scalar, or one value per channel)."""
    value = _constant(walk, node, index)
    channels = pending.shape[-1]
    if value is None:
        raise _refuse(
            node,
            "combines two computed values before any quantizer",
            # not "an FPGA board": FINN refuses a sum of unquantized values as well
            "quantize both values before they combine: for a residual sum, one shared quantizer on both summands "
            "(a QuantIdentity applied to both)",
        )
    flat = value.reshape(-1)
    if flat.size == 1:
        return np.full(channels, float(flat[0]))
    rank = len(walk.graph.get_tensor_shape(pending.tensor) or [])
    aligned = [1] * (rank - value.ndim) + list(value.shape)
    if rank >= 2 and len(aligned) == rank and aligned[1] == channels and int(np.prod(aligned)) == channels:
        return flat.astype(np.float64)
    raise _refuse(node, f"uses a constant of shape {list(value.shape)} that is neither a scalar nor per channel")


def _on_batchnorm(walk: _Walk, node) -> _Pending:
    pending = walk.value(node)
    if not isinstance(pending, _Pending) or pending.kind != "compute" or pending.relu:
        raise _refuse(node, "does not follow a convolution or a linear layer", "put the BatchNorm right after one")
    params = [_constant(walk, node, i) for i in range(1, 5)]
    if any(p is None for p in params):
        raise _refuse(node, "has computed parameters")
    gamma, beta, mean, var = (p.reshape(-1).astype(np.float64) for p in params)
    eps = float(_attrs(node).get("epsilon", 1e-5))
    a = gamma / np.sqrt(var + eps)
    return replace(pending, factor=pending.factor * a, shift=(pending.shift - mean) * a + beta, node=pending.node)


def _on_mul_add(walk: _Walk, node) -> Any:
    first, second = walk.value(node, 0), walk.value(node, 1)
    if isinstance(first, _Weights) and not isinstance(second, _Weights):  # constant first: swap (Add, Mul commute)
        if node.op_type in ("Sub", "Div"):
            raise _refuse(node, "takes its computed operand second")
        first, second, index = second, first, 0
    else:
        index = 1
    if isinstance(first, _Int8) and node.op_type in ("Mul", "Div"):
        c = _constant(walk, node, index)
        if first.name == INPUT_NAME and not walk.input_read and c is not None and c.size == 1 and c.item() > 0:
            scale = float(c.reshape(-1)[0])
            walk.input_scale = float(np.float32(first.scale * scale if node.op_type == "Mul" else first.scale / scale))
            return replace(first, scale=np.float32(walk.input_scale))
        raise _refuse(
            node,
            "scales a quantized tensor; the int8 graph takes a constant scale only on its input, before any layer",
            "fold the scale into the layer before the quantizer, or into the quantizer's own scale",
        )
    if node.op_type in ("Add", "Sub") and isinstance(first, _Int8) and isinstance(second, _Int8):
        if first.shape != second.shape:
            raise _refuse(node, f"combines tensors of shapes {first.shape} and {second.shape}")
        return _Pending(node.op_type.lower(), node, [first, second], first.shape)
    if not isinstance(first, _Pending) or first.kind != "compute" or first.relu:
        raise _refuse(
            node,
            "adds or scales a value the int8 graph cannot fold",
            "quantize both inputs of an addition (QuantIdentity) and fold scales into a conv / linear layer",
        )
    c = _channel_constant(walk, node, first, index)
    if node.op_type == "Mul":
        return replace(first, factor=first.factor * c, shift=first.shift * c)
    if node.op_type == "Div":
        return replace(first, factor=first.factor / c, shift=first.shift / c)
    if node.op_type == "Sub":
        return replace(first, shift=first.shift - c)
    return replace(first, shift=first.shift + c)


def _on_relu(walk: _Walk, node) -> _Pending:
    value = walk.value(node)
    if isinstance(value, _Pending):
        return replace(value, relu=True)
    source = walk.int8(node)
    return _Pending("requant", node, [source], source.shape, relu=True)


def _on_max_pool(walk: _Walk, node) -> _Int8:
    source = walk.int8(node)
    attrs = _attrs(node)
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * len(kernel))]
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * len(kernel))]
    if len(kernel) == 1:
        kernel, strides, pads = [1, *kernel], [1, *strides], [0, pads[0], 0, pads[1]]
    if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1, 1])) or len(kernel) != 2:
        raise _refuse(node, "uses ceil_mode, dilation or more than two dimensions", "use floor-mode pooling")
    if any(pads) and source.zero_point != INT8_MIN:
        raise _refuse(node, "pads a signed tensor", "pad by a convolution instead, or pool without padding")
    height, width, channels = source.shape
    top, left, bottom, right = pads
    shape = [
        (height + top + bottom - kernel[0]) // strides[0] + 1,
        (width + left + right - kernel[1]) // strides[1] + 1,
        channels,
    ]
    layer = Layer(
        node.name,
        "maxpool",
        [source.name],
        shape,
        float(source.scale),
        source.zero_point,
        kernel=(kernel[0], kernel[1]),
        strides=(strides[0], strides[1]),
        pads=(top, bottom, left, right),
        source=node.output[0],
    )
    return walk.add(layer, source.low, source.high)


def _on_global_mean(walk: _Walk, node) -> _Pending:
    source = walk.int8(node)
    if len(source.shape) != 3:
        raise _refuse(node, "averages a flat tensor")
    if node.op_type == "ReduceMean":
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = _constant(walk, node, 1)
        in_rank = len(walk.graph.get_tensor_shape(node.input[0]) or [])
        spatial = {2, 3} if in_rank == 4 else {2}
        if axes is None or {int(a) % in_rank for a in np.asarray(axes).reshape(-1)} != spatial:
            raise _refuse(node, f"averages over axes {axes}; only the mean over the whole map lowers")
    if node.op_type == "AveragePool":
        attrs = _attrs(node)
        kernel = [int(k) for k in attrs.get("kernel_shape", [])]
        if kernel not in (source.shape[:2], source.shape[1:2] if source.shape[0] == 1 else None) or any(
            attrs.get("pads", [])
        ):
            raise _refuse(node, "pools windows smaller than the map", "use a global average pool")
    return _Pending("mean", node, [source], [1, 1, source.shape[2]])


def _on_reshape(walk: _Walk, node) -> _Int8:
    value = walk.value(node)
    out_shape = walk.graph.get_tensor_shape(node.output[0]) or []
    if isinstance(value, _Pending) and value.kind == "compute" and len(value.shape) == 1:
        value = _materialize_compute(walk, value, None, None)
    source = walk.int8(node) if not isinstance(value, _Int8) else value
    features = int(np.prod(source.shape))
    if len(source.shape) == 1 and len(out_shape) in (3, 4) and int(out_shape[1]) == 1:
        # a flat signal or image of one channel: the same values in NCHW and NHWC order
        shape = _nhwc([int(d) for d in out_shape[1:]])
        if int(np.prod(shape)) != features:
            raise _refuse(node, f"reshapes {features} values to {out_shape}")
        layer = Layer(node.name, "reshape", [source.name], shape, float(source.scale), source.zero_point)
        return walk.add(replace(layer, compared=False), source.low, source.high)
    if len(out_shape) != 2 or int(out_shape[1]) != features:
        raise _refuse(
            node,
            f"reshapes {'x'.join(map(str, source.shape))} to {out_shape}; the int8 graph flattens maps to "
            "(batch, features) only",
        )
    if len(source.shape) == 1:
        return source
    height, width, channels = source.shape
    # NCHW and NHWC flatten alike where the map has one channel or one position; else the next Gemm reorders
    nchw = None if channels == 1 or height * width == 1 else [channels, height, width]
    layer = Layer(
        node.name, "reshape", [source.name], [features], float(source.scale), source.zero_point, compared=False
    )
    return walk.add(layer, source.low, source.high, nchw)


def _on_activation(walk: _Walk, node) -> _Int8:
    op, slope = FIXED_ACTIVATIONS[node.op_type]
    scale, zero_point = FIXED_OUTPUT_QUANT[op]
    source = _materialized(walk, node)
    if op == "softmax":
        axis = int(_attrs(node).get("axis", -1))
        rank = len(walk.graph.get_tensor_shape(node.input[0]) or [])
        if len(source.shape) != 1 or axis % max(rank, 1) != rank - 1:
            raise _refuse(node, f"takes the softmax over axis {axis} of a map; the int8 graph's is over features")
    if source.nchw is not None:
        raise _refuse(node, "reads a map flattened in NCHW order", "apply it before the flatten or after a linear")
    layer = Layer(
        node.name,
        op,
        [source.name],
        source.shape,
        float(np.float32(scale)),
        zero_point,
        input_scale=float(source.scale),
        input_zero_point=source.zero_point,
        source=node.output[0],
        slope=slope,
    )
    low, high = INT8_MIN - zero_point, INT8_MAX - zero_point
    return walk.add(layer, low, high)


def _on_concat(walk: _Walk, node) -> _Int8:
    """Channels (or features) side by side: TFLite's int8 CONCATENATION moves raw values, so every part must be
    quantized alike, as a shared quantizer makes them."""
    parts = [walk.int8(node, i) for i in range(len(node.input))]
    rank = len(walk.graph.get_tensor_shape(node.input[0]) or [])
    if int(_attrs(node).get("axis", 1)) % max(rank, 1) != 1:
        raise _refuse(node, "concatenates along an axis other than the channels / features")
    first = parts[0]
    if any(p.scale != first.scale or p.zero_point != first.zero_point for p in parts):
        raise _refuse(
            node,
            "concatenates tensors quantized at different scales",
            "quantize the concatenated tensors with one shared quantizer (e.g. one QuantIdentity applied to each)",
        )
    if any(p.shape[:-1] != first.shape[:-1] or p.nchw is not None for p in parts):
        raise _refuse(node, f"concatenates tensors of shapes {[p.shape for p in parts]}")
    shape = [*first.shape[:-1], sum(p.shape[-1] for p in parts)]
    layer = Layer(
        node.name, "concat", [p.name for p in parts], shape, float(first.scale), first.zero_point, source=node.output[0]
    )
    return walk.add(layer, min(p.low for p in parts), max(p.high for p in parts))


def _on_bipolar(walk: _Walk, node) -> _Weights:
    """Bipolar weights are the integers +-1 (sign, 0 counted positive, as QONNX's BipolarQuant) times the scale:
    exact in int8. A bipolar activation is refused: it has no zero and sends 0 to +1, which an int8 requantization
    (a rounding, a clamp) does not."""
    value = walk.value(node)
    if not isinstance(value, _Weights):
        raise _refuse(
            node,
            "quantizes a computed tensor to 1 bit (bipolar: +s where its input is >= 0, else -s); the writer lowers "
            "2..8-bit activation quantizers only: a bipolar one has no zero and sends 0 to +s, where an int8 "
            "requantization (round to nearest, then clamp) sends 0 to 0",
            "use 2..8-bit activations (e.g. QuantReLU(bit_width=2)) for the TFLite family, where 1-bit weights lower",
            fpga_may=True,
        )
    scale = walk.graph.get_initializer(node.input[1])
    if scale is None:
        raise _refuse(node, "has a scale that is computed, not a constant")
    scale = np.asarray(scale, dtype=np.float32)
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise _refuse(node, "has a weight scale that is zero, negative or not finite")
    ints = np.where(value.values >= 0, 1, -1).astype(np.int64)
    return _Weights((ints * scale).astype(np.float64), ints, scale, 1)


def lowering_table() -> dict[str, Callable[[_Walk, Any], Any]]:
    """One entry per QONNX op the writer lowers (the op specs name, in `onnx`, the ONNX ops each TFLite op comes
    from)."""
    return {
        "Quant": _on_quant,
        "Gemm": _on_gemm,
        "MatMul": _on_gemm,
        "Conv": _on_conv,
        "BatchNormalization": _on_batchnorm,
        "Mul": _on_mul_add,
        "Div": _on_mul_add,
        "Add": _on_mul_add,
        "Sub": _on_mul_add,
        "Relu": _on_relu,
        "MaxPool": _on_max_pool,
        "GlobalAveragePool": _on_global_mean,
        "ReduceMean": _on_global_mean,
        "AveragePool": _on_global_mean,
        "Reshape": _on_reshape,
        "Flatten": _on_reshape,
        **dict.fromkeys(FIXED_ACTIVATIONS, _on_activation),
        "Identity": lambda walk, node: walk.value(node),
        "BipolarQuant": _on_bipolar,
        "Concat": _on_concat,
    }


def _input_codes(graph, name: str) -> tuple[int, int]:
    """The code range of the graph input's integer type; uint8 pixels where it is not annotated (a float input
    is pixels behind a scale). A type int8 cannot carry (over 8 bits, or unsigned over 255) is refused."""
    datatype = graph.get_tensor_datatype(name)
    if not datatype.is_integer():
        return 0, 255
    low, high = int(datatype.min()), int(datatype.max())
    if datatype.bitwidth() > 8 or high - low > 255:
        raise TfliteConversionError(
            f"The graph input {name} takes {datatype.name} values; the int8 input tensor carries at most 8 bits.",
            where=f"input {name}",
            fix="quantize the model's input to at most 8 bits",
        )
    return low, high


def lower(graph, widen_weights: bool = True, int4_weights: bool = False) -> LoweredModel:
    """The int8 graph of a cleaned-up QONNX model (a qonnx ModelWrapper) whose input takes integer codes of the
    type it is annotated with (uint8 pixels where it is not annotated).

    int4_weights stores the conv and fc weights as int4 (each must have at most 4 bits); depthwise
    weights stay int8, since LiteRT's reference kernels have no int4 DEPTHWISE_CONV_2D (version 7)."""
    if len(graph.graph.input) != 1 or len(graph.graph.output) != 1:
        raise TfliteConversionError(
            "The graph has several inputs or outputs.", where="--model", fix="export with one input and one output"
        )
    name = graph.graph.input[0].name
    shape = [int(d) for d in graph.get_tensor_shape(name)[1:]]
    input_shape = _nhwc(shape)
    low, high = _input_codes(graph, name)
    zero_point = INT8_MIN if high > INT8_MAX else 0
    lowered = LoweredModel(input_shape, input_zero_point=zero_point, input_codes=(low, high))
    walk = _Walk(graph, {}, lowered, widen_weights, int4_weights, {INPUT_NAME})
    walk.values[name] = _Int8(INPUT_NAME, input_shape, np.float32(1.0), zero_point, low, high)
    table = lowering_table()
    for node in graph.graph.node:
        handler = table.get(node.op_type)
        if handler is None:
            raise _refuse(node, "has no int8 TFLite mapping", fpga_may=node.op_type in FPGA_MAY_MAP)
        result = handler(walk, node)
        if isinstance(result, _Pending):
            result = replace(result, tensor=node.output[0])
        walk.values[node.output[0]] = result
    output = graph.graph.output[0].name
    final = walk.values.get(output)
    if isinstance(final, _Pending) and final.kind == "compute":
        final = _materialize_compute(walk, final, None, None)
    if not isinstance(final, _Int8) or not lowered.layers or final.name != lowered.layers[-1].name:
        raise TfliteConversionError(
            f"The graph's output {output} is not an int8 tensor the writer computes last ({type(final).__name__}).",
            where=f"output {output}",
            fix="end the model with a linear / conv layer, a quantizer, or a sigmoid / tanh / softmax after them",
        )
    if final.nchw is not None:
        raise TfliteConversionError(
            f"The graph's output {output} is a flattened map in NCHW order.",
            where=f"output {output}",
            fix="end the model with a linear layer after the flatten",
        )
    lowered.input_scale = walk.input_scale
    lowered.layers[-1].source = output
    return lowered
