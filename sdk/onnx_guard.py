"""Read an .onnx file a user handed over, and refuse it before any library sees the graph.

Why: qonnx imports each custom node's `domain` as a Python module
(qonnx.custom_op.registry: importlib.import_module(node.domain)), so a graph with a
node in the domain "mymodule" would run mymodule.py from the working folder or
anywhere on sys.path. onnx.load follows a tensor's external-data `location` to any
file on disk, and FINN loads the file a StreamingDataflowPartition node's `model`
attribute names. So the file is parsed here from bytes (no external data is read),
every node (in the main graph, in subgraphs, in local functions) must be in a
domain the SDK's libraries define, and the graph must be a graph.

Values the libraries evaluate or follow are allowed only as literals from an allow-list (docs/ARCHITECTURE.md,
"Security", lists every site): qonnx runs eval() on a tensor's `tensor_layout` and `tensor_sparsity` annotations, so
an annotation must be a `finn_datatype` name of the form qonnx's DataType parses, a `tensor_layout` qonnx knows or
the depthwise `tensor_sparsity` mark qonnx writes, exactly; FINN reads a model's metadata_props as paths of
libraries to load and expressions to evaluate, so a file carries none; FINN node attributes that name files, code or
a simulator (code_gen_dir_*, executable_path, rtlsim_so, exec_mode, ...) must be empty. Numbers that make FINN loop
are refused too: a NaN or inf in any tensor (FINN's RoundAndClipThresholds repeats while `thresholds != rounded`,
which NaN keeps true forever), and shapes whose arrays would exceed MEMORY_BUDGET (from the header, before any
array is built).

Known domains: the standard ones ("", "ai.onnx", "ai.onnx.ml"); what Brevitas's
export_qonnx writes ("qonnx.custom_op.general"; older Brevitas wrote "onnx.brevitas",
which qonnx maps to the same module); qonnx's "qonnx.custom_op.channels_last"; and,
only for the graphs a flow wrote into a deployment package (`<flow>_ops=True`, e.g.
finn_ops=True: FINN's "finn.custom_op.general", "finn.custom_op.fpgadataflow" and its
"hls" and "rtl" backends), the op domains that flow declares. Sub-modules of those
packages are known if they exist in the installed package (found on disk, never
imported here).

What the guard knows of a flow's graphs is the flow's own declaration (its registry entry's `graph_guard` module,
e.g. targets/finn/graph_guard.py): its op domains and their package, the older domain whose quantizers are read as
qonnx's, the node attributes that must be empty, whether it reads model metadata, whether NaN loops it. This module
names no flow.

Older QONNX: older converters (QKeras's among them) wrote the standard Quant, BipolarQuant and Trunc ops in the
domain "finn.custom_op.general". In a user's model (finn_ops=False) exactly those op types in exactly
that domain (LEGACY_OPS) are renamed to "qonnx.custom_op.general", by a fixed table (the declaring flow's
LEGACY_RENAME): the legacy domain is never imported, and each rename is logged as a note. Every other node in a
domain of that flow's package stays refused, named.

Call load_onnx_safely(path, where_name) and hand the returned ModelProto on
(qonnx: ModelWrapper(model_proto)); where_name is the file as the user named it
(e.g. "--model net.onnx"), used in every message instead of a temporary copy's path.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from sdk.data import MEMORY_BUDGET  # the SDK's one memory budget: what a graph's declared tensors may take together
from sdk.errors import ExportError

MAX_BYTES = 2**31 - 1  # protobuf's own limit for one message; an SDK export is a few hundred KiB
MAX_NODES = 1_000_000
MAX_SUBGRAPH_DEPTH = 16
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
QONNX_DOMAINS = frozenset({"onnx.brevitas", "qonnx.custom_op.general", "qonnx.custom_op.channels_last"})
_QONNX_PACKAGE = "qonnx.custom_op."  # its existing sub-modules may be named (a flow's package likewise)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# qonnx's DataType names (qonnx.core.datatype.resolve_datatype parses them without eval), as a literal pattern:
# integers of 1 to 64 bits, fixed point, scaled integers and small floats of at most 2-digit widths
_WIDTH = r"(?:[1-9]|[1-5][0-9]|6[0-4])"
_SMALL = r"[0-9]{1,2}"
DATATYPE_NAME = re.compile(
    rf"BINARY|BIPOLAR|TERNARY|FLOAT32|FLOAT16|U?INT{_WIDTH}|FIXED<{_WIDTH},{_SMALL}>|SCALEDINT<{_WIDTH}>"
    rf"|FLOAT<{_SMALL},{_SMALL}(?:,-?[0-9]{{1,3}})?>",
    re.ASCII,
)
# the layouts qonnx.core.data_layout defines, written the way qonnx's set_tensor_layout writes them (str(list))
TENSOR_LAYOUTS = frozenset(
    str(layout)
    for layout in (["N", "H", "W", "C"], ["N", "C", "H", "W"], ["N", "C", "W"], ["N", "W", "C"], ["N", "C"], [])
)
# qonnx's LowerConvsToMatMul marks a depthwise convolution's weights with a `tensor_sparsity` annotation, str() of
# {"dw": {"kernel_shape": [k_h, k_w]}}, which FINN's InferVectorVectorActivation reads back with eval()
TENSOR_SPARSITY = re.compile(r"\{'dw': \{'kernel_shape': \[[1-9][0-9]{0,3}, [1-9][0-9]{0,3}\]\}\}|\{\}", re.ASCII)
ANNOTATION_KEYS = ("finn_datatype", "tensor_layout", "tensor_sparsity")  # qonnx's annotation keys
# FINN node attributes holding a qonnx DataType name: parsed with DataType[...], checked against DATATYPE_NAME
DATATYPE_ATTRIBUTES = frozenset(
    {"inputDataType", "outputDataType", "weightDataType", "accDataType", "dataType", "out_dtype", "inp_dtype"}
)
_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)
_FIX = "pass the .onnx file written by `sdk export` (or by Brevitas's export_qonnx), unchanged"
_LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# What the flows declare of their graphs (each flow's graph_guard module, through the registry)


@dataclass(frozen=True)
class _FlowGraphs:
    """One flow's declaration (targets/<flow>/graph_guard.py); see targets/finn/graph_guard.py for the fields."""

    flow: str
    tool: str  # how messages name the flow's toolchain
    op_domains: frozenset[str]
    op_package: str  # existing sub-modules of it are known with the flow's ops
    legacy_rename: tuple[str, str, frozenset[str]] | None  # (older domain, qonnx's domain, op types)
    user_model_why: str
    user_model_fix: str
    code_attributes: frozenset[str]
    reads_metadata_as: str  # "" when the flow never reads model metadata
    loops_on_non_finite: bool


def _declaration(flow: str, module: Any) -> _FlowGraphs:
    return _FlowGraphs(
        flow=flow,
        tool=getattr(module, "TOOL", flow),
        op_domains=frozenset(getattr(module, "OP_DOMAINS", ())),
        op_package=getattr(module, "OP_PACKAGE", ""),
        legacy_rename=getattr(module, "LEGACY_RENAME", None),
        user_model_why=getattr(module, "USER_MODEL_WHY", ""),
        user_model_fix=getattr(module, "USER_MODEL_FIX", _FIX),
        code_attributes=frozenset(getattr(module, "CODE_ATTRIBUTES", ())),
        reads_metadata_as=getattr(module, "READS_METADATA_AS", ""),
        loops_on_non_finite=bool(getattr(module, "LOOPS_ON_NON_FINITE", False)),
    )


def _declared() -> tuple[_FlowGraphs, ...]:
    """Every registered flow's graph declaration, in registry order."""
    from targets.registry import FLOWS  # the registry is the core's one way to reach a flow

    return _declared_cached(tuple((flow, info.graph_guard) for flow, info in FLOWS.items() if info.graph_guard))


@functools.cache
def _declared_cached(entries: tuple[tuple[str, str], ...]) -> tuple[_FlowGraphs, ...]:
    declared = tuple(_declaration(flow, importlib.import_module(module)) for flow, module in entries)
    if sum(d.legacy_rename is not None for d in declared) > 1:
        raise RuntimeError("more than one flow declares an older QONNX domain (LEGACY_RENAME); the guard reads one")
    return declared


def _custom_domains() -> frozenset[str]:
    """The custom-op domains of the SDK's libraries: qonnx's and every flow's own."""
    return QONNX_DOMAINS.union(*(d.op_domains for d in _declared()))


def _legacy() -> tuple[str, str, frozenset[str], str] | None:
    """(older domain, qonnx's domain, op types, the declaring flow) of older QONNX files, if a flow declares it."""
    return next((d.legacy_rename + (d.flow,) for d in _declared() if d.legacy_rename is not None), None)


_COMPUTED = {"CUSTOM_DOMAINS", "KNOWN_DOMAINS", "LEGACY_DOMAIN", "LEGACY_TARGET", "LEGACY_OPS"}


def __getattr__(name: str) -> Any:
    """The domain sets and the older QONNX table, computed from the flows' declarations on first use."""
    if name == "CUSTOM_DOMAINS":
        return _custom_domains()
    if name == "KNOWN_DOMAINS":
        return STANDARD_DOMAINS | _custom_domains()
    legacy = _legacy() if name in _COMPUTED else None
    if legacy is not None:
        return legacy[("LEGACY_DOMAIN", "LEGACY_TARGET", "LEGACY_OPS").index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _accepted(flow_ops: Mapping[str, bool], default: bool) -> frozenset[str]:
    """The flows whose own op domains are known: `<flow>_ops=True|False` for each flow named, `default` for the
    others. A keyword naming no flow that declares graphs is a TypeError, as for any unexpected keyword."""
    declared = {d.flow for d in _declared()}
    chosen: dict[str, bool] = {}
    for key, value in flow_ops.items():
        flow = key.removesuffix("_ops")
        if not key.endswith("_ops") or flow not in declared:
            raise TypeError(f"unexpected keyword argument {key!r} (flows with graphs: {', '.join(sorted(declared))})")
        chosen[flow] = bool(value)
    return frozenset(flow for flow in declared if chosen.get(flow, default))


def _fail(where_name: str, what: str, fix: str = _FIX) -> ExportError:
    return ExportError(what, where=where_name, fix=fix)


def is_known_domain(domain: str, **flow_ops: bool) -> bool:
    """A standard or custom-op domain of the SDK's libraries, or an existing sub-module of their custom-op packages.
    A flow's own domains count unless `<flow>_ops=False` (e.g. finn_ops=False). The check looks for the module's
    file; nothing is imported."""
    return _is_known(domain, _own(_accepted(flow_ops, default=True)))


def _own(accepted: frozenset[str]) -> tuple[_FlowGraphs, ...]:
    """The declarations of the flows whose own domains are known."""
    return tuple(d for d in _declared() if d.flow in accepted)


def _is_known(domain: str, flows: tuple[_FlowGraphs, ...]) -> bool:
    if not isinstance(domain, str):  # protobuf hands over a field that is not UTF-8 as bytes
        return False
    if domain in STANDARD_DOMAINS or domain in QONNX_DOMAINS or any(domain in d.op_domains for d in flows):
        return True
    packages = (_QONNX_PACKAGE, *(d.op_package for d in flows if d.op_package))
    if not domain.startswith(packages):
        return False
    parts = domain.split(".")
    if not all(_IDENTIFIER.fullmatch(part) for part in parts):
        return False
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: found, not run
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        base = Path(root).joinpath(*parts[1:])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def _graphs(graph: onnx.GraphProto, depth: int = 0) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph in its nodes' attributes (If, Loop, Scan bodies)."""
    if depth > MAX_SUBGRAPH_DEPTH:
        raise RecursionError(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH}")
    yield graph
    for node in graph.node:
        yield from _subgraphs(node, depth)


def _subgraphs(node: onnx.NodeProto, depth: int) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield from _graphs(attribute.g, depth + 1)
        for sub in attribute.graphs:
            yield from _graphs(sub, depth + 1)


def _nodes(model: onnx.ModelProto) -> Iterator[tuple[onnx.NodeProto, str]]:
    """Every node with where it is: the graph and its subgraphs, and each local function (and its subgraphs)."""
    for graph in _graphs(model.graph):
        for node in graph.node:
            yield node, "graph" if graph is model.graph else f"subgraph {graph.name!r}"
    for function in model.functions:
        for node in function.node:
            yield node, f"function {function.name!r}"
            for graph in _subgraphs(node, 0):
                for inner in graph.node:
                    yield inner, f"function {function.name!r}"


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the file carries: initializers, sparse ones, and constants in node attributes."""
    for graph in _graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for node, _ in _nodes(model):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sparse in [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []:
                yield from (sparse.values, sparse.indices)
            for sparse in attribute.sparse_tensors:
                yield from (sparse.values, sparse.indices)


def _read(path: Path, where_name: str) -> bytes:
    try:
        if not path.exists():
            raise _fail(where_name, f"{where_name} does not exist.", "check the path of the .onnx file")
        if not path.is_file():
            raise _fail(where_name, f"{where_name} is not a file (a folder or a device).", "pass an .onnx file")
        size = path.stat().st_size
        if size == 0:
            raise _fail(where_name, f"{where_name} is empty (0 bytes).", _FIX)
        if size > MAX_BYTES:
            raise _fail(where_name, f"{where_name} is larger than 2 GiB ({size:,} bytes); ONNX files are not.", _FIX)
        return path.read_bytes()
    except ExportError:
        raise
    except (OSError, ValueError) as exc:
        raise _fail(
            where_name, f"{where_name} cannot be read: {getattr(exc, 'strerror', None) or exc}.", "check the file"
        ) from None


def _parse(data: bytes, where_name: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError, TypeError, MemoryError) as exc:
        raise _fail(
            where_name,
            f"{where_name} is not an ONNX model (protobuf: {str(exc)[:200] or type(exc).__name__}).",
            "the file is truncated, damaged or of another format; " + _FIX,
        ) from None
    return model


def _flow_op_in_model(where_name: str, flow: _FlowGraphs, domain: str, what: str) -> ExportError:
    """A flow's own op (FINN's MultiThreshold, a dataflow layer, ...) in a user's model: a graph the flow has already
    transformed."""
    legacy_ops = ", ".join(sorted(flow.legacy_rename[2])) if flow.legacy_rename else ""
    return _fail(
        where_name,
        f"{where_name}: {what} is in {flow.tool}'s op domain {domain!r}. "
        + flow.user_model_why.format(legacy_ops=legacy_ops),
        flow.user_model_fix,
    )


def _rename_legacy_ops(model: onnx.ModelProto, where_name: str, accepted: frozenset[str]) -> list[str]:
    """Older QONNX: the Quant, BipolarQuant and Trunc nodes of LEGACY_DOMAIN are renamed to qonnx's domain, and the
    opset import follows; the names of the renamed nodes, logged as a note. Other ops in that domain are left as
    they are (and refused by the domain check). Not in the graphs of the flow declaring that domain as its own."""
    legacy = _legacy()
    if legacy is None or legacy[3] in accepted:
        return []
    older, target, ops, _ = legacy
    renamed: list[str] = []
    for node, _ in _nodes(model):
        if node.domain == older and node.op_type in ops:
            node.domain = target
            renamed.append(node.name or node.op_type)
    if not renamed:
        return renamed
    still_used = any(node.domain == older for node, _ in _nodes(model)) or any(
        function.domain == older for function in model.functions
    )
    # the legacy domain's version carries over (qonnx picks Trunc's semantics by it); 1 where the file has none
    version = next((opset.version for opset in model.opset_import if opset.domain == older), 1)
    imports = [opset for opset in model.opset_import if still_used or opset.domain != older]
    if target not in {opset.domain for opset in imports}:
        imports.append(onnx.helper.make_opsetid(target, version))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    _LOG.warning("note: %s", legacy_note(where_name, renamed))
    return renamed


def legacy_note(where_name: str, renamed: list[str]) -> str:
    """The note for a user whose older QONNX file had its quantizers renamed (logged, and kept in the report)."""
    older, target, _, _ = _legacy()  # renames happen only when a flow declares them
    shown = ", ".join(renamed[:5]) + (f" and {len(renamed) - 5} more" if len(renamed) > 5 else "")
    return (
        f"{where_name} writes {len(renamed)} quantizer node(s) ({shown}) in the older domain {older!r}, as "
        f"older QONNX converters did; they were read as the same ops of qonnx's domain {target!r} (the "
        "package's model.qonnx.onnx holds them so)."
    )


def _unknown_domain(where_name: str, domain: str, what: str, accepted: frozenset[str]) -> ExportError:
    shown = domain if len(domain) <= 80 else domain[:80] + "..."
    for flow in _declared():
        if flow.flow not in accepted and flow.op_package and isinstance(domain, str):
            if domain.startswith(flow.op_package):
                return _flow_op_in_model(where_name, flow, shown, what)
    known = sorted(QONNX_DOMAINS.union(*(d.op_domains for d in _declared() if d.flow in accepted)))
    return _fail(
        where_name,
        f"{where_name}: {what} is in the op domain {shown!r}, which the SDK does not know. qonnx would "
        "import a Python module of that name to run it, so the file is refused before anything reads it.",
        f"use ops of the standard ONNX or these domains: {', '.join(known)}; {_FIX}",
    )


def _check_declared_once(graph: onnx.GraphProto, where_name: str) -> None:
    """Each tensor's type and shape declared once among the graph's inputs, outputs and value_info: qonnx asserts
    it (a traceback), and two declarations could disagree about the shape."""
    seen: set[str] = set()
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name in seen:
            raise _fail(
                f"{where_name}, tensor {value.name}",
                f"{where_name} declares the tensor {_shown(value.name)} twice (among the graph's inputs, outputs and "
                "value_info).",
                "declare each tensor once (onnx.shape_inference.infer_shapes writes value_info without repeats); "
                + _FIX,
            )
        seen.add(value.name)


def _check_structure(model: onnx.ModelProto, where_name: str, accepted: frozenset[str]) -> None:
    if not model.HasField("graph"):
        raise _fail(where_name, f"{where_name} holds no graph.")
    graph = model.graph
    if not graph.node:
        raise _fail(where_name, f"{where_name} has a graph with no nodes.")
    initializers = {tensor.name for tensor in graph.initializer}
    if not [value for value in graph.input if value.name not in initializers]:
        raise _fail(where_name, f"{where_name} has a graph with no inputs.")
    if not graph.output:
        raise _fail(where_name, f"{where_name} has a graph with no outputs.")
    _check_declared_once(graph, where_name)
    own = _own(accepted)
    nodes = list(_nodes(model))
    if len(nodes) > MAX_NODES:
        raise _fail(where_name, f"{where_name} has {len(nodes):,} nodes; more than {MAX_NODES:,} is not a network.")
    for function in model.functions:
        if not _is_known(function.domain, own):
            raise _unknown_domain(where_name, function.domain, f"function {function.name!r}", accepted)
    for node, scope in nodes:
        if not _is_known(node.domain, own):
            name = node.name or node.op_type
            raise _unknown_domain(where_name, node.domain, f"node {name!r} ({node.op_type}, {scope})", accepted)
        if node.op_type == "StreamingDataflowPartition":  # FINN loads the file its `model` attribute names
            for attribute in node.attribute:
                if attribute.name == "model" and not _bare_file_name(attribute.s):
                    raise _fail(
                        where_name,
                        f"{where_name}: partition {node.name!r} names the model file {attribute.s[:80]!r}; "
                        "a package's partition names a file beside it.",
                        "deploy again: a package's graphs are written by the SDK",
                    )
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise _fail(
                where_name,
                f"{where_name} keeps tensor {tensor.name!r} in an external file; the SDK reads one self-contained "
                "file and never follows a path written inside it.",
                "save the model with its weights inside (onnx.save(model, path, save_as_external_data=False))",
            )


def _shown(value: str | bytes) -> str:
    text = value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _literal_fix(allowed: str) -> str:
    return f"{allowed}; {_FIX}"


def is_datatype_name(value: object) -> bool:
    """A qonnx DataType name from the literal allow-list (DATATYPE_NAME) that qonnx parses; no eval anywhere."""
    if not isinstance(value, str) or not DATATYPE_NAME.fullmatch(value):
        return False
    from qonnx.core.datatype import resolve_datatype  # parses by string operations only

    try:
        resolve_datatype(value)
    except (KeyError, ValueError, TypeError, AssertionError):
        return False
    return True


def _check_annotations(model: onnx.ModelProto, where_name: str) -> None:
    """qonnx's get_tensor_layout (and get_tensor_sparsity) run eval() on the annotation's text: only literals pass."""
    for graph in _graphs(model.graph):
        for annotation in graph.quantization_annotation:
            for entry in annotation.quant_parameter_tensor_names:
                key, value = entry.key, entry.value
                field = f"the quantization annotation {_shown(key)} of tensor {_shown(annotation.tensor_name)}"
                if key not in ANNOTATION_KEYS:
                    raise _fail(
                        where_name,
                        f"{where_name}: {field} is not one the SDK reads (qonnx evaluates some annotations as "
                        "Python), so the file is refused before anything reads it.",
                        _literal_fix(f"keep only the annotations {', '.join(ANNOTATION_KEYS)}"),
                    )
                if key == "finn_datatype" and not is_datatype_name(value):
                    raise _fail(
                        where_name,
                        f"{where_name}: {field} holds {_shown(value)}, which is not a qonnx data type name.",
                        _literal_fix("use a name such as INT4, UINT8, BIPOLAR or FLOAT32"),
                    )
                if key == "tensor_sparsity" and not (isinstance(value, str) and TENSOR_SPARSITY.fullmatch(value)):
                    raise _fail(
                        where_name,
                        f"{where_name}: {field} holds {_shown(value)}, which is not the depthwise-convolution mark "
                        "qonnx writes; qonnx would run it as Python (eval), so the file is refused before anything "
                        "reads it.",
                        _literal_fix("write {'dw': {'kernel_shape': [KH, KW]}} exactly, or remove the annotation"),
                    )
                if key == "tensor_layout" and value not in TENSOR_LAYOUTS:
                    raise _fail(
                        where_name,
                        f"{where_name}: {field} holds {_shown(value)}, which is not a layout qonnx knows; qonnx "
                        "would run it as Python (eval), so the file is refused before anything reads it.",
                        _literal_fix(f"write one of {', '.join(sorted(TENSOR_LAYOUTS))} exactly"),
                    )


def _check_metadata(model: onnx.ModelProto, where_name: str) -> None:
    """A flow may read a model's metadata_props as code (FINN: library paths to load (rtlsim_so), a simulator
    (exec_mode) and expressions to eval (vivado_stitch_ifnames)); the SDK's models and Brevitas's exports carry
    none."""
    readers = "; ".join(
        f"{d.tool} reads model metadata as {d.reads_metadata_as}" for d in _declared() if d.reads_metadata_as
    )
    for entry in model.metadata_props if readers else ():
        raise _fail(
            where_name,
            f"{where_name}: the model's metadata_props entry {_shown(entry.key)} is refused: {readers}, and the "
            "SDK's models carry none.",
            _literal_fix("remove the metadata (del model.metadata_props[:]; onnx.save(model, path))"),
        )


def _check_attributes(model: onnx.ModelProto, where_name: str) -> None:
    """A flow's attributes that name files, code or a simulator (its CODE_ATTRIBUTES) must be empty; data type names
    must be literal names; float attributes must be finite (a NaN epsilon loops FINN as a NaN weight does)."""
    code_attributes = {name: d.tool for d in reversed(_declared()) for name in d.code_attributes}
    custom_domains = _custom_domains()
    for node, scope in _nodes(model):
        name = node.name or node.op_type
        for attribute in node.attribute:
            field = f"attribute {_shown(attribute.name)} of node {_shown(name)} ({scope})"
            where = f"{where_name}, node {name}, attribute {attribute.name}"
            tool = code_attributes.get(attribute.name)
            if tool is not None and (attribute.s or attribute.strings):
                raise _fail(
                    where,
                    f"{where_name}: {field} holds {_shown(attribute.s or attribute.strings[0])}; {tool} would read, "
                    "run or load what it names, so the file is refused before anything reads it.",
                    f"deploy again: the graphs the SDK writes leave {tool}'s build paths empty",
                )
            if attribute.name in DATATYPE_ATTRIBUTES and node.domain in custom_domains:
                value = attribute.s.decode("utf-8", "replace")
                if not is_datatype_name(value):
                    raise _fail(
                        where,
                        f"{where_name}: {field} holds {_shown(attribute.s)}, which is not a qonnx data type name.",
                        _literal_fix("use a name such as INT4, UINT8, BIPOLAR or FLOAT32"),
                    )
            floats = [attribute.f, *attribute.floats]
            if not all(math.isfinite(value) for value in floats):
                raise _fail(
                    where,
                    f"{where_name}: {field} is not finite (NaN or infinity); {_loops('on it')}.",
                    "give the attribute a finite value (retrain or re-export the model)",
                )


def _itemsize(elem_type: int) -> int:
    try:
        return max(1, onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, ValueError, TypeError):
        return 8  # strings, undefined: counted as one pointer each


def _elements(dims: Iterator[int] | list[int], limit: int) -> int | None:
    """The product of `dims`, stopping once it passes `limit` (a file may list a million dims); None for a
    negative dim."""
    dims = list(dims)
    if any(dim < 0 for dim in dims):
        return None
    if 0 in dims:
        return 0
    count = 1
    for dim in dims:
        count *= dim
        if count > limit:
            return count
    return count


def _check_sizes(model: onnx.ModelProto, where_name: str) -> None:
    """Every shape the file declares, from the header: no array is built before its size is known to fit."""
    sizes: dict[str, int] = {}
    budget = MEMORY_BUDGET

    def add(name: str, dims: list[int], elem_type: int, what: str) -> None:
        count = _elements(dims, budget)
        if count is None:
            raise _fail(where_name, f"{where_name}: {what} {_shown(name)} has a negative dimension {dims}.")
        size = count * _itemsize(elem_type)
        if size > budget:
            shown = "x".join(str(dim) for dim in dims[:8]) + ("x..." if len(dims) > 8 else "")
            raise _fail(
                where_name,
                f"{where_name}: {what} {_shown(name)} of shape {shown} takes {size / 2**30:,.1f} GiB, more than the "
                f"SDK's memory budget of {budget >> 30} GiB for a graph; it is refused before any array is built.",
                "give the tensor the shape of one sample (the SDK batches samples itself); " + _FIX,
            )
        sizes[name] = max(sizes.get(name, 0), size)

    for graph in _graphs(model.graph):
        for kind, values in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info)):
            for value in values:
                if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
                    continue
                tensor_type = value.type.tensor_type
                dims = [dim.dim_value if dim.HasField("dim_value") else 1 for dim in tensor_type.shape.dim]
                add(value.name, dims, tensor_type.elem_type, f"the {kind} tensor")
        for sparse in graph.sparse_initializer:
            add(sparse.values.name, list(sparse.dims), sparse.values.data_type, "the sparse initializer")
    for tensor in _tensors(model):
        add(tensor.name, list(tensor.dims), tensor.data_type, "the tensor")
    total = sum(sizes.values())
    if total > budget:
        largest = max(sizes, key=sizes.__getitem__)
        raise _fail(
            where_name,
            f"{where_name}: the tensors the graph declares take {total / 2**30:,.1f} GiB together (the largest "
            f"{_shown(largest)}: {sizes[largest] / 2**30:,.1f} GiB), more than the SDK's memory budget of "
            f"{budget >> 30} GiB for a graph; it is refused before any array is built.",
            "give the tensors the shapes of one sample (the SDK batches samples itself); " + _FIX,
        )


def _loops(on_what: str) -> str:
    """Why a NaN or inf is refused: the flows whose transformations loop on one."""
    tools = " and ".join(f"{d.tool}'s" for d in _declared() if d.loops_on_non_finite)
    return f"{tools} transformations loop {on_what}" if tools else f"no flow's transformations take {on_what}"


def _check_finite(model: onnx.ModelProto, where_name: str) -> None:
    """A NaN or inf in a weight makes FINN's RoundAndClipThresholds repeat forever (NaN != NaN); refused by name.
    Runs after _check_sizes: every array built here fits the budget."""
    for tensor in _tensors(model):
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:
            raise _fail(
                where_name,
                f"{where_name}: tensor {_shown(tensor.name)} does not hold the data its shape "
                f"{list(tensor.dims)[:8]} says ({str(exc)[:120]}).",
                "the file is truncated or damaged; " + _FIX,
            ) from None
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise _fail(
                where_name,
                f"{where_name}: tensor {_shown(tensor.name)} holds {bad:,} value(s) that are NaN or infinite; "
                f"{_loops('forever on them')}, and no hardware computes them.",
                "retrain or re-export the model so that every weight and parameter is finite (a NaN usually "
                "comes from a diverged training run)",
            )


MAX_QUANT_BITS = 32  # qonnx and FINN name a Quant's type INT<bits>, computing 2**bits: a huge width never ends


def _check_bit_widths(model: onnx.ModelProto, where_name: str) -> None:
    """A Quant or Trunc whose bit width is a constant must give 1 to MAX_QUANT_BITS whole bits: qonnx and FINN turn
    it into a DataType whose range they compute as 2**bits (a width of 1e16 never finishes), and no target has
    wider integers. Runs after _check_sizes and _check_finite."""
    constants = {t.name: t for graph in _graphs(model.graph) for t in graph.initializer}
    width_inputs = {"Quant": (3,), "Trunc": (3, 4)}  # Trunc: its input's and its output's width
    for node, _ in _nodes(model):
        names = [node.input[i] for i in width_inputs.get(node.op_type, ()) if i < len(node.input)]
        for name in (name for name in names if name in constants):
            try:
                widths = numpy_helper.to_array(constants[name]).astype(np.float64).reshape(-1)
            except (ValueError, TypeError):
                continue  # the tensor itself was judged by _check_finite
            bad = widths[(widths != np.floor(widths)) | (widths < 1) | (widths > MAX_QUANT_BITS)]
            if not bad.size:
                continue
            raise _fail(
                where_name,
                f"{where_name}: node {_shown(node.name)} ({node.op_type}) has the bit width {bad[0]:g}; a "
                f"quantizer takes whole widths of 1 to {MAX_QUANT_BITS} bits.",
                "re-export the model; a width outside that range comes from a damaged file or a wrong export",
            )


def _bare_file_name(raw: bytes) -> bool:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(name) and PurePath(name).name == name and name not in (".", "..") and "\\" not in name


def _check_standard_ops(model: onnx.ModelProto) -> None:
    """onnx's checker (standard ops, their attributes and types). FINN writes its own domains without an opset
    import, which the checker would call invalid: a copy gets one for each known custom domain it uses."""
    used = {node.domain for node, _ in _nodes(model)} & _custom_domains()
    missing = used - {opset.domain for opset in model.opset_import}
    if missing:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.opset_import.extend(onnx.helper.make_opsetid(domain, 1) for domain in sorted(missing))
        model = copy
    onnx.checker.check_model(model)


def load_onnx_safely(
    path: Path | str, where_name: str | None = None, *, renamed: list[str] | None = None, **flow_ops: bool
) -> onnx.ModelProto:
    """The ModelProto of an .onnx file, or an ExportError naming the file as `where_name`, before any library (qonnx,
    FINN, onnxruntime) has seen a byte of it.

    `<flow>_ops=True` (e.g. finn_ops=True, as FINN's own code passes it): accept that flow's own domains too, for the
    graphs it wrote into a deployment package (a user's model, QONNX from Brevitas, never holds them); without it,
    the quantizers of older QONNX files are renamed from the flow's older domain to qonnx's (LEGACY_OPS), with a
    logged note, and their names are appended to `renamed`."""
    accepted = _accepted(flow_ops, default=False)
    where_name = where_name or str(path)
    model = _parse(_read(Path(path), where_name), where_name)
    try:
        names = _rename_legacy_ops(model, where_name, accepted)
        if renamed is not None:
            renamed.extend(names)
        _check_structure(model, where_name, accepted)
        _check_annotations(model, where_name)
        _check_metadata(model, where_name)
        _check_attributes(model, where_name)
        _check_sizes(model, where_name)
        _check_finite(model, where_name)
        _check_bit_widths(model, where_name)
        _check_standard_ops(model)
    except ExportError:
        raise
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "invalid graph"
        raise _fail(where_name, f"{where_name} is not a valid ONNX graph: {first}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:  # names that are not UTF-8, nesting too deep
        raise _fail(where_name, f"{where_name} is not a valid ONNX graph: {str(exc)[:200]}") from None
    return model
