"""The user's names for the nodes and tensors of a graph the SDK and the flows rewrite.

qonnx's clean-up renames every node (GiveUniqueNodeNames: `Mul_1`) and tensor (GiveReadableTensorNames:
`global_in`, `MatMul_0_out0`), and FINN's steps rename again and replace nodes. A message must name what the
user's file names. So each node carries a mark in its `doc_string` (a field every ONNX reader ignores and qonnx
and FINN keep on the nodes they keep): the node's name, position and op type, its input and output tensor names
as the user's file gives them, or, for a node the SDK added, what it is ("the input scale the SDK added").

- `mark_nodes` marks a graph's nodes as they are named now (the user's file, or a graph that comes with its card);
- `keep_names(model, transform)` runs a renaming transformation (qonnx's clean-up) and gives the nodes, the graph
  input and the tensors their file's names back where they are free;
- `inherit(before, model)` after a step that replaces nodes (FINN's conversions): a node without a mark takes the
  mark of the node whose tensor it produces or reads, or of the node before it;
- `describe(node)` is the name every message uses (`node_phrase` with the op type, to open a sentence).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

MARK_KEY = "sdk_source"
MARK_PREFIX = '{"sdk_source": '  # how json.dumps writes a mark
MAX_MARK_CHARS = 4096  # a mark is a few names; a longer doc_string is not one of ours
MAX_NAME_CHARS = 200  # a name longer than this is cut in messages
SDK_INPUT_SCALE = "the input scale the SDK added"


def _text(value: Any) -> str | None:
    return value[:MAX_NAME_CHARS] if isinstance(value, str) and value else None


def source_of(node: Any) -> dict[str, Any] | None:
    """The node's mark, or None (no mark, or a doc_string that is not a well-formed mark of the SDK's)."""
    doc = node.doc_string
    if not doc or len(doc) > MAX_MARK_CHARS or MARK_KEY not in doc:
        return None
    try:
        data = json.loads(doc)
    except (ValueError, RecursionError):
        return None
    mark = data.get(MARK_KEY) if isinstance(data, dict) else None
    if not isinstance(mark, dict) or not isinstance(mark.get("op"), str):
        return None
    for key in ("inputs", "outputs"):
        if not (isinstance(mark.get(key), list) and all(isinstance(t, str) for t in mark[key])):
            mark[key] = []
    return mark


def _write(node: Any, mark: dict[str, Any]) -> None:
    node.doc_string = json.dumps({MARK_KEY: mark})


def mark_nodes(graph: Any, fresh: bool = False) -> None:
    """Mark every node (fresh) or every node without a mark, with its name, position and tensors as they are now.

    A name two nodes share is told with the node's position; the graph keeps only unique names (keep_names)."""
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.name] = counts.get(node.name, 0) + 1
    for index, node in enumerate(graph.node):
        if not fresh and source_of(node) is not None:
            continue
        _write(
            node,
            {
                "name": node.name or None,
                "unique": counts[node.name] == 1,
                "index": index,
                "op": node.op_type,
                "inputs": list(node.input),
                "outputs": list(node.output),
            },
        )


def mark_sdk_node(node: Any, meaning: str) -> Any:
    """Mark a node the SDK puts into the user's graph: messages call it `meaning` (e.g. SDK_INPUT_SCALE)."""
    _write(
        node,
        {
            "sdk": meaning,
            "name": node.name or None,
            "op": node.op_type,
            "inputs": list(node.input),
            "outputs": list(node.output),
        },
    )
    return node


def describe(node: Any) -> str:
    """The node as the user's file names it: its name there (with the module's layer it was exported from, where
    the SDK exported it), what the SDK added, or its position and op type."""
    mark = source_of(node)
    if mark is None:
        return node.name or f"a {node.op_type} node"
    if _text(mark.get("sdk")):
        return _text(mark["sdk"])
    name, index = _text(mark.get("name")), mark.get("index")
    place = isinstance(index, int) and not isinstance(index, bool) and index >= 0  # among the file's nodes, from 1
    if name and _text(mark.get("layer")):
        return f"{name} of layer {_text(mark['layer'])}"
    if name and (mark.get("unique", True) is True or not place):
        return name
    if name:
        return f"{name} (node #{index + 1}; the file has several of that name)"
    return f"unnamed node #{index + 1}" if place else f"an unnamed {mark['op'][:MAX_NAME_CHARS]} node"


def _unique_name(mark: dict[str, Any]) -> str | None:
    """The node's name in the file, where no other node of the file has it."""
    return _text(mark.get("name")) if mark.get("unique", True) is True else None


def node_phrase(node: Any) -> str:
    """The node and its op type, to open a sentence with: "node /fc1/MatMul (MatMul)", "unnamed node #3 (Mul)",
    "the input scale the SDK added (Mul)"."""
    name = describe(node)
    mark = source_of(node)
    plain = mark is not None and (_text(mark.get("sdk")) or not _unique_name(mark))
    return f"{name} ({node.op_type})" if plain else f"node {name} ({node.op_type})"


def source_op(node: Any) -> str:
    """The op type of the user's node this node comes from (a FINN Transpose made for a Conv: Conv)."""
    mark = source_of(node)
    return mark["op"][:MAX_NAME_CHARS] if mark is not None else node.op_type


def _tensor_names(graph: Any) -> set[str]:
    names = {t.name for t in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names - {""}


def _graph_inputs(graph: Any) -> list[str]:
    initializers = {t.name for t in graph.initializer}
    return [t.name for t in graph.input if t.name not in initializers]


def keep_names(model: Any, transform: Callable[[Any], Any]) -> Any:
    """`transform(model)` (qonnx's clean-up), with the names it gave back as they were: each node's own name (where
    it had a unique one), its tensors' (where no other tensor holds the name) and the graph input's."""
    mark_nodes(model.graph)
    inputs = _graph_inputs(model.graph)
    model = transform(model)
    restore_names(model, inputs)
    return model


def restore_names(model: Any, inputs: list[str] | None = None) -> None:
    """Give each marked node and its tensors their marked names, and the graph inputs `inputs`, where free."""
    graph = model.graph
    used = _tensor_names(graph)
    taken = {node.name for node in graph.node}

    def rename(old: str, new: str) -> None:
        if old and new and old != new and new not in used:
            model.rename_tensor(old, new)
            used.discard(old)
            used.add(new)

    for old, new in zip(_graph_inputs(graph), inputs or []):
        rename(old, new)
    for node in graph.node:
        mark = source_of(node)
        if mark is None:
            continue
        name = _unique_name(mark)
        if name and name != node.name and name not in taken:
            taken.discard(node.name)
            node.name = name
            taken.add(name)
        if mark["op"] != node.op_type:
            continue
        for old, new in zip(list(node.output), mark["outputs"]):
            rename(old, new)
        for old, new in zip(list(node.input), mark["inputs"]):
            if model.get_initializer(old) is not None:  # a constant the clean-up renamed `{node}_param0`
                rename(old, new)


def _marked(node: Any) -> bool:
    """Cheaper than source_of, for the graphs the SDK marked itself: the doc_string is one of its marks."""
    return node.doc_string.startswith(MARK_PREFIX)


def marks_by_tensor(graph: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(tensor -> doc_string of the marked node producing it, tensor -> doc_string of a marked node reading it)."""
    produced: dict[str, str] = {}
    read: dict[str, str] = {}
    for node in graph.node:
        if not _marked(node):
            continue
        for t in node.output:
            produced.setdefault(t, node.doc_string)
        for t in node.input:
            read.setdefault(t, node.doc_string)
    return produced, read


def _op_of(doc: str) -> str | None:
    try:
        return json.loads(doc)[MARK_KEY]["op"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def inherit(before: tuple[dict[str, str], dict[str, str]], model: Any, upstream: bool = True) -> None:
    """Nodes a step made (FINN's MultiThreshold for a Quant, its Transposes around a Conv, an MVAU for a MatMul)
    take the mark of the node they replace. Among the marked nodes of the graph before the step that wrote or read
    one of the new node's tensors: one of its own op type (a MatMul made again), else one that read its input (an
    MVAU reads what its MatMul read), else the one that wrote its output; failing all (where `upstream`), the node
    whose output it reads. `before`: marks_by_tensor of the graph before the step."""
    produced_before, read_before = before
    producer_now: dict[str, Any] = {}
    for node in model.graph.node:
        if not _marked(node):
            wrote = [produced_before[t] for t in node.output if t in produced_before]
            read = [read_before[t] for t in node.input if t in read_before]
            candidates = read + wrote
            doc = next((d for d in candidates if _op_of(d) == node.op_type), None) or next(iter(candidates), None)
            if doc is None and upstream:
                source = next((producer_now[t] for t in node.input if t in producer_now), None)
                doc = source.doc_string if source is not None and _marked(source) else None
            if doc is not None:
                node.doc_string = doc
        for t in node.output:
            producer_now[t] = node


BREVITAS_SCOPES = ("weight_quant", "act_quant", "input_quant", "output_quant", "bias_quant", "activation_impl")


def module_layer(torch_name: str) -> str | None:
    """The module layer a node of torch's TorchScript export belongs to: `/model/body/body.0/MatMul` -> `body.0`,
    `/model/fc/weight_quant/export_handler/Quant` -> `fc`; None for the module's own forward (`/model/Add`) and
    for names of another exporter (dynamo's `node_linear`)."""
    if not torch_name.startswith("/"):
        return None
    scopes = torch_name.strip("/").split("/")[:-1]
    scopes = [p for p in scopes if p not in BREVITAS_SCOPES and not p.startswith("export_handler")]
    if scopes and scopes[0] == "model":  # sdk.export's wrapper (the uint8 -> / 255 input scale) holds the module
        scopes = scopes[1:]
    return _text(scopes[-1].removeprefix("model.")) if scopes else None


def mark_exported(raw: Any, cleaned: Callable[[Any], Any], input_scale: str | None) -> Any:
    """`cleaned(raw)` (qonnx's clean-up of a Brevitas export through torch), each node marked with its name in the
    cleaned graph (which `sdk export` writes: the names of the user's file) and the module layer it comes from;
    the node named `input_scale` (the export's own uint8 -> / 255 Mul) is the SDK's."""
    for node in raw.graph.node:
        layer = module_layer(node.name)
        if node.name == input_scale:
            mark_sdk_node(node, SDK_INPUT_SCALE)
        else:
            _write(node, {"layer": layer, "op": node.op_type})
    model = cleaned(raw)
    for index, node in enumerate(model.graph.node):
        mark = source_of(node) or {"op": node.op_type}
        mark.update(name=node.name, unique=True, index=index, inputs=list(node.input), outputs=list(node.output))
        _write(node, mark)
    return model


@contextmanager
def marks_follow_transformations() -> Iterator[None]:
    """While open, every qonnx / FINN transformation passes the marks on (`inherit`) to the nodes it makes: one
    transformation at a time, whose new nodes read and write the tensors of the nodes they replace before a later
    one (GiveReadableTensorNames) renames them all. Used around FINN's steps (targets/finn/steps.py)."""
    from qonnx.core.modelwrapper import ModelWrapper

    original = ModelWrapper.transform
    depth = [0]

    def transform(self, transformation, *args, **kwargs):
        before = marks_by_tensor(self.graph)
        depth[0] += 1
        try:
            model = original(self, transformation, *args, **kwargs)
        finally:
            depth[0] -= 1
        # a transformation run inside another sees the other's new nodes before it has passed its marks on: it
        # matches tensors only, and the outer one, which saw the nodes it replaced, falls back to the node before
        inherit(before, model, upstream=depth[0] == 0)
        return model

    ModelWrapper.transform = transform
    try:
        yield
    finally:
        ModelWrapper.transform = original
