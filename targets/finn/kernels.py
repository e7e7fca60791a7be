"""The numpy kernel of every FINN HW layer: integer, bit-exact, vectorised over a batch.

Each kernel computes one node from its ONNX attributes and initializers.
Tensors are the logical (unfolded) tensors FINN's python execution of the
abstract HW layers produces: NHWC, batch first, im2col patches ordered
(kernel row, kernel column, channel). Folding attributes (PE, SIMD) change only
the order of words on the streams, never the values, so a node is computed the
same way before and after SpecializeLayers and SetFolding.

Values are exact integers: activations (threshold counts) in the narrowest
integer type that holds them; accumulators in int32 where the input spans at most
256 values (unsigned or signed, 1 to 8 bits: it goes as uint8 codes x - low) and
the weights fit 8 bits (the matrix products run on onnxruntime's integer GEMM,
`IntegerGemm`), else in float32 where that is exact (float32 BLAS), int64
otherwise. A float32 tensor never holds a magnitude of 2**24 or more: every
integer below that is exact. The path of a layer is decided once, when the plan
is prepared, from the static range of its input (`Range`, propagated from the
graph's input datatype by each op's `ops.HwOp.ranges`) and its weights; unknown
ranges are decided per call. A ConvolutionInputGenerator's output stays a
strided view of its input (`Windows`) that the MVAU or Pool reading it copies a
block of samples at a time, so the im2col matrix never exists whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sdk.errors import SimulationError

# Static bounds on a tensor's values, lo <= v <= hi for every element of every sample; None: unknown.
Range = tuple[int, int] | None

# float32 (float64) matrix products are exact while every partial sum stays below 2**24 (2**53) in magnitude.
FLOAT32_EXACT = 2**24
# int32 accumulators: every partial sum, and the largest threshold that matters (an accumulator's maximum + 1), fit.
INT32_EXACT = 2**31 - 1
# x86 CPUs without VNNI add two adjacent uint8 x int8 products in int16 with saturation (vpmaddubsw).
_INT16_PAIR = 2**15 - 1
_FLOAT64_EXACT = 2**53
# Thresholds beyond this magnitude are clipped first: they can never be crossed by an int64 accumulator anyway.
_THRESHOLD_LIMIT = 2.0**62
# Up to this many thresholds per channel, one compare per step is faster than a searchsorted over all of them.
COMPARE_STEPS = 16
# Beyond this many, a table of each channel's count for every value the input can take (`Thresholds.lookup`) is
# faster than the compares, where the table has at most _LOOKUP_ENTRIES entries (channels x values).
LOOKUP_STEPS = 6
_LOOKUP_ENTRIES = 1 << 23
# Input elements per block of rows an MVAU converts to float32, multiplies and thresholds at once: bounds the
# float32 copy of a narrow input (an im2col of 2-bit activations is 4x larger in float32), yet each BLAS call
# stays large enough to run well on several threads.
_BLOCK = 1 << 22
# Accumulators per block of rows an integer-GEMM MVAU thresholds at once (they stay in the CPU's cache), and
# at most so many patch elements per block it copies from its windows (wide patches: fewer rows a block).
_ACC_BLOCK = 1 << 18
_PATCH_BLOCK = 1 << 22
# Small batches, where numpy's and onnxruntime's per-call overhead outweighs the work: up to this many values, a
# threshold count is one broadcast compare of every step at once; up to _SMALL_ROWS rows, a layer with at most
# _SMALL_WEIGHTS weights whose sums float32 holds exactly multiplies in float32 BLAS instead of the integer GEMM.
_SMALL_VALUES = 1 << 12
_SMALL_ROWS = 16
_SMALL_WEIGHTS = 1 << 16


def base_op_type(op_type: str) -> str:
    """MVAU_hls, MVAU_rtl -> MVAU: the math does not depend on the implementation style."""
    return re.sub(r"_(hls|rtl)$", "", op_type)


# ---------------------------------------------------------------------------
# the per-node context and small helpers


@dataclass
class HwNode:
    """One node being simulated: its ONNX node, FINN custom-op instance, graph and inputs.

    `ranges` are the static ranges of the inputs and `memo` what the kernel prepared for this
    layer; a plan keeps both across calls, so weights are checked and converted once.
    """

    onnx: object
    op: object
    model: object
    inputs: list[np.ndarray | None]
    overflows: list[str]
    ranges: list[Range] = field(default_factory=list)
    memo: dict = field(default_factory=dict)
    threads: int | None = None  # threads of the integer GEMM (None: onnxruntime's default, one per core)

    @property
    def name(self) -> str:
        return self.onnx.name or self.onnx.output[0]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.onnx.op_type})"

    def attr(self, name: str):
        return self.op.get_nodeattr(name)

    def dtype(self, attr_name: str):
        from qonnx.core.datatype import DataType

        return DataType[self.attr(attr_name)]

    def input_range(self, index: int = 0) -> Range:
        return self.ranges[index] if index < len(self.ranges) else None

    def prepared(self, build: Callable[[HwNode], object]):
        """build(self), computed once per layer and kept in `memo`."""
        if build not in self.memo:
            self.memo[build] = build(self)
        return self.memo[build]

    def batch(self) -> int:
        for x in self.inputs:
            if x is not None:
                return len(x)
        raise StopIteration  # as before: a node without a simulated input has no batch

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        """The output tensor's shape from the graph, with the batch of this simulation."""
        key = ("shape", index)
        shape = self.memo.get(key)
        if shape is None:
            shape = self.memo[key] = tuple(self.model.get_tensor_shape(self.onnx.output[index])[1:])
        return (self.batch(), *shape)

    def operand(self, index: int) -> np.ndarray:
        """Input `index`: the simulated tensor, or else the node's integer initializer."""
        if index < len(self.inputs) and self.inputs[index] is not None:
            return self.inputs[index]
        return self.integer_initializer(index)

    def initializer(self, index: int) -> np.ndarray:
        name = self.onnx.input[index] if index < len(self.onnx.input) else ""
        value = self.model.get_initializer(name) if name else None
        if value is None:
            raise SimulationError(
                f"Node {self.label} has no constant for input {index} ('{name}').",
                where=f"dataflow node {self.name}",
                fix="the simulator needs weights and thresholds as initializers "
                "(mem_mode internal_embedded or internal_decoupled, not external or dynamic)",
            )
        return np.asarray(value)

    def integer_initializer(self, index: int) -> np.ndarray:
        value = self.initializer(index)
        integer = np.rint(value)
        if not np.all(np.isfinite(value)) or np.any(integer != value):
            raise SimulationError(
                f"Node {self.label} holds non-integer values in '{self.onnx.input[index]}'.",
                where=f"dataflow node {self.name}",
                fix="only integer weights can be simulated bit-exactly; check the quantization of this layer",
            )
        return integer.astype(np.int64)

    def check_range(self, values: np.ndarray, datatype, what: str) -> None:
        """Append an overflow message if `values` leave `datatype` on any sample."""
        message = range_violation(values, datatype)
        if message:
            self.overflows.append(f"{self.label}: {what} {message}; the hardware result would differ here")


def datatype_range(datatype) -> Range:
    """The values an integer datatype holds (BIPOLAR: -1 and 1); None for float types."""
    if not datatype.is_integer():
        return None
    return int(datatype.min()), int(datatype.max())


def within(known: Range, datatype) -> bool:
    """Whether every value in `known` is a value of `datatype` (never for BIPOLAR, which has no 0)."""
    from qonnx.core.datatype import DataType

    if known is None or datatype == DataType["BIPOLAR"] or not datatype.is_integer():
        return False
    return int(datatype.min()) <= known[0] and known[1] <= int(datatype.max())


def float32_exact(known: Range) -> bool:
    return known is not None and max(-known[0], known[1]) < FLOAT32_EXACT


def range_violation(values: np.ndarray, datatype) -> str | None:
    """None if every value is one of `datatype`, else what is wrong (one min and max unless it is)."""
    from qonnx.core.datatype import DataType

    if values.size == 0:
        return None
    if not datatype.is_integer():
        return f"has datatype {datatype.name}, which is not an integer type"
    low, high = values.min(), values.max()
    bipolar = datatype == DataType["BIPOLAR"]
    if datatype.min() <= low and high <= datatype.max() and not (bipolar and np.any(values == 0)):
        return None
    per_sample = values.reshape(len(values), -1)
    if bipolar:
        bad = np.any(np.abs(per_sample) != 1, axis=1)
    else:
        bad = np.any((per_sample < datatype.min()) | (per_sample > datatype.max()), axis=1)
    return (
        f"range [{int(low)}, {int(high)}] exceeds {datatype.name} [{int(datatype.min())}, {int(datatype.max())}] "
        f"on {int(bad.sum())} of {len(values)} samples"
    )


def to_int64(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    integer = np.rint(values)
    if not np.all(np.isfinite(values)) or np.any(integer != values):
        raise SimulationError(
            f"{what} holds non-integer values.",
            fix="the FINN accelerator takes integers: pass the quantized values (e.g. uint8 pixels)",
        )
    return integer.astype(np.int64)


def as_int64(values: np.ndarray) -> np.ndarray:
    """A working tensor (exact integers in float32 or an integer type) as int64, without a copy if it is one."""
    return values.astype(np.int64, copy=False)


@dataclass
class Windows:
    """A ConvolutionInputGenerator's output before it is copied: the strided windows (N, OH, OW, kH, kW, C) of
    its input. Its consumers (the ops whose `ops.HwOp.takes_windows`) copy what they need a block of samples at a
    time, in cache; for anything else the plan makes it `dense` (the tensor (N, OH, OW, kH * kW * C) FINN
    produces)."""

    view: np.ndarray
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.view)

    def array(self) -> np.ndarray:
        return self.view.reshape(self.shape)


def dense(values: np.ndarray | Windows) -> np.ndarray:
    return values.array() if isinstance(values, Windows) else values


# ---------------------------------------------------------------------------
# exact products and threshold counts, prepared once per layer


class IntegerGemm:
    """x @ w for inputs spanning at most 256 values and 8-bit weights, in onnxruntime's MatMulInteger (MLAS):
    int32 sums.

    A signed (or shifted) input goes as the uint8 codes x - offset, `offset` its range's low end; the product is
    then (x - offset) @ w, and x @ w that plus offset * (the column sums of w), `correction`. A thresholded layer
    moves its thresholds by the correction instead (`Thresholds.prepare`'s shift), so nothing is added per row.
    Integer arithmetic, so exact under bounds decided once from the input range and the weights:
    - int32: every sum a kernel may form stays below 2**31 - 1 in magnitude (`INT32_EXACT`), the products
      with weights shifted by 128 (x * (w + 128)) and their correction 128 * sum(x) included, and the corrected
      sum x @ w too; nothing wraps;
    - int16 pairs: x86 CPUs without VNNI sum two adjacent uint8 x int8 products in int16 with saturation
      (vpmaddubsw). Int8 weights go as they are only while 2 * max code * max |w| stays within int16; otherwise
      they go as uint8 with zero point 128 (w + 128), which every MLAS kernel widens to 16 bits before
      multiplying (no saturation), the zero point corrected in int32.
    """

    def __init__(self, weights: np.ndarray, zero_point: int, threads: int | None, offset: int = 0):
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper

        stored = weights + zero_point
        dtype = np.uint8 if zero_point else np.int8
        initializers = [numpy_helper.from_array(stored.astype(dtype), "w")]
        inputs = ["x", "w"]
        if zero_point:
            initializers += [
                numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
                numpy_helper.from_array(np.array(zero_point, np.uint8), "w_zero"),
            ]
            inputs += ["x_zero", "w_zero"]
        terms, outputs = weights.shape
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", inputs, ["y"])],
            "mvau",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", terms])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", outputs])],
            initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave idle cores to numpy
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.zero_point, self.terms, self.outputs, self.offset = zero_point, terms, outputs, offset
        self.correction = (offset * weights.sum(0)).astype(np.int32)  # fits: checked by `fitting`
        self._shift = np.uint8(-offset % 256)  # x - offset in uint8 arithmetic, wrapping, from int8 codes

    @classmethod
    def fitting(cls, weights: np.ndarray, known: Range, threads: int | None) -> IntegerGemm | None:
        """The GEMM for inputs in `known`, or None where it would not be exact (a span beyond 256 values,
        weights beyond int8, a sum beyond int32)."""
        if known is None or known[1] - known[0] > 255 or weights.size == 0:
            return None
        low, high, terms = int(weights.min()), int(weights.max()), weights.shape[0]
        if low < -128 or high > 127:
            return None
        offset = 0 if 0 <= known[0] and known[1] <= 255 else known[0]
        top = known[1] - offset  # the largest uint8 code
        abs_sum = int(np.abs(weights).sum(0).max())
        if top * (abs_sum + 256 * terms) >= INT32_EXACT or _bound(known) * abs_sum >= INT32_EXACT:
            return None
        pairs_fit = 2 * top * max(-low, high) <= _INT16_PAIR  # no pair of products saturates int16
        return cls(weights, 0 if pairs_fit else 128, threads, offset)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """x - offset as contiguous uint8, x integers in the fitted range in any dtype and layout (a strided view of
        windows is copied once, shifted on the way)."""
        if not self.offset:
            return np.ascontiguousarray(x, dtype=np.uint8)
        if x.dtype.kind in "iu" and x.dtype.itemsize == 1:
            return np.add(x.view(np.uint8), self._shift, dtype=np.uint8)  # exact: the true value is in [0, 255]
        return np.subtract(x, x.dtype.type(self.offset)).astype(np.uint8)

    def raw(self, codes: np.ndarray) -> np.ndarray:
        """int32 (rows, outputs): codes @ w, without the offset's correction."""
        if len(codes) == 0:
            return np.zeros((0, self.outputs), dtype=np.int32)
        return self.session.run(None, {"x": codes})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """int32 (rows, outputs): x @ w for x (rows, terms) of integers in the fitted range, in any dtype."""
        y = self.raw(self.codes(x))
        if self.offset:
            y += self.correction
        return y


@dataclass
class _Product:
    """x contracted with integer weights, exactly: in the integer GEMM where it fits (`IntegerGemm`), else in
    float32 while every partial sum stays below 2**24, float64 below 2**53, int64 beyond. `static32`: float32
    decided once from the input's static range; otherwise the bound is taken from max |x| on each call."""

    weights: np.ndarray  # int64
    contract: Callable[[np.ndarray, np.ndarray], np.ndarray]
    abs_sum: int  # the largest sum of |w| one output meets: a partial sum is at most abs_sum * max |x|
    known: Range  # static range of x
    threads: int | None = None

    def __post_init__(self):
        self.w32 = self.weights.astype(np.float32)
        self.static32 = self.known is not None and _bound(self.known) * self.abs_sum < FLOAT32_EXACT
        matmul = self.contract is np.matmul
        self.gemm = IntegerGemm.fitting(self.weights, self.known, self.threads) if matmul else None
        # a depthwise product summed position by position in int16 or int32 where every partial sum fits
        self.narrow = None
        if not matmul and self.known is not None:
            bound = _bound(self.known) * max(self.abs_sum, 1)
            self.narrow = next((np.dtype(t) for t in (np.int16, np.int32) if bound <= np.iinfo(t).max), None)
        self.narrow_weights = None if self.narrow is None else self.weights.astype(self.narrow)
        # a small batch of a small layer in float32 BLAS (exact: static32), not the integer GEMM's session call
        self.small = matmul and self.static32 and self.weights.size <= _SMALL_WEIGHTS

    @property
    def static(self) -> bool:
        """The path is decided for every input: nothing to measure per call."""
        return self.gemm is not None or self.static32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.small and len(x) <= _SMALL_ROWS:
            return np.matmul(x.astype(np.float32, copy=False), self.w32)
        if self.gemm is not None:
            return self.gemm(x)
        if not self.static32:
            bound = _abs_max(x) * self.abs_sum
            if bound >= _FLOAT64_EXACT:
                return self.contract(as_int64(x), self.weights)
            if bound >= FLOAT32_EXACT:
                return self.contract(x.astype(np.float64), self.weights.astype(np.float64)).astype(np.int64)
        return self.contract(x.astype(np.float32, copy=False), self.w32)


def _bound(known: tuple[int, int]) -> int:
    return max(-known[0], known[1])


def _abs_max(values: np.ndarray) -> int:
    return max(-int(values.min()), int(values.max())) if values.size else 0


def _span(weights: np.ndarray, known: Range) -> Range:
    """The range of sum(w * x) over axis 0 for every x in `known`: per output, each term's extremes added up."""
    if known is None:
        return None
    if weights.size == 0:
        return 0, 0
    low, high = weights * known[0], weights * known[1]
    return int(np.minimum(low, high).sum(0).min()), int(np.maximum(low, high).sum(0).max())


@dataclass
class Thresholds:
    """Per-channel (C, T) or shared (1, T) thresholds, ready to count against values in `known`.

    For integers, v >= t exactly when v >= ceil(t); thresholds outside [lo, hi + 1] of the values
    are clipped there, which changes no count. Kept in int64 and, for float32 values (below 2**24
    in magnitude), in float32 clipped to +-2**24 so that every one is exact; integer values are
    compared in their own dtype wherever every threshold is exact there. Many steps over a known,
    small range are counted by one table look-up per value instead (`lookup`).
    """

    int64: np.ndarray
    float32: np.ndarray
    known: Range = None  # the values' static range: thresholds clipped to it, a lookup table over it
    tables: dict = field(default_factory=dict, repr=False)  # values' dtype -> thresholds to compare them with

    @classmethod
    def prepare(
        cls, raw: np.ndarray, channels: int, known: Range, what: str, shift: np.ndarray | None = None
    ) -> Thresholds:
        """`shift` (per channel): thresholds for values v - shift, counting v >= t as v - shift >= ceil(t) - shift;
        `known` is then the range of the shifted values."""
        thresholds = np.asarray(raw, dtype=np.float64)
        if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels):
            raise SimulationError(
                f"{what}: thresholds of shape {thresholds.shape} do not fit {channels} channels.",
                fix="thresholds must be (channels, steps) or (1, steps)",
            )
        if np.any(np.isnan(thresholds)):
            raise SimulationError(
                f"{what}: thresholds hold NaN.", fix="check the streamlined model for invalid thresholds"
            )
        ceiled = np.ceil(np.clip(thresholds, -_THRESHOLD_LIMIT, _THRESHOLD_LIMIT))
        if shift is not None:  # exact below 2**53; beyond, the threshold lies far outside any int32 range anyway
            ceiled = np.broadcast_to(ceiled, (channels, ceiled.shape[1])) - shift.astype(np.float64)[:, None]
        if known is not None:
            ceiled = np.clip(ceiled, known[0], known[1] + 1)
        float32 = np.clip(ceiled, -FLOAT32_EXACT, FLOAT32_EXACT).astype(np.float32)
        return cls(ceiled.astype(np.int64), float32, known)

    @property
    def steps(self) -> int:
        return self.int64.shape[1]

    def table(self, dtype: np.dtype) -> np.ndarray:
        """The thresholds to compare values of `dtype` with, one step a row, tiled (`_count_by_compare`): in the
        values' dtype where every threshold is exact there, else float32 or int64 (values then go as int64)."""
        if dtype not in self.tables:
            if dtype.kind in "iu" and _fits(self.int64, dtype):
                table = self.int64.astype(dtype)  # every threshold is a value of the dtype
            elif dtype == np.float32 or (dtype.kind in "iu" and dtype.itemsize <= 2):
                table = self.float32  # values below 2**24 in magnitude, thresholds clipped to +-2**24
            else:
                table = self.int64
            self.tables[dtype] = _tiled(table)
        return self.tables[dtype]

    def count(self, values: np.ndarray) -> np.ndarray:
        """Per element, how many of its channel's thresholds are <= the value (channels last), in uint8 or int64."""
        if values.size <= _SMALL_VALUES:  # a small batch, on a path taken before: no checks, nothing looked up
            small = self.tables.get(("small", values.dtype))
            if small is not None and small.shape[1] in (1, values.shape[-1]):
                return _count_at_once(values, small)
        if self.int64.shape[0] not in (1, values.shape[-1]):
            raise SimulationError(
                f"thresholds of shape {self.int64.shape} do not fit {values.shape[-1]} channels.",
                fix="thresholds must be (channels, steps) or (1, steps)",
            )
        if values.size == 0 or self.steps == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        lookup = self.lookup()
        if lookup is not None:
            table, offsets = lookup
            index = np.add(as_int64(values) if values.dtype.kind == "f" else values, offsets, dtype=np.intp)
            return table[index]
        if self.steps > COMPARE_STEPS:
            return _count_by_search(as_int64(values), self.int64)
        table = self.table(values.dtype)
        if values.size <= _SMALL_VALUES:  # the same compares against the same table, all steps in one call
            small = self.tables[("small", values.dtype)] = np.ascontiguousarray(table[:, : self.int64.shape[0]])
            return _count_at_once(values, small)
        return _count_by_compare(as_int64(values) if table.dtype == np.int64 else values, table)

    def lookup(self) -> tuple[np.ndarray, np.ndarray] | None:
        """For many steps over a known, small range: each channel's count of every value lo..hi, flat, and the
        offset per channel that turns a value into its entry (None: compare or search instead)."""
        if "lookup" not in self.tables:
            self.tables["lookup"] = None
            if self.known is not None and self.steps > LOOKUP_STEPS:
                low, high = self.known
                channels, width = self.int64.shape[0], high - low + 1
                if channels * width <= _LOOKUP_ENTRIES:
                    grid = np.arange(low, high + 1, dtype=np.int64)
                    dtype = narrowest(0, self.steps)
                    table = np.empty((channels, width), dtype=dtype)
                    for channel, row in enumerate(np.sort(self.int64, axis=1)):
                        table[channel] = np.searchsorted(row, grid, side="right")
                    offsets = np.arange(channels, dtype=np.int64) * width - low
                    self.tables["lookup"] = table.reshape(-1), offsets
        return self.tables["lookup"]


def _fits(values: np.ndarray, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return values.size == 0 or (info.min <= values.min() and values.max() <= info.max)


# Values per row of one threshold compare: rows of many channels' repeats run as one loop, and the tiled
# thresholds stay in the L1 cache.
_COMPARE_WIDTH = 1 << 12


def _tiled(table: np.ndarray) -> np.ndarray:
    """(C, T) thresholds -> (T, R * C): each step's thresholds of all channels, repeated R times."""
    return np.ascontiguousarray(np.tile(table.T, (1, max(1, _COMPARE_WIDTH // table.shape[0]))))


def _count_by_compare(values: np.ndarray, tiled: np.ndarray) -> np.ndarray:
    """sum over the steps of (v >= t): one vectorised compare per step, no sort (at most COMPARE_STEPS of them).

    Channels are last, so the flat values go through the channels again and again: taken in rows as wide as
    the tiled thresholds (a whole number of the channels' repeats), every row meets the same thresholds.
    """
    flat = values.reshape(-1)
    count = np.empty(flat.size, dtype=np.uint8)
    hit = np.empty(flat.size, dtype=bool)
    width = tiled.shape[1]
    whole = flat.size - flat.size % width
    for start, stop in ((0, whole), (whole, flat.size)):
        if stop == start:
            continue
        steps = tiled[:, : min(width, stop - start)]
        shape = (-1, steps.shape[1])
        v, c, h = (array[start:stop].reshape(shape) for array in (flat, count, hit))
        np.greater_equal(v, steps[0], out=c.view(bool))  # 0 or 1: a bool's byte
        for step in steps[1:]:
            np.greater_equal(v, step, out=h)
            np.add(c, h, out=c)
    return count.reshape(values.shape)


def _count_at_once(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`_count_by_compare` for a few values: every step's compare in one broadcast, (steps, channels) thresholds."""
    if table.dtype == np.int64:
        values = as_int64(values)
    hits = values.reshape(-1, 1, values.shape[-1]) >= table
    return np.add.reduce(hits, axis=1, dtype=np.uint8).reshape(values.shape)


def _count_by_search(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """One searchsorted over all channels: each channel's sorted thresholds and values moved into their own window."""
    channels, steps = values.shape[-1], table.shape[1]
    table = np.broadcast_to(table, (channels, steps))
    low, high = int(values.min()), int(values.max())
    clipped = np.sort(np.clip(table, low, high + 1) - low, axis=1)
    window = high - low + 2
    offsets = np.arange(channels, dtype=np.int64) * window
    keys = (clipped + offsets[:, None]).ravel()
    return np.searchsorted(keys, values - low + offsets, side="right") - np.arange(channels, dtype=np.int64) * steps


def count_thresholds(acc: np.ndarray, thresholds: np.ndarray, what: str) -> np.ndarray:
    """Per element, how many of its channel's thresholds are <= the value (channels last), as int64.

    Thresholds are (C, T) per channel or (1, T) shared.
    """
    prepared = Thresholds.prepare(thresholds, acc.shape[-1], None, what)
    return prepared.count(np.asarray(acc)).astype(np.int64)


@dataclass
class _Activation:
    """y = scale * (number of thresholds crossed) + bias."""

    thresholds: Thresholds
    scale: int
    bias: int

    @property
    def out_range(self) -> tuple[int, int]:
        return self.bias, self.bias + self.scale * self.thresholds.steps

    def __post_init__(self):
        self.dtype = narrowest(min(0, self.bias), max(self.out_range[1], self.scale * self.thresholds.steps))

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        count = self.thresholds.count(acc)
        dtype = self.dtype
        if count.dtype == dtype and self.scale == 1 and self.bias == 0:
            return count
        out = count.astype(dtype)
        if self.scale != 1:
            out *= self.scale
        if self.bias:
            out += self.bias
        return out


@lru_cache(maxsize=1024)
def narrowest(low: int, high: int) -> np.dtype:
    """The smallest integer type holding [low, high]: small activations are cheap to window, pad and pool."""
    for dtype in (np.uint8, np.int8, np.int16, np.int32):
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _activation(
    node: HwNode, index: int, channels: int, known: Range, bipolar_bias: int, shift: np.ndarray | None = None
) -> _Activation:
    """The thresholds of input `index`; a BIPOLAR output is 2 * count + bipolar_bias, else count + ActVal.
    `shift`: for accumulators less it, per channel (an integer GEMM's uncorrected sums)."""
    from qonnx.core.datatype import DataType

    thresholds = Thresholds.prepare(node.initializer(index), channels, known, node.label, shift)
    if node.dtype("outputDataType") == DataType["BIPOLAR"]:
        return _Activation(thresholds, 2, bipolar_bias)
    return _Activation(thresholds, 1, int(node.attr("ActVal")))


def _is_bipolar_pair(node: HwNode) -> bool:
    from qonnx.core.datatype import DataType

    return node.dtype("inputDataType") == DataType["BIPOLAR"] and node.dtype("weightDataType") == DataType["BIPOLAR"]


@dataclass
class _VectorUnit:
    """An MVAU or VVAU prepared: its exact product, its bipolar correction, its activation and their ranges."""

    product: _Product
    xnor: bool  # inputs and weights in {0, 1} stand for {-1, +1}
    halve_offset: int | None  # bipolar math: acc = (product + offset) // 2, the XNOR popcount
    acc_range: Range
    acc_check: object  # accDataType, or None where acc_range proves the accumulator always fits
    activation: _Activation | None
    code_activation: _Activation | None = None  # the activation of the integer GEMM's uncorrected sums

    @property
    def out_range(self) -> Range:
        return self.activation.out_range if self.activation else self.acc_range

    @cached_property
    def blocked(self) -> bool:
        """A product decided statically straight into thresholds, nothing checked in between: done block by block
        of rows, so a narrow input's float32 copy and the accumulators stay small."""
        plain = not self.xnor and self.halve_offset is None and self.acc_check is None
        return plain and self.activation is not None and self.product.static and self.product.contract is np.matmul

    @cached_property
    def small_route(self) -> bool:
        """Whether a small batch may take `small`: a float32 product (exact) with nothing to correct or check."""
        plain = not self.xnor and self.halve_offset is None and self.acc_check is None
        return plain and self.product.small

    def small(self, x: np.ndarray) -> np.ndarray:
        """This layer on x (rows, terms), rows at most _SMALL_ROWS, where `small_route`: what `by_blocks` and
        `__call__` compute for so few rows, without their dispatch."""
        acc = np.matmul(x.astype(np.float32), self.product.w32)
        if self.activation is None:
            return acc
        table = self.__dict__.get("_small_counts")
        if table is not None and acc.size <= _SMALL_VALUES:  # the activation's own compares, without its calls
            return np.add.reduce(acc.reshape(-1, 1, acc.shape[-1]) >= table, axis=1, dtype=np.uint8).reshape(acc.shape)
        y = self.activation(acc)
        activation = self.activation
        if activation.scale == 1 and activation.bias == 0 and activation.dtype == np.uint8:  # y is the count
            table = activation.thresholds.tables.get(("small", acc.dtype))
            if table is not None and table.dtype != np.int64 and table.shape[1] == acc.shape[-1]:
                self._small_counts = table
        return y

    def __call__(self, node: HwNode, x: np.ndarray) -> np.ndarray:
        if self.blocked:
            return self.by_blocks(x).reshape(node.out_shape())
        if self.xnor:
            x = 2 * x.astype(np.float32 if self.product.static32 else np.int64) - 1
        acc = self.product(x)
        if self.halve_offset is not None:
            acc = (as_int64(acc) + self.halve_offset) // 2
        acc = acc.reshape(node.out_shape())
        if self.acc_check is not None:
            node.check_range(acc, self.acc_check, "accumulator")
        return self.activation(acc) if self.activation else acc

    def by_blocks(self, x: np.ndarray | Windows) -> np.ndarray:
        """x (rows, terms), or the windows of samples, each giving OH * OW rows of patches (copied per block)."""
        windows = isinstance(x, Windows)
        if not windows and self.product.small and len(x) <= _SMALL_ROWS:  # float32 sums, exact (static32)
            return self.activation(np.matmul(x.astype(np.float32), self.product.w32))
        terms, outputs = self.product.weights.shape
        rows = max(1, _BLOCK // max(1, terms))
        if self.product.gemm is not None:
            rows = max(1, _ACC_BLOCK // max(1, outputs))
            if windows:  # the patches of a block are copied for the GEMM
                rows = max(1, min(rows, _PATCH_BLOCK // max(1, terms)))
        per_item = int(np.prod(x.view.shape[1:3])) if windows else 1
        items = max(1, rows // max(1, per_item))  # samples (of windows) or rows per block

        gemm = self.product.gemm
        small = self.product.small and min(len(x), items) * per_item <= _SMALL_ROWS

        def block(start: int) -> np.ndarray:
            part = x.view[start : start + items] if windows else x[start : start + items]
            if small:  # float32 sums, exact (static32), thresholds unmoved
                return self.activation(np.matmul(part.reshape(-1, terms).astype(np.float32), self.product.w32))
            if gemm is not None:  # the window copy and the shift to uint8 codes in one pass, thresholds moved
                return self.code_activation(gemm.raw(gemm.codes(part).reshape(-1, terms)))
            return self.activation(self.product(part.reshape(-1, terms)))

        if len(x) <= items:
            return block(0)
        out = None
        for start in range(0, len(x), items):
            y = block(start)
            if out is None:
                out = np.empty((len(x) * per_item, y.shape[1]), dtype=y.dtype)
            out[start * per_item : start * per_item + len(y)] = y
        return out


def prepared_mvau(node: HwNode) -> _VectorUnit | None:
    """The MVAU a run has prepared for this node, if any."""
    return node.memo.get(_prepare_mvau)


def small_batch(rows: int) -> bool:
    """Whether so many rows go the small-batch way (float32 products of small layers, counts at once)."""
    return rows <= _SMALL_ROWS


def _depthwise_sum(windows: np.ndarray, weights: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(..., kH, kW, C) windows (a strided view or not) with (kH * kW, C) weights -> (..., C) in `dtype`, which
    holds every partial sum: one multiply and one add per kernel position, no copy of the windows."""
    k_h, k_w, channels = windows.shape[-3:]
    acc = np.empty(windows.shape[:-3] + (channels,), dtype=dtype)
    term = np.empty_like(acc)
    for position in range(k_h * k_w):
        x = windows[..., position // k_w, position % k_w, :]
        np.multiply(x, weights[position], out=term if position else acc, casting="unsafe")  # exact integers
        if position:
            np.add(acc, term, out=acc)
    return acc


def _vector_unit(node: HwNode, weights: np.ndarray, contract: Callable, terms: int, xnor: bool) -> _VectorUnit:
    """weights (terms, outputs) int64; `terms` products are summed per output."""
    known = node.input_range(0)
    if xnor:
        weights = 2 * weights - 1
        known = None if known is None else (2 * known[0] - 1, 2 * known[1] - 1)
    product = _Product(weights, contract, int(np.abs(weights).sum(0).max(initial=0)), known, node.threads)
    span = _span(weights, known)
    offset = terms if xnor or _is_bipolar_pair(node) else None
    acc_range = span if span is None or offset is None else ((span[0] + offset) // 2, (span[1] + offset) // 2)
    activation = code_activation = None
    if not node.attr("noActivation"):
        activation = _activation(node, 2, weights.shape[1], acc_range, bipolar_bias=-1)  # ActVal does not apply
        code_activation = activation
        gemm = product.gemm
        if gemm is not None and gemm.offset:
            codes = _span(weights, (0, known[1] - gemm.offset))
            code_activation = _activation(node, 2, weights.shape[1], codes, -1, shift=gemm.correction)
    acc_type = node.dtype("accDataType")
    acc_check = None if within(acc_range, acc_type) else acc_type
    return _VectorUnit(product, xnor, offset, acc_range, acc_check, activation, code_activation)


def _prepare_mvau(node: HwNode) -> _VectorUnit:
    mw, mh = int(node.attr("MW")), int(node.attr("MH"))
    weights = node.integer_initializer(1)
    if weights.shape != (mw, mh):
        raise SimulationError(
            f"Node {node.label}: weights of shape {weights.shape}, expected (MW, MH) = ({mw}, {mh}).",
            where=f"dataflow node {node.name}",
            fix="the graph is inconsistent; rebuild it",
        )
    return _vector_unit(node, weights, np.matmul, mw, bool(node.attr("binaryXnorMode")))


def _depthwise(patches: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.einsum("...kc,kc->...c", patches, weights)


def _prepare_vvau(node: HwNode) -> _VectorUnit:
    channels = int(node.attr("Channels"))
    k_h, k_w = (int(k) for k in node.attr("Kernel"))
    weights = node.integer_initializer(1).reshape(channels, k_h * k_w).T  # (C, 1, kH, kW) -> (kernel position, C)
    return _vector_unit(node, np.ascontiguousarray(weights), _depthwise, k_h * k_w, xnor=False)


def _prepare_thresholding(node: HwNode) -> _Activation:
    # a BIPOLAR output here is 2 * (count + ActVal) - 1
    act_val = int(node.attr("ActVal"))
    return _activation(node, 1, int(node.attr("NumChannels")), node.input_range(0), 2 * act_val - 1)


# ---------------------------------------------------------------------------
# one function per op (op_type without its _hls / _rtl suffix)


def mvau(node: HwNode) -> list[np.ndarray]:
    unit = node.prepared(_prepare_mvau)
    x = node.inputs[0]
    if isinstance(x, Windows) and unit.blocked:
        return [unit.by_blocks(x).reshape(node.out_shape())]
    return [unit(node, dense(x).reshape(-1, unit.product.weights.shape[0]))]


def vvau(node: HwNode) -> list[np.ndarray]:
    unit = node.prepared(_prepare_vvau)
    x, product = node.inputs[0], unit.product
    if product.narrow is None or unit.halve_offset is not None or unit.acc_check is not None:
        x = dense(x)  # the input is im2col order (kernel position, channel); each channel meets its own kernel
        return [unit(node, x.reshape(*x.shape[:-1], *product.weights.shape))]
    # the windows (N, OH, OW, kH, kW, C) as they are, a block of samples at a time: sums and counts in cache
    k_h, k_w = (int(k) for k in node.attr("Kernel"))
    windows = x.view if isinstance(x, Windows) else x.reshape(*x.shape[:-1], k_h, k_w, product.weights.shape[1])
    per_sample = int(np.prod(windows.shape[1:-3])) * product.weights.shape[1]
    items = max(1, _ACC_BLOCK // max(1, per_sample))
    out = None
    for start in range(0, max(1, len(windows)), items):
        acc = _depthwise_sum(windows[start : start + items], product.narrow_weights, product.narrow)
        y = unit.activation(acc) if unit.activation else acc
        if len(windows) <= items:
            return [y.reshape(node.out_shape())]
        if out is None:
            out = np.empty((len(windows), *y.shape[1:]), dtype=y.dtype)
        out[start : start + len(y)] = y
    return [out.reshape(node.out_shape())]


def thresholding(node: HwNode) -> list[np.ndarray]:
    return [node.prepared(_prepare_thresholding)(node.inputs[0])]


def _sliding_windows(x: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kH, kW, C), without padding: a strided view, copied once by the reshape after."""
    (k_h, k_w), (s_h, s_w), (d_h, d_w) = kernel, stride, dilation
    span = (d_h * (k_h - 1) + 1, d_w * (k_w - 1) + 1)
    windows = sliding_window_view(x, span, axis=(1, 2))  # (N, H - span + 1, W - span + 1, C, span_h, span_w)
    return windows[:, ::s_h, ::s_w, :, ::d_h, ::d_w].transpose(0, 1, 2, 4, 5, 3)


def conv_input_generator(node: HwNode) -> list[np.ndarray]:
    ifm_h, ifm_w = (int(v) for v in node.attr("IFMDim"))
    channels = int(node.attr("IFMChannels"))
    x = node.inputs[0].reshape(-1, ifm_h, ifm_w, channels)
    windows = _sliding_windows(x, node.attr("ConvKernelDim"), node.attr("Stride"), node.attr("Dilation"))
    # FINN's order inside a patch: kernel row, kernel column, channel (the MVAU weight rows follow it)
    return [Windows(windows, node.out_shape())]


def fm_padding(node: HwNode) -> list[np.ndarray]:
    top, left, bottom, right = (int(p) for p in node.attr("Padding"))
    x = node.inputs[0]
    n, h, w, c = x.shape
    padded = np.zeros((n, top + h + bottom, left + w + right, c), dtype=x.dtype)
    padded[:, top : top + h, left : left + w] = x
    return [padded.reshape(node.out_shape())]


def pool(node: HwNode) -> list[np.ndarray]:
    function = node.attr("Function")
    k_h, k_w = (int(k) for k in node.attr("KernelSize"))
    channels = int(node.attr("Channels"))
    x = node.inputs[0]
    windows = x.view if isinstance(x, Windows) else x.reshape(*x.shape[:-1], k_h, k_w, channels)
    if function == "MaxPool":
        y = _over_window(windows, np.maximum, windows.dtype)
    elif function == "AccPool":
        y = _over_window(windows, np.add, np.int64)
    elif function == "AvgPool":
        # finn-hlslib's AvgPoolFunction: the integer sum divided by the window size, C++ division (towards zero)
        total = _over_window(windows, np.add, np.int64)
        y = np.sign(total) * (np.abs(total) // (k_h * k_w))
    elif function == "QuantAvgPool":
        # the sum shifted right by Size bits (the shift the HLS kernel is generated with)
        y = _over_window(windows, np.add, np.int64) >> int(node.attr("Size"))
    else:
        raise SimulationError(
            f"Node {node.label}: pool function '{function}' is not simulated.",
            where=f"dataflow node {node.name}",
            fix="use MaxPool, AvgPool, AccPool or QuantAvgPool",
        )
    return [y.reshape(node.out_shape())]


def _over_window(windows: np.ndarray, combine: np.ufunc, dtype) -> np.ndarray:
    """(..., kH, kW, C) -> (..., C): the window positions combined one by one (a long loop each, not a reduce)."""
    k_h, k_w = windows.shape[-3:-1]
    out = windows[..., 0, 0, :].astype(dtype)
    for i in range(k_h):
        for j in range(k_w):
            if i or j:
                combine(out, windows[..., i, j, :], out=out)
    return out


def global_acc_pool(node: HwNode) -> list[np.ndarray]:
    x = as_int64(node.inputs[0])
    return [x.sum(axis=tuple(range(1, x.ndim - 1))).reshape(node.out_shape())]


def label_select(node: HwNode) -> list[np.ndarray]:
    x = as_int64(node.inputs[0])
    k = int(node.attr("K"))
    # indices of the K largest values, largest first; equal values: lower index first (ONNX TopK)
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return [order.reshape(node.out_shape())]


def identity(node: HwNode) -> list[np.ndarray]:
    return [node.inputs[0].reshape(node.out_shape())]


def duplicate(node: HwNode) -> list[np.ndarray]:
    return [node.inputs[0].reshape(node.out_shape(i)) for i in range(len(node.onnx.output))]


ELEMENTWISE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "ElementwiseAdd": np.add,
    "ElementwiseSub": np.subtract,
    "ElementwiseMul": np.multiply,
    "ElementwiseAbsDiff": lambda a, b: np.abs(a - b),
    "ElementwiseMax": np.maximum,
    "ElementwiseAnd": np.logical_and,
    "ElementwiseOr": np.logical_or,
    "ElementwiseXor": np.logical_xor,
    "ElementwiseEqual": np.equal,
    "ElementwiseLess": np.less,
    "ElementwiseLessOrEqual": np.less_equal,
    "ElementwiseGreater": np.greater,
    "ElementwiseGreaterOrEqual": np.greater_equal,
    "ElementwiseBitwiseAnd": np.bitwise_and,
    "ElementwiseBitwiseOr": np.bitwise_or,
    "ElementwiseBitwiseXor": np.bitwise_xor,
}


# Elementwise ops whose result range follows from their operands' (`_elementwise_span`): computed in the narrowest
# integer type holding operands, result and every difference, rather than int64.
_ARITHMETIC = {"ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseAbsDiff", "ElementwiseMax"}
_BOOLEAN = {"ElementwiseAnd", "ElementwiseOr", "ElementwiseXor", "ElementwiseEqual", "ElementwiseLess"}
_BOOLEAN |= {"ElementwiseLessOrEqual", "ElementwiseGreater", "ElementwiseGreaterOrEqual"}


def elementwise(node: HwNode) -> list[np.ndarray]:
    op = base_op_type(node.onnx.op_type)
    function = ELEMENTWISE[op]
    span = node.prepared(_elementwise_span)
    dtype = np.dtype(np.int64) if span is None or op not in _ARITHMETIC else narrowest(*span[1])
    lhs, rhs = (_operand_as_declared(node, index, dtype) for index in (0, 1))
    return [np.asarray(function(lhs, rhs)).astype(dtype, copy=False).reshape(node.out_shape())]


def _operand_range(node: HwNode, index: int) -> Range:
    """A stream operand's static range, or a constant's (None unless it holds integers)."""
    if node.onnx.input[index] != "" and node.model.get_initializer(node.onnx.input[index]) is None:
        return node.input_range(index)
    value = np.asarray(node.initializer(index), dtype=np.float64)
    if value.size == 0 or not np.all(np.isfinite(value)) or np.any(np.rint(value) != value):
        return None
    return int(value.min()), int(value.max())


def _elementwise_span(node: HwNode) -> tuple[Range, tuple[int, int]] | None:
    """The output's range and a range holding operands, output and intermediate differences; None if unknown."""
    op = base_op_type(node.onnx.op_type)
    if op in _BOOLEAN:
        return (0, 1), (0, 1)
    a, b = _operand_range(node, 0), _operand_range(node, 1)
    if a is None or b is None or op not in _ARITHMETIC:
        return None
    difference = (a[0] - b[1], a[1] - b[0])
    if op == "ElementwiseAdd":
        out = (a[0] + b[0], a[1] + b[1])
    elif op == "ElementwiseSub":
        out = difference
    elif op == "ElementwiseMul":
        corners = [x * y for x in a for y in b]
        out = (min(corners), max(corners))
    elif op == "ElementwiseMax":
        out = (max(a[0], b[0]), max(a[1], b[1]))
    else:  # AbsDiff: |a - b|, through a - b
        out = (0 if difference[0] <= 0 <= difference[1] else min(map(abs, difference)), max(map(abs, difference)))
    values = (*a, *b, *out, *difference)
    return out, (min(values), max(values))


def elementwise_range(node: HwNode) -> list[Range]:
    span = node.prepared(_elementwise_span)
    return [None if span is None else span[0]]


def _operand_as_declared(node: HwNode, index: int, dtype: np.dtype) -> np.ndarray:
    """A stream operand in the shape its attribute (lhs_shape / rhs_shape) gives, batch first, as FINN reads it;
    a constant operand as it is (it broadcasts); in `dtype`, which holds its values."""
    value = node.operand(index).astype(dtype, copy=False)
    if index < len(node.inputs) and node.inputs[index] is not None:
        declared = node.attr(("lhs_shape", "rhs_shape")[index])
        value = value.reshape(len(value), *(int(d) for d in declared[1:]))
    return value


# ---------------------------------------------------------------------------
# static output ranges (each op's `ops.HwOp.ranges`): which layers may use float32, and which range checks can
# never fail. Preparing them also prepares the layer (weights checked, thresholds clipped, float32 decided).


def mvau_range(node: HwNode) -> list[Range]:
    return [node.prepared(_prepare_mvau).out_range]


def vvau_range(node: HwNode) -> list[Range]:
    return [node.prepared(_prepare_vvau).out_range]


def thresholding_range(node: HwNode) -> list[Range]:
    return [node.prepared(_prepare_thresholding).out_range]


def same_range(node: HwNode) -> list[Range]:
    return [node.input_range(0)] * len(node.onnx.output)


def padded_range(node: HwNode) -> list[Range]:
    known = node.input_range(0)
    return [None if known is None else (min(known[0], 0), max(known[1], 0))]


def pool_range(node: HwNode) -> list[Range]:
    known, function = node.input_range(0), node.attr("Function")
    size = int(np.prod([int(k) for k in node.attr("KernelSize")]))
    if known is None or function not in ("MaxPool", "AvgPool", "AccPool", "QuantAvgPool"):
        return [None]
    if function in ("MaxPool", "AvgPool"):  # a window's maximum, or its mean rounded towards zero
        return [known]
    shift = int(node.attr("Size")) if function == "QuantAvgPool" else 0
    return [((size * known[0]) >> shift, (size * known[1]) >> shift)]


def global_pool_range(node: HwNode) -> list[Range]:
    known = node.input_range(0)
    positions = int(np.prod(node.model.get_tensor_shape(node.onnx.input[0])[1:-1]))
    return [None if known is None else (positions * known[0], positions * known[1])]


def label_select_range(node: HwNode) -> list[Range]:
    return [(0, int(node.attr("Labels")) - 1)]
