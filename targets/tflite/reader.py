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
from targets.tflite.ops import OP_SPECS, Malformed, OpView, shape_of, tensor_name
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


def _indices(values, limit: int, what: str, optional: bool = False) -> None:
    for i in values if values is not None else []:
        if not (isinstance(i, int | np.integer) and (0 <= i < limit or (optional and i == -1))):
            raise Malformed(f"{what} names tensor/index {i}, outside 0..{limit - 1}")


def _count(values) -> int:
    return 0 if values is None else len(values)


def _check_tensor(t, k: int, buffers: list, size: int) -> None:
    """Shape, buffer index, the constant data's length against the shape, and the quantization's sizes."""
    label = f"tensor {k} ({tensor_name(t)[:60]!r})"
    shape = [] if t.shape is None else [int(d) for d in t.shape]  # Python ints: numpy's int32 products wrap
    if not all(0 <= d <= _MAX_DIM for d in shape):
        raise Malformed(f"{label} has shape {shape[:8]}, not sizes >= 0")
    if t.shapeSignature is not None and not all(-1 <= d <= _MAX_DIM for d in t.shapeSignature):
        raise Malformed(f"{label} has shape signature {list(t.shapeSignature)[:8]}")
    if t.sparsity is not None or t.variantTensors or t.externalBuffer:
        raise Malformed(f"{label} is sparse, a variant or external; files of the SDK hold none")
    if not 0 <= t.buffer < max(len(buffers), 1):
        raise Malformed(f"{label} names buffer {t.buffer}, of {len(buffers)}")
    buffer = buffers[t.buffer] if buffers else None
    stored = None
    if buffer is not None and buffer.data is not None and len(buffer.data):
        stored = len(buffer.data)
    elif buffer is not None and (buffer.offset or buffer.size):
        if buffer.offset < 0 or buffer.size < 0 or buffer.offset + buffer.size > size:
            raise Malformed(f"{label}: its buffer lies outside the file")
        stored = buffer.size
    bits = _ELEMENT_BITS.get(t.type)
    if stored is not None and bits is not None:
        expected = (math.prod(shape) * bits + 7) // 8
        if stored != expected:
            raise Malformed(
                f"{label} of shape {shape} ({TYPE_NAMES.get(t.type, t.type)}) needs {expected} bytes of data, "
                f"its buffer holds {stored}"
            )
    q = t.quantization
    if q is not None:
        scales = [] if q.scale is None else list(q.scale)
        zeros = [] if q.zeroPoint is None else list(q.zeroPoint)
        if not all(math.isfinite(v) for v in scales):
            raise Malformed(f"{label} has a scale that is not finite")
        if scales and zeros and len(scales) != len(zeros):
            raise Malformed(f"{label} has {len(scales)} scales and {len(zeros)} zero points")
        if len(scales) > 1 and not (
            0 <= q.quantizedDimension < len(shape) and shape[q.quantizedDimension] == len(scales)
        ):
            raise Malformed(f"{label} has {len(scales)} scales along axis {q.quantizedDimension} of shape {shape}")


def _text(value, what: str) -> None:
    """Names LiteRT hands to Python as str: they must be UTF-8."""
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{what} is not UTF-8 text") from None


def _check_structure(model: schema.ModelT, size: int) -> None:
    """What every reader of the file relies on: indices in range, constant data the size of its shape, names."""
    if not model.subgraphs:
        raise Malformed("the model has no subgraph")
    for n, signature in enumerate(model.signatureDefs or []):
        _text(signature.signatureKey, f"signature {n}'s key")
        if not 0 <= signature.subgraphIndex < len(model.subgraphs):
            raise Malformed(f"signature {n} names subgraph {signature.subgraphIndex}")
        count = len(model.subgraphs[signature.subgraphIndex].tensors or [])
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            _text(entry.name, f"signature {n}'s tensor name")
            _indices([entry.tensorIndex], count, f"signature {n}")
    for n, entry in enumerate(model.metadata or []):
        _text(entry.name, f"metadata {n}'s name")
        if not 0 <= entry.buffer < len(model.buffers or []):
            raise Malformed(f"metadata {n} names buffer {entry.buffer}")
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    for n, graph in enumerate(model.subgraphs):
        tensors = graph.tensors or []
        where = f"subgraph {n}"
        if not tensors or _count(graph.inputs) == 0 or _count(graph.outputs) == 0:  # index vectors are numpy arrays
            raise Malformed(f"{where} has no tensors, inputs or outputs")
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
                raise Malformed(f"{label} names op code {op.opcodeIndex}, of {len(codes)}")
            if _count(op.outputs) == 0:
                raise Malformed(f"{label} has no output")
            _indices(op.inputs, len(tensors), f"{label}'s inputs", optional=True)
            _indices(op.outputs, len(tensors), f"{label}'s outputs")
            _indices(op.intermediates, len(tensors), f"{label}'s intermediates")
            written += [int(i) for i in op.outputs]
        # LiteRT maps constant data read-only: a graph input or an operator output with data would be written there.
        for k in sorted(constant.intersection(written))[:1]:
            raise Malformed(
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
    except Malformed as exc:
        raise error(f"{lead}: {exc}.", where=where, fix=fix) from None
    except Exception as exc:  # the generated reader's errors on a damaged buffer, whatever their type
        raise error(
            f"{lead}: the flatbuffer cannot be read ({type(exc).__name__}: {str(exc)[:200]}).",
            where=where,
            fix=fix,
        ) from None
    return model


# ---------------------------------------------------------------------------------------------------------------------
# The operators the SDK's writer emits, each checked by its op spec (ops.py) the way its kernel reads it: LiteRT's C++
# kernels trust a file's shapes and types (a mismatch there is a crash, not an error), and so do the golden model's.

_OPS = schema.BuiltinOperator
_MAX_TENSOR_ELEMENTS = 1 << 26  # one activation (batch 1); the SDK's largest are ~10^5
_MAX_ACTIVATION_ELEMENTS = 1 << 28  # all of them: what LiteRT's arena would have to hold


def _check_op(o: OpView) -> None:
    """The operator's inputs, output and options as its spec declares them, then the spec's own checks."""
    spec = OP_SPECS[o.code]
    low, high = spec.inputs
    if not low <= len(o.inputs) <= high or any(i < 0 for i in o.inputs[:low]) or len(o.op.outputs) != 1:
        count = f"{low}" if low == high else f"{low} to {high}"
        raise o.fail(f"{len(o.inputs)} input(s) and {len(o.op.outputs)} output(s); it takes {count} and 1")
    options = o.op.builtinOptions
    if (spec.options_required or options is not None) and not isinstance(options, spec.options):
        raise o.fail(f"its options are {type(options).__name__}, not {spec.options.__name__.removesuffix('T')}")
    spec.check(o)


def _check_ops(model: schema.ModelT) -> None:
    """One subgraph of the SDK's ops, in order (each tensor read after it is written, written once), each op's
    tensors of the types, shapes and quantization its kernel reads, and activations of a size LiteRT can allocate."""
    if len(model.subgraphs) != 1:
        raise Malformed(f"the model has {len(model.subgraphs)} subgraphs; the SDK writes one")
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
        if code not in OP_SPECS:
            raise Malformed(f"{label} is not an op the SDK writes ({', '.join(OP_NAMES[c] for c in OP_SPECS)})")
        unset = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0 and i not in ready]
        if unset:
            raise Malformed(f"{label} reads tensor {unset[0]} before any operator writes it")
        out = int(op.outputs[0]) if _count(op.outputs) else None
        if out is not None and out in ready:
            raise Malformed(f"{label} writes tensor {out}, which is an input, a constant or written before")
        o = OpView(model, op, code, label)
        _check_op(o)
        size = math.prod(shape_of(o.out))
        activations += size
        if size > _MAX_TENSOR_ELEMENTS or activations > _MAX_ACTIVATION_ELEMENTS:
            raise Malformed(f"{label}: its output {shape_of(o.out)} is larger than any network the SDK writes")
        ready.add(out)
    unwritten = [int(i) for i in graph.outputs if int(i) not in ready]
    if unwritten:
        raise Malformed(f"graph output tensor {unwritten[0]} is never written")
