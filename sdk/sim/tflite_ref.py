"""Integer golden model of LiteRT's reference kernels, for the ops the TFLite writer emits.

It reads the .tflite file itself (never the writer's state), so a test against it
checks what is on disk. Arithmetic follows tensorflow/lite/kernels/internal:

  QuantizeMultiplier            frexp, q * 2^31 rounded half away from zero (std::round)
  MultiplyByQuantizedMultiplier two builds exist (TFLITE_SINGLE_ROUNDING):
    "single"  (x * q + 2^(30 - shift)) >> (31 - shift): one rounding, ties up.
              ai-edge-litert 2.3.0's BUILTIN_REF kernels are built this way
              (checked: the double-rounding formula disagreed with it on ~9% of
              a hidden layer's outputs of a w2a2 MLP, this one on none).
    "double"  SaturatingRoundingDoublingHighMul (nudge, truncating division by
              2^31) then RoundingDivideByPOT (ties away from zero): the gemmlowp
              form. The tflite-micro Python runtime is built this way (checked:
              int8 logits equal on every sample; "single" differs on 3-6% of them).
  FULLY_CONNECTED int8          acc = sum w * (x - zp_in) + bias (int32), requantized
                                per channel (or per tensor), + zp_out, clamped to the
                                fused activation range
  MINIMUM / MAXIMUM             raw integer compare (with broadcasting)
  QUANTIZE float -> int8        round(x / scale) half away from zero in float32, + zp
  DEQUANTIZE int8 -> float      float32(double(scale) * (q - zp))

All of it is vectorised over the batch with int64 numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

_DTYPES = {schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32,
           schema.TensorType.FLOAT32: np.float32, schema.TensorType.UINT8: np.uint8}
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


class GoldenModelError(Exception):
    """The file uses an op or a type the golden model does not implement (a bug, not a user error)."""


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """std::round / TfLiteRound: ties away from zero."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


ROUNDINGS = ("single", "double")


def quantize_multiplier(real: float, rounding: str = "single") -> tuple[int, int]:
    """tflite::QuantizeMultiplier: real = q * 2^(shift - 31) with q a 31-bit fixed-point fraction."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q_fixed = int(round_half_away(fraction * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if rounding == "single" and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def _saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    overflow = (a == -(2 ** 31)) & (b == -(2 ** 31))
    ab = a.astype(np.int64) * b.astype(np.int64)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))  # C division truncates
    return np.where(overflow, 2 ** 31 - 1, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _single_rounding(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    total_shift = 31 - shift
    result = (x.astype(np.int64) * multiplier + (np.int64(1) << (total_shift - 1))) >> total_shift
    if result.min(initial=0) < -(2 ** 31) or result.max(initial=0) > 2 ** 31 - 1:
        raise GoldenModelError("requantized value outside int32")
    return result


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str = "single") -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplier (int32 x), broadcast over the last axis."""
    multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    if rounding == "single":
        return _single_rounding(x, multiplier, shift)
    if rounding != "double":
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = x.astype(np.int64) * (np.int64(1) << left)
    if shifted.min(initial=0) < -(2 ** 31) or shifted.max(initial=0) > 2 ** 31 - 1:
        raise GoldenModelError("int32 overflow before requantization (TFLite behaviour is undefined here)")
    return _rounding_divide_by_pot(_saturating_rounding_doubling_high_mul(shifted, multiplier), right)


@dataclass
class _Tensor:
    name: str
    dtype: type
    scales: np.ndarray | None       # float32
    zero_points: np.ndarray | None  # int64
    data: np.ndarray | None         # constant data in the tensor's shape


def _tensors(model: schema.ModelT) -> list[_Tensor]:
    out = []
    for t in model.subgraphs[0].tensors:
        dtype = _DTYPES.get(t.type)
        if dtype is None:
            raise GoldenModelError(f"tensor {t.name!r}: type {t.type} not implemented")
        q = t.quantization
        scales = np.asarray(q.scale, np.float32) if q is not None and q.scale is not None and len(q.scale) else None
        zps = np.asarray(q.zeroPoint, np.int64) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else None
        raw = model.buffers[t.buffer].data if t.buffer else None
        data = None
        if raw is not None and len(raw):
            data = np.frombuffer(bytes(np.asarray(raw, np.uint8)), dtype=np.dtype(dtype).newbyteorder("<")).reshape(t.shape)
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        out.append(_Tensor(name, dtype, scales, zps, data))
    return out


def _activation_range(activation: int, scale: np.float32, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 outputs."""
    qmin, qmax = -128, 127

    def quantize(f: float) -> int:
        return zero_point + int(round_half_away(np.float32(f) / np.float32(scale)))

    kinds = schema.ActivationFunctionType
    if activation == kinds.NONE:
        return qmin, qmax
    if activation == kinds.RELU:
        return max(qmin, quantize(0.0)), qmax
    if activation == kinds.RELU6:
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == kinds.RELU_N1_TO_1:
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise GoldenModelError(f"fused activation {activation} not implemented")


def fully_connected(x: np.ndarray, inp: _Tensor, weights: _Tensor, bias: _Tensor | None, out: _Tensor, activation: int,
                    rounding: str = "single") -> np.ndarray:
    """int8 FULLY_CONNECTED, per channel or per tensor, as the reference kernel computes it."""
    if weights.zero_points is not None and np.any(weights.zero_points != 0):
        raise GoldenModelError(f"{weights.name}: non-zero weight zero point")
    w = weights.data.astype(np.int64)
    acc = (x.reshape(-1, w.shape[1]).astype(np.int64) - int(inp.zero_points[0])) @ w.T
    if bias is not None:
        acc = acc + bias.data.astype(np.int64)
    if acc.min(initial=0) < -(2 ** 31) or acc.max(initial=0) > 2 ** 31 - 1:
        raise GoldenModelError(f"{out.name}: int32 accumulator overflow")
    reals = [float(np.float64(inp.scales[0]) * np.float64(s) / np.float64(out.scales[0])) for s in weights.scales]
    mults, shifts = zip(*(quantize_multiplier(r, rounding) for r in reals))
    y = multiply_by_quantized_multiplier(acc, np.array(mults), np.array(shifts), rounding) + int(out.zero_points[0])
    low, high = _activation_range(activation, out.scales[0], int(out.zero_points[0]))
    return np.clip(y, low, high).astype(np.int8)


def quantize(x: np.ndarray, out: _Tensor) -> np.ndarray:
    q = round_half_away(x.astype(np.float32) / np.float32(out.scales[0])).astype(np.int64) + int(out.zero_points[0])
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(x: np.ndarray, inp: _Tensor) -> np.ndarray:
    return (np.float64(inp.scales[0]) * (x.astype(np.int64) - int(inp.zero_points[0]))).astype(np.float32)


def _check_same_quant(tensors: list[_Tensor], op: str) -> None:
    first = tensors[0]
    for t in tensors[1:]:
        if not (np.array_equal(t.scales, first.scales) and np.array_equal(t.zero_points, first.zero_points)):
            raise GoldenModelError(f"{op}: {t.name} is quantized unlike {first.name}; the int8 kernel compares raw values")


def load_model(tflite_path: Path | str) -> schema.ModelT:
    buf = Path(tflite_path).read_bytes()
    if buf[4:8] != b"TFL3":
        raise GoldenModelError(f"{tflite_path}: not a TFL3 flatbuffer")
    return schema.ModelT.InitFromPackedBuf(buf, 0)


def run_golden(tflite_path: Path | str, x_int8: np.ndarray, rounding: str = "single") -> dict[str, np.ndarray]:
    """Every tensor the graph computes (and its input), by name, for a batch of inputs.

    rounding: "single" for ai-edge-litert's BUILTIN_REF kernels, "double" for TFLM
    (see module docstring).
    """
    model = load_model(tflite_path)
    graph = model.subgraphs[0]
    tensors = _tensors(model)
    values: dict[int, np.ndarray] = {i: t.data for i, t in enumerate(tensors) if t.data is not None}
    values[graph.inputs[0]] = np.asarray(x_int8)
    codes = [code.builtinCode if code.builtinCode else code.deprecatedBuiltinCode for code in model.operatorCodes]
    ops = schema.BuiltinOperator
    for op in graph.operators:
        code = codes[op.opcodeIndex]
        ins = [tensors[i] if i >= 0 else None for i in op.inputs]
        out = tensors[op.outputs[0]]
        args = [values[i] if i >= 0 else None for i in op.inputs]
        if code == ops.FULLY_CONNECTED:
            activation = op.builtinOptions.fusedActivationFunction if op.builtinOptions else 0
            result = fully_connected(args[0], ins[0], ins[1], ins[2] if len(ins) > 2 else None, out, activation, rounding)
        elif code in (ops.MINIMUM, ops.MAXIMUM):
            _check_same_quant([ins[0], ins[1], out], _OP_NAMES[code])
            pick = np.minimum if code == ops.MINIMUM else np.maximum
            result = pick(args[0], args[1]).astype(out.dtype)
        elif code == ops.QUANTIZE:
            result = quantize(args[0], out)
        elif code == ops.DEQUANTIZE:
            result = dequantize(args[0], ins[0])
        else:
            raise GoldenModelError(f"op {_OP_NAMES.get(code, code)} not implemented")
        values[op.outputs[0]] = result
    return {tensors[i].name: v for i, v in values.items() if tensors[i].data is None}
