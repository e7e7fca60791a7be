"""Write an int8 .tflite file from a QONNX graph (or a Brevitas module exported to one), with no converter.

Converters re-calibrate; writing the flatbuffer with LiteRT's own object API
(`ai_edge_litert.schema_py_generated`) is how the QAT scales survive.
lowering.py turns the graph into integer layers (what each number is, and
why); this module lays them out as TFLite tensors and operators, each layer by the `write` of
its op spec (ops.py: one record per TFLite op, with its version, checks and golden arithmetic):

  fc        FULLY_CONNECTED (per-channel weights, int32 bias), fused RELU
  conv/dw   CONV_2D / DEPTHWISE_CONV_2D with strides and dilation, SAME or VALID
            padding where it equals the graph's zero padding, else an explicit PAD
            (int8 pads with the zero point, i.e. real 0) and VALID
  clamps    MINIMUM / MAXIMUM with the int8 ends of an a-bit range after the op:
            TFLite has no fused clamp for an arbitrary range, and MINIMUM / MAXIMUM
            on tensors of identical quantization compare raw integers
  maxpool   MAX_POOL_2D;  avgpool  AVERAGE_POOL_2D (hand-made graphs only);
            reshape  RESHAPE;  add  ADD;  concat  CONCATENATION;  requant  QUANTIZE
            int8 -> int8;  logistic / tanh / softmax  LOGISTIC / TANH / SOFTMAX
  I/O       int8 input (p - 128) or, with float_input, a QUANTIZE of the scaled
            pixels in front; int8 output, plus a DEQUANTIZE to float with float_output

Weights of 2..8 bits are stored as int8, or with int4_weights (at most 4 bits)
packed two per byte as INT4 in FULLY_CONNECTED and CONV_2D (LiteRT runs them;
its reference resolver has no int4 DEPTHWISE_CONV_2D, so those stay int8;
TFLite Micro has no int4 FULLY_CONNECTED, so its targets refuse the option).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sdk.atomic_write import write_bytes_atomic
from sdk.scratch import scratch_dir
from targets.tflite.kernels import FIXED_OUTPUT_QUANT
from targets.tflite.lowering import INPUT_NAME, INT8_MIN, Layer, LoweredModel, TfliteConversionError, lower
from targets.tflite.ops import LAYER_SPECS, OP_SPECS
from targets.tflite.schema import FILE_IDENTIFIER, OP_NAMES, TYPE_NAMES

BUFFER_ALIGNMENT = 16
SIGNATURE_KEY = "serving_default"
METADATA_NAME = "sdk_info"
LOGITS_FLOAT_NAME = "logits_float"
OPS = schema.BuiltinOperator

__all__ = [
    "TfliteConversionError",
    "TfliteInfo",
    "write_tflite",
    "write_lowered",
    "expose_all_tensors",
    "tflite_input",
    "pack_int4",
    "dequantized_logits",
    "BUFFER_ALIGNMENT",
    "SIGNATURE_KEY",
    "METADATA_NAME",
    "OP_NAMES",
]


@dataclass
class TensorSummary:
    index: int
    name: str
    shape: list[int]
    dtype: str
    scales: int  # how many scales (1: per tensor)
    zero_point: int | None
    constant: bool


@dataclass
class OpSummary:
    op: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class TfliteInfo:
    """What was written: the file, its tensors and ops, and the integer layers."""

    path: Path
    size_bytes: int
    input_name: str
    input_shape: list[int]  # without the batch: (H, W, C) or (features,)
    input_scale: float
    input_zero_point: int
    logits_name: str  # the int8 logits tensor
    output_name: str  # the graph output (float logits if dequantized)
    tensors: list[TensorSummary]
    ops: list[OpSummary]
    layers: list[Layer]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "input": self.input_name,
            "input_shape": self.input_shape,
            "input_scale": self.input_scale,
            "input_zero_point": self.input_zero_point,
            "logits": self.logits_name,
            "output": self.output_name,
            "tensors": [vars(t) for t in self.tensors],
            "ops": [vars(o) for o in self.ops],
            "layers": [layer.summary() for layer in self.layers],
            "metadata": self.metadata,
        }


# ---------------------------------------------------------------- flatbuffer building


class _AlignedBuffer(schema.BufferT):
    """A BufferT whose bytes start on a BUFFER_ALIGNMENT boundary of the file."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        data = None
        if self.data is not None:
            payload = np.frombuffer(bytes(self.data), dtype=np.uint8)
            builder.Prep(BUFFER_ALIGNMENT, payload.size)  # pads so the vector body ends up aligned
            data = builder.CreateNumpyVector(payload)
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def _quant(
    scales: np.ndarray | list[float], zero_points: list[int] | np.ndarray, dim: int = 0
) -> schema.QuantizationParametersT:
    q = schema.QuantizationParametersT()
    q.scale = [float(s) for s in np.asarray(scales, dtype=np.float32).reshape(-1)]
    q.zeroPoint = [int(z) for z in np.asarray(zero_points).reshape(-1)]
    q.quantizedDimension = dim
    return q


class _Graph:
    """Tensors, buffers and operators of one subgraph, in the order they are added."""

    def __init__(self) -> None:
        self.tensors: list[schema.TensorT] = []
        self.index: dict[str, int] = {}
        self.buffers: list[schema.BufferT] = [schema.BufferT()]  # buffer 0: empty, as TFLite requires
        self.operators: list[schema.OperatorT] = []
        self.opcodes: list[tuple[int, int]] = []  # (builtin, version)

    def tensor(
        self,
        name: str,
        shape: list[int],
        dtype: int,
        quant: schema.QuantizationParametersT | None,
        data: np.ndarray | None = None,
        batch_dim: bool = False,
    ) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.quantization = name, list(shape), dtype, quant
        if batch_dim:
            t.shapeSignature = [-1] + list(shape[1:])
        t.buffer = 0
        if data is not None:
            t.buffer = self.blob(np.ascontiguousarray(data).tobytes())
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def activation(self, name: str, shape: list[int], scale: float, zero_point: int) -> int:
        """An int8 activation tensor with a batch dimension."""
        return self.tensor(
            name, [1] + list(shape), schema.TensorType.INT8, _quant([scale], [zero_point]), batch_dim=True
        )

    def op(self, builtin: int, inputs: list[int], outputs: list[int], options: Any = None, version: int | None = None):
        """One operator; its options default to the empty ones of its spec (none for an op without options), its
        version to the spec's."""
        spec = OP_SPECS[builtin]
        code = (builtin, version or spec.version)
        if code not in self.opcodes:
            self.opcodes.append(code)
        if options is None and spec.options is not type(None):
            options = spec.options()
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcodes.index(code), inputs, outputs
        op.builtinOptions = options
        op.builtinOptionsType = 0 if options is None else getattr(schema.BuiltinOptions, spec.options.__name__[:-1])
        self.operators.append(op)

    def weights_and_bias(self, layer: Layer, quantized_dim: int, with_bias: bool) -> tuple[int, int]:
        """The layer's weights and int32 bias tensors (a bias of zeros where with_bias and it has none; -1: none)."""
        scales = layer.weight_scales
        int4 = layer.weight_type == "int4"
        w = self.tensor(
            f"{layer.name}/weights",
            list(layer.weights.shape),
            schema.TensorType.INT4 if int4 else schema.TensorType.INT8,
            _quant(scales, [0] * len(scales), quantized_dim),
            pack_int4(layer.weights) if int4 else layer.weights.astype(np.int8),
        )
        if layer.bias is None and not with_bias:
            return w, -1
        channels = layer.weights.shape[quantized_dim]
        bias = layer.bias if layer.bias is not None else np.zeros(channels, np.int32)
        bias_scales = (
            np.float64(np.float32(layer.input_scale)) * np.broadcast_to(scales, (channels,)).astype(np.float64)
        ).astype(np.float32)
        b = self.tensor(
            f"{layer.name}/bias",
            [channels],
            schema.TensorType.INT32,
            _quant(bias_scales, [0] * channels),
            bias.astype("<i4"),
        )
        return w, b

    def padding(self, layer: Layer, x: int) -> tuple[int, int]:
        """The TFLite padding mode equal to the graph's zero padding, with an explicit PAD where none is.

        A max pool's SAME padding ignores the positions outside the map; its explicit PAD uses the zero point,
        which the lowering allows only where that is int8's lowest value."""
        kernel = layer.weights.shape[1:3] if layer.weights is not None else layer.kernel
        span = [(k - 1) * d + 1 for k, d in zip(kernel, layer.dilation)]
        in_h, in_w = self.tensors[x].shape[1:3]
        top, bottom, left, right = layer.pads
        if not any(layer.pads):
            return x, schema.Padding.VALID
        same_h = _same_padding(in_h, span[0], layer.strides[0])
        same_w = _same_padding(in_w, span[1], layer.strides[1])
        if same_h == (layer.shape[0], top, bottom) and same_w == (layer.shape[1], left, right):
            return x, schema.Padding.SAME
        source = self.tensors[x]
        pads = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype="<i4")
        paddings = self.tensor(f"{layer.name}/paddings", [4, 2], schema.TensorType.INT32, None, pads)
        padded = self.activation(
            f"{layer.name}/padded",
            [in_h + top + bottom, in_w + left + right, source.shape[3]],
            source.quantization.scale[0],
            source.quantization.zeroPoint[0],
        )
        self.op(OPS.PAD, [x, paddings], [padded])
        return padded, schema.Padding.VALID

    def blob(self, payload: bytes) -> int:
        self.buffers.append(_AlignedBuffer())
        self.buffers[-1].data = payload
        return len(self.buffers) - 1


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Two's-complement nibbles, two per byte, the first value in the low nibble (TFLite's INT4 layout)."""
    nibbles = (values.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TFLite SAME: output size, pad before, pad after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _emit(g: _Graph, layer: Layer, x: int, y: int) -> None:
    """The TFLite operator(s) computing `layer` from tensor x into tensor y: its op spec's write."""
    spec = LAYER_SPECS.get(layer.op)
    if spec is None:
        raise TfliteConversionError(
            f"Layer {layer.name}: op {layer.op} has no TFLite emitter.",
            where=f"layer {layer.name}",
            fix="this is a bug in the SDK; please report it",
        )
    if layer.op in FIXED_OUTPUT_QUANT:
        _check_fixed_output(layer)
    spec.write(g, layer, x, y)


def _check_fixed_output(layer: Layer) -> None:
    """LOGISTIC, TANH and SOFTMAX: their int8 kernels take one output quantization."""
    scale, zero_point = FIXED_OUTPUT_QUANT[layer.op]
    if np.float32(layer.scale) != np.float32(scale) or layer.zero_point != zero_point or layer.relu:
        raise TfliteConversionError(
            f"Layer {layer.name}: {layer.op} output at scale {layer.scale!r}, zero point {layer.zero_point}"
            f"{' with a fused RELU' if layer.relu else ''}; TFLite's int8 kernel writes scale {scale!r}, "
            f"zero point {zero_point}.",
            where=f"layer {layer.name}",
            fix="lower the layer with targets.tflite.golden.FIXED_OUTPUT_QUANT as its output quantization",
        )


def _add_clamp(g: _Graph, layer: Layer, x: int, code: int, bound: int, y: int) -> None:
    """MINIMUM / MAXIMUM with an int8 end of the a-bit range: same quantization on all three tensors."""
    which = "clamp_max" if code == OPS.MINIMUM else "clamp_min"
    limit = g.tensor(
        f"{layer.name}/{which}",
        [1],
        schema.TensorType.INT8,
        _quant([layer.scale], [layer.zero_point]),
        np.array([bound], dtype=np.int8),
    )
    g.op(code, [x, limit], [y])


def _build_graph(lowered: LoweredModel, float_input: bool, float_output: bool) -> tuple[_Graph, int, int, int]:
    """Returns the graph and the indices of its input, int8 logits and output tensors."""
    g = _Graph()
    scale = float(np.float32(lowered.input_scale))
    if float_input:
        graph_in = g.tensor(INPUT_NAME, [1] + lowered.input_shape, schema.TensorType.FLOAT32, None, batch_dim=True)
        x = g.activation(f"{INPUT_NAME}/int8", lowered.input_shape, scale, lowered.input_zero_point)
        g.op(OPS.QUANTIZE, [graph_in], [x])
        g.index[INPUT_NAME] = x  # layers read the int8 tensor
    else:
        graph_in = g.activation(INPUT_NAME, lowered.input_shape, scale, lowered.input_zero_point)
    for layer in lowered.layers:
        x = g.index[layer.inputs[0]]
        clamps = [(code, bound) for code, bound in ((OPS.MAXIMUM, layer.clamp_min), (OPS.MINIMUM, layer.clamp_max))]
        clamps = [(code, bound) for code, bound in clamps if bound is not None]
        if not clamps:
            _emit(g, layer, x, g.activation(layer.name, layer.shape, layer.scale, layer.zero_point))
            continue
        pre = g.activation(f"{layer.name}/pre_clamp", layer.shape, layer.scale, layer.zero_point)
        _emit(g, layer, x, pre)
        for i, (code, bound) in enumerate(clamps):
            last = i == len(clamps) - 1
            name = layer.name if last else f"{layer.name}/clamped_low"
            y = g.activation(name, layer.shape, layer.scale, layer.zero_point)
            _add_clamp(g, layer, pre, code, bound, y)
            pre = y
    logits = output = g.index[lowered.logits.name]
    if float_output:
        output = g.tensor(
            LOGITS_FLOAT_NAME, [1] + lowered.logits.shape, schema.TensorType.FLOAT32, None, batch_dim=True
        )
        g.op(OPS.DEQUANTIZE, [logits], [output])
    return g, graph_in, logits, output


def _opcode(builtin: int, version: int) -> schema.OperatorCodeT:
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, OPS.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    return code


def _signature(graph_in: int, graph_out: int) -> schema.SignatureDefT:
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
    sig.inputs = [schema.TensorMapT()]
    sig.inputs[0].name, sig.inputs[0].tensorIndex = INPUT_NAME, graph_in
    sig.outputs = [schema.TensorMapT()]
    sig.outputs[0].name, sig.outputs[0].tensorIndex = "logits", graph_out
    return sig


def _model(g: _Graph, graph_in: int, graph_out: int, metadata: dict[str, Any]) -> schema.ModelT:
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = (
        g.tensors,
        [graph_in],
        [graph_out],
        g.operators,
        "main",
    )
    meta = schema.MetadataT()
    meta.name, meta.buffer = METADATA_NAME, g.blob(json.dumps(metadata, sort_keys=True).encode())
    model = schema.ModelT()
    model.version = 3
    model.description = "Edge QNN SDK: int8 from Brevitas QAT scales"
    model.operatorCodes = [_opcode(builtin, version) for builtin, version in g.opcodes]
    model.subgraphs, model.buffers, model.metadata = [sub], g.buffers, [meta]
    model.signatureDefs = [_signature(graph_in, graph_out)]
    return model


def serialize(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, payload)


def _summaries(g: _Graph) -> tuple[list[TensorSummary], list[OpSummary]]:
    tensors = [
        TensorSummary(
            i,
            t.name,
            list(t.shape),
            TYPE_NAMES[t.type],
            len(t.quantization.scale) if t.quantization else 0,
            int(t.quantization.zeroPoint[0]) if t.quantization else None,
            t.buffer != 0,
        )
        for i, t in enumerate(g.tensors)
    ]
    names = [t.name for t in g.tensors]
    ops = [
        OpSummary(
            OP_NAMES[g.opcodes[op.opcodeIndex][0]],
            [names[i] if i >= 0 else "-" for i in op.inputs],
            [names[i] for i in op.outputs],
        )
        for op in g.operators
    ]
    return tensors, ops


def _metadata(card_like: dict[str, Any], lowered: LoweredModel) -> dict[str, Any]:
    from sdk import __version__

    layout = "flat (C*H*W)" if len(lowered.input_shape) == 1 else "NHWC"
    return {
        "sdk_version": __version__,
        "labels": list(card_like.get("labels", [])),
        "input_shape": list(card_like.get("input_shape", [])),
        "input_layout": layout,
        "normalisation": {
            "input": f"device code q in {lowered.input_codes[0]}..{lowered.input_codes[1]}",
            "model_sees": f"q * {lowered.input_scale:.9g}",
            "int8_input": "q - 128" if lowered.input_zero_point == INT8_MIN else "q",
            "scale": lowered.input_scale,
            "zero_point": lowered.input_zero_point,
        },
        "logits_scale": lowered.logits.scale,
        "layers": [layer.summary() for layer in lowered.layers],
    }


def load_graph(model: Any, card_like: dict[str, Any], workdir: Path) -> Any:
    """The cleaned-up QONNX graph to lower: a QONNX file as it is, or a Brevitas module exported first (its
    input shaped as card_like says: `input_shape` (C, H, W), `flatten` for an MLP)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sdk.onnx_guard import load_onnx_safely

    if not isinstance(model, (str, Path)):
        from sdk.export import export_module

        shape = card_like.get("input_shape")
        if not shape or len(shape) != 3:
            raise TfliteConversionError(
                f"The model card's input_shape is {shape!r}; the writer needs (C, H, W).",
                where="model card input_shape",
                fix="pass the card of the run the model was trained in",
            )
        flat = card_like.get("flatten", getattr(model, "flat_input", False))  # the zoo's MLPs say so themselves
        example = (1, int(np.prod(shape))) if flat else (1, *shape)
        model = export_module(model, example, workdir / "model.onnx").onnx_path
    return ModelWrapper(load_onnx_safely(model, str(model)))


def write_tflite(
    model: Any,
    card_like: dict[str, Any],
    path: Path | str,
    float_input: bool = False,
    float_output: bool = True,
    widen_weights: bool = True,
    int4_weights: bool = False,
) -> TfliteInfo:
    """Write `model` (a QONNX file whose input is uint8 pixels, as the SDK deploys it, or a Brevitas module in
    eval mode) as an int8 .tflite at `path`, atomically.

    card_like gives the `labels` (and, for a module, `input_shape` and `flatten`). The input is int8 (p - 128),
    flat for an MLP and NHWC for a conv net, unless float_input, which adds a QUANTIZE of the scaled pixels in
    front.
    """
    path = Path(path)
    with scratch_dir("tflite") as tmp:
        graph = load_graph(model, card_like, Path(tmp))
        lowered = lower(graph, widen_weights, int4_weights)
    return write_lowered(lowered, path, _metadata(card_like, lowered), float_input, float_output)


def write_lowered(
    lowered: LoweredModel,
    path: Path | str,
    metadata: dict[str, Any],
    float_input: bool = False,
    float_output: bool = True,
) -> TfliteInfo:
    """Lay out an integer graph as a .tflite at `path`, atomically."""
    path = Path(path)
    g, graph_in, logits, graph_out = _build_graph(lowered, float_input, float_output)
    payload = serialize(_model(g, graph_in, graph_out, metadata))
    _write_atomic(path, payload)
    tensors, ops = _summaries(g)
    return TfliteInfo(
        path,
        len(payload),
        g.tensors[graph_in].name,
        lowered.input_shape,
        float(np.float32(lowered.input_scale)),
        lowered.input_zero_point,
        g.tensors[logits].name,
        g.tensors[graph_out].name,
        tensors,
        ops,
        lowered.layers,
        metadata,
    )


def expose_all_tensors(source: Path | str, target: Path | str) -> list[str]:
    """A copy of a .tflite whose graph outputs are every tensor an op computes.

    TFLM only hands out graph outputs (and cannot record its arena while
    preserving all tensors), so this copy is how its every tensor is compared.
    Returns the output names in order.
    """
    model = schema.ModelT.InitFromPackedBuf(Path(source).read_bytes(), 0)
    graph = model.subgraphs[0]
    graph.outputs = [op.outputs[0] for op in graph.operators]
    for buffer in model.buffers:  # keep the data 16-byte aligned in the copy too
        buffer.__class__ = _AlignedBuffer
    _write_atomic(Path(target), serialize(model))
    return [graph.tensors[i].name.decode("utf-8", "replace") for i in graph.outputs]


def dequantized_logits(output: np.ndarray, scale: float, zero_point: int = 0) -> np.ndarray:
    """The graph output as floats: float already (DEQUANTIZE in the graph), or int8 codes at (scale, zero_point)."""
    if output.dtype == np.float32:
        return output
    return ((output.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)).astype(np.float32)


def tflite_input(codes: np.ndarray, input_shape: list[int], zero_point: int = INT8_MIN) -> np.ndarray:
    """Device codes in the model card's layout (N, C, H, W) as the int8 input tensor (code + zero point: uint8
    pixels p as p - 128, codes that fit int8 as they are), flat or NHWC."""
    x = np.asarray(codes)
    x = x.reshape(len(x), -1) if len(input_shape) == 1 else x.transpose(0, 2, 3, 1)
    return (x.astype(np.int16) + zero_point).astype(np.int8)
