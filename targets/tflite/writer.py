"""Write an int8 .tflite file straight from a Brevitas QAT MLP, with no converter.

Converters re-calibrate; writing the flatbuffer with LiteRT's own object API
(`ai_edge_litert.schema_py_generated`) is how the QAT scales survive. Every
scale and zero point below comes from the Brevitas model:

  input    uint8 pixel p enters as int8 p - 128, scale 1/255, zero point -128
  fc{i}    FULLY_CONNECTED, int8 weights per output channel = Brevitas integer
           weights (times a power of two, see weight_gain()); the BatchNorm
           factor a_c = gamma_c / sqrt(var_c + eps) is folded into the weight
           scale (s_w[c] * |a_c|; a negative a_c negates the channel's integers),
           the BatchNorm shift b_c into the int32 bias at scale s_in * s_w'[c];
           the output is int8 at the scale of the following QuantReLU (uint a-bit,
           zero point 0 -> int8 zero point -128)
  act{i}   MINIMUM with the int8 constant -128 + 2^a - 1, only for a < 8.
           A fused RELU only clamps below (at the zero point), and TFLite has no
           fused clamp for an arbitrary a-bit top; an output scale cannot do it
           either because int8 always spans 256 levels. MINIMUM on int8 with
           identical quantization on all tensors compares raw integers (no
           rescaling), so it adds no rounding of its own.
  fc_out   FULLY_CONNECTED, per-tensor weights (as in Brevitas), no bias,
           int8 logits with zero point 0 at a scale that covers the worst case:
           inputs lie in [0, 2^a - 1], so |acc_c| <= (2^a - 1) * max(sum of the
           positive w_cj, sum of the negative |w_cj|) (data-free: no calibration,
           no saturation possible); a caller may pass a finer `logits_scale`.
  logits_float  DEQUANTIZE of the int8 logits (optional)

Input zero points need no bias correction: the TFLite kernel adds -zero_point
to every input itself (input_offset). Weights of 2..8 bits are stored as int8
(int4 packing is left out: TFLM rejects int4 FULLY_CONNECTED).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from sdk.data import INPUT_SCALE
from sdk.errors import SDKError

BUFFER_ALIGNMENT = 16
SIGNATURE_KEY = "serving_default"
METADATA_NAME = "sdk_info"
INPUT_NAME = "input"
LOGITS_NAME = "logits"
LOGITS_FLOAT_NAME = "logits_float"
INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
# Operator versions a converter writes for int8 kernels; resolvers accept any registered version.
OP_VERSIONS = {schema.BuiltinOperator.FULLY_CONNECTED: 4, schema.BuiltinOperator.MINIMUM: 2,
               schema.BuiltinOperator.DEQUANTIZE: 2, schema.BuiltinOperator.QUANTIZE: 2}


class TfliteConversionError(SDKError):
    """The model (or a layer of it) cannot be written as an int8 .tflite."""


@dataclass
class FoldedLayer:
    """One FULLY_CONNECTED in TFLite terms: every number exactly as stored in the file."""

    name: str
    weights: np.ndarray              # int8 (out, in)
    weight_scales: np.ndarray        # float32 (out,) per channel, or (1,) per tensor
    bias: np.ndarray | None          # int32 (out,) at scale input_scale * weight_scales
    input_scale: float               # float32 value
    input_zero_point: int
    output_scale: float              # float32 value
    output_zero_point: int
    clamp_max: int | None            # int8 top applied by MINIMUM (None: the full int8 range)
    weight_bits: int
    act_bits: int | None             # None for the classifier
    negated_channels: int = 0        # channels whose BatchNorm factor was negative
    weight_gain: int = 1             # stored weights = Brevitas integers * weight_gain (see weight_gain())

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.weights.shape), "weight_bits": self.weight_bits,
                "act_bits": self.act_bits, "input_scale": self.input_scale, "input_zero_point": self.input_zero_point,
                "output_scale": self.output_scale, "output_zero_point": self.output_zero_point,
                "clamp_max": self.clamp_max, "per_channel": len(self.weight_scales) > 1,
                "weight_scale_min": float(self.weight_scales.min()), "weight_scale_max": float(self.weight_scales.max()),
                "negated_channels": self.negated_channels, "weight_gain": self.weight_gain}


@dataclass
class TensorSummary:
    index: int
    name: str
    shape: list[int]
    dtype: str
    scales: int                      # how many scales (1: per tensor)
    zero_point: int | None
    constant: bool


@dataclass
class OpSummary:
    op: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class TfliteInfo:
    """What was written: the file, its tensors and ops, and the per-layer quantization."""

    path: Path
    size_bytes: int
    input_name: str
    input_scale: float
    input_zero_point: int
    logits_name: str                 # the int8 logits tensor
    output_name: str                 # the graph output (float logits if dequantized)
    tensors: list[TensorSummary]
    ops: list[OpSummary]
    layers: list[FoldedLayer]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes, "input": self.input_name,
                "input_scale": self.input_scale, "input_zero_point": self.input_zero_point,
                "logits": self.logits_name, "output": self.output_name,
                "tensors": [vars(t) for t in self.tensors], "ops": [vars(o) for o in self.ops],
                "layers": [layer.summary() for layer in self.layers], "metadata": self.metadata}


# ---------------------------------------------------------------- Brevitas -> folded integers

def _mlp_body(model: nn.Module) -> nn.Module:
    body = getattr(model, "body", None)
    if not getattr(model, "flat_input", False) or body is None or not hasattr(body, "fc_out"):
        raise TfliteConversionError(f"The TFLite writer handles the zoo MLPs (tfc, sfc, lfc) only; got {type(model).__name__}.",
                                    where="targets/tflite", fix="deploy an MLP, or use the FINN target for this model")
    return body


def _weight_ints(fc: nn.Module, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Brevitas integer weights (out, in), their float32 scales (out,) or (1,), and bit width."""
    qw = fc.quant_weight()
    bits = int(qw.bit_width)
    if bits < 2:
        raise TfliteConversionError(f"Layer {name} has {bits}-bit (binary) weights; int8 TFLite has no exact bipolar weights here.",
                                    where=f"layer {name}", fix="train with 2..8 weight bits (e.g. --bits w2a2), or deploy 1-bit models to FINN")
    if bits > 8:
        raise TfliteConversionError(f"Layer {name} has {bits}-bit weights; int8 TFLite holds at most 8.", where=f"layer {name}", fix="train with 2..8 weight bits")
    if float(qw.zero_point.abs().max()) != 0.0:
        raise TfliteConversionError(f"Layer {name} has asymmetric weights.", where=f"layer {name}", fix="use symmetric weight quantizers")
    ints = np.rint(qw.int().detach().cpu().numpy()).astype(np.int64)
    scales = qw.scale.detach().cpu().numpy().astype(np.float32).reshape(-1)
    return ints, scales, bits


def _act_quant(act: nn.Module, name: str) -> tuple[np.float32, int]:
    """Scale and bit width of an unsigned QuantReLU with zero point 0."""
    from brevitas.nn import QuantReLU

    quant = getattr(act, "act_quant", None)
    bits = int(quant.bit_width()) if quant is not None and hasattr(quant, "bit_width") else 1
    if not isinstance(act, QuantReLU) or bits < 2:
        raise TfliteConversionError(f"Activation {name} is a {bits}-bit {type(act).__name__}; the TFLite writer needs an unsigned QuantReLU of 2..8 bits.",
                                    where=f"layer {name}", fix="train with 2..8 activation bits (e.g. --bits w2a2); 1-bit (bipolar) models deploy to FINN")
    if bits > 8 or quant.is_signed or float(quant.zero_point()) != 0.0:
        raise TfliteConversionError(f"Activation {name} is not unsigned <= 8-bit with zero point 0.", where=f"layer {name}", fix="use the zoo's quant_act")
    return np.float32(float(quant.scale().detach())), bits


def _bias_ints(shift: np.ndarray, input_scale: np.float32, weight_scales: np.ndarray, name: str) -> np.ndarray:
    bias = np.rint(shift / (np.float64(input_scale) * weight_scales.astype(np.float64)))
    if bias.min() < INT32_MIN or bias.max() > INT32_MAX:
        raise TfliteConversionError(f"The folded BatchNorm shift of {name} overflows the int32 bias.", where=f"layer {name}",
                                    fix="the BatchNorm has an extreme shift or a near-zero scale; retrain with weight decay")
    return bias.astype(np.int32)


def weight_gain(ints: np.ndarray) -> int:
    """Largest power of two k with k * max|w| <= 127.

    TFLite puts the bias on the accumulator's scale s_in * s_w. With 2..4-bit
    weights after 2..4-bit activations one accumulator step is a large part of an
    output LSB (0.1..0.3), so the rounded BatchNorm shift alone would move outputs
    across rounding boundaries. Weights k * w at scale s_w / k are the same real
    numbers (k is a power of two: the scale division is exact in float32), and the
    bias gets k times finer.
    """
    top = max(int(np.abs(ints).max()), 1)
    return 2 ** int(math.floor(math.log2(INT8_MAX / top)))


def _fold_hidden(name: str, fc: nn.Module, bn: nn.BatchNorm1d, act: nn.Module, input_scale: np.float32, widen: bool = True) -> FoldedLayer:
    """y = QuantReLU(BN(W x)) as one int8 FULLY_CONNECTED (+ MINIMUM for a < 8)."""
    ints, w_scales, w_bits = _weight_ints(fc, name)
    out_scale, a_bits = _act_quant(act, name)
    var = bn.running_var.detach().double().numpy()
    factor = bn.weight.detach().double().numpy() / np.sqrt(var + bn.eps)
    shift = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * factor
    sign = np.where(factor < 0, -1, 1)
    dead = factor == 0  # the channel is the constant shift: zero weights keep the plain scale
    gain = weight_gain(ints) if widen else 1
    weights = np.where(dead[:, None], 0, ints * sign[:, None] * gain)
    scales = np.where(dead, w_scales.astype(np.float64), w_scales.astype(np.float64) * np.abs(factor)) / gain
    scales = scales.astype(np.float32)
    clamp_max = INT8_MIN + 2 ** a_bits - 1
    return FoldedLayer(name, weights.astype(np.int8), scales, _bias_ints(shift, input_scale, scales, name),
                       float(input_scale), INT8_MIN, float(out_scale), INT8_MIN,
                       clamp_max if clamp_max < INT8_MAX else None, w_bits, a_bits, int((factor < 0).sum()), gain)


def _fold_classifier(fc: nn.Module, input_scale: np.float32, input_max: int, logits_scale: float | None) -> FoldedLayer:
    """The last Linear: float logits = s_in * s_w * acc, written as int8 logits."""
    ints, w_scales, w_bits = _weight_ints(fc, "fc_out")
    if w_scales.size != 1:
        raise TfliteConversionError("The classifier fc_out has per-channel weight scales.", where="layer fc_out", fix="use per-tensor weights there (zoo default)")
    if logits_scale is None:
        positive, negative = np.clip(ints, 0, None).sum(axis=1), np.clip(-ints, 0, None).sum(axis=1)
        bound = max(int(np.maximum(positive, negative).max()) * input_max, 1)  # inputs lie in [0, input_max]
        logits_scale = float(np.float64(input_scale) * np.float64(w_scales[0]) * bound / INT8_MAX)
    return FoldedLayer("fc_out", ints.astype(np.int8), w_scales, None, float(input_scale), INT8_MIN,
                       float(np.float32(logits_scale)), 0, None, w_bits, None)


def fold_mlp(model: nn.Module, logits_scale: float | None = None, widen_weights: bool = True) -> list[FoldedLayer]:
    """Every FULLY_CONNECTED of the graph, with Brevitas's integers and folded scales."""
    body = _mlp_body(model)
    scale, in_max = np.float32(INPUT_SCALE), 255
    layers: list[FoldedLayer] = []
    i = 0
    while hasattr(body, f"fc{i}"):
        layer = _fold_hidden(f"fc{i}", getattr(body, f"fc{i}"), getattr(body, f"bn{i}"), getattr(body, f"act{i}"), scale, widen_weights)
        layers.append(layer)
        scale, in_max = np.float32(layer.output_scale), 2 ** layer.act_bits - 1
        i += 1
    layers.append(_fold_classifier(body.fc_out, scale, in_max, logits_scale))
    return layers


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


def _quant(scales: np.ndarray | list[float], zero_points: list[int] | np.ndarray, dim: int = 0) -> schema.QuantizationParametersT:
    q = schema.QuantizationParametersT()
    q.scale = [float(s) for s in np.asarray(scales, dtype=np.float32).reshape(-1)]
    q.zeroPoint = [int(z) for z in np.asarray(zero_points).reshape(-1)]
    q.quantizedDimension = dim
    return q


class _Graph:
    """Tensors, buffers and operators of one subgraph, in the order they are added."""

    def __init__(self) -> None:
        self.tensors: list[schema.TensorT] = []
        self.buffers: list[schema.BufferT] = [schema.BufferT()]  # buffer 0: empty, as TFLite requires
        self.operators: list[schema.OperatorT] = []
        self.opcodes: list[int] = []

    def tensor(self, name: str, shape: list[int], dtype: int, quant: schema.QuantizationParametersT | None,
               data: np.ndarray | None = None, batch_dim: bool = False) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.quantization = name, list(shape), dtype, quant
        if batch_dim:
            t.shapeSignature = [-1] + list(shape[1:])
        t.buffer = 0
        if data is not None:
            self.buffers.append(_AlignedBuffer())
            self.buffers[-1].data = np.ascontiguousarray(data).tobytes()
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, builtin: int, inputs: list[int], outputs: list[int], options_type: int = 0, options: Any = None) -> None:
        if builtin not in self.opcodes:
            self.opcodes.append(builtin)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcodes.index(builtin), inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.operators.append(op)

    def blob(self, payload: bytes) -> int:
        self.buffers.append(_AlignedBuffer())
        self.buffers[-1].data = payload
        return len(self.buffers) - 1


def _add_fully_connected(g: _Graph, layer: FoldedLayer, x: int, out_name: str) -> int:
    out_ch = layer.weights.shape[0]
    w = g.tensor(f"{layer.name}/weights", list(layer.weights.shape), schema.TensorType.INT8,
                 _quant(layer.weight_scales, [0] * len(layer.weight_scales)), layer.weights.astype(np.int8))
    b = -1
    if layer.bias is not None:
        bias_scales = (np.float64(np.float32(layer.input_scale)) * layer.weight_scales.astype(np.float64)).astype(np.float32)
        b = g.tensor(f"{layer.name}/bias", [out_ch], schema.TensorType.INT32,
                     _quant(bias_scales, [0] * len(bias_scales)), layer.bias.astype("<i4"))
    y = g.tensor(out_name, [1, out_ch], schema.TensorType.INT8, _quant([layer.output_scale], [layer.output_zero_point]), batch_dim=True)
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = schema.ActivationFunctionType.RELU if layer.act_bits else schema.ActivationFunctionType.NONE
    options.weightsFormat = schema.FullyConnectedOptionsWeightsFormat.DEFAULT
    g.op(schema.BuiltinOperator.FULLY_CONNECTED, [x, w, b], [y], schema.BuiltinOptions.FullyConnectedOptions, options)
    return y


def _add_clamp(g: _Graph, layer: FoldedLayer, x: int, act_name: str) -> int:
    """MINIMUM with the int8 top of the a-bit range: same quantization on all three tensors."""
    quant = lambda: _quant([layer.output_scale], [layer.output_zero_point])  # noqa: E731
    top = g.tensor(f"{act_name}/clamp_max", [1], schema.TensorType.INT8, quant(), np.array([layer.clamp_max], dtype=np.int8))
    y = g.tensor(act_name, [1, layer.weights.shape[0]], schema.TensorType.INT8, quant(), batch_dim=True)
    g.op(schema.BuiltinOperator.MINIMUM, [x, top], [y], schema.BuiltinOptions.MaximumMinimumOptions, schema.MaximumMinimumOptionsT())
    return y


def _build_graph(layers: list[FoldedLayer], in_features: int, float_input: bool, float_output: bool) -> tuple[_Graph, int, int, int]:
    """Returns the graph and the indices of its input, int8 logits and output tensors."""
    g = _Graph()
    in_quant = lambda: _quant([np.float32(INPUT_SCALE)], [INT8_MIN])  # noqa: E731
    if float_input:
        graph_in = g.tensor(INPUT_NAME, [1, in_features], schema.TensorType.FLOAT32, None, batch_dim=True)
        x = g.tensor(f"{INPUT_NAME}/int8", [1, in_features], schema.TensorType.INT8, in_quant(), batch_dim=True)
        g.op(schema.BuiltinOperator.QUANTIZE, [graph_in], [x], schema.BuiltinOptions.QuantizeOptions, schema.QuantizeOptionsT())
    else:
        graph_in = x = g.tensor(INPUT_NAME, [1, in_features], schema.TensorType.INT8, in_quant(), batch_dim=True)
    for layer in layers:
        if layer.act_bits is None:
            x = _add_fully_connected(g, layer, x, LOGITS_NAME)
            continue
        act_name = layer.name.replace("fc", "act")
        if layer.clamp_max is None:
            x = _add_fully_connected(g, layer, x, act_name)
        else:
            x = _add_clamp(g, layer, _add_fully_connected(g, layer, x, f"{layer.name}/out"), act_name)
    logits = x
    if float_output:
        x = g.tensor(LOGITS_FLOAT_NAME, [1, layers[-1].weights.shape[0]], schema.TensorType.FLOAT32, None, batch_dim=True)
        g.op(schema.BuiltinOperator.DEQUANTIZE, [logits], [x], schema.BuiltinOptions.DequantizeOptions, schema.DequantizeOptionsT())
    return g, graph_in, logits, x


def _opcode(builtin: int) -> schema.OperatorCodeT:
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = OP_VERSIONS.get(builtin, 1)
    return code


def _signature(graph_in: int, graph_out: int) -> schema.SignatureDefT:
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
    sig.inputs = [schema.TensorMapT()]
    sig.inputs[0].name, sig.inputs[0].tensorIndex = INPUT_NAME, graph_in
    sig.outputs = [schema.TensorMapT()]
    sig.outputs[0].name, sig.outputs[0].tensorIndex = LOGITS_NAME, graph_out
    return sig


def _model(g: _Graph, graph_in: int, graph_out: int, metadata: dict[str, Any]) -> schema.ModelT:
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = g.tensors, [graph_in], [graph_out], g.operators, "main"
    meta = schema.MetadataT()
    meta.name, meta.buffer = METADATA_NAME, g.blob(json.dumps(metadata, sort_keys=True).encode())
    model = schema.ModelT()
    model.version = 3
    model.description = "Edge QNN SDK: int8 from Brevitas QAT scales"
    model.operatorCodes = [_opcode(code) for code in g.opcodes]
    model.subgraphs, model.buffers, model.metadata = [sub], g.buffers, [meta]
    model.signatureDefs = [_signature(graph_in, graph_out)]
    return model


def serialize(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _summaries(g: _Graph) -> tuple[list[TensorSummary], list[OpSummary]]:
    tensors = [TensorSummary(i, t.name, list(t.shape), _TYPE_NAMES[t.type], len(t.quantization.scale) if t.quantization else 0,
                             int(t.quantization.zeroPoint[0]) if t.quantization else None, t.buffer != 0)
               for i, t in enumerate(g.tensors)]
    names = [t.name for t in g.tensors]
    ops = [OpSummary(_OP_NAMES[g.opcodes[op.opcodeIndex]], [names[i] if i >= 0 else "-" for i in op.inputs], [names[i] for i in op.outputs])
           for op in g.operators]
    return tensors, ops


def _metadata(card_like: dict[str, Any], layers: list[FoldedLayer]) -> dict[str, Any]:
    from sdk import __version__

    return {"sdk_version": __version__, "labels": list(card_like.get("labels", [])),
            "input_shape": list(card_like.get("input_shape", [])),
            "normalisation": {"input": "uint8 pixel p", "model_sees": "p / 255", "int8_input": "p - 128",
                              "scale": INPUT_SCALE, "zero_point": INT8_MIN},
            "logits_scale": layers[-1].output_scale, "layers": [layer.summary() for layer in layers]}


def write_tflite(model: nn.Module, card_like: dict[str, Any], path: Path | str, logits_scale: float | None = None,
                 float_input: bool = False, float_output: bool = True, widen_weights: bool = True) -> TfliteInfo:
    """Write `model` (a zoo MLP in eval mode) as an int8 .tflite at `path`, atomically.

    card_like needs `input_shape` (C, H, W) and `labels`. The input is int8 (p - 128)
    unless float_input, which adds a QUANTIZE of p / 255 in front.
    """
    path = Path(path)
    model.eval()
    layers = fold_mlp(model, logits_scale, widen_weights)
    in_features = int(np.prod(card_like.get("input_shape") or [layers[0].weights.shape[1]]))
    if in_features != layers[0].weights.shape[1]:
        raise TfliteConversionError(f"Input shape {card_like.get('input_shape')} has {in_features} values; fc0 takes {layers[0].weights.shape[1]}.",
                                    where="model card input_shape", fix="pass the card of the run the model was trained in")
    g, graph_in, logits, graph_out = _build_graph(layers, in_features, float_input, float_output)
    metadata = _metadata(card_like, layers)
    payload = serialize(_model(g, graph_in, graph_out, metadata))
    _write_atomic(path, payload)
    tensors, ops = _summaries(g)
    return TfliteInfo(path, len(payload), g.tensors[graph_in].name, float(np.float32(INPUT_SCALE)), INT8_MIN,
                      g.tensors[logits].name, g.tensors[graph_out].name, tensors, ops, layers, metadata)
