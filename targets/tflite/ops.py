"""One record per TFLite op the SDK writes: how it is written, checked when read, and computed by the golden model.

Each `OpSpec` holds, for one builtin operator:
  version, int4_version  the lowest op version covering its int8 use (LiteRT's tools/versioning/op_version.cc)
  inputs, options        how many inputs it takes and its options class: the writer names the options type from
                         it (and writes an empty one where the op has no settings), the reader refuses others
  write, layer           the writer's emission of a lowered `Layer` of op `layer` (None: the writer adds the op
                         around layers itself: PAD before a padded window, MINIMUM / MAXIMUM clamps, the I/O
                         QUANTIZE / DEQUANTIZE)
  onnx, slope            the ONNX op types whose lowering handler (lowering.lowering_table) produces the layer;
                         for a fixed-output activation also its largest slope (lowering.FIXED_ACTIVATIONS)
  check                  the reader's checks of its tensors in a file, the way its kernel reads them (LiteRT's
                         C++ kernels and the golden model trust a file's shapes and types)
  golden, rounding       its int8 arithmetic (kernels.py) and the rounding form of each runtime (LiteRT's
                         BUILTIN_REF kernels, TFLite Micro), where they differ

Adding an op: its arithmetic as a function in kernels.py (the runtime's reference kernel); here a block with its
write (the options it sets) and its golden adapter, reusing a check where one fits, and one `OpSpec`; one case in
tests/test_tflite_ops.py that writes it and compares LiteRT, TFLite Micro and the golden model bit for bit. The
reader, the writer and the golden model need no change. If an ONNX op the lowering does not yet take produces it,
its handler goes into lowering.lowering_table (a fixed-output activation needs none: naming its ONNX op in `onnx`
registers the shared one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from targets.tflite import kernels
from targets.tflite.kernels import TABLE, Tensor, check_same_quant
from targets.tflite.schema import OP_NAMES, TYPE_NAMES

if TYPE_CHECKING:
    from targets.tflite.lowering import Layer
    from targets.tflite.writer import _Graph

BUILTIN = schema.BuiltinOperator
_T = schema.TensorType
RUNTIMES = ("litert", "tflm")
TWICE = {"litert": "double", "tflm": "double"}  # the gemmlowp form: what most kernels of both runtimes use
_MAX_WINDOW = 4096  # strides, dilations, pooling windows, paddings


class Malformed(Exception):
    """A structural fault of the file, turned into the caller's SDKError with the file named (reader.py)."""


def tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def shape_of(tensor) -> list[int]:
    return [] if tensor.shape is None else [int(d) for d in tensor.shape]


class OpView:
    """One operator of a file with its tensors resolved, and the checks its kernel relies on."""

    def __init__(self, model: schema.ModelT, op: schema.OperatorT, code: int, label: str):
        graph = model.subgraphs[0]
        self.model, self.op, self.code, self.label = model, op, code, label
        self.inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        self.tensors = graph.tensors

    def t(self, n: int):
        return self.tensors[self.inputs[n]] if n < len(self.inputs) and self.inputs[n] >= 0 else None

    @property
    def out(self):
        return self.tensors[int(self.op.outputs[0])]

    @property
    def options(self):
        return self.op.builtinOptions

    def fail(self, what: str) -> Malformed:
        return Malformed(f"{self.label}: {what}")

    def types(self, tensor, *allowed: int, role: str) -> None:
        if tensor.type not in allowed:
            names = "/".join(TYPE_NAMES.get(a, str(a)) for a in allowed)
            raise self.fail(
                f"{role} {tensor_name(tensor)[:60]!r} is {TYPE_NAMES.get(tensor.type, tensor.type)}, not {names}"
            )

    def quantized(self, *tensors) -> None:
        """int8 tensors carry a positive scale and a zero point (the kernels read element 0 of each)."""
        for tensor in tensors:
            q = tensor.quantization
            scales = [] if q is None or q.scale is None else list(q.scale)
            zeros = [] if q is None or q.zeroPoint is None else list(q.zeroPoint)
            if not scales or not zeros or min(scales) <= 0 or not all(-(2**31) <= z < 2**31 for z in zeros):
                raise self.fail(f"{tensor_name(tensor)[:60]!r} lacks a positive scale and a zero point")

    def constant(self, tensor, role: str) -> np.ndarray:
        buffers = self.model.buffers or []
        raw = buffers[tensor.buffer].data if tensor.buffer else None
        if raw is None or not len(raw):
            raise self.fail(f"{role} {tensor_name(tensor)[:60]!r} must be constant data")
        kind = {_T.INT32: "<i4", _T.INT8: "i1"}.get(tensor.type)
        return np.frombuffer(bytes(np.asarray(raw, np.uint8)), dtype=kind) if kind else np.asarray(raw)

    def window(self, size: int, kernel: int, stride: int, dilation: int, padding: int) -> int:
        if padding == schema.Padding.SAME:
            return -(-size // stride)
        return -(-(size - (kernel - 1) * dilation) // stride)

    def spatial(self, x: list[int], y: list[int], kernel: tuple[int, int], options, dilation: tuple[int, int]) -> None:
        sizes = [options.strideH, options.strideW, *kernel, *dilation]
        if not all(1 <= v <= _MAX_WINDOW for v in sizes) or options.padding not in (
            schema.Padding.SAME,
            schema.Padding.VALID,
        ):
            raise self.fail(f"strides, window and dilations {sizes}, padding {options.padding} are out of range")
        strides = (options.strideH, options.strideW)
        expected = [self.window(x[1 + i], kernel[i], strides[i], dilation[i], options.padding) for i in range(2)]
        if min(expected) < 1 or y[1:3] != expected:
            raise self.fail(
                f"output {y} does not follow from input {x}, window {list(kernel)} and strides {list(strides)}"
            )


# The golden model's call of an op: (operator, its input tensors, their values, output tensor, rounding form).
Golden = Callable[[schema.OperatorT, list, list, Tensor, str], np.ndarray]


@dataclass(frozen=True)
class OpSpec:
    """One TFLite builtin operator as the SDK writes, reads and computes it (see the module docstring)."""

    code: int
    version: int
    inputs: tuple[int, int]  # fewest, most
    options: type  # its options class; type(None): the op has none
    options_required: bool
    check: Callable[[OpView], None]
    golden: Golden
    rounding: Mapping[str, str] = field(default_factory=lambda: TWICE)  # runtime -> rounding form
    int4_version: int | None = None
    layer: str | None = None  # the lowered Layer.op it writes
    write: Callable[[_Graph, Layer, int, int], None] | None = None  # (graph, layer, input tensor, output tensor)
    onnx: tuple[str, ...] = ()
    slope: float = 0.0

    @property
    def name(self) -> str:
        return OP_NAMES[self.code]

    def version_for(self, layer: Layer) -> int:
        return self.int4_version if layer.weight_type == "int4" else self.version


def _fused_relu(layer: Layer) -> int:
    kinds = schema.ActivationFunctionType
    return kinds.RELU if layer.relu else kinds.NONE


def _fused(options) -> int:
    return options.fusedActivationFunction if options else 0


def _bias(ins: list[Tensor | None]) -> Tensor | None:
    return ins[2] if len(ins) > 2 else None


# ---------------------------------------------------------------------------------------------------------------------
# FULLY_CONNECTED


def _check_fully_connected(o: OpView) -> None:
    x, out, w, bias = o.t(0), o.out, o.t(1), o.t(2)
    xs, ys = shape_of(x), shape_of(out)
    o.types(x, _T.INT8, role="input")
    o.types(w, _T.INT8, _T.INT4, role="weights")
    o.types(out, _T.INT8, role="output")
    o.quantized(x, w, out)
    ws = shape_of(w)
    if len(ws) != 2 or not ws[1] or math.prod(xs) % ws[1] or ys[-1:] != ws[:1]:
        raise o.fail(f"weights {ws} do not fit input {xs} and output {ys}")
    if math.prod(ys) != math.prod(xs) // ws[1] * ws[0]:
        raise o.fail(f"output {ys} does not hold input {xs} times weights {ws}")
    o.constant(w, "weights")
    if bias is not None:
        o.types(bias, _T.INT32, role="bias")
        if shape_of(bias) != ws[:1]:
            raise o.fail(f"bias {shape_of(bias)} does not fit weights {ws}")
        o.constant(bias, "bias")


def _write_fully_connected(g: _Graph, layer: Layer, x: int, y: int) -> None:
    w, b = g.weights_and_bias(layer, 0, with_bias=False)
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = _fused_relu(layer)
    options.weightsFormat = schema.FullyConnectedOptionsWeightsFormat.DEFAULT
    g.op(BUILTIN.FULLY_CONNECTED, [x, w, b], [y], options, OP_SPECS[BUILTIN.FULLY_CONNECTED].version_for(layer))


def _golden_fully_connected(op, ins, args, out, rounding):
    return kernels.fully_connected(args[0], ins[0], ins[1], _bias(ins), out, _fused(op.builtinOptions), rounding)


# ---------------------------------------------------------------------------------------------------------------------
# CONV_2D, DEPTHWISE_CONV_2D


def _check_convolution(o: OpView) -> None:
    x, out, w, bias, options = o.t(0), o.out, o.t(1), o.t(2), o.options
    xs, ys = shape_of(x), shape_of(out)
    o.types(x, _T.INT8, role="input")
    o.types(w, _T.INT8, _T.INT4, role="weights")
    o.types(bias, _T.INT32, role="bias")
    o.types(out, _T.INT8, role="output")
    o.quantized(x, w, out)
    ws = shape_of(w)
    if len(xs) != 4 or len(ws) != 4 or len(ys) != 4 or xs[0] != ys[0]:
        raise o.fail(f"input {xs}, weights {ws} and output {ys} are not NHWC / OHWI")
    depthwise = o.code == BUILTIN.DEPTHWISE_CONV_2D
    channels = ws[3] if depthwise else ws[0]
    if (depthwise and (ws[0] != 1 or options.depthMultiplier != 1 or ws[3] != xs[3])) or (
        not depthwise and ws[3] != xs[3]
    ):
        raise o.fail(f"weights {ws} do not fit input {xs}")
    if ys[3] != channels or shape_of(bias) != [channels]:
        raise o.fail(f"output {ys} and bias {shape_of(bias)} do not have the weights' {channels} channels")
    o.spatial(xs, ys, (ws[1], ws[2]), options, (options.dilationHFactor, options.dilationWFactor))
    o.constant(w, "weights")
    o.constant(bias, "bias")


def _write_convolution(g: _Graph, layer: Layer, x: int, y: int) -> None:
    x, padding = g.padding(layer, x)
    if layer.op == "conv":
        w, b = g.weights_and_bias(layer, 0, with_bias=True)
        options, code = schema.Conv2DOptionsT(), BUILTIN.CONV_2D
    else:
        w, b = g.weights_and_bias(layer, 3, with_bias=True)
        options, code = schema.DepthwiseConv2DOptionsT(), BUILTIN.DEPTHWISE_CONV_2D
        options.depthMultiplier = 1
    options.padding, (options.strideH, options.strideW) = padding, layer.strides
    options.dilationHFactor, options.dilationWFactor = layer.dilation
    options.fusedActivationFunction = _fused_relu(layer)
    g.op(code, [x, w, b], [y], options, OP_SPECS[code].version_for(layer))


def _golden_convolution(depthwise: bool) -> Golden:
    def run(op, ins, args, out, rounding):
        return kernels.convolution(args[0], ins[0], ins[1], _bias(ins), out, op.builtinOptions, depthwise, rounding)

    return run


# ---------------------------------------------------------------------------------------------------------------------
# MAX_POOL_2D, AVERAGE_POOL_2D


def _check_pool(o: OpView) -> None:
    x, out, options = o.t(0), o.out, o.options
    xs, ys = shape_of(x), shape_of(out)
    o.types(x, _T.INT8, role="input")
    o.types(out, _T.INT8, role="output")
    o.quantized(x, out)
    if len(xs) != 4 or len(ys) != 4 or xs[0] != ys[0] or xs[3] != ys[3]:
        raise o.fail(f"input {xs} and output {ys} are not NHWC of the same channels")
    o.spatial(xs, ys, (options.filterHeight, options.filterWidth), options, (1, 1))


def _write_pool(g: _Graph, layer: Layer, x: int, y: int) -> None:
    x, padding = g.padding(layer, x)
    options = schema.Pool2DOptionsT()
    options.padding, (options.strideH, options.strideW) = padding, layer.strides
    options.filterHeight, options.filterWidth = layer.kernel
    options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    g.op(BUILTIN.MAX_POOL_2D if layer.op == "maxpool" else BUILTIN.AVERAGE_POOL_2D, [x], [y], options)


def _same_quant(name: str, compute: Callable[[Any, list, list, Tensor], np.ndarray]) -> Golden:
    """An op whose int8 kernel moves raw values: its input and output must share one quantization."""

    def run(op, ins, args, out, rounding):
        check_same_quant([ins[0], out], name)
        return compute(op, ins, args, out)

    return run


# ---------------------------------------------------------------------------------------------------------------------
# ADD, SUB, MINIMUM, MAXIMUM


def _check_elementwise(o: OpView) -> None:
    x, other, out = o.t(0), o.t(1), o.out
    xs, ys = shape_of(x), shape_of(out)
    for tensor, role in ((x, "input"), (other, "input"), (out, "output")):
        o.types(tensor, _T.INT8, role=role)
    o.quantized(x, other, out)
    try:
        broadcast = list(np.broadcast_shapes(tuple(xs), tuple(shape_of(other))))
    except ValueError:
        broadcast = None
    if broadcast != ys:
        raise o.fail(f"inputs {xs} and {shape_of(other)} do not give output {ys}")


def _write_add(g: _Graph, layer: Layer, x: int, y: int) -> None:
    options = schema.AddOptionsT()
    options.fusedActivationFunction = _fused_relu(layer)
    g.op(BUILTIN.ADD, [g.index[layer.inputs[0]], g.index[layer.inputs[1]]], [y], options)


def _golden_add(op, ins, args, out, rounding):
    return kernels.add(args[0], args[1], ins[0], ins[1], out, _fused(op.builtinOptions), rounding)


def _write_sub(g: _Graph, layer: Layer, x: int, y: int) -> None:
    options = schema.SubOptionsT()
    options.fusedActivationFunction = _fused_relu(layer)
    g.op(BUILTIN.SUB, [g.index[layer.inputs[0]], g.index[layer.inputs[1]]], [y], options)


def _golden_sub(op, ins, args, out, rounding):
    return kernels.add(args[0], args[1], ins[0], ins[1], out, _fused(op.builtinOptions), rounding, subtract=True)


def _min_max(pick: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Golden:
    """MINIMUM / MAXIMUM (the writer's clamps) compare raw integers: all three tensors quantized alike."""

    def run(op, ins, args, out, rounding):
        check_same_quant([ins[0], ins[1], out], "MINIMUM / MAXIMUM")
        return pick(args[0], args[1]).astype(out.dtype)

    return run


# ---------------------------------------------------------------------------------------------------------------------
# PAD (written before a convolution or pool whose zero padding TFLite's SAME / VALID do not express)


def _check_pad(o: OpView) -> None:
    x, out = o.t(0), o.out
    xs, ys = shape_of(x), shape_of(out)
    o.types(x, _T.INT8, role="input")
    o.types(out, _T.INT8, role="output")
    o.types(o.t(1), _T.INT32, role="paddings")
    o.quantized(x, out)
    pads = o.constant(o.t(1), "paddings")
    if shape_of(o.t(1)) != [len(xs), 2] or pads.min(initial=0) < 0 or pads.max(initial=0) > _MAX_WINDOW:
        raise o.fail(f"paddings {pads.tolist()[:8]} do not fit input {xs}")
    if ys != [d + int(a) + int(b) for d, (a, b) in zip(xs, pads.reshape(-1, 2))]:
        raise o.fail(f"output {ys} is not input {xs} padded by {pads.tolist()}")


def _golden_pad(op, ins, args, out):
    return np.pad(args[0], [tuple(p) for p in args[1]], constant_values=int(out.zero_points[0]))


# ---------------------------------------------------------------------------------------------------------------------
# RESHAPE


def _check_reshape(o: OpView) -> None:
    x, out = o.t(0), o.out
    xs, ys = shape_of(x), shape_of(out)
    o.types(x, _T.INT8, _T.FLOAT32, role="input")
    o.types(out, x.type, role="output")
    o.types(o.t(1), _T.INT32, role="shape")
    target = o.constant(o.t(1), "shape")
    if len(shape_of(o.t(1))) != 1 or math.prod(xs) != math.prod(ys) or not ys or len(target) != len(ys):
        raise o.fail(f"input {xs} cannot be reshaped to {ys}")
    if x.type == _T.INT8:
        o.quantized(x, out)


def _write_reshape(g: _Graph, layer: Layer, x: int, y: int) -> None:
    shape = g.tensor(
        f"{layer.name}/shape",
        [1 + len(layer.shape)],
        schema.TensorType.INT32,
        None,
        np.array([-1] + layer.shape, dtype="<i4"),
    )
    options = schema.ReshapeOptionsT()
    options.newShape = [-1] + layer.shape
    g.op(BUILTIN.RESHAPE, [x, shape], [y], options)


def _golden_reshape(op, ins, args, out, rounding):
    return args[0].reshape(len(args[0]), *list(args[1])[1:])


# ---------------------------------------------------------------------------------------------------------------------
# CONCATENATION


def _check_concatenation(o: OpView) -> None:
    out, options = o.out, o.options
    ys = shape_of(out)
    parts = [o.t(i) for i in range(len(o.inputs))]
    for tensor in (*parts, out):
        o.types(tensor, _T.INT8, role="input" if tensor is not out else "output")
    o.quantized(*parts, out)
    shapes = [shape_of(t) for t in parts]
    axis = options.axis % len(ys) if ys and -len(ys) <= options.axis < len(ys) else None
    if axis is None or any(len(s) != len(ys) for s in shapes):
        raise o.fail(f"axis {options.axis} does not fit inputs {shapes} and output {ys}")
    others = [[d for i, d in enumerate(s) if i != axis] for s in (*shapes, ys)]
    if any(rest != others[-1] for rest in others) or sum(s[axis] for s in shapes) != ys[axis]:
        raise o.fail(f"inputs {shapes} do not concatenate to {ys} along axis {axis}")


def _write_concatenation(g: _Graph, layer: Layer, x: int, y: int) -> None:
    options = schema.ConcatenationOptionsT()
    options.axis = len(layer.shape)  # the channels (or features), last after the batch
    options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    g.op(BUILTIN.CONCATENATION, [g.index[name] for name in layer.inputs], [y], options)


def _golden_concatenation(op, ins, args, out, rounding):
    return kernels.concatenation(args, ins, out, op.builtinOptions.axis)


# ---------------------------------------------------------------------------------------------------------------------
# QUANTIZE (int8 -> int8 requantization of a layer; float -> int8 of a float input), DEQUANTIZE (a float output)


def _check_conversion(o: OpView) -> None:
    x, out = o.t(0), o.out
    quantize = o.code == BUILTIN.QUANTIZE
    o.types(x, *((_T.FLOAT32, _T.INT8) if quantize else (_T.INT8,)), role="input")
    o.types(out, _T.INT8 if quantize else _T.FLOAT32, role="output")
    o.quantized(*[t for t in (x, out) if t.type == _T.INT8])
    if shape_of(x) != shape_of(out):
        raise o.fail(f"input {shape_of(x)} and output {shape_of(out)} differ in shape")


def _write_requantize(g: _Graph, layer: Layer, x: int, y: int) -> None:
    g.op(BUILTIN.QUANTIZE, [x], [y])


def _golden_quantize(op, ins, args, out, rounding):
    if ins[0].dtype == np.float32:
        return kernels.quantize(args[0], out)
    return kernels.requantize(args[0], ins[0], out, rounding)


def _golden_dequantize(op, ins, args, out, rounding):
    return kernels.dequantize(args[0], ins[0])


# ---------------------------------------------------------------------------------------------------------------------
# LOGISTIC, TANH, SOFTMAX: int8 kernels with one fixed output quantization (kernels.FIXED_OUTPUT_QUANT)


def _check_activation(o: OpView) -> None:
    x, out, options = o.t(0), o.out, o.options
    xs, ys = shape_of(x), shape_of(out)
    o.types(x, _T.INT8, role="input")
    o.types(out, _T.INT8, role="output")
    o.quantized(x, out)
    if xs != ys or not xs or not all(xs):
        raise o.fail(f"input {xs} and output {ys} differ in shape or are empty")
    if o.code == BUILTIN.SOFTMAX and not (isinstance(options.beta, float) and 0 < options.beta < math.inf):
        raise o.fail(f"beta {options.beta!r} is not a positive number")


def _write_activation(g: _Graph, layer: Layer, x: int, y: int) -> None:
    """LOGISTIC or TANH (no options), or SOFTMAX with beta 1 over the last axis."""
    if layer.op == "softmax":
        options = schema.SoftmaxOptionsT()
        options.beta = 1.0
        g.op(BUILTIN.SOFTMAX, [x], [y], options)
    else:
        g.op(BUILTIN.LOGISTIC if layer.op == "logistic" else BUILTIN.TANH, [x], [y])


def _golden_softmax(op, ins, args, out, rounding):
    return kernels.softmax(args[0], ins[0], out, op.builtinOptions.beta, rounding)


# ---------------------------------------------------------------------------------------------------------------------
# The table, in the order the reader lists the ops


def _specs(*specs: OpSpec) -> dict[int, OpSpec]:
    return {spec.code: spec for spec in specs}


OP_SPECS: dict[int, OpSpec] = _specs(
    OpSpec(
        BUILTIN.FULLY_CONNECTED,
        version=4,
        inputs=(2, 3),
        options=schema.FullyConnectedOptionsT,
        options_required=False,
        check=_check_fully_connected,
        golden=_golden_fully_connected,
        rounding={"litert": "single", "tflm": "double"},
        int4_version=10,
        layer="fc",
        write=_write_fully_connected,
        onnx=("Gemm", "MatMul"),
    ),
    OpSpec(
        BUILTIN.CONV_2D,
        version=3,
        inputs=(3, 3),
        options=schema.Conv2DOptionsT,
        options_required=True,
        check=_check_convolution,
        golden=_golden_convolution(depthwise=False),
        int4_version=7,
        layer="conv",
        write=_write_convolution,
        onnx=("Conv",),
    ),
    OpSpec(  # int8 weights only: LiteRT's reference resolver has no int4 DEPTHWISE_CONV_2D (version 7)
        BUILTIN.DEPTHWISE_CONV_2D,
        version=3,
        inputs=(3, 3),
        options=schema.DepthwiseConv2DOptionsT,
        options_required=True,
        check=_check_convolution,
        golden=_golden_convolution(depthwise=True),
        layer="dw",
        write=_write_convolution,
        onnx=("Conv", "GlobalAveragePool", "ReduceMean", "AveragePool"),  # groups = channels; a mean over the map
    ),
    OpSpec(
        BUILTIN.ADD,
        version=2,
        inputs=(2, 2),
        options=schema.AddOptionsT,
        options_required=False,
        check=_check_elementwise,
        golden=_golden_add,
        layer="add",
        write=_write_add,
        onnx=("Add",),
    ),
    OpSpec(
        BUILTIN.SUB,
        version=2,
        inputs=(2, 2),
        options=schema.SubOptionsT,
        options_required=False,
        check=_check_elementwise,
        golden=_golden_sub,
        layer="sub",
        write=_write_sub,
        onnx=("Sub",),
    ),
    OpSpec(
        BUILTIN.MINIMUM,
        version=2,
        inputs=(2, 2),
        options=schema.MaximumMinimumOptionsT,
        options_required=False,
        check=_check_elementwise,
        golden=_min_max(np.minimum),
    ),
    OpSpec(
        BUILTIN.MAXIMUM,
        version=2,
        inputs=(2, 2),
        options=schema.MaximumMinimumOptionsT,
        options_required=False,
        check=_check_elementwise,
        golden=_min_max(np.maximum),
    ),
    OpSpec(
        BUILTIN.MAX_POOL_2D,
        version=2,
        inputs=(1, 1),
        options=schema.Pool2DOptionsT,
        options_required=True,
        check=_check_pool,
        golden=_same_quant("MAX_POOL_2D", lambda op, ins, args, out: kernels.max_pool(args[0], op.builtinOptions)),
        layer="maxpool",
        write=_write_pool,
        onnx=("MaxPool",),
    ),
    OpSpec(  # hand-made graphs only: the lowering turns a global mean into a depthwise convolution
        BUILTIN.AVERAGE_POOL_2D,
        version=2,
        inputs=(1, 1),
        options=schema.Pool2DOptionsT,
        options_required=True,
        check=_check_pool,
        golden=_same_quant(
            "AVERAGE_POOL_2D", lambda op, ins, args, out: kernels.average_pool(args[0], out, op.builtinOptions)
        ),
        layer="avgpool",
        write=_write_pool,
    ),
    OpSpec(
        BUILTIN.PAD,
        version=2,
        inputs=(2, 2),
        options=schema.PadOptionsT,
        options_required=False,
        check=_check_pad,
        golden=_same_quant("PAD", _golden_pad),
    ),
    OpSpec(
        BUILTIN.RESHAPE,
        version=1,
        inputs=(2, 2),
        options=schema.ReshapeOptionsT,
        options_required=False,
        check=_check_reshape,
        golden=_golden_reshape,
        layer="reshape",
        write=_write_reshape,
        onnx=("Reshape", "Flatten"),
    ),
    OpSpec(
        BUILTIN.QUANTIZE,
        version=1,
        inputs=(1, 1),
        options=schema.QuantizeOptionsT,
        options_required=False,
        check=_check_conversion,
        golden=_golden_quantize,
        layer="requant",
        write=_write_requantize,
        onnx=("Quant",),
    ),
    OpSpec(
        BUILTIN.DEQUANTIZE,
        version=2,
        inputs=(1, 1),
        options=schema.DequantizeOptionsT,
        options_required=False,
        check=_check_conversion,
        golden=_golden_dequantize,
    ),
    OpSpec(
        BUILTIN.LOGISTIC,
        version=2,
        inputs=(1, 1),
        options=type(None),
        options_required=False,
        check=_check_activation,
        golden=lambda op, ins, args, out, rounding: kernels.logistic(args[0], ins[0], out, rounding),
        rounding={"litert": TABLE, "tflm": "double"},
        layer="logistic",
        write=_write_activation,
        onnx=("Sigmoid",),
        slope=0.25,
    ),
    OpSpec(
        BUILTIN.TANH,
        version=2,
        inputs=(1, 1),
        options=type(None),
        options_required=False,
        check=_check_activation,
        golden=lambda op, ins, args, out, rounding: kernels.tanh(args[0], ins[0], out, rounding),
        rounding={"litert": TABLE, "tflm": "double"},
        layer="tanh",
        write=_write_activation,
        onnx=("Tanh",),
        slope=1.0,
    ),
    OpSpec(
        BUILTIN.SOFTMAX,
        version=2,
        inputs=(1, 1),
        options=schema.SoftmaxOptionsT,
        options_required=True,
        check=_check_activation,
        golden=_golden_softmax,
        layer="softmax",
        write=_write_activation,
        onnx=("Softmax",),
        slope=0.5,
    ),
    OpSpec(
        BUILTIN.CONCATENATION,
        version=2,
        inputs=(2, 16),
        options=schema.ConcatenationOptionsT,
        options_required=True,
        check=_check_concatenation,
        golden=_golden_concatenation,
        layer="concat",
        write=_write_concatenation,
        onnx=("Concat",),
    ),
)
# The op that writes each lowered layer (Layer.op -> spec).
LAYER_SPECS: dict[str, OpSpec] = {spec.layer: spec for spec in OP_SPECS.values() if spec.layer}
