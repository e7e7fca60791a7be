"""The integer arithmetic of LiteRT's and TFLite Micro's int8 kernels, one function per op, in int64 numpy.

The golden model (golden.py) reads a .tflite file and runs each operator through its op spec (ops.py),
which calls these functions. Arithmetic follows tensorflow/lite/kernels/internal:

  QuantizeMultiplier            frexp, q * 2^31 rounded half away from zero (std::round)
  MultiplyByQuantizedMultiplier two forms exist (TFLITE_SINGLE_ROUNDING):
    "single"  (x * q + 2^(30 - shift)) >> (31 - shift): one rounding, ties up.
    "double"  SaturatingRoundingDoublingHighMul (nudge, truncating division by
              2^31) then RoundingDivideByPOT (ties away from zero): the gemmlowp form.
  Which kernel uses which was measured against the runtimes (each op spec's `rounding`):
  ai-edge-litert 2.3.0's BUILTIN_REF FULLY_CONNECTED rounds once, its CONV_2D,
  DEPTHWISE_CONV_2D, ADD and int8 QUANTIZE twice (each form disagreed with the
  runtime on 0.01-30% of outputs, its own on none); tflite-micro rounds twice
  everywhere.
  FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D (int8)
                                acc = sum w * (x - zp_in) + bias (int32), requantized
                                per channel (or per tensor), + zp_out, clamped to the
                                fused activation range; SAME padding skips positions
                                outside the map, which equals padding with zp_in
  ADD int8                      both inputs - zp, times 2^20, each rescaled by
                                s_i / (2 max(s1, s2)), summed, rescaled by
                                2 max(s1, s2) / (2^20 s_out), + zp_out, clamped
  SUB int8                      ADD's, the second rescaled term subtracted
  QUANTIZE int8 -> int8         requantize: (x - zp_in) * s_in / s_out, + zp_out
  AVERAGE_POOL_2D int8          raw sum over the window, / count rounded half away from zero
  MAX_POOL_2D, PAD, RESHAPE     integer max (VALID), pad with the output zero point, view
  MINIMUM / MAXIMUM             raw integer compare (with broadcasting)
  QUANTIZE float -> int8        round(x / scale) half away from zero in float32, + zp
  DEQUANTIZE int8 -> float      float32(double(scale) * (q - zp))
  LOGISTIC int8 (out 1/256, -128)  LiteRT ("table"): 256-entry table of float32 1 / (1 + expf(-x)), std::round;
                                TFLM: (x - zp) to Q4.27, gemmlowp logistic, Q0.31 rounded to Q0.8, - 128
  TANH int8 (out 1/128, 0)      LiteRT ("table"): table of tanhf (the C library's, as LiteRT's); TFLM:
                                Q4.27, gemmlowp tanh, Q0.31 rounded to Q0.7 (both saturate outside a radius)
  SOFTMAX int8 (out 1/256, -128) last axis: (x - row max) * beta s_in to Q5.26 (-128 below diff_min),
                                gemmlowp exp, sum in Q12.19, Newton reciprocal, rounded to Q0.8, - 128

All of it is vectorised over the batch with int64 numpy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from targets.tflite.errors import GoldenModelError


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """INT4 constants: two's-complement nibbles, low nibble first."""
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """std::round / TfLiteRound: ties away from zero."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


ROUNDINGS = ("single", "double")
TABLE = "table"  # not a rounding: LiteRT's int8 LOGISTIC and TANH are a 256-entry table of the float function


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
    overflow = (a == -(2**31)) & (b == -(2**31))
    ab = a.astype(np.int64) * b.astype(np.int64)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))  # C division truncates
    return np.where(overflow, 2**31 - 1, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _single_rounding(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    total_shift = 31 - shift
    result = (x.astype(np.int64) * multiplier + (np.int64(1) << (total_shift - 1))) >> total_shift
    if result.min(initial=0) < -(2**31) or result.max(initial=0) > 2**31 - 1:
        raise GoldenModelError("requantized value outside int32")
    return result


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str = "single"
) -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplier (int32 x), broadcast over the last axis."""
    multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    if rounding == "single":
        return _single_rounding(x, multiplier, shift)
    if rounding != "double":
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = x.astype(np.int64) * (np.int64(1) << left)
    if shifted.min(initial=0) < -(2**31) or shifted.max(initial=0) > 2**31 - 1:
        raise GoldenModelError("int32 overflow before requantization (TFLite behaviour is undefined here)")
    return _rounding_divide_by_pot(_saturating_rounding_doubling_high_mul(shifted, multiplier), right)


@dataclass
class Tensor:
    name: str
    dtype: type
    scales: np.ndarray | None  # float32
    zero_points: np.ndarray | None  # int64
    data: np.ndarray | None  # constant data in the tensor's shape


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


_FLOAT64_EXACT = 2**53  # every integer of smaller magnitude is a float64, and so is every partial sum below it


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of integer arrays, as int64: in float64 BLAS where no sum can reach 2**53 (then every product and
    partial sum is an exact float64; int8 codes reach that only past 10**11 terms), else in int64, which numpy
    computes without BLAS (a tenth of the speed)."""
    bound = int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)) * a.shape[-1]
    if bound < _FLOAT64_EXACT:
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def fully_connected(
    x: np.ndarray,
    inp: Tensor,
    weights: Tensor,
    bias: Tensor | None,
    out: Tensor,
    activation: int,
    rounding: str = "single",
) -> np.ndarray:
    """int8 FULLY_CONNECTED, per channel or per tensor, as the reference kernel computes it."""
    if weights.zero_points is not None and np.any(weights.zero_points != 0):
        raise GoldenModelError(f"{weights.name}: non-zero weight zero point")
    w = weights.data.astype(np.int64)
    acc = exact_matmul(x.reshape(-1, w.shape[1]).astype(np.int64) - int(inp.zero_points[0]), w.T)
    if bias is not None:
        acc = acc + bias.data.astype(np.int64)
    if acc.min(initial=0) < -(2**31) or acc.max(initial=0) > 2**31 - 1:
        raise GoldenModelError(f"{out.name}: int32 accumulator overflow")
    y = _requantize(acc, inp, weights, out, rounding)
    low, high = _activation_range(activation, out.scales[0], int(out.zero_points[0]))
    return np.clip(y, low, high).astype(np.int8)


def _requantize(acc: np.ndarray, inp: Tensor, weights: Tensor, out: Tensor, rounding: str) -> np.ndarray:
    """acc (int64, channels last) at scale s_in * s_w[c], to int8 codes before clamping."""
    reals = [float(np.float64(inp.scales[0]) * np.float64(s) / np.float64(out.scales[0])) for s in weights.scales]
    mults, shifts = zip(*(quantize_multiplier(r, rounding) for r in reals))
    return multiply_by_quantized_multiplier(acc, np.array(mults), np.array(shifts), rounding) + int(out.zero_points[0])


def _windows(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: int,
    pad_value: int,
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """(N, OH, OW, C, kh, kw) windows of an NHWC map, with TFLite SAME or VALID padding and dilation."""
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    if padding == schema.Padding.SAME:
        pads = []
        for size, k, stride in zip(x.shape[1:3], span, strides):
            out = -(-size // stride)
            total = max((out - 1) * stride + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=pad_value)
    view = np.lib.stride_tricks.sliding_window_view(x, span, axis=(1, 2))
    return view[:, :: strides[0], :: strides[1], :, :: dilation[0], :: dilation[1]]


def convolution(
    x: np.ndarray,
    inp: Tensor,
    weights: Tensor,
    bias: Tensor | None,
    out: Tensor,
    options,
    depthwise: bool,
    rounding: str = "single",
) -> np.ndarray:
    """int8 CONV_2D (weights OHWI) or DEPTHWISE_CONV_2D (weights 1HWC, multiplier 1), per-channel requantized."""
    if depthwise and options.depthMultiplier != 1:
        raise GoldenModelError(f"{out.name}: depth multiplier {options.depthMultiplier} not implemented")
    w = weights.data.astype(np.int64)
    centred = x.astype(np.int64) - int(inp.zero_points[0])
    strides, dilation = (options.strideH, options.strideW), (options.dilationHFactor, options.dilationWFactor)
    win = _windows(centred, w.shape[1:3], strides, options.padding, 0, dilation)  # zp_in pads as 0 once centred
    if depthwise:
        acc = np.einsum("nhwckl,klc->nhwc", win, w[0], optimize=True)
    else:
        n, oh, ow = win.shape[:3]
        patches = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, -1)
        acc = exact_matmul(patches, w.reshape(len(w), -1).T).reshape(n, oh, ow, len(w))
    if bias is not None:
        acc = acc + bias.data.astype(np.int64)
    if acc.min(initial=0) < -(2**31) or acc.max(initial=0) > 2**31 - 1:
        raise GoldenModelError(f"{out.name}: int32 accumulator overflow")
    y = _requantize(acc, inp, weights, out, rounding)
    low, high = _activation_range(options.fusedActivationFunction, out.scales[0], int(out.zero_points[0]))
    return np.clip(y, low, high).astype(np.int8)


def max_pool(x: np.ndarray, options) -> np.ndarray:
    win = _windows(
        x, (options.filterHeight, options.filterWidth), (options.strideH, options.strideW), options.padding, -128
    )
    return win.max(axis=(4, 5))


def average_pool(x: np.ndarray, out: Tensor, options) -> np.ndarray:
    """int8 AVERAGE_POOL_2D (VALID): the sum of raw values over the window, divided with rounding half away
    from zero."""
    if options.padding != schema.Padding.VALID:
        raise GoldenModelError(f"{out.name}: SAME average pooling not implemented")
    win = _windows(
        x.astype(np.int64),
        (options.filterHeight, options.filterWidth),
        (options.strideH, options.strideW),
        options.padding,
        0,
    )
    count = options.filterHeight * options.filterWidth
    total = win.sum(axis=(4, 5))
    shifted = np.where(total > 0, total + count // 2, total - count // 2)
    mean = np.sign(shifted) * (np.abs(shifted) // count)  # C division truncates toward zero
    low, high = _activation_range(options.fusedActivationFunction, out.scales[0], int(out.zero_points[0]))
    return np.clip(mean, low, high).astype(np.int8)


ADD_LEFT_SHIFT = 20


def add(
    a: np.ndarray,
    b: np.ndarray,
    in_a: Tensor,
    in_b: Tensor,
    out: Tensor,
    activation: int,
    rounding: str = "single",
    subtract: bool = False,
) -> np.ndarray:
    """int8 ADD as the reference kernel computes it (inputs rescaled to a common 2^20-finer scale, then summed), or
    with `subtract` SUB: the second rescaled term subtracted, as both runtimes do (ADD's kernel with the second
    multiplier negated, as some versions of LiteRT's sub.cc read, would round a tie of that term the other way)."""
    s_a, s_b, s_out = (np.float64(t.scales[0]) for t in (in_a, in_b, out))
    twice_max = 2 * max(s_a, s_b)
    terms = []
    for value, tensor, scale in ((a, in_a, s_a), (b, in_b, s_b)):
        mult, shift = quantize_multiplier(float(scale / twice_max), rounding)
        shifted = (value.astype(np.int64) - int(tensor.zero_points[0])) * (1 << ADD_LEFT_SHIFT)
        terms.append(multiply_by_quantized_multiplier(shifted, mult, shift, rounding))
    mult, shift = quantize_multiplier(float(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out)), rounding)
    raw = terms[0] - terms[1] if subtract else terms[0] + terms[1]
    y = multiply_by_quantized_multiplier(raw, mult, shift, rounding) + int(out.zero_points[0])
    low, high = _activation_range(activation, out.scales[0], int(out.zero_points[0]))
    return np.clip(y, low, high).astype(np.int8)


def requantize(x: np.ndarray, inp: Tensor, out: Tensor, rounding: str = "single") -> np.ndarray:
    """QUANTIZE int8 -> int8."""
    mult, shift = quantize_multiplier(float(np.float64(inp.scales[0]) / np.float64(out.scales[0])), rounding)
    y = multiply_by_quantized_multiplier(x.astype(np.int64) - int(inp.zero_points[0]), mult, shift, rounding) + int(
        out.zero_points[0]
    )
    return np.clip(y, -128, 127).astype(np.int8)


def quantize(x: np.ndarray, out: Tensor) -> np.ndarray:
    q = round_half_away(x.astype(np.float32) / np.float32(out.scales[0])).astype(np.int64) + int(out.zero_points[0])
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(x: np.ndarray, inp: Tensor) -> np.ndarray:
    return (np.float64(inp.scales[0]) * (x.astype(np.int64) - int(inp.zero_points[0]))).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# LOGISTIC, TANH, SOFTMAX: gemmlowp's fixed-point math (fixedpoint.h) on int32 raw values held in int64

_INT32_MAX = 2**31 - 1


def _wrap32(x: np.ndarray) -> np.ndarray:
    """int32 two's-complement wrap-around of a plain add or subtract."""
    return (np.asarray(x, np.int64) + 2**31) % 2**32 - 2**31


def _mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """FixedPoint a * b: SaturatingRoundingDoublingHighMul of the raw values."""
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    return _saturating_rounding_doubling_high_mul(a, b)


def _times_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT<exponent> (Rescale): a saturating left shift, or a rounding right shift."""
    if exponent < 0:
        return _rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, _INT32_MAX, np.where(x < -threshold, -(2**31), x << exponent))


def _rounding_half_sum(a: np.ndarray, b: int) -> np.ndarray:
    total = a + b
    total = total + np.where(total >= 0, 1, -1)
    return np.where(total >= 0, total // 2, -((-total) // 2))  # C division truncates


def _exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::exp_on_negative_values: a in Q(integer_bits), the result in Q0."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    # exp_on_interval_between_negative_one_quarter_and_0_excl: Taylor series around -1/8
    x = _times_pot(a_mod_quarter_minus_quarter, integer_bits) + (1 << 28)
    x2 = _mul(x, x)
    x3, x4 = _mul(x2, x), _mul(x2, x2)
    poly = _rounding_divide_by_pot(_wrap32(_mul(_wrap32(_rounding_divide_by_pot(x4, 2) + x3), 715827883) + x2), 1)
    result = _wrap32(1895147668 + _mul(1895147668, _wrap32(x + poly)))
    remainder = _wrap32(a_mod_quarter_minus_quarter - a)
    barrel = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))
    for exponent, multiplier in barrel:  # exp(-2^exponent) for each bit of the remainder
        if integer_bits > exponent:
            result = np.where(remainder & (1 << (fractional + exponent)), _mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, _INT32_MAX, result)


def _newton_reciprocal(a: np.ndarray) -> np.ndarray:
    """x ~ 1 / (1 + a) in Q2 for a in [0, 1) in Q0: three Newton-Raphson steps from 48/17 - 32/17 d."""
    half_denominator = _rounding_half_sum(a, _INT32_MAX)
    x = _wrap32(1515870810 + _mul(half_denominator, -1010580540))
    for _ in range(3):
        one_minus = _wrap32((1 << 29) - _mul(half_denominator, x))
        x = _wrap32(x + _times_pot(_mul(x, one_minus), 2))
    return x


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    return _times_pot(_newton_reciprocal(a), 1)  # Rescale<0>(ExactMulByPot<-1>(x))


def _gemmlowp_logistic(a: np.ndarray, integer_bits: int) -> np.ndarray:
    positive = a > 0
    on_positive = _one_over_one_plus_x(_exp_on_negative_values(-np.where(positive, a, -a), integer_bits))
    return np.where(a == 0, 1 << 30, np.where(positive, on_positive, _wrap32(_INT32_MAX - on_positive)))


def _gemmlowp_tanh(a: np.ndarray, integer_bits: int) -> np.ndarray:
    negative = a < 0
    exp = _exp_on_negative_values(np.where(negative, a, -a), integer_bits + 1)  # exp(-2|a|): ExactMulByPot<1>
    t = _times_pot(_wrap32(_newton_reciprocal(exp) - (1 << 29)), 2)  # (1 - e) / (1 + e)
    return np.where(a == 0, 0, np.where(negative, -t, t))


# Output quantization the int8 kernels require (LiteRT and TFLM refuse any other for LOGISTIC and SOFTMAX; TFLM's
# TANH assumes it without checking).
FIXED_OUTPUT_QUANT: dict[str, tuple[float, int]] = {
    "logistic": (1 / 256, -128),
    "tanh": (1 / 128, 0),
    "softmax": (1 / 256, -128),
}
_ACTIVATION_INPUT_INTEGER_BITS = 4


def _check_fixed_output(out: Tensor, op: str) -> None:
    scale, zero_point = FIXED_OUTPUT_QUANT[op]
    if not (np.float32(out.scales[0]) == np.float32(scale) and int(out.zero_points[0]) == zero_point):
        raise GoldenModelError(
            f"{op.upper()} output {out.name!r} is quantized at scale {float(out.scales[0])!r}, zero point "
            f"{int(out.zero_points[0])}; the int8 kernel needs scale {scale!r}, zero point {zero_point}"
        )


def _activation_table(inp: Tensor, out: Tensor, function: Callable) -> np.ndarray:
    """LUTPopulate<int8_t>: the float32 function of each of the 256 dequantized inputs, requantized (std::round)."""
    values = np.arange(-128, 128, dtype=np.int64)
    dequantized = np.float32(inp.scales[0]) * (values - int(inp.zero_points[0])).astype(np.float32)
    transformed = function(dequantized)
    rescaled = round_half_away((transformed * (np.float32(1) / np.float32(out.scales[0]))).astype(np.float64))
    return np.clip(rescaled + int(out.zero_points[0]), -128, 127).astype(np.int8)


@functools.cache
def _libm(name: str) -> Callable[[float], float] | None:
    """The C library's float function (expf, tanhf): LiteRT builds its table with it, in this process, and it is
    not always correctly rounded (glibc's tanhf is off by one ulp at some inputs, enough to move a rounding tie)."""
    library = ctypes.util.find_library("m") or ctypes.util.find_library("c")
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError, TypeError):
        return None
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float]
    return function


def _float32_function(name: str, v: np.ndarray) -> np.ndarray:
    """expf / tanhf of float32 values: the C library's, else numpy's float64 value rounded to float32."""
    function = _libm(name)
    if function is not None:
        return np.array([function(float(value)) for value in v], np.float32)
    with np.errstate(over="ignore"):
        return getattr(np, name[:-1])(v.astype(np.float64)).astype(np.float32)


def _float32_sigmoid(v: np.ndarray) -> np.ndarray:
    """1.0f / (1.0f + std::exp(-v)), as LiteRT's LOGISTIC table computes it."""
    return np.float32(1) / (np.float32(1) + _float32_function("expf", -v))


def _float32_tanh(v: np.ndarray) -> np.ndarray:
    return _float32_function("tanhf", v)


def _input_rescaling(inp: Tensor, integer_bits: int) -> tuple[int, int, int]:
    """Prepare of the fixed-point LOGISTIC / TANH: input_multiplier, input_left_shift and input_range_radius that
    take (x - zp) to Q(integer_bits).(31 - integer_bits)."""
    fraction, shift = math.frexp(float(np.float32(inp.scales[0])) * (1 << (31 - integer_bits)))
    multiplier = int(round_half_away(fraction * (1 << 31)))
    radius = math.floor(((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / 2.0**shift)  # CalculateInputRadius
    return multiplier, shift, radius


def _fixed_point_activation(
    x: np.ndarray, inp: Tensor, function: Callable, output_shift: int, output_offset: int, rounding: str
) -> np.ndarray:
    """TFLM's integer LOGISTIC / TANH: (x - zp) in Q4.27, gemmlowp's `function` in Q0.31, rounded down to int8 by
    `output_shift` and offset; inputs at or beyond the radius saturate, as TFLM's do."""
    multiplier, shift, radius = _input_rescaling(inp, _ACTIVATION_INPUT_INTEGER_BITS)
    centred = x.astype(np.int64) - int(inp.zero_points[0])
    inside = np.where(np.abs(centred) < radius, centred, 0)
    q4 = multiply_by_quantized_multiplier(inside, multiplier, shift, rounding)
    y = _rounding_divide_by_pot(function(q4, _ACTIVATION_INPUT_INTEGER_BITS), output_shift) + output_offset
    y = np.where(centred <= -radius, -128, np.where(centred >= radius, 127, y))
    return np.clip(y, -128, 127).astype(np.int8)


def logistic(x: np.ndarray, inp: Tensor, out: Tensor, rounding: str = "double") -> np.ndarray:
    """int8 LOGISTIC: a table (LiteRT) or reference_integer_ops::Logistic (TFLM): gemmlowp's logistic in Q0.31,
    rounded to Q0.8 and offset by -128."""
    _check_fixed_output(out, "logistic")
    if rounding == TABLE:
        return _activation_table(inp, out, _float32_sigmoid)[x.astype(np.int64) + 128]
    return _fixed_point_activation(x, inp, _gemmlowp_logistic, 23, -128, rounding)


def tanh(x: np.ndarray, inp: Tensor, out: Tensor, rounding: str = "double") -> np.ndarray:
    """int8 TANH: a table (LiteRT) or reference_integer_ops::Tanh (TFLM): gemmlowp's tanh in Q0.31, rounded to
    Q0.7."""
    _check_fixed_output(out, "tanh")
    if rounding == TABLE:
        return _activation_table(inp, out, _float32_tanh)[x.astype(np.int64) + 128]
    return _fixed_point_activation(x, inp, _gemmlowp_tanh, 24, 0, rounding)


SOFTMAX_DIFF_INTEGER_BITS, SOFTMAX_ACCUMULATION_INTEGER_BITS = 5, 12


def softmax(x: np.ndarray, inp: Tensor, out: Tensor, beta: float, rounding: str = "double") -> np.ndarray:
    """int8 SOFTMAX over the last axis, reference_ops::Softmax: differences to the row's max (those below diff_min
    give -128) times beta * s_in in Q5.26, gemmlowp's exp in Q0.31, summed in Q12.19, times the Newton-Raphson
    reciprocal of the sum, rounded to Q0.8 and offset by -128."""
    _check_fixed_output(out, "softmax")
    bits = SOFTMAX_DIFF_INTEGER_BITS
    ceiling = (1 << 30) - 1.0 if rounding == "single" else (1 << 31) - 1.0  # PreprocessSoftmaxScaling
    real = min(float(np.float32(beta)) * float(np.float32(inp.scales[0])) * (1 << (31 - bits)), ceiling)
    multiplier, shift = quantize_multiplier(real, rounding)
    if shift < 0:
        raise GoldenModelError(f"SOFTMAX producing {out.name!r}: beta * input scale {real:g} / 2^26 is below 2^-27")
    diff_min = -math.floor(((1 << bits) - 1) * (1 << (31 - bits)) / 2.0**shift)  # -CalculateInputRadius
    rows = x.astype(np.int64).reshape(-1, x.shape[-1])
    diff = rows - rows.max(axis=1, keepdims=True)
    kept = diff >= diff_min
    scaled = multiply_by_quantized_multiplier(np.where(kept, diff, 0), multiplier, shift, rounding)
    exp = _exp_on_negative_values(scaled, bits)
    total = np.where(kept, _rounding_divide_by_pot(exp, SOFTMAX_ACCUMULATION_INTEGER_BITS), 0).sum(axis=1)
    if total.max(initial=0) > _INT32_MAX:
        raise GoldenModelError(f"SOFTMAX producing {out.name!r}: the sum of exponentials overflows Q12.19")
    # GetReciprocal: the sum normalised to [1, 2), 1 / (1 + fraction) in Q0.31 and how many bits the sum had above 1
    headroom = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)  # count of leading zeros (total > 0)
    bits_over_unit = SOFTMAX_ACCUMULATION_INTEGER_BITS - headroom
    scale = _one_over_one_plus_x((total << headroom) - (1 << 31))
    y = _rounding_divide_by_pot(_mul(scale[:, None], exp), (bits_over_unit + 31 - 8)[:, None]) - 128
    y = np.where(kept, np.clip(y, -128, 127), -128)
    return y.reshape(x.shape).astype(np.int8)


def check_same_quant(tensors: list[Tensor], op: str) -> None:
    first = tensors[0]
    for t in tensors[1:]:
        if not (np.array_equal(t.scales, first.scales) and np.array_equal(t.zero_points, first.zero_points)):
            raise GoldenModelError(
                f"{op}: {t.name} is quantized unlike {first.name}; the int8 kernel compares raw values"
            )


def concatenation(args: list[np.ndarray], ins: list[Tensor], out: Tensor, axis: int) -> np.ndarray:
    """int8 CONCATENATION of tensors quantized alike (the writer requantizes none): raw values side by side."""
    check_same_quant([*ins, out], "CONCATENATION")
    return np.concatenate(args, axis=axis)
