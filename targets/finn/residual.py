"""Residual joins FINN can stream: an Add whose two summands one quantizer (one scale) made.

FINN adds the two branches of a residual block as integers (DuplicateStreams forks the stream, ElementwiseAdd,
FINN's AddStreams, joins it): its streamlining moves the summands' common scale past the Add
(`MoveLinearPastEltwiseAdd`), which it can only do when both summands carry the same scale, that is when both
come from one quantizer (Brevitas: one QuantIdentity applied to both, as sdk.zoo's resnet8 does). A summand
without a quantizer, or two quantizers of different scales, would leave the sum and every layer after it in
float. This check reads the graph as the user's file has it, before any of FINN's renaming, so a refusal names
the Add the way the file does.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

# Ops a quantized tensor passes through unchanged in value (layout, or the maximum of values on one grid).
_SAME_GRID = ("Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")
_QUANTIZERS = ("Quant", "BipolarQuant")
# The parameters two quantizers must agree on to stand for one: inputs (scale, zero point, bit width) ...
_PARAMETER_INPUTS = {"Quant": (1, 2, 3), "BipolarQuant": (1,)}
# ... and attributes.
_ATTRIBUTES = ("signed", "narrow", "rounding_mode")

SHARED_QUANTIZER_FIX = (
    "quantize both summands with one shared quantizer just before the add, so it sums integers of one scale "
    "(Brevitas: one QuantIdentity applied to both, `self.quant(y) + self.quant(shortcut)`, as sdk.zoo's resnet8 "
    "does)"
)


def node_label(node) -> str:
    """The node as the user's file names it (a node without a name by the tensor it writes)."""
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
    producer = model.find_producer(tensor)
    while producer is not None and producer.op_type in _SAME_GRID:
        producer = model.find_producer(producer.input[0])
    if producer is not None and producer.op_type in _QUANTIZERS:
        return producer, None
    return None, producer


def _signature(model: ModelWrapper, quant) -> tuple | None:
    """What makes two quantizers one: their constant parameters and attributes; None if a parameter is computed."""
    values = []
    for index in _PARAMETER_INPUTS[quant.op_type]:
        value = _constant(model, quant.input[index]) if index < len(quant.input) else None
        if value is None:
            return None
        values.append(np.asarray(value, dtype=np.float64))
    attributes = tuple((a.name, a.i if a.type == a.INT else a.s) for a in quant.attribute if a.name in _ATTRIBUTES)
    return quant.op_type, tuple(sorted(attributes)), values


def _same(one: tuple, other: tuple) -> bool:
    if one[:2] != other[:2] or len(one[2]) != len(other[2]):
        return False
    return all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(one[2], other[2]))


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
            signatures = [_signature(model, quant) for quant in quants]
            if any(s is None for s in signatures):
                why = "a summand's quantizer has a computed (not constant) scale"
            elif not _same(*signatures):
                a, b = quants
                why = (
                    f"the summands come from two different quantizers, {node_label(a)} ({_describe_scale(model, a)})"
                    f" and {node_label(b)} ({_describe_scale(model, b)})"
                )
        if why is not None:
            found.append((node, why))
    return found
