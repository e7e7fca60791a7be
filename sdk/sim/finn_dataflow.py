"""Bit-exact simulation of a folded FINN dataflow graph, in numpy, without vendor tools.

FINN executes its specialised layers (MVAU_hls, Thresholding_rtl,
ConvolutionInputGenerator_rtl, ...) only through Vitis HLS (cppsim) or Vivado
(rtlsim). This module stands where those stand: every node is computed from
its ONNX attributes and initializers in int64, vectorised over a batch.

Tensors are the logical (unfolded) tensors FINN's python execution of the
abstract HW layers produces: NHWC, batch first, im2col patches ordered
(kernel row, kernel column, channel). Folding attributes (PE, SIMD) change
only the order of words on the streams, never the values, so a node is
simulated the same way before and after SpecializeLayers and SetFolding.

What the hardware would do differently is reported, not hidden: an
MVAU / VVAU accumulator outside the node's accDataType, or any node output
outside its output datatype, is listed in `DataflowResult.overflows`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sdk.errors import SDKError

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

HW_DOMAIN_PREFIX = "finn.custom_op.fpgadataflow"
# float64 matrix products are exact while every partial sum stays below 2**53.
_FLOAT64_EXACT = 2.0**53
# Thresholds beyond this magnitude are clipped first: they can never be crossed by an int64 accumulator anyway.
_THRESHOLD_LIMIT = 2.0**62


class SimulationError(SDKError):
    """A dataflow graph holds a node the simulator cannot compute, or the input does not fit the graph."""


@dataclass
class DataflowResult:
    """The output of a dataflow graph for a batch, and what the hardware would do differently."""

    output: np.ndarray                                              # int64, batch first
    intermediates: dict[str, np.ndarray] = field(default_factory=dict)  # node output tensor name -> int64 batch
    overflows: list[str] = field(default_factory=list)             # one message per node whose hardware result would differ


@dataclass
class ParentResult:
    """The whole deployed network: host layout ops, the accelerator, the float output scale."""

    output: np.ndarray          # float32, what the host returns
    integer_output: np.ndarray  # int64, what the accelerator returns
    dataflow: DataflowResult


# ---------------------------------------------------------------------------
# the per-node context and small helpers


@dataclass
class _Node:
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
            raise SimulationError(f"Node {self.label} has no constant for input {index} ('{name}').",
                                  where=f"dataflow node {self.name}",
                                  fix="the simulator needs weights and thresholds as initializers "
                                      "(mem_mode internal_embedded or internal_decoupled, not external or dynamic)")
        return np.asarray(value)

    def integer_initializer(self, index: int) -> np.ndarray:
        value = self.initializer(index)
        integer = np.rint(value)
        if not np.all(np.isfinite(value)) or np.any(integer != value):
            raise SimulationError(f"Node {self.label} holds non-integer values in '{self.onnx.input[index]}'.",
                                  where=f"dataflow node {self.name}",
                                  fix="only integer weights can be simulated bit-exactly; check the quantization of this layer")
        return integer.astype(np.int64)

    def check_range(self, values: np.ndarray, datatype, what: str) -> None:
        """Append an overflow message if `values` leave `datatype` on any sample."""
        message = _range_violation(values, datatype)
        if message:
            self.overflows.append(f"{self.label}: {what} {message}; the hardware result would differ here")


def _range_violation(values: np.ndarray, datatype) -> str | None:
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
    return (f"range [{low}, {high}] exceeds {datatype.name} [{int(datatype.min())}, {int(datatype.max())}] "
            f"on {int(bad.sum())} of {len(values)} samples")


def _to_int64(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    integer = np.rint(values)
    if not np.all(np.isfinite(values)) or np.any(integer != values):
        raise SimulationError(f"{what} holds non-integer values.", fix="the FINN accelerator takes integers: pass the quantized values (e.g. uint8 pixels)")
    return integer.astype(np.int64)


def _matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact int64 product; through float64 BLAS when every partial sum is exactly representable."""
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0)) * x.shape[-1]
    if bound < _FLOAT64_EXACT:
        return np.matmul(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    return np.matmul(x, w)


def _count_thresholds(acc: np.ndarray, thresholds: np.ndarray, what: str) -> np.ndarray:
    """Per element, how many of its channel's thresholds are <= the value (channels last).

    Thresholds are (C, T) per channel or (1, T) shared. For integer values, v >= t
    exactly when v >= ceil(t); thresholds outside [min, max + 1] of the batch are
    clipped there, which changes no count. One searchsorted over all channels:
    each channel's sorted thresholds and values are moved into their own disjoint window.
    """
    channels = acc.shape[-1]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels):
        raise SimulationError(f"{what}: thresholds of shape {thresholds.shape} do not fit {channels} channels.",
                              fix="thresholds must be (channels, steps) or (1, steps)")
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


def _activate(node: _Node, acc: np.ndarray, thresholds_index: int) -> np.ndarray:
    """MVAU / VVAU activation: the accumulator itself, or the count of crossed thresholds."""
    from qonnx.core.datatype import DataType

    if node.attr("noActivation"):
        return acc
    count = _count_thresholds(acc, node.initializer(thresholds_index), node.label)
    if node.dtype("outputDataType") == DataType["BIPOLAR"]:
        # a BIPOLAR output is the bit count in {0, 1} reinterpreted as {-1, +1}; ActVal does not apply
        return 2 * count - 1
    return count + int(node.attr("ActVal"))


def _is_bipolar_pair(node: _Node) -> bool:
    from qonnx.core.datatype import DataType

    return node.dtype("inputDataType") == DataType["BIPOLAR"] and node.dtype("weightDataType") == DataType["BIPOLAR"]


# ---------------------------------------------------------------------------
# one function per op (op_type without its _hls / _rtl suffix)


def _mvau(node: _Node) -> list[np.ndarray]:
    x = node.inputs[0]
    mw, mh = int(node.attr("MW")), int(node.attr("MH"))
    weights = node.integer_initializer(1)
    if weights.shape != (mw, mh):
        raise SimulationError(f"Node {node.label}: weights of shape {weights.shape}, expected (MW, MH) = ({mw}, {mh}).",
                              where=f"dataflow node {node.name}", fix="the graph is inconsistent; rebuild it")
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


def _vvau(node: _Node) -> list[np.ndarray]:
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


def _thresholding(node: _Node) -> list[np.ndarray]:
    from qonnx.core.datatype import DataType

    y = _count_thresholds(node.inputs[0], node.initializer(1), node.label) + int(node.attr("ActVal"))
    if node.dtype("outputDataType") == DataType["BIPOLAR"]:
        y = 2 * y - 1
    return [y]


def _sliding_windows(x: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kH, kW, C), without padding."""
    n, h, w, c = x.shape
    (k_h, k_w), (s_h, s_w), (d_h, d_w) = kernel, stride, dilation
    out_h, out_w = (h - d_h * (k_h - 1) - 1) // s_h + 1, (w - d_w * (k_w - 1) - 1) // s_w + 1
    rows = (np.arange(out_h) * s_h)[:, None] + np.arange(k_h) * d_h   # (OH, kH)
    cols = (np.arange(out_w) * s_w)[:, None] + np.arange(k_w) * d_w   # (OW, kW)
    return x[:, rows[:, None, :, None], cols[None, :, None, :], :]


def _conv_input_generator(node: _Node) -> list[np.ndarray]:
    ifm_h, ifm_w = (int(v) for v in node.attr("IFMDim"))
    channels = int(node.attr("IFMChannels"))
    x = node.inputs[0].reshape(-1, ifm_h, ifm_w, channels)
    windows = _sliding_windows(x, node.attr("ConvKernelDim"), node.attr("Stride"), node.attr("Dilation"))
    # FINN's order inside a patch: kernel row, kernel column, channel (the MVAU weight rows follow it)
    return [windows.reshape(node.out_shape())]


def _fm_padding(node: _Node) -> list[np.ndarray]:
    top, left, bottom, right = (int(p) for p in node.attr("Padding"))
    x = node.inputs[0]
    return [np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))).reshape(node.out_shape())]


def _pool(node: _Node) -> list[np.ndarray]:
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
        raise SimulationError(f"Node {node.label}: pool function '{function}' is not simulated.",
                              where=f"dataflow node {node.name}", fix="use MaxPool, AvgPool, AccPool or QuantAvgPool")
    return [y.reshape(node.out_shape())]


def _global_acc_pool(node: _Node) -> list[np.ndarray]:
    x = node.inputs[0]
    return [x.sum(axis=tuple(range(1, x.ndim - 1))).reshape(node.out_shape())]


def _label_select(node: _Node) -> list[np.ndarray]:
    x = node.inputs[0]
    k = int(node.attr("K"))
    # indices of the K largest values, largest first; equal values: lower index first (ONNX TopK)
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return [order.reshape(node.out_shape())]


def _identity(node: _Node) -> list[np.ndarray]:
    return [node.inputs[0].reshape(node.out_shape())]


def _duplicate(node: _Node) -> list[np.ndarray]:
    return [node.inputs[0].reshape(node.out_shape(i)) for i in range(len(node.onnx.output))]


_ELEMENTWISE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
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


def _elementwise(node: _Node) -> list[np.ndarray]:
    function = _ELEMENTWISE[_base_op_type(node.onnx.op_type)]
    lhs, rhs = node.operand(0), node.operand(1)
    return [np.asarray(function(lhs, rhs)).astype(np.int64).reshape(node.out_shape())]


_OPS: dict[str, Callable[[_Node], list[np.ndarray]]] = {
    "MVAU": _mvau,
    "VVAU": _vvau,
    "Thresholding": _thresholding,
    "ConvolutionInputGenerator": _conv_input_generator,
    "FMPadding": _fm_padding,
    "Pool": _pool,
    "GlobalAccPool": _global_acc_pool,
    "LabelSelect": _label_select,
    "DuplicateStreams": _duplicate,
    "StreamingDataWidthConverter": _identity,
    "StreamingFIFO": _identity,
    **{op: _elementwise for op in _ELEMENTWISE},
}
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_OPS))


def _base_op_type(op_type: str) -> str:
    """MVAU_hls, MVAU_rtl -> MVAU: the math does not depend on the implementation style."""
    return re.sub(r"_(hls|rtl)$", "", op_type)


def _unsupported(node, why: str = "") -> SimulationError:
    name = node.name or node.output[0]
    return SimulationError(
        f"The dataflow node '{name}' ({node.op_type}) cannot be simulated{': ' + why if why else ''}.",
        where=f"dataflow graph node {name}, op_type {node.op_type}",
        fix=f"the simulator supports {', '.join(SUPPORTED_OPS)} (each also as _hls / _rtl); "
            "map this layer to one of them, or verify this model with FINN's cppsim / rtlsim where Vitis HLS and Vivado are installed")


# ---------------------------------------------------------------------------
# graphs


def _check_supported(model) -> None:
    for node in model.graph.node:
        if not node.domain.startswith(HW_DOMAIN_PREFIX):
            raise _unsupported(node, "it is not a FINN HW layer")
        if _base_op_type(node.op_type) not in _OPS:
            raise _unsupported(node)


def _last_uses(model) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            last[name] = index
    return last


def simulate_dataflow(model: ModelWrapper, x: np.ndarray, keep_intermediates: bool = True) -> DataflowResult:
    """Simulate a FINN dataflow graph (abstract or specialised HW layers) on a batch.

    `x` is shaped like the graph's single input with the batch size N in place of 1,
    e.g. (N, 64) for an MLP or (N, 8, 8, 1) NHWC for a CNN, and holds integers of
    the input datatype. Returns the int64 output, every node output (by tensor
    name) when `keep_intermediates`, and the nodes whose hardware would overflow.
    """
    from qonnx.custom_op.registry import getCustomOp

    _check_supported(model)
    graph = model.graph
    if len(graph.input) != 1:
        raise SimulationError(f"The dataflow graph has {len(graph.input)} inputs; the simulator takes graphs with one.",
                              fix="simulate a dataflow partition with a single input stream")
    in_name = graph.input[0].name
    in_shape = tuple(model.get_tensor_shape(in_name))
    x = np.asarray(x)
    if x.ndim != len(in_shape) or tuple(x.shape[1:]) != in_shape[1:]:
        raise SimulationError(f"The input batch has shape {x.shape}; the dataflow graph takes (N, {', '.join(map(str, in_shape[1:]))}).",
                              where=f"graph input '{in_name}'", fix="pass the batch in the layout of the graph input (NHWC for CNNs)")
    x = _to_int64(x, f"The input batch for '{in_name}'")
    in_dtype = model.get_tensor_datatype(in_name)
    violation = _range_violation(x, in_dtype)
    if violation:
        raise SimulationError(f"The input batch {violation}.", where=f"graph input '{in_name}'",
                              fix=f"pass values the accelerator accepts ({in_dtype.name})")

    values: dict[str, np.ndarray] = {in_name: x}
    intermediates: dict[str, np.ndarray] = {}
    overflows: list[str] = []
    last_use = _last_uses(model)
    outputs = {o.name for o in graph.output}
    for index, onnx_node in enumerate(graph.node):
        inputs = []
        for name in onnx_node.input:
            if name in values:
                inputs.append(values[name])
            elif name and model.get_initializer(name) is not None:
                inputs.append(None)
            else:
                raise SimulationError(f"The dataflow node '{onnx_node.name}' reads '{name}', which no earlier node produces.",
                                      fix="the graph is not topologically sorted; apply qonnx SortGraph")
        node = _Node(onnx_node, getCustomOp(onnx_node), model, inputs, overflows)
        results = _OPS[_base_op_type(onnx_node.op_type)](node)
        for i, (name, result) in enumerate(zip(onnx_node.output, results)):
            values[name] = result
            if keep_intermediates:
                intermediates[name] = result
            node.check_range(result, node.op.get_output_datatype(i), "output")
        for name in onnx_node.input:
            if last_use.get(name) == index and name not in outputs:
                values.pop(name, None)
    output = values[graph.output[0].name]
    return DataflowResult(output=output, intermediates=intermediates, overflows=overflows)


# ---------------------------------------------------------------------------
# the parent graph: host layout ops -> accelerator -> float output scale

_FLOAT_OPS = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide}


def _layout_op(model, node, values: dict[str, np.ndarray]) -> np.ndarray:
    from onnx import helper

    x = values[node.input[0]]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Transpose":
        return np.transpose(x, attrs.get("perm"))
    if node.op_type == "Reshape":
        shape = [int(s) for s in model.get_initializer(node.input[1])]
        return x.reshape(len(x), *shape[1:])
    if node.op_type == "Flatten":
        return x.reshape(len(x), -1)
    if node.op_type == "Identity":
        return x
    raise _unsupported(node, "only Transpose, Reshape, Flatten and Identity may run on the host before the accelerator")


def _float_op(model, node, values: dict[str, np.ndarray]) -> np.ndarray:
    if node.op_type not in _FLOAT_OPS or len(node.input) != 2:
        raise _unsupported(node, "only Mul, Add, Sub and Div by constants may run on the host after the accelerator")
    operands = []
    for name in node.input:
        constant = model.get_initializer(name)
        operands.append(np.asarray(constant if constant is not None else values[name], dtype=np.float32))
    if sum(model.get_initializer(name) is None for name in node.input) != 1:
        raise _unsupported(node, "a host op after the accelerator must combine the stream with one constant")
    return _FLOAT_OPS[node.op_type](*operands).astype(np.float32)


def simulate_parent(parent: ModelWrapper, dataflow: ModelWrapper, x: np.ndarray) -> ParentResult:
    """The network as deployed: the parent graph's host ops around the simulated dataflow partition.

    `parent` holds one StreamingDataflowPartition node, with only layout ops
    (Transpose, Reshape) before it and float Mul / Add / Sub / Div by constants
    (the output scale) after it; `dataflow` is the partition's graph, abstract or
    specialised. `x` is a batch for the parent's input, e.g. (N, 64) or
    (N, 1, 8, 8) NCHW uint8 values.
    """
    nodes = list(parent.graph.node)
    partitions = [i for i, node in enumerate(nodes) if node.op_type == "StreamingDataflowPartition"]
    if len(partitions) != 1:
        raise SimulationError(f"The parent graph has {len(partitions)} dataflow partitions; the simulator needs exactly one.",
                              fix="create the partition with targets.finn.partition.create_partition")
    split = partitions[0]
    values: dict[str, np.ndarray] = {parent.graph.input[0].name: np.asarray(x)}
    for node in nodes[:split]:
        values[node.output[0]] = _layout_op(parent, node, values)
    partition = nodes[split]
    result = simulate_dataflow(dataflow, values[partition.input[0]])
    values[partition.output[0]] = result.output.astype(np.float32)
    for node in nodes[split + 1:]:
        values[node.output[0]] = _float_op(parent, node, values)
    output = np.asarray(values[parent.graph.output[0].name], dtype=np.float32)
    return ParentResult(output=output, integer_output=result.output, dataflow=result)
