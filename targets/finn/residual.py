"""Residual joins FINN can stream: an Add whose two summands lie on one grid (one scale and zero point).

FINN adds the two branches of a residual block as integers (DuplicateStreams forks the stream, ElementwiseAdd,
FINN's AddStreams, joins it): its streamlining moves the summands' common scale past the Add
(`MoveLinearPastEltwiseAdd`), which it can only do when both summands carry the same scale, in practice when one
quantizer made both (Brevitas: one QuantIdentity applied to both, as sdk.zoo's resnet8 does); two quantizers of
equal scale and zero point serve as well (bit widths only bound the integers). A summand without a quantizer, or
two quantizers of different scales, would leave the sum and every layer after it in float. This check reads the
graph as the user's file has it, before FINN's renaming, so a refusal names the Add the way the file does.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

# Ops a quantized tensor passes through unchanged in value (layout, or the maximum of values on one grid).
_SAME_GRID = ("Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")
_QUANTIZERS = ("Quant", "BipolarQuant")

SHARED_QUANTIZER_FIX = (
    "quantize both summands with one shared quantizer just before the add, so it sums integers of one scale "
    "(Brevitas: one QuantIdentity applied to both, `self.quant(y) + self.quant(shortcut)`, as sdk.zoo's resnet8 "
    "does)"
)


def node_label(node) -> str:
    """The node as the user's file names it (sdk.graph_names; a node without a name by the tensor it writes)."""
    from sdk.graph_names import describe, source_of

    if source_of(node) is not None:
        return describe(node)
    return node.name or f"the {node.op_type} writing '{node.output[0]}'"


def _constant(model: ModelWrapper, name: str) -> np.ndarray | None:
    value = model.get_initializer(name)
    if value is not None:
        return np.asarray(value)
    producer = model.find_producer(name)
    if producer is not None and producer.op_type == "Constant":
        from onnx import helper, numpy_helper

        for attribute in producer.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(helper.get_attribute_value(attribute))
    return None


def _quantizer(model: ModelWrapper, tensor: str):
    """The Quant / BipolarQuant node whose grid `tensor` is on, or (None, the node that left it off a grid)."""
    producer, seen = model.find_producer(tensor), set()
    while producer is not None and producer.op_type in _SAME_GRID and producer.input and producer.output[0] not in seen:
        seen.add(producer.output[0])  # a malformed graph may loop
        producer = model.find_producer(producer.input[0])
    if producer is not None and producer.op_type in _QUANTIZERS:
        return producer, None
    return None, producer


def _grid(model: ModelWrapper, quant) -> tuple[np.ndarray, np.ndarray] | None:
    """The grid a quantizer puts its output on: (scale, zero point); None where either is computed. Bit widths and
    signs only bound the integers, so two quantizers of one grid sum exactly as integers."""
    scale = _constant(model, quant.input[1]) if len(quant.input) > 1 else None
    zero = np.zeros(1) if quant.op_type == "BipolarQuant" else None
    if quant.op_type == "Quant" and len(quant.input) > 2:
        zero = _constant(model, quant.input[2])
    if scale is None or zero is None:
        return None
    return np.asarray(scale, dtype=np.float64), np.asarray(zero, dtype=np.float64)


def _same_grid(one: tuple, other: tuple) -> bool:
    return all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(one, other))


def _describe_scale(model: ModelWrapper, quant) -> str:
    scale = _constant(model, quant.input[1])
    if scale is None:
        return "a computed scale"
    flat = np.asarray(scale, dtype=np.float64).reshape(-1)
    return f"scale {flat[0]:.6g}" if flat.size == 1 else f"{flat.size} per-channel scales"


def unaligned_joins(model: ModelWrapper) -> list[tuple[object, str]]:
    """Every Add of two computed tensors whose summands one quantizer did not make: (node, why)."""
    found = []
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        if any(_constant(model, name) is not None for name in node.input):
            continue  # a bias: streamlining folds it into thresholds
        quants, why = [], None
        for index, name in enumerate(node.input):
            quant, stopped_at = _quantizer(model, name)
            if quant is None:
                source = "the graph input" if stopped_at is None else f"{stopped_at.op_type} {node_label(stopped_at)}"
                why = f"its {('first', 'second')[index]} summand comes from {source}, with no quantizer in between"
                break
            quants.append(quant)
        if why is None:
            grids = [_grid(model, quant) for quant in quants]
            if any(grid is None for grid in grids):
                why = "a summand's quantizer has a computed (not constant) scale or zero point"
            elif not _same_grid(*grids):
                a, b = quants
                why = (
                    f"the summands come from two quantizers of different scales or zero points, {node_label(a)} "
                    f"({_describe_scale(model, a)}) and {node_label(b)} ({_describe_scale(model, b)})"
                )
        if why is not None:
            found.append((node, why))
    return found
