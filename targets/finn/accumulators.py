"""Accumulators and threshold types FINN sizes too narrow, widened to the range the hardware really computes.

FINN's MinimizeAccumulatorWidth sizes an MVAU in XNOR mode (binary inputs and weights standing for -1 / +1) from
the dot product of the +-1 values, [-(weights at -1), +(weights at +1)]: an INT10 for 784 inputs when the
weights are about balanced. The hardware accumulates the XNOR popcount instead, the number of inputs that
match their weight, in [0, MW]: 784 matching inputs do not fit an INT10. Such accumulators are widened to hold
[0, MW] (without thresholds the output type too, as the output is the accumulator).

FINN's HLS layers compare in the thresholds' type: the accumulator of an MVAU / VVAU with thresholds, and the
input of a Thresholding layer, are held in it. FINN makes that type at least as wide as the accumulator or input,
but not of the same range (a signed type of equal width for unsigned values with a negative threshold; an
accumulator widened here). Such types are widened to hold both the values compared and every threshold.

Nothing else changes, so every layer computes what FINN's python execution computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.infer_datatypes import InferDataTypes

from targets.finn.kernels import base_op_type


@dataclass(frozen=True)
class Widened:
    """One accumulator the SDK widened: for the report and the tests."""

    node: str
    what: str  # "accumulator" or "thresholds"
    finn: str  # the type FINN chose
    sdk: str  # the type the SDK gave it
    why: str  # the range it must hold

    def __str__(self) -> str:
        return f"{self.node} {self.what} {self.finn} -> {self.sdk} ({self.why})"


def _holds(datatype: DataType, low: int, high: int) -> bool:
    return datatype.is_integer() and datatype.min() <= low and high <= datatype.max()


def _smallest(low: int, high: int) -> DataType:
    """The narrowest INT / UINT holding [low, high] (never BINARY / BIPOLAR: HLS compares it as a number)."""
    low, high = min(low, 0), max(high, 1)
    if low >= 0:
        return DataType[f"UINT{max(1, int(high).bit_length())}"]
    return DataType[f"INT{max(int(-low - 1).bit_length(), int(high).bit_length()) + 1}"]


def _last_word(datatype: DataType) -> DataType:
    """FINN's width for a graph output: a multiple of 8 bits, the signedness kept."""
    bits = -(-datatype.bitwidth() // 8) * 8
    return DataType[f"{'INT' if datatype.signed() else 'UINT'}{bits}"]


def _widen_popcount(model: ModelWrapper, node, outputs: set[str]) -> Widened | None:
    """An XNOR-mode MVAU's accumulator, made to hold its popcount [0, MW]."""
    op = getCustomOp(node)
    top = int(op.get_nodeattr("MW"))  # every input matches its weight
    acc = DataType[op.get_nodeattr("accDataType")]
    if _holds(acc, 0, top):
        return None
    needed = _smallest(0, top)
    op.set_nodeattr("accDataType", needed.name)
    if op.get_nodeattr("noActivation"):  # the output is the accumulator
        out = _last_word(needed) if node.output[0] in outputs else needed
        op.set_nodeattr("outputDataType", out.name)
        model.set_tensor_datatype(node.output[0], out)
    return Widened(node.name, "accumulator", acc.name, needed.name, f"popcount up to {top}")


def _compared(model: ModelWrapper, node) -> tuple[str, DataType, str] | None:
    """An HLS layer's thresholds tensor, the type of the values compared with them, and its attribute (if any)."""
    op = getCustomOp(node)
    if node.op_type in ("MVAU_hls", "VVAU_hls") and not op.get_nodeattr("noActivation") and len(node.input) > 2:
        return node.input[2], DataType[op.get_nodeattr("accDataType")], ""
    if node.op_type == "Thresholding_hls":
        return node.input[1], op.get_input_datatype(0), "weightDataType"
    return None


def _widen_thresholds(model: ModelWrapper, node) -> Widened | None:
    """The thresholds' type of an HLS layer, made to hold the values it compares and every threshold."""
    compared = _compared(model, node)
    if compared is None:
        return None
    name, values, attribute = compared
    thresholds, tdt = model.get_initializer(name), model.get_tensor_datatype(name)
    if thresholds is None or not values.is_integer() or not tdt.is_integer() or thresholds.size == 0:
        return None
    if not np.all(np.isfinite(thresholds)) or np.any(thresholds != np.round(thresholds)):
        return None  # FINN refuses such thresholds itself, naming them
    low = min(int(values.min()), int(thresholds.min()))
    high = max(int(values.max()), int(thresholds.max()))
    if _holds(tdt, low, high) and tdt.bitwidth() >= values.bitwidth():
        return None
    wide = _smallest(low, high)  # FINN's HLS rule kept: at least as wide as the values compared
    wide = DataType[f"{'INT' if wide.signed() else 'UINT'}{max(wide.bitwidth(), values.bitwidth())}"]
    model.set_tensor_datatype(name, wide)
    if attribute:
        getCustomOp(node).set_nodeattr(attribute, wide.name)
    return Widened(
        node.name, "thresholds", tdt.name, wide.name, f"{values.name} values and the thresholds span [{low}, {high}]"
    )


def widen_accumulators(model: ModelWrapper) -> tuple[ModelWrapper, list[Widened]]:
    """Every XNOR accumulator that cannot hold its popcount, and every HLS thresholds' type that cannot hold the
    values compared with it, widened; what was widened, in graph order."""
    widened: list[Widened] = []
    outputs = {tensor.name for tensor in model.graph.output}
    for node in model.graph.node:
        if base_op_type(node.op_type) == "MVAU" and getCustomOp(node).get_nodeattr("binaryXnorMode"):
            widened.append(_widen_popcount(model, node, outputs))
        widened.append(_widen_thresholds(model, node))
    widened = [w for w in widened if w is not None]
    if widened:
        model = model.transform(InferDataTypes())
    return model, widened
