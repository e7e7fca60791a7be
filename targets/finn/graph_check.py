"""A package's graphs checked before the simulator reads them: what it reads is there, of its type and in range.

A package's manifest proves only that its files are those the manifest lists; someone who recomputes the
manifest can hand in any dataflow_model.onnx. FINN's node classes (qonnx `get_nodeattr`) and the kernels
assume the graph a deploy wrote, so a node with a string where an integer belongs, a datatype name FINN does
not know, a PE that does not divide its channels or a shape its attributes contradict failed deep inside
them (KeyError, AssertionError, qonnx's bare Exception). Here each node is checked first: a node the
simulator knows (op type and domain), each attribute its class declares present when required, of the ONNX
type declared, one of the allowed values, integers in range (sizes positive), datatypes FINN knows; its
tensors' shapes known, positive, within a size limit and equal to what its attributes make; its folded
shapes computable. Any failure is a PackageError (exit 2) naming the file, the node and the attribute.
"""

from __future__ import annotations

import math

from onnx import AttributeProto

from sdk.errors import PackageError
from targets.finn.kernels import base_op_type
from targets.finn.ops import HW_OPS
from targets.finn.rtl_guard import IDENTIFIER

HW_DOMAIN = "finn.custom_op.fpgadataflow"
ONNX_TYPES = {
    "i": AttributeProto.INT,
    "f": AttributeProto.FLOAT,
    "s": AttributeProto.STRING,
    "t": AttributeProto.TENSOR,
    "ints": AttributeProto.INTS,
    "floats": AttributeProto.FLOATS,
    "strings": AttributeProto.STRINGS,
}
INT_LIMIT = 2**31 - 1  # FINN's attributes are sizes, depths, counts: int32 in the HLS and RTL it generates
# Attributes the kernels use as sizes or divisors: at least 1 (each element, for lists).
POSITIVE = frozenset(
    "PE SIMD MW MH NumChannels Channels IFMChannels Labels K numSteps numInputVectors IFMDim OFMDim ConvKernelDim "
    "Stride Dilation Kernel KernelSize ImgDim Dim BatchSize NumOutputStreams".split()
)
NONNEGATIVE = frozenset("Padding Size ActVal_abs".split())
# List attributes the kernels unpack: their lengths (two spatial axes; padding top, left, bottom, right).
LENGTHS = {name: 2 for name in "IFMDim OFMDim ConvKernelDim Stride Dilation Kernel KernelSize ImgDim".split()}
LENGTHS["Padding"] = 4
MAX_STREAM_BITS = 32  # the simulator's int64 products of a stream value and a weight must not overflow
MAX_ELEMENTS = 1 << 26  # per sample, of any tensor: far above any model an FPGA of the registry holds
FIX = "deploy the model again; a package's graph is always the one the SDK wrote"


def _reshaped(shape: tuple[int, ...], target: list[int]) -> tuple[int, ...] | None:
    """A Reshape's target dimensions with its one -1 resolved (`x.view(len(x), -1)` exports [1, -1]), as numpy
    reshapes them; None where they do not hold exactly the input's elements."""
    size, known = math.prod(shape), math.prod(d for d in target if d != -1)
    if any(d < 1 and d != -1 for d in target) or target.count(-1) > 1:
        return None
    if -1 in target:
        if size % known:
            return None
        target = [size // known if d == -1 else d for d in target]
    return tuple(target) if math.prod(target) == size else None


def _refuse(label: str, node: str, what: str, attribute: str | None = None) -> PackageError:
    return PackageError(
        f"{label}: node {node[:60]!r} {what}.",
        where=f"{label}, node {node[:60]}" + (f", attribute {attribute}" if attribute else ""),
        fix=FIX,
    )


def _check_attribute(label: str, node, op, name: str, spec: tuple, present) -> None:
    """One declared attribute: present if required, of the declared ONNX type, allowed, in range."""
    from qonnx.core.datatype import DataType

    kind, required = spec[0], spec[1]
    if name not in present:
        if required:
            raise _refuse(label, node.name, f"lacks its attribute {name}", name)
        return
    if present[name].type != ONNX_TYPES.get(kind, present[name].type):
        raise _refuse(label, node.name, f"has {name} of another type than {kind!r}", name)
    try:
        value = op.get_nodeattr(name)
    except Exception as exc:  # qonnx: an AssertionError or bare Exception for a value outside the allowed set
        allowed = f" (allowed: {sorted(spec[3])})" if len(spec) > 3 and spec[3] else ""
        raise _refuse(label, node.name, f"has a value of {name} FINN does not accept{allowed}", name) from exc
    values = list(value) if kind in ("ints", "floats") else [value]
    if kind in ("i", "ints"):
        if kind == "ints" and len(values) > 8:
            raise _refuse(label, node.name, f"has {len(values)} values in {name}", name)
        if any(not -INT_LIMIT <= int(v) <= INT_LIMIT for v in values):
            raise _refuse(label, node.name, f"has {name} out of range (|value| < 2**31)", name)
        if kind == "ints" and name in LENGTHS and len(values) != LENGTHS[name]:
            raise _refuse(label, node.name, f"has {len(values)} values in {name}, not {LENGTHS[name]}", name)
        if name in POSITIVE and any(int(v) < 1 for v in values):
            raise _refuse(label, node.name, f"has {name} = {value!r}; it must be at least 1", name)
        if name in NONNEGATIVE and any(int(v) < 0 for v in values):
            raise _refuse(label, node.name, f"has {name} = {value!r}; it must not be negative", name)
    if kind in ("f", "floats") and not all(math.isfinite(float(v)) for v in values):
        raise _refuse(label, node.name, f"has a non-finite {name}", name)
    if kind == "s" and name.lower().endswith("datatype"):
        try:
            DataType[value]
        except Exception as exc:
            raise _refuse(label, node.name, f"has {name} = {value[:40]!r}, not a FINN datatype", name) from exc


def _shape(label: str, model, node, tensor: str) -> tuple[int, ...]:
    try:
        shape = model.get_tensor_shape(tensor)
    except Exception:
        shape = None
    if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
        raise _refuse(label, node.name, f"has a tensor '{tensor[:40]}' of unknown or non-positive shape {shape}")
    if math.prod(shape[1:]) > MAX_ELEMENTS:
        raise _refuse(label, node.name, f"has a tensor '{tensor[:40]}' of {math.prod(shape[1:])} elements per sample")
    return tuple(shape)


def _check_shapes(label: str, model, node, op) -> None:
    """The node's graph tensors as its attributes make them; its folded shapes and datatypes computable."""
    dynamic = [name for name in node.input if name and model.get_initializer(name) is None]
    for name in [*dynamic, *node.output]:
        _shape(label, model, node, name)
        try:
            datatype = model.get_tensor_datatype(name)
            integer = datatype.is_integer() and datatype.bitwidth() <= MAX_STREAM_BITS
        except Exception as exc:
            raise _refuse(label, node.name, f"has a tensor '{name[:40]}' with an unknown datatype") from exc
        if not integer:
            raise _refuse(
                label, node.name, f"has a tensor '{name[:40]}' of datatype {datatype.name}: an accelerator's streams "
                f"carry integers of at most {MAX_STREAM_BITS} bits",
            )  # fmt: skip
    checks = [("its input", lambda: op.get_normal_input_shape(0), dynamic[0] if dynamic else None)]
    checks += [("its output", lambda: op.get_normal_output_shape(0), node.output[0] if node.output else None)]
    # a join's second input, a fork's second output: each stream as the attributes make it
    checks += [
        (f"its input {i}", lambda i=i: op.get_normal_input_shape(i), name)
        for i, name in enumerate(node.input)
        if i and name in dynamic
    ]
    checks += [
        (f"its output {i}", lambda i=i: op.get_normal_output_shape(i), name) for i, name in enumerate(node.output) if i
    ]
    for what, expected, tensor in checks:
        if tensor is None:
            raise _refuse(label, node.name, f"has no {what.split()[-1]} stream")
        try:
            made = tuple(int(d) for d in expected())
        except Exception as exc:
            raise _refuse(label, node.name, f"has attributes that give {what} no shape ({type(exc).__name__})") from exc
        graph = _shape(label, model, node, tensor)
        if math.prod(made[1:]) != math.prod(graph[1:]):  # FINN reads a stream by its elements (NHWC into an MVAU)
            raise _refuse(
                label, node.name, f"has attributes that make {what} {made[1:]}, but the graph says {graph[1:]}"
            )
    for what, compute in (
        ("folded input", lambda: op.get_folded_input_shape(0)),
        ("folded output", lambda: op.get_folded_output_shape(0)),
        ("input datatype", lambda: op.get_input_datatype(0)),
        ("output datatype", lambda: op.get_output_datatype(0)),
        ("stream widths", lambda: (op.get_instream_width(0), op.get_outstream_width(0))),
    ):
        try:
            compute()
        except Exception as exc:
            raise _refuse(
                label, node.name, f"has attributes that give no {what} (e.g. PE / SIMD do not divide)"
            ) from exc


def check_dataflow(model, label: str = "dataflow_model.onnx") -> None:
    """Refuse (PackageError) a dataflow graph the simulator would fail on; see the module docstring."""
    from targets.finn.op_view import hw_op

    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1 or not graph.node:
        raise PackageError(
            f"{label} has {len(graph.input)} inputs, {len(graph.output)} outputs and {len(graph.node)} nodes; a "
            "package's accelerator has one input, one output and at least one node.",
            where=label,
            fix=FIX,
        )
    _shape(label, model, graph.node[0], graph.input[0].name)
    seen: set[str] = set()
    for node in graph.node:
        if not isinstance(node.name, str) or IDENTIFIER.fullmatch(node.name) is None or node.name in seen:
            shown = node.name if isinstance(node.name, str) else repr(node.name)  # protobuf: bytes if not UTF-8
            raise _refuse(label, shown or "(unnamed)", "has a name that is empty, repeated or not an identifier")
        seen.add(node.name)
        base = base_op_type(node.op_type)
        suffix = node.op_type[len(base) :]
        expected = HW_DOMAIN + {"_hls": ".hls", "_rtl": ".rtl"}.get(suffix, "")
        if base not in HW_OPS or node.domain != expected:
            raise _refuse(
                label, node.name, f"is a {node.op_type[:40]} of domain {node.domain[:60]!r}, not a layer the simulator "
                f"knows ({', '.join(sorted(HW_OPS))}, each in {HW_DOMAIN} or its .hls / .rtl)",
            )  # fmt: skip
        try:
            op = hw_op(node)
            declared = op.get_nodeattr_types()
        except Exception as exc:
            raise _refuse(label, node.name, f"is a {node.op_type} FINN cannot load ({type(exc).__name__})") from exc
        present = {attribute.name: attribute for attribute in node.attribute}
        for name, spec in declared.items():
            _check_attribute(label, node, op, name, spec, present)
        _check_folding(label, node, op, HW_OPS[base].knobs)
        _check_shapes(label, model, node, op)
        own_check = HW_OPS[base].graph_check
        problem = own_check(model, node, op) if own_check else None
        if problem:
            raise _refuse(label, node.name, problem)


def _check_folding(label: str, node, op, knobs) -> None:
    """Each folding attribute divides the dimension it folds (ops.HW_OPS' knobs), as FINN's hardware needs."""
    try:
        folds = [(name, int(dimension), int(op.get_nodeattr(name))) for name, dimension in knobs(op.get_nodeattr)]
    except Exception as exc:
        raise _refuse(label, node.name, f"has folding attributes FINN cannot read ({type(exc).__name__})") from exc
    for name, dimension, value in folds:
        if value < 1 or dimension % value:
            raise _refuse(
                label, node.name, f"has {name} = {value}, which does not divide its dimension {dimension}", name
            )


def check_parent(parent, dataflow, label: str = "parent_model.onnx") -> None:
    """Refuse (PackageError) a parent graph whose host ops the simulator would fail on: the layout ops before the
    accelerator must turn the parent's input into the accelerator's (a Transpose's perm a permutation of its
    input's axes, a Reshape's shape of the same size), and the constants after it must broadcast onto its
    output (a Softmax's axis one of its axes)."""
    import numpy as np
    from onnx import helper

    from targets.finn.simulator import HOST_INPUT_OPS, HOST_OUTPUT_OPS

    graph = parent.graph
    if len(graph.input) != 1:
        raise PackageError(f"{label} has {len(graph.input)} inputs; a package's has one.", where=label, fix=FIX)
    shape = _shape(label, parent, graph.node[0], graph.input[0].name) if graph.node else ()
    partition = next((i for i, n in enumerate(graph.node) if n.op_type == "StreamingDataflowPartition"), None)
    if partition is None:
        return  # the simulator refuses it, naming the partition
    for node in graph.node[:partition]:
        if node.op_type not in HOST_INPUT_OPS:
            return  # the simulator refuses it, naming the node
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose":
            perm = attributes.get("perm")
            if not isinstance(perm, list) or sorted(int(p) for p in perm) != list(range(len(shape))):
                raise _refuse(
                    label, node.name, f"has perm {perm!r}, not a permutation of its {len(shape)} axes", "perm"
                )
            shape = tuple(shape[int(p)] for p in perm)
        elif node.op_type == "Reshape":
            target = parent.get_initializer(node.input[1]) if len(node.input) > 1 else None
            if target is None or target.ndim != 1 or not np.issubdtype(target.dtype, np.integer):
                raise _refuse(label, node.name, "has no constant integer shape")
            dims = _reshaped(shape[1:], [int(d) for d in target[1:]])
            if dims is None:
                raise _refuse(label, node.name, f"reshapes {shape[1:]} into {tuple(target[1:])}: not the same size")
            shape = (shape[0], *dims)
        elif node.op_type == "Flatten":
            shape = (shape[0], math.prod(shape[1:]))
    accelerator_in = _shape(label, dataflow, dataflow.graph.node[0], dataflow.graph.input[0].name)
    if tuple(shape[1:]) != tuple(accelerator_in[1:]):
        raise _refuse(
            label, graph.node[partition].name, f"takes {tuple(shape[1:])} from the host, but the accelerator's input "
            f"is {tuple(accelerator_in[1:])}",
        )  # fmt: skip
    out = (1, *_shape(label, dataflow, dataflow.graph.node[-1], dataflow.graph.output[0].name)[1:])
    for node in graph.node[partition + 1 :]:
        op = HOST_OUTPUT_OPS.get(node.op_type)
        if op is None:
            return  # the simulator refuses it, naming the node
        constants = [parent.get_initializer(name) for name in node.input if parent.get_initializer(name) is not None]
        try:
            for constant in constants:
                out = np.broadcast_shapes(out, np.shape(constant))
        except ValueError as exc:
            raise _refuse(label, node.name, f"has a constant that does not broadcast onto {out}") from exc
        axis = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get("axis", -1)
        if node.op_type == "Softmax" and (not isinstance(axis, int) or not -len(out) <= axis < len(out)):
            raise _refuse(label, node.name, f"has axis {axis!r} outside its {len(out)} axes", "axis")
