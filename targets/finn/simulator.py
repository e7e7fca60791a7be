"""Bit-exact simulation of a folded FINN accelerator and the host ops around it, in numpy, without vendor tools.

FINN executes its specialised layers (MVAU_hls, Thresholding_rtl,
ConvolutionInputGenerator_rtl, ...) only through Vitis HLS (cppsim) or Vivado
(rtlsim). This module stands where those stand: every node is computed by its
kernel from `ops.HW_OPS`, exactly, vectorised over a batch. `prepare_dataflow`
readies a graph once (weights, thresholds, float32 or int64 per layer); its plan
then runs any number of batches.

The parent graph (what the host runs around the accelerator) is interpreted
here too, and only here: the layout ops before the dataflow partition and the
float output ops after it, each with its inverse (HOST_INPUT_OPS,
HOST_OUTPUT_OPS).

What the hardware would do differently is reported, not hidden: an
MVAU / VVAU accumulator outside the node's accDataType, or any node output
outside its output datatype, is listed in `DataflowResult.overflows`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import TYPE_CHECKING

import numpy as np

from sdk.errors import SimulationError
from targets.finn.kernels import (
    HwNode,
    Windows,
    base_op_type,
    count_thresholds,
    datatype_range,
    dense,
    float32_exact,
    mvau,
    narrowest,
    prepared_mvau,
    range_violation,
    small_batch,
    to_int64,
    within,
)
from targets.finn.ops import HW_OPS, SUPPORTED_OPS

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

HW_DOMAIN_PREFIX = "finn.custom_op.fpgadataflow"
__all__ = [
    "SUPPORTED_OPS",
    "DataflowPlan",
    "DataflowResult",
    "ParentResult",
    "count_thresholds",
    "prepare_dataflow",
    "simulate_dataflow",
    "simulate_parent",
]


@dataclass
class DataflowResult:
    """The output of a dataflow graph for a batch, and what the hardware would do differently."""

    output: np.ndarray  # int64, batch first
    intermediates: Mapping[str, np.ndarray] = field(default_factory=dict)  # node output tensor name -> int64 batch
    overflows: list[str] = field(default_factory=list)  # one message per node whose hardware result would differ


@dataclass
class ParentResult:
    """The whole deployed network: host layout ops, the accelerator, the float output ops."""

    output: np.ndarray  # float32, what the host returns
    integer_output: np.ndarray  # int64, what the accelerator returns
    dataflow: DataflowResult


def _unsupported(node, why: str = "") -> SimulationError:
    name = node.name or node.output[0]
    return SimulationError(
        f"The dataflow node '{name}' ({node.op_type}) cannot be simulated{': ' + why if why else ''}.",
        where=f"dataflow graph node {name}, op_type {node.op_type}",
        fix=f"the simulator supports {', '.join(SUPPORTED_OPS)} (each also as _hls / _rtl); "
        "map this layer to one of them, or verify this model with FINN's cppsim / rtlsim "
        "where Vitis HLS and Vivado are installed",
    )


# ---------------------------------------------------------------------------
# graphs


def _check_supported(model) -> None:
    for node in model.graph.node:
        if not node.domain.startswith(HW_DOMAIN_PREFIX):
            raise _unsupported(node, "it is not a FINN HW layer")
        if base_op_type(node.op_type) not in HW_OPS:
            raise _unsupported(node)


def _last_uses(model) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            last[name] = index
    return last


class _Int64Outputs(Mapping):
    """Node outputs by tensor name, as int64 when read: the simulation keeps them narrower (uint8 counts, float32)."""

    def __init__(self, values: dict[str, np.ndarray]):
        self._values, self._read = values, {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            self._read[name] = dense(self._values[name]).astype(np.int64)
        return self._read[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass
class _Step:
    node: HwNode  # inputs unset; its ranges and memo stay with the plan
    kernel: Callable
    checks: list  # per output: its datatype, or None where its static range proves every value fits
    release: list[str]  # tensors no later node reads
    takes_windows: bool  # the kernel reads a ConvolutionInputGenerator's `Windows` as they are

    def __post_init__(self):
        self.inputs, self.outputs = tuple(self.node.onnx.input), tuple(self.node.onnx.output)  # read once, not per run


@dataclass
class DataflowPlan:
    """A dataflow graph ready to simulate: nodes looked up, weights checked and converted, ranges decided.

    Prepare it once per graph (`prepare_dataflow`) and `run` it on any number of batches; the graph
    must not change afterwards.
    """

    model: ModelWrapper
    in_name: str
    in_shape: tuple[int, ...]
    in_type: object  # qonnx DataType of the graph input
    steps: list[_Step]
    out_name: str

    def __post_init__(self):
        # the input's checks decided once: its static range, bipolar or not, its narrow type (8 or 16 bits) or None
        self.in_known, self.in_bipolar = datatype_range(self.in_type), self.in_type.name == "BIPOLAR"
        self._chain: list | None = None  # `_small_chain`, once the first run has prepared the layers
        narrow = None if self.in_known is None else narrowest(*self.in_known)
        self.in_narrow = narrow if narrow is not None and narrow.itemsize <= 2 and not self.in_bipolar else None

    def run(self, x: np.ndarray, keep_intermediates: bool = True) -> DataflowResult:
        x = self._input(np.asarray(x))
        chain = self._chain
        if chain and not keep_intermediates and small_batch(len(x)):
            y = x
            for unit, terms in chain:
                y = unit.small(y.reshape(-1, terms))
            return DataflowResult(output=y.reshape(len(x), *self._chain_shape).astype(np.int64))
        result = self._run(x, keep_intermediates)
        if chain is None:
            self._chain = self._small_chain()
        return result

    def _small_chain(self) -> list:
        """The layers as (prepared MVAU, its terms) where the graph is a chain of MVAUs that a small batch runs
        through `_VectorUnit.small` (nothing checked, nothing corrected: no overflow to report), else []. Known
        after the first run, which prepares the layers."""
        chain, previous = [], self.in_name
        for step in self.steps:
            unit = prepared_mvau(step.node)
            if (
                step.kernel is not mvau
                or unit is None
                or not unit.small_route
                or step.inputs[0] != previous
                or len(step.outputs) != 1
                or step.checks != [None]
            ):
                return []
            chain.append((unit, unit.product.weights.shape[0]))
            previous = step.outputs[0]
        if not chain or previous != self.out_name:
            return []
        self._chain_shape = tuple(self.model.get_tensor_shape(previous)[1:])
        return chain

    def _run(self, x: np.ndarray, keep_intermediates: bool) -> DataflowResult:
        values: dict[str, np.ndarray] = {self.in_name: x}
        kept: dict[str, np.ndarray] = {}
        overflows: list[str] = []
        for step in self.steps:
            inputs = [values.get(name) for name in step.inputs]
            if not step.takes_windows:
                inputs = [x if type(x) is not Windows else x.array() for x in inputs]
            node = object.__new__(HwNode)  # a shallow copy sharing the layer's memo: the plan's node never changes
            node.__dict__.update(step.node.__dict__)
            node.inputs, node.overflows = inputs, overflows
            for name, result, datatype in zip(step.outputs, step.kernel(node), step.checks):
                values[name] = result
                if keep_intermediates:
                    kept[name] = result
                if datatype is not None:
                    node.check_range(dense(result), datatype, "output")
            for name in step.release:
                values.pop(name, None)
        output = dense(values[self.out_name]).astype(np.int64)
        return DataflowResult(output=output, intermediates=_Int64Outputs(kept) if kept else {}, overflows=overflows)

    def _input(self, x: np.ndarray) -> np.ndarray:
        """The input batch checked (integers of the input datatype), then held in the narrowest integer type of
        the datatype if that has 8 or 16 bits, else in float32 if exact, else int64. Checked chunk by chunk, in
        cache: a cast to the narrow type and back, or min, max and rounding."""
        if x.ndim != len(self.in_shape) or tuple(x.shape[1:]) != self.in_shape[1:]:
            raise SimulationError(
                f"The input batch has shape {x.shape}; the dataflow graph takes "
                f"(N, {', '.join(map(str, self.in_shape[1:]))}).",
                where=f"graph input '{self.in_name}'",
                fix="pass the batch in the layout of the graph input (NHWC for CNNs)",
            )
        known, bipolar = self.in_known, self.in_bipolar
        if self.in_narrow is not None and x.dtype.kind in "iubf":
            narrow = _narrow_copy(x, known)
            if narrow is not None:
                return narrow
        elif known is not None and x.dtype.kind in "iubf" and _integers_within(x, known, bipolar):
            return x.astype(np.float32 if float32_exact(known) else np.int64, copy=False)
        x = to_int64(x, f"The input batch for '{self.in_name}'")
        violation = range_violation(x, self.in_type)
        if violation:
            raise SimulationError(
                f"The input batch {violation}.",
                where=f"graph input '{self.in_name}'",
                fix=f"pass values the accelerator accepts ({self.in_type.name})",
            )
        return x


_CHUNK = 1 << 18  # elements per chunk of the input check


def _narrow_copy(x: np.ndarray, known: tuple[int, int]) -> np.ndarray | None:
    """x in the narrowest integer type of `known` (8 or 16 bits), or None unless every value is an integer in `known`.

    A value equals its cast to the narrow type exactly when it is an integer of that type's range (a cast of
    anything else, NaN or beyond the range included, yields some value of the type, which differs from it);
    a datatype narrower than its type (UINT4 in uint8) is then checked by min and max of the narrow copy.
    """
    dtype = narrowest(*known)
    if x.dtype == dtype:
        narrow = x  # already checked by its type, only its range is left; never written to
    else:
        narrow = np.empty(x.shape, dtype=dtype)
        source, target = x.reshape(-1), narrow.reshape(-1)
        with np.errstate(invalid="ignore"):
            for start in range(0, source.size, _CHUNK):
                chunk, cast = source[start : start + _CHUNK], target[start : start + _CHUNK]
                np.copyto(cast, chunk, casting="unsafe")
                if not np.array_equal(cast, chunk):
                    return None
    if _type_range(dtype) != tuple(known) and narrow.size and not known[0] <= narrow.min() <= narrow.max() <= known[1]:
        return None
    return narrow


@lru_cache(maxsize=16)
def _type_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _integers_within(x: np.ndarray, known: tuple[int, int], bipolar: bool) -> bool:
    """Whether every value is an integer in `known` (bipolar: without 0), chunk by chunk."""
    flat = x.reshape(-1)
    if x.dtype.kind == "f":
        rounded = np.empty(min(flat.size, _CHUNK), dtype=x.dtype)
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        if not known[0] <= chunk.min() <= chunk.max() <= known[1]:  # NaN fails here too
            return False
        if bipolar and np.any(chunk == 0):
            return False
        if x.dtype.kind == "f" and not np.array_equal(np.rint(chunk, out=rounded[: chunk.size]), chunk):
            return False
    return True


def prepare_dataflow(model: ModelWrapper, threads: int | None = None) -> DataflowPlan:
    """The plan to simulate a FINN dataflow graph (abstract or specialised HW layers) on batches.

    Every layer is prepared here, once: its weights checked and converted, its thresholds clipped to
    the static range of its input, and its product's path chosen: the integer GEMM for inputs of at most
    8 bits, signed or not, and 8-bit weights (on `threads` threads, None: onnxruntime's default), else
    float32 BLAS where that range and the weights bound the accumulator below 2**24, else float64 or int64.
    """
    from targets.finn.op_view import hw_op

    _check_supported(model)
    graph = model.graph
    if len(graph.input) != 1:
        raise SimulationError(
            f"The dataflow graph has {len(graph.input)} inputs; the simulator takes graphs with one.",
            fix="simulate a dataflow partition with a single input stream",
        )
    in_name = graph.input[0].name
    in_type = model.get_tensor_datatype(in_name)
    ranges = {in_name: datatype_range(in_type)}
    last_use = _last_uses(model)
    outputs = {o.name for o in graph.output}
    steps = []
    for index, onnx_node in enumerate(graph.node):
        for name in onnx_node.input:
            if name and name not in ranges and model.get_initializer(name) is None:
                raise SimulationError(
                    f"The dataflow node '{onnx_node.name}' reads '{name}', which no earlier node produces.",
                    fix="the graph is not topologically sorted; apply qonnx SortGraph",
                )
        op = hw_op(onnx_node)
        in_ranges = [ranges.get(name) for name in onnx_node.input]
        node = HwNode(onnx_node, op, model, [], [], ranges=in_ranges, threads=threads)
        spec = HW_OPS[base_op_type(onnx_node.op_type)]
        out_ranges = spec.output_ranges(node)
        ranges.update(zip(onnx_node.output, out_ranges))
        release = [name for name in onnx_node.input if last_use.get(name) == index and name not in outputs]
        types = [op.get_output_datatype(i) for i in range(len(onnx_node.output))]
        checks = [None if within(known, datatype) else datatype for known, datatype in zip(out_ranges, types)]
        steps.append(_Step(node, spec.kernel, checks, release, spec.takes_windows))
    shape = tuple(model.get_tensor_shape(in_name))
    return DataflowPlan(model, in_name, shape, in_type, steps, graph.output[0].name)


def simulate_dataflow(
    model: ModelWrapper | DataflowPlan, x: np.ndarray, keep_intermediates: bool = True
) -> DataflowResult:
    """Simulate a FINN dataflow graph (abstract or specialised HW layers, or its prepared plan) on a batch.

    `x` is shaped like the graph's single input with the batch size N in place of 1,
    e.g. (N, 64) for an MLP or (N, 8, 8, 1) NHWC for a CNN, and holds integers of
    the input datatype. Returns the int64 output, every node output (by tensor
    name) when `keep_intermediates`, and the nodes whose hardware would overflow.
    """
    plan = model if isinstance(model, DataflowPlan) else prepare_dataflow(model)
    return plan.run(x, keep_intermediates)


# ---------------------------------------------------------------------------
# the parent graph: host layout ops -> accelerator -> host float ops


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _reshape(model, node, x: np.ndarray) -> np.ndarray:
    shape = [int(s) for s in model.get_initializer(node.input[1])]
    return x.reshape(len(x), *shape[1:])


# Ops the host runs on the input before the accelerator (layout only): op type -> (model, node, x) -> x.
HOST_INPUT_OPS: dict[str, Callable] = {
    "Transpose": lambda model, node, x: np.transpose(x, _attributes(node).get("perm")),
    "Reshape": _reshape,
    "Flatten": lambda model, node, x: x.reshape(len(x), -1),
    "Identity": lambda model, node, x: x,
}


def _constant_op(forward: Callable, inverse: Callable) -> HostOp:
    """Mul / Div / Add / Sub of the stream and one constant (the output scale and offset)."""

    def run(model, node, x, invert: bool):
        constant = next(model.get_initializer(n) for n in node.input if model.get_initializer(n) is not None)
        stream_first = model.get_initializer(node.input[0]) is None
        if invert:
            if not stream_first and node.op_type in ("Sub", "Div"):  # c - x, c / x: their own inverses
                return forward(constant.astype(np.float64), x)
            return inverse(x, constant.astype(np.float64))
        constant = np.asarray(constant, dtype=np.float32)
        return (forward(x, constant) if stream_first else forward(constant, x)).astype(np.float32)

    def bind(model, node) -> Callable[[np.ndarray], np.ndarray]:
        """run(model, node, x, False) with the constant found once (a loaded package's every call)."""
        constant = next(model.get_initializer(n) for n in node.input if model.get_initializer(n) is not None)
        constant = np.asarray(constant, dtype=np.float32)
        if model.get_initializer(node.input[0]) is None:
            return lambda x: forward(x, constant).astype(np.float32, copy=False)
        return lambda x: forward(constant, x).astype(np.float32, copy=False)

    return HostOp(run, invertible=True, operands=2, bind=bind)


def _unary(forward: Callable) -> HostOp:
    """A float activation after the last quantizer (sigmoid, tanh, softmax): run, not inverted."""

    def run(model, node, x, invert: bool):
        if invert:
            raise SimulationError(f"{node.op_type} cannot be inverted.", where=node.name)
        return forward(x.astype(np.float32), _attributes(node)).astype(np.float32)

    return HostOp(run, invertible=False, operands=1)


def _softmax(x: np.ndarray, attributes: dict) -> np.ndarray:
    axis = int(attributes.get("axis", -1))
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class HostOp:
    """An op the host runs after the accelerator: run(model, node, x, invert) -> y."""

    run: Callable
    invertible: bool  # the QAT output can be mapped back to the accelerator's integer output
    operands: int  # 2: the stream and one constant; 1: the stream alone
    bind: Callable | None = None  # (model, node) -> x -> y: run, not inverted, with what it reads found once


# Float ops the host runs after the accelerator, as FINN's parent graph has them (and `sdk check` accepts them).
HOST_OUTPUT_OPS: dict[str, HostOp] = {
    "Mul": _constant_op(np.multiply, np.divide),
    "Div": _constant_op(np.divide, np.multiply),
    "Add": _constant_op(np.add, np.subtract),
    "Sub": _constant_op(np.subtract, np.add),
    "Sigmoid": _unary(lambda x, a: 1.0 / (1.0 + np.exp(-x))),
    "Tanh": _unary(lambda x, a: np.tanh(x)),
    "Softmax": _unary(_softmax),
}


@dataclass
class _ParentPlan:
    """The parent graph cut at its one dataflow partition."""

    before: list
    partition: object
    after: list


def _plan(parent: ModelWrapper) -> _ParentPlan:
    nodes = list(parent.graph.node)
    partitions = [i for i, node in enumerate(nodes) if node.op_type == "StreamingDataflowPartition"]
    if len(partitions) != 1:
        raise SimulationError(
            f"The parent graph has {len(partitions)} dataflow partitions; the simulator needs exactly one.",
            where="parent_model.onnx",
            fix="build the package with `sdk deploy`, which makes exactly one partition",
        )
    split = partitions[0]
    for node in nodes[:split]:
        if node.op_type not in HOST_INPUT_OPS:
            raise _unsupported(node, f"only {', '.join(HOST_INPUT_OPS)} may run on the host before the accelerator")
    for node in nodes[split + 1 :]:
        if not is_host_output_op(parent, node):
            raise _unsupported(
                node,
                f"only {', '.join(HOST_OUTPUT_OPS)} (the binary ones by one constant) may run on the host after the "
                "accelerator",
            )
    return _ParentPlan(nodes[:split], nodes[split], nodes[split + 1 :])


@dataclass(frozen=True)
class HostPlan:
    """The parent graph's host ops bound to their nodes once (a loaded package runs them on every batch)."""

    before: tuple[Callable[[np.ndarray], np.ndarray], ...]  # layout ops, on the input
    after: tuple[Callable[[np.ndarray], np.ndarray], ...]  # float ops by a constant, on the accelerator's output

    def input(self, x: np.ndarray) -> np.ndarray:
        for op in self.before:
            x = op(x)
        return x

    def output(self, accelerator_output: np.ndarray) -> np.ndarray:
        y = accelerator_output.astype(np.float32)
        for op in self.after:
            y = op(y)
        return np.asarray(y, dtype=np.float32)


def prepare_host(parent: ModelWrapper) -> HostPlan:
    """The host ops of the parent graph (checked: only HOST_INPUT_OPS before its one partition, HOST_OUTPUT_OPS
    after it), bound to their nodes."""
    plan = _plan(parent)
    return HostPlan(
        tuple(partial(HOST_INPUT_OPS[node.op_type], parent, node) for node in plan.before),
        tuple(_bound(HOST_OUTPUT_OPS[node.op_type], parent, node) for node in plan.after),
    )


def _bound(op: HostOp, parent: ModelWrapper, node) -> Callable[[np.ndarray], np.ndarray]:
    return op.bind(parent, node) if op.bind is not None else partial(op.run, parent, node, invert=False)


def host_input(parent: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """The parent's input batch as the accelerator takes it (the host's layout ops applied)."""
    return prepare_host(parent).input(x)


def is_host_output_op(model: ModelWrapper, node) -> bool:
    """An op the host can run after the accelerator: one of HOST_OUTPUT_OPS, binary ones by one constant."""
    op = HOST_OUTPUT_OPS.get(node.op_type)
    if op is None or len([name for name in node.input if name]) != op.operands:
        return False
    return op.operands == 1 or sum(model.get_initializer(name) is not None for name in node.input) == 1


def host_output(parent: ModelWrapper, accelerator_output: np.ndarray) -> np.ndarray:
    """What the host returns for the accelerator's integer output (the float ops after the partition)."""
    return prepare_host(parent).output(accelerator_output)


def output_is_invertible(parent: ModelWrapper) -> bool:
    """Whether accelerator_output_of can map host outputs back (only scales and offsets after the accelerator)."""
    return all(HOST_OUTPUT_OPS[node.op_type].invertible for node in _plan(parent).after)


def accelerator_output_of(parent: ModelWrapper, host_values: np.ndarray) -> np.ndarray:
    """The inverse of host_output: what the accelerator must emit for the host to return these values (float64)."""
    y = host_values.astype(np.float64)
    for node in reversed(_plan(parent).after):
        y = HOST_OUTPUT_OPS[node.op_type].run(parent, node, y, True)
    return y


def simulate_parent(parent: ModelWrapper, dataflow: ModelWrapper | DataflowPlan, x: np.ndarray) -> ParentResult:
    """The network as deployed: the parent graph's host ops around the simulated dataflow partition.

    `parent` holds one StreamingDataflowPartition node, with only layout ops
    (HOST_INPUT_OPS) before it and float ops by a constant (HOST_OUTPUT_OPS, the
    output scale) after it; `dataflow` is the partition's graph, abstract or
    specialised, or its plan from `prepare_dataflow` (prepared once, for many
    batches). `x` is a batch for the parent's input, e.g. (N, 64) or
    (N, 1, 8, 8) NCHW uint8 values.
    """
    result = simulate_dataflow(dataflow, host_input(parent, np.asarray(x)))
    return ParentResult(output=host_output(parent, result.output), integer_output=result.output, dataflow=result)
