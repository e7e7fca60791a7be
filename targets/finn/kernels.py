"""The numpy kernel of every FINN HW layer: integer, bit-exact, vectorised over a batch.

Each kernel computes one node from its ONNX attributes and initializers in
int64. Tensors are the logical (unfolded) tensors FINN's python execution of
the abstract HW layers produces: NHWC, batch first, im2col patches ordered
(kernel row, kernel column, channel). Folding attributes (PE, SIMD) change only
the order of words on the streams, never the values, so a node is computed the
same way before and after SpecializeLayers and SetFolding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sdk.errors import SimulationError

# float64 matrix products are exact while every partial sum stays below 2**53.
_FLOAT64_EXACT = 2.0**53
# Thresholds beyond this magnitude are clipped first: they can never be crossed by an int64 accumulator anyway.
_THRESHOLD_LIMIT = 2.0**62


def base_op_type(op_type: str) -> str:
    """MVAU_hls, MVAU_rtl -> MVAU: the math does not depend on the implementation style."""
    return re.sub(r"_(hls|rtl)$", "", op_type)


# ---------------------------------------------------------------------------
# the per-node context and small helpers


@dataclass
class HwNode:
    """One node being simulated: its ONNX node, FINN custom-op instance, graph and inputs."""

    onnx: object
    op: object
    model: object
    inputs: list[np.ndarray | None]
    overflows: list[str]

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

    def batch(self) -> int:
        return len(next(x for x in self.inputs if x is not None))

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        """The output tensor's shape from the graph, with the batch of this simulation."""
        shape = self.model.get_tensor_shape(self.onnx.output[index])
        return (self.batch(), *shape[1:])

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


def range_violation(values: np.ndarray, datatype) -> str | None:
    from qonnx.core.datatype import DataType

    if values.size == 0:
        return None
    per_sample = values.reshape(len(values), -1)
    if datatype == DataType["BIPOLAR"]:
        bad = np.any(np.abs(per_sample) != 1, axis=1)
    elif datatype.is_integer():
        bad = np.any((per_sample < datatype.min()) | (per_sample > datatype.max()), axis=1)
    else:
        return f"has datatype {datatype.name}, which is not an integer type"
    if not np.any(bad):
        return None
    low, high = int(values.min()), int(values.max())
    return (
        f"range [{low}, {high}] exceeds {datatype.name} [{int(datatype.min())}, {int(datatype.max())}] "
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


def _matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact int64 product; through float64 BLAS when every partial sum is exactly representable."""
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0)) * x.shape[-1]
    if bound < _FLOAT64_EXACT:
        return np.matmul(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    return np.matmul(x, w)


def count_thresholds(acc: np.ndarray, thresholds: np.ndarray, what: str) -> np.ndarray:
    """Per element, how many of its channel's thresholds are <= the value (channels last).

    Thresholds are (C, T) per channel or (1, T) shared. For integer values, v >= t
    exactly when v >= ceil(t); thresholds outside [min, max + 1] of the batch are
    clipped there, which changes no count. One searchsorted over all channels:
    each channel's sorted thresholds and values are moved into their own disjoint window.
    """
    channels = acc.shape[-1]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels):
        raise SimulationError(
            f"{what}: thresholds of shape {thresholds.shape} do not fit {channels} channels.",
            fix="thresholds must be (channels, steps) or (1, steps)",
        )
    if np.any(np.isnan(thresholds)):
        raise SimulationError(f"{what}: thresholds hold NaN.", fix="check the streamlined model for invalid thresholds")
    steps = thresholds.shape[1]
    if acc.size == 0 or steps == 0:
        return np.zeros(acc.shape, dtype=np.int64)
    thresholds = np.broadcast_to(np.ceil(np.clip(thresholds, -_THRESHOLD_LIMIT, _THRESHOLD_LIMIT)), (channels, steps))
    low, high = int(acc.min()), int(acc.max())
    clipped = np.sort(np.clip(thresholds, low, high + 1).astype(np.int64) - low, axis=1)
    window = high - low + 2
    offsets = np.arange(channels, dtype=np.int64) * window
    keys = (clipped + offsets[:, None]).ravel()
    return np.searchsorted(keys, acc - low + offsets, side="right") - np.arange(channels, dtype=np.int64) * steps


def _activate(node: HwNode, acc: np.ndarray, thresholds_index: int) -> np.ndarray:
    """MVAU / VVAU activation: the accumulator itself, or the count of crossed thresholds."""
    from qonnx.core.datatype import DataType

    if node.attr("noActivation"):
        return acc
    count = count_thresholds(acc, node.initializer(thresholds_index), node.label)
    if node.dtype("outputDataType") == DataType["BIPOLAR"]:
        # a BIPOLAR output is the bit count in {0, 1} reinterpreted as {-1, +1}; ActVal does not apply
        return 2 * count - 1
    return count + int(node.attr("ActVal"))


def _is_bipolar_pair(node: HwNode) -> bool:
    from qonnx.core.datatype import DataType

    return node.dtype("inputDataType") == DataType["BIPOLAR"] and node.dtype("weightDataType") == DataType["BIPOLAR"]


# ---------------------------------------------------------------------------
# one function per op (op_type without its _hls / _rtl suffix)


def mvau(node: HwNode) -> list[np.ndarray]:
    x = node.inputs[0]
    mw, mh = int(node.attr("MW")), int(node.attr("MH"))
    weights = node.integer_initializer(1)
    if weights.shape != (mw, mh):
        raise SimulationError(
            f"Node {node.label}: weights of shape {weights.shape}, expected (MW, MH) = ({mw}, {mh}).",
            where=f"dataflow node {node.name}",
            fix="the graph is inconsistent; rebuild it",
        )
    rows = x.reshape(-1, mw)
    if node.attr("binaryXnorMode"):
        # inputs and weights in {0, 1} stand for {-1, +1}; the accumulator is the XNOR popcount
        acc = (_matmul(2 * rows - 1, 2 * weights - 1) + mw) // 2
    elif _is_bipolar_pair(node):
        acc = (_matmul(rows, weights) + mw) // 2
    else:
        acc = _matmul(rows, weights)
    acc = acc.reshape(node.out_shape())
    node.check_range(acc, node.dtype("accDataType"), "accumulator")
    return [_activate(node, acc, 2)]


def vvau(node: HwNode) -> list[np.ndarray]:
    x = node.inputs[0]
    channels = int(node.attr("Channels"))
    k_h, k_w = (int(k) for k in node.attr("Kernel"))
    weights = node.integer_initializer(1).reshape(channels, k_h * k_w)  # (C, 1, kH, kW)
    # the input is im2col order (kernel position, channel); each channel meets its own kernel
    patches = x.reshape(*x.shape[:-1], k_h * k_w, channels)
    acc = np.einsum("...kc,kc->...c", patches, weights.T)
    if _is_bipolar_pair(node):
        acc = (acc + k_h * k_w) // 2
    acc = acc.reshape(node.out_shape())
    node.check_range(acc, node.dtype("accDataType"), "accumulator")
    return [_activate(node, acc, 2)]


def thresholding(node: HwNode) -> list[np.ndarray]:
    from qonnx.core.datatype import DataType

    y = count_thresholds(node.inputs[0], node.initializer(1), node.label) + int(node.attr("ActVal"))
    if node.dtype("outputDataType") == DataType["BIPOLAR"]:
        y = 2 * y - 1
    return [y]


def _sliding_windows(x: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kH, kW, C), without padding."""
    n, h, w, c = x.shape
    (k_h, k_w), (s_h, s_w), (d_h, d_w) = kernel, stride, dilation
    out_h, out_w = (h - d_h * (k_h - 1) - 1) // s_h + 1, (w - d_w * (k_w - 1) - 1) // s_w + 1
    rows = (np.arange(out_h) * s_h)[:, None] + np.arange(k_h) * d_h  # (OH, kH)
    cols = (np.arange(out_w) * s_w)[:, None] + np.arange(k_w) * d_w  # (OW, kW)
    return x[:, rows[:, None, :, None], cols[None, :, None, :], :]


def conv_input_generator(node: HwNode) -> list[np.ndarray]:
    ifm_h, ifm_w = (int(v) for v in node.attr("IFMDim"))
    channels = int(node.attr("IFMChannels"))
    x = node.inputs[0].reshape(-1, ifm_h, ifm_w, channels)
    windows = _sliding_windows(x, node.attr("ConvKernelDim"), node.attr("Stride"), node.attr("Dilation"))
    # FINN's order inside a patch: kernel row, kernel column, channel (the MVAU weight rows follow it)
    return [windows.reshape(node.out_shape())]


def fm_padding(node: HwNode) -> list[np.ndarray]:
    top, left, bottom, right = (int(p) for p in node.attr("Padding"))
    x = node.inputs[0]
    return [np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))).reshape(node.out_shape())]


def pool(node: HwNode) -> list[np.ndarray]:
    function = node.attr("Function")
    k_h, k_w = (int(k) for k in node.attr("KernelSize"))
    channels = int(node.attr("Channels"))
    x = node.inputs[0]
    windows = x.reshape(*x.shape[:-1], k_h * k_w, channels)
    if function == "MaxPool":
        y = windows.max(axis=-2)
    elif function == "AccPool":
        y = windows.sum(axis=-2)
    elif function == "AvgPool":
        # finn-hlslib's AvgPoolFunction: the integer sum divided by the window size, C++ division (towards zero)
        total = windows.sum(axis=-2)
        y = np.sign(total) * (np.abs(total) // (k_h * k_w))
    elif function == "QuantAvgPool":
        # the sum shifted right by Size bits (the shift the HLS kernel is generated with)
        y = windows.sum(axis=-2) >> int(node.attr("Size"))
    else:
        raise SimulationError(
            f"Node {node.label}: pool function '{function}' is not simulated.",
            where=f"dataflow node {node.name}",
            fix="use MaxPool, AvgPool, AccPool or QuantAvgPool",
        )
    return [y.reshape(node.out_shape())]


def global_acc_pool(node: HwNode) -> list[np.ndarray]:
    x = node.inputs[0]
    return [x.sum(axis=tuple(range(1, x.ndim - 1))).reshape(node.out_shape())]


def label_select(node: HwNode) -> list[np.ndarray]:
    x = node.inputs[0]
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


def elementwise(node: HwNode) -> list[np.ndarray]:
    function = ELEMENTWISE[base_op_type(node.onnx.op_type)]
    lhs, rhs = node.operand(0), node.operand(1)
    return [np.asarray(function(lhs, rhs)).astype(np.int64).reshape(node.out_shape())]
