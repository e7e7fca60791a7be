"""Structural check of a .tflite file before any runtime reads it: LiteRT, TFLite Micro and Vela are native code,
and flatbuffers reads offsets without bounds checks, so a damaged or hostile file must be refused here.

`parse_tflite` returns LiteRT's object model of a file whose indices, buffer sizes, names and ops are those the
SDK's writer produces, or raises the caller's SDK error saying what is wrong.
"""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sdk.errors import SDKError
from targets.tflite.schema import OP_NAMES, TYPE_NAMES, builtin_code, is_tflite

MAX_TFLITE_BYTES = 2**31 - 1  # a flatbuffer's offsets are 32-bit
# Bits per element of the types whose constant data can be checked against the shape (sub-byte types: packed).
_ELEMENT_BITS = {
    schema.TensorType.FLOAT32: 32,
    schema.TensorType.FLOAT16: 16,
    schema.TensorType.BFLOAT16: 16,
    schema.TensorType.FLOAT64: 64,
    schema.TensorType.INT64: 64,
    schema.TensorType.UINT64: 64,
    schema.TensorType.INT32: 32,
    schema.TensorType.UINT32: 32,
    schema.TensorType.INT16: 16,
    schema.TensorType.UINT16: 16,
    schema.TensorType.INT8: 8,
    schema.TensorType.UINT8: 8,
    schema.TensorType.BOOL: 8,
    schema.TensorType.INT4: 4,
    schema.TensorType.UINT4: 4,
    schema.TensorType.INT2: 2,
    schema.TensorType.COMPLEX64: 64,
    schema.TensorType.COMPLEX128: 128,
    schema.TensorType.FLOAT8_E4M3FN: 8,
    schema.TensorType.FLOAT8_E5M2: 8,
}
_MAX_DIM = 2**31 - 1


class _Malformed(Exception):
    """A structural fault of the file, turned into the caller's SDKError with the file named."""


def _indices(values, limit: int, what: str, optional: bool = False) -> None:
    for i in values if values is not None else []:
        if not (isinstance(i, int | np.integer) and (0 <= i < limit or (optional and i == -1))):
            raise _Malformed(f"{what} names tensor/index {i}, outside 0..{limit - 1}")


def _count(values) -> int:
    return 0 if values is None else len(values)


def tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _check_tensor(t, k: int, buffers: list, size: int) -> None:
    """Shape, buffer index, the constant data's length against the shape, and the quantization's sizes."""
    label = f"tensor {k} ({tensor_name(t)[:60]!r})"
    shape = [] if t.shape is None else [int(d) for d in t.shape]  # Python ints: numpy's int32 products wrap
    if not all(0 <= d <= _MAX_DIM for d in shape):
        raise _Malformed(f"{label} has shape {shape[:8]}, not sizes >= 0")
    if t.shapeSignature is not None and not all(-1 <= d <= _MAX_DIM for d in t.shapeSignature):
        raise _Malformed(f"{label} has shape signature {list(t.shapeSignature)[:8]}")
    if t.sparsity is not None or t.variantTensors or t.externalBuffer:
        raise _Malformed(f"{label} is sparse, a variant or external; files of the SDK hold none")
    if not 0 <= t.buffer < max(len(buffers), 1):
        raise _Malformed(f"{label} names buffer {t.buffer}, of {len(buffers)}")
    buffer = buffers[t.buffer] if buffers else None
    stored = None
    if buffer is not None and buffer.data is not None and len(buffer.data):
        stored = len(buffer.data)
    elif buffer is not None and (buffer.offset or buffer.size):
        if buffer.offset < 0 or buffer.size < 0 or buffer.offset + buffer.size > size:
            raise _Malformed(f"{label}: its buffer lies outside the file")
        stored = buffer.size
    bits = _ELEMENT_BITS.get(t.type)
    if stored is not None and bits is not None:
        expected = (math.prod(shape) * bits + 7) // 8
        if stored != expected:
            raise _Malformed(
                f"{label} of shape {shape} ({TYPE_NAMES.get(t.type, t.type)}) needs {expected} bytes of data, "
                f"its buffer holds {stored}"
            )
    q = t.quantization
    if q is not None:
        scales = [] if q.scale is None else list(q.scale)
        zeros = [] if q.zeroPoint is None else list(q.zeroPoint)
        if not all(math.isfinite(v) for v in scales):
            raise _Malformed(f"{label} has a scale that is not finite")
        if scales and zeros and len(scales) != len(zeros):
            raise _Malformed(f"{label} has {len(scales)} scales and {len(zeros)} zero points")
        if len(scales) > 1 and not (
            0 <= q.quantizedDimension < len(shape) and shape[q.quantizedDimension] == len(scales)
        ):
            raise _Malformed(f"{label} has {len(scales)} scales along axis {q.quantizedDimension} of shape {shape}")


def _text(value, what: str) -> None:
    """Names LiteRT hands to Python as str: they must be UTF-8."""
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} is not UTF-8 text") from None


def _check_structure(model: schema.ModelT, size: int) -> None:
    """What every reader of the file relies on: indices in range, constant data the size of its shape, names."""
    if not model.subgraphs:
        raise _Malformed("the model has no subgraph")
    for n, signature in enumerate(model.signatureDefs or []):
        _text(signature.signatureKey, f"signature {n}'s key")
        if not 0 <= signature.subgraphIndex < len(model.subgraphs):
            raise _Malformed(f"signature {n} names subgraph {signature.subgraphIndex}")
        count = len(model.subgraphs[signature.subgraphIndex].tensors or [])
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            _text(entry.name, f"signature {n}'s tensor name")
            _indices([entry.tensorIndex], count, f"signature {n}")
    for n, entry in enumerate(model.metadata or []):
        _text(entry.name, f"metadata {n}'s name")
        if not 0 <= entry.buffer < len(model.buffers or []):
            raise _Malformed(f"metadata {n} names buffer {entry.buffer}")
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    for n, graph in enumerate(model.subgraphs):
        tensors = graph.tensors or []
        where = f"subgraph {n}"
        if not tensors or _count(graph.inputs) == 0 or _count(graph.outputs) == 0:  # index vectors are numpy arrays
            raise _Malformed(f"{where} has no tensors, inputs or outputs")
        _indices(graph.inputs, len(tensors), f"{where}'s inputs")
        _indices(graph.outputs, len(tensors), f"{where}'s outputs")
        constant = set()
        for k, t in enumerate(tensors):
            _text(t.name, f"{where}, tensor {k}'s name")
            _check_tensor(t, k, buffers, size)
            if t.buffer and (
                buffers[t.buffer].data is not None and len(buffers[t.buffer].data) or buffers[t.buffer].size
            ):
                constant.add(k)
        written = [int(i) for i in graph.inputs]
        for k, op in enumerate(graph.operators or []):
            label = f"{where}, operator {k}"
            if not 0 <= op.opcodeIndex < len(codes):
                raise _Malformed(f"{label} names op code {op.opcodeIndex}, of {len(codes)}")
            if _count(op.outputs) == 0:
                raise _Malformed(f"{label} has no output")
            _indices(op.inputs, len(tensors), f"{label}'s inputs", optional=True)
            _indices(op.outputs, len(tensors), f"{label}'s outputs")
            _indices(op.intermediates, len(tensors), f"{label}'s intermediates")
            written += [int(i) for i in op.outputs]
        # LiteRT maps constant data read-only: a graph input or an operator output with data would be written there.
        for k in sorted(constant.intersection(written))[:1]:
            raise _Malformed(
                f"{where}: tensor {k} ({tensor_name(tensors[k])[:60]!r}) holds constant data but is written"
            )


def parse_tflite(
    buf: bytes, error: type[SDKError], where: str, fix: str, lead: str = "Malformed TFLite file"
) -> schema.ModelT:
    """The flatbuffer as LiteRT's object model, checked structurally, or `error` saying what is wrong.

    flatbuffers reads offsets without bounds checks: a damaged file raises struct.error, IndexError, TypeError ...
    from inside the generated code, so any exception of the parse is the file's fault."""
    if not is_tflite(buf):
        found = f"{len(buf)} bytes in all" if len(buf) < 8 else f"identifier {bytes(buf[4:8])!r}"
        raise error(
            f"Not a TFLite flatbuffer (expected identifier b'TFL3' at bytes 4..8, found {found}).", where=where, fix=fix
        )
    if len(buf) > MAX_TFLITE_BYTES:
        raise error(f"The file is larger than a flatbuffer can be ({len(buf):,} bytes).", where=where, fix=fix)
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
        _check_structure(model, len(buf))
        _check_ops(model)
    except _Malformed as exc:
        raise error(f"{lead}: {exc}.", where=where, fix=fix) from None
    except Exception as exc:  # the generated reader's errors on a damaged buffer, whatever their type
        raise error(
            f"{lead}: the flatbuffer cannot be read ({type(exc).__name__}: {str(exc)[:200]}).",
            where=where,
            fix=fix,
        ) from None
    return model


# ---------------------------------------------------------------------------------------------------------------------
# The operators the SDK's writer emits, checked the way their kernels read them: LiteRT's C++ kernels trust a file's
# shapes and types (a mismatch there is a crash, not an error), and so do the golden model's numpy kernels.

_OPS = schema.BuiltinOperator
_T = schema.TensorType
# op -> (fewest inputs, most inputs, its options class, whether the options are required)
OP_SIGNATURES: dict[int, tuple[int, int, type, bool]] = {
    _OPS.FULLY_CONNECTED: (2, 3, schema.FullyConnectedOptionsT, False),
    _OPS.CONV_2D: (3, 3, schema.Conv2DOptionsT, True),
    _OPS.DEPTHWISE_CONV_2D: (3, 3, schema.DepthwiseConv2DOptionsT, True),
    _OPS.ADD: (2, 2, schema.AddOptionsT, False),
    _OPS.MINIMUM: (2, 2, schema.MaximumMinimumOptionsT, False),
    _OPS.MAXIMUM: (2, 2, schema.MaximumMinimumOptionsT, False),
    _OPS.MAX_POOL_2D: (1, 1, schema.Pool2DOptionsT, True),
    _OPS.AVERAGE_POOL_2D: (1, 1, schema.Pool2DOptionsT, True),
    _OPS.PAD: (2, 2, schema.PadOptionsT, False),
    _OPS.RESHAPE: (2, 2, schema.ReshapeOptionsT, False),
    _OPS.QUANTIZE: (1, 1, schema.QuantizeOptionsT, False),
    _OPS.DEQUANTIZE: (1, 1, schema.DequantizeOptionsT, False),
    _OPS.LOGISTIC: (1, 1, type(None), False),  # LOGISTIC and TANH have no options
    _OPS.TANH: (1, 1, type(None), False),
    _OPS.SOFTMAX: (1, 1, schema.SoftmaxOptionsT, True),
    _OPS.CONCATENATION: (2, 16, schema.ConcatenationOptionsT, True),
}
_MAX_WINDOW = 4096  # strides, dilations, pooling windows, paddings
_MAX_TENSOR_ELEMENTS = 1 << 26  # one activation (batch 1); the SDK's largest are ~10^5
_MAX_ACTIVATION_ELEMENTS = 1 << 28  # all of them: what LiteRT's arena would have to hold


class _Op:
    """One operator with its tensors resolved, and the checks its kernel relies on."""

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

    def fail(self, what: str) -> _Malformed:
        return _Malformed(f"{self.label}: {what}")

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


def _shape(tensor) -> list[int]:
    return [] if tensor.shape is None else [int(d) for d in tensor.shape]


def _check_op(o: _Op) -> None:
    """One branch per op, each checking the tensors the way its kernel reads them."""
    low, high, options_class, required = OP_SIGNATURES[o.code]
    if not low <= len(o.inputs) <= high or any(i < 0 for i in o.inputs[:low]) or len(o.op.outputs) != 1:
        count = f"{low}" if low == high else f"{low} to {high}"
        raise o.fail(f"{len(o.inputs)} input(s) and {len(o.op.outputs)} output(s); it takes {count} and 1")
    options = o.op.builtinOptions
    if (required or options is not None) and not isinstance(options, options_class):
        raise o.fail(f"its options are {type(options).__name__}, not {options_class.__name__.removesuffix('T')}")
    x, out = o.t(0), o.out
    xs, ys = _shape(x), _shape(out)
    codes = _OPS
    if o.code == codes.FULLY_CONNECTED:
        w, bias = o.t(1), o.t(2)
        o.types(x, _T.INT8, role="input")
        o.types(w, _T.INT8, _T.INT4, role="weights")
        o.types(out, _T.INT8, role="output")
        o.quantized(x, w, out)
        ws = _shape(w)
        if len(ws) != 2 or not ws[1] or math.prod(xs) % ws[1] or ys[-1:] != ws[:1]:
            raise o.fail(f"weights {ws} do not fit input {xs} and output {ys}")
        if math.prod(ys) != math.prod(xs) // ws[1] * ws[0]:
            raise o.fail(f"output {ys} does not hold input {xs} times weights {ws}")
        o.constant(w, "weights")
        if bias is not None:
            o.types(bias, _T.INT32, role="bias")
            if _shape(bias) != ws[:1]:
                raise o.fail(f"bias {_shape(bias)} does not fit weights {ws}")
            o.constant(bias, "bias")
    elif o.code in (codes.CONV_2D, codes.DEPTHWISE_CONV_2D):
        w, bias = o.t(1), o.t(2)
        o.types(x, _T.INT8, role="input")
        o.types(w, _T.INT8, _T.INT4, role="weights")
        o.types(bias, _T.INT32, role="bias")
        o.types(out, _T.INT8, role="output")
        o.quantized(x, w, out)
        ws = _shape(w)
        if len(xs) != 4 or len(ws) != 4 or len(ys) != 4 or xs[0] != ys[0]:
            raise o.fail(f"input {xs}, weights {ws} and output {ys} are not NHWC / OHWI")
        depthwise = o.code == codes.DEPTHWISE_CONV_2D
        channels = ws[3] if depthwise else ws[0]
        if (depthwise and (ws[0] != 1 or options.depthMultiplier != 1 or ws[3] != xs[3])) or (
            not depthwise and ws[3] != xs[3]
        ):
            raise o.fail(f"weights {ws} do not fit input {xs}")
        if ys[3] != channels or _shape(bias) != [channels]:
            raise o.fail(f"output {ys} and bias {_shape(bias)} do not have the weights' {channels} channels")
        o.spatial(xs, ys, (ws[1], ws[2]), options, (options.dilationHFactor, options.dilationWFactor))
        o.constant(w, "weights")
        o.constant(bias, "bias")
    elif o.code in (codes.MAX_POOL_2D, codes.AVERAGE_POOL_2D):
        o.types(x, _T.INT8, role="input")
        o.types(out, _T.INT8, role="output")
        o.quantized(x, out)
        if len(xs) != 4 or len(ys) != 4 or xs[0] != ys[0] or xs[3] != ys[3]:
            raise o.fail(f"input {xs} and output {ys} are not NHWC of the same channels")
        o.spatial(xs, ys, (options.filterHeight, options.filterWidth), options, (1, 1))
    elif o.code in (codes.ADD, codes.MINIMUM, codes.MAXIMUM):
        other = o.t(1)
        for tensor, role in ((x, "input"), (other, "input"), (out, "output")):
            o.types(tensor, _T.INT8, role=role)
        o.quantized(x, other, out)
        try:
            broadcast = list(np.broadcast_shapes(tuple(xs), tuple(_shape(other))))
        except ValueError:
            broadcast = None
        if broadcast != ys:
            raise o.fail(f"inputs {xs} and {_shape(other)} do not give output {ys}")
    elif o.code == codes.PAD:
        o.types(x, _T.INT8, role="input")
        o.types(out, _T.INT8, role="output")
        o.types(o.t(1), _T.INT32, role="paddings")
        o.quantized(x, out)
        pads = o.constant(o.t(1), "paddings")
        if _shape(o.t(1)) != [len(xs), 2] or pads.min(initial=0) < 0 or pads.max(initial=0) > _MAX_WINDOW:
            raise o.fail(f"paddings {pads.tolist()[:8]} do not fit input {xs}")
        if ys != [d + int(a) + int(b) for d, (a, b) in zip(xs, pads.reshape(-1, 2))]:
            raise o.fail(f"output {ys} is not input {xs} padded by {pads.tolist()}")
    elif o.code == codes.RESHAPE:
        o.types(x, _T.INT8, _T.FLOAT32, role="input")
        o.types(out, x.type, role="output")
        o.types(o.t(1), _T.INT32, role="shape")
        target = o.constant(o.t(1), "shape")
        if len(_shape(o.t(1))) != 1 or math.prod(xs) != math.prod(ys) or not ys or len(target) != len(ys):
            raise o.fail(f"input {xs} cannot be reshaped to {ys}")
        if x.type == _T.INT8:
            o.quantized(x, out)
    elif o.code in (codes.LOGISTIC, codes.TANH, codes.SOFTMAX):
        o.types(x, _T.INT8, role="input")
        o.types(out, _T.INT8, role="output")
        o.quantized(x, out)
        if xs != ys or not xs or not all(xs):
            raise o.fail(f"input {xs} and output {ys} differ in shape or are empty")
        if o.code == codes.SOFTMAX and not (isinstance(options.beta, float) and 0 < options.beta < math.inf):
            raise o.fail(f"beta {options.beta!r} is not a positive number")
    elif o.code == codes.CONCATENATION:
        parts = [o.t(i) for i in range(len(o.inputs))]
        for tensor in (*parts, out):
            o.types(tensor, _T.INT8, role="input" if tensor is not out else "output")
        o.quantized(*parts, out)
        shapes = [_shape(t) for t in parts]
        axis = options.axis % len(ys) if ys and -len(ys) <= options.axis < len(ys) else None
        if axis is None or any(len(s) != len(ys) for s in shapes):
            raise o.fail(f"axis {options.axis} does not fit inputs {shapes} and output {ys}")
        others = [[d for i, d in enumerate(s) if i != axis] for s in (*shapes, ys)]
        if any(rest != others[-1] for rest in others) or sum(s[axis] for s in shapes) != ys[axis]:
            raise o.fail(f"inputs {shapes} do not concatenate to {ys} along axis {axis}")
    elif o.code in (codes.QUANTIZE, codes.DEQUANTIZE):
        quantize = o.code == codes.QUANTIZE
        o.types(x, *((_T.FLOAT32, _T.INT8) if quantize else (_T.INT8,)), role="input")
        o.types(out, _T.INT8 if quantize else _T.FLOAT32, role="output")
        o.quantized(*[t for t in (x, out) if t.type == _T.INT8])
        if xs != ys:
            raise o.fail(f"input {xs} and output {ys} differ in shape")


def _check_ops(model: schema.ModelT) -> None:
    """One subgraph of the SDK's ops, in order (each tensor read after it is written, written once), each op's
    tensors of the types, shapes and quantization its kernel reads, and activations of a size LiteRT can allocate."""
    if len(model.subgraphs) != 1:
        raise _Malformed(f"the model has {len(model.subgraphs)} subgraphs; the SDK writes one")
    graph, buffers = model.subgraphs[0], model.buffers or []
    codes = [builtin_code(code) for code in model.operatorCodes or []]
    constant = {
        k
        for k, t in enumerate(graph.tensors)
        if t.buffer
        and t.buffer < len(buffers)
        and (buffers[t.buffer].data is not None and len(buffers[t.buffer].data) or buffers[t.buffer].size)
    }
    ready = constant | {int(i) for i in graph.inputs}
    activations = 0
    for k, op in enumerate(graph.operators or []):
        code = codes[op.opcodeIndex]
        custom = model.operatorCodes[op.opcodeIndex].customCode
        name = OP_NAMES.get(code, str(code))
        if code == _OPS.CUSTOM and custom is not None:
            name += " " + repr(custom.decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom))[:60]
        label = f"operator {k} ({name})"
        if code not in OP_SIGNATURES:
            raise _Malformed(f"{label} is not an op the SDK writes ({', '.join(OP_NAMES[c] for c in OP_SIGNATURES)})")
        unset = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0 and i not in ready]
        if unset:
            raise _Malformed(f"{label} reads tensor {unset[0]} before any operator writes it")
        out = int(op.outputs[0]) if _count(op.outputs) else None
        if out is not None and out in ready:
            raise _Malformed(f"{label} writes tensor {out}, which is an input, a constant or written before")
        o = _Op(model, op, code, label)
        _check_op(o)
        size = math.prod(_shape(o.out))
        activations += size
        if size > _MAX_TENSOR_ELEMENTS or activations > _MAX_ACTIVATION_ELEMENTS:
            raise _Malformed(f"{label}: its output {_shape(o.out)} is larger than any network the SDK writes")
        ready.add(out)
    unwritten = [int(i) for i in graph.outputs if int(i) not in ready]
    if unwritten:
        raise _Malformed(f"graph output tensor {unwritten[0]} is never written")
