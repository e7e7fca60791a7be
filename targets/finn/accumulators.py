"""Accumulators FINN sizes too narrow, widened to the range the hardware really computes.

FINN's MinimizeAccumulatorWidth sizes an MVAU in XNOR mode (binary inputs and weights standing for -1 / +1) from
the dot product of the +-1 values, [-(weights at -1), +(weights at +1)]: an INT10 for 784 inputs when the
weights are about balanced. The hardware accumulates the XNOR popcount instead, the number of inputs that
match their weight, in [0, MW]: 784 matching inputs do not fit an INT10, and the thresholds (whose type is the
HLS accumulator's) wrap. Here the accumulator, its thresholds' type and, without thresholds, the output type are
widened to hold [0, MW]; nothing else changes, so the layer computes what FINN's python execution computes.
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
    finn: str  # the type FINN chose
    sdk: str  # the type that holds the popcount
    popcount_max: int


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


def widen_popcount_accumulators(model: ModelWrapper) -> tuple[ModelWrapper, list[Widened]]:
    """Every XNOR-mode MVAU whose accumulator (or thresholds' type) cannot hold its popcount, widened."""
    widened: list[Widened] = []
    outputs = {tensor.name for tensor in model.graph.output}
    for node in model.graph.node:
        if base_op_type(node.op_type) != "MVAU":
            continue
        op = getCustomOp(node)
        if not op.get_nodeattr("binaryXnorMode"):
            continue
        top = int(op.get_nodeattr("MW"))  # every input matches its weight
        acc = DataType[op.get_nodeattr("accDataType")]
        needed = acc if _holds(acc, 0, top) else _smallest(0, top)
        has_thresholds = not op.get_nodeattr("noActivation") and len(node.input) > 2
        if has_thresholds:
            thresholds = model.get_initializer(node.input[2])
            tdt = model.get_tensor_datatype(node.input[2])
            low, high = min(0, int(np.floor(thresholds.min()))), max(top, int(np.ceil(thresholds.max())))
            if not _holds(tdt, low, high) or tdt.bitwidth() < needed.bitwidth():
                wide = _smallest(low, high)  # FINN's HLS: the thresholds' type at least the accumulator's width
                bits = max(wide.bitwidth(), needed.bitwidth())
                model.set_tensor_datatype(node.input[2], DataType[f"{'INT' if wide.signed() else 'UINT'}{bits}"])
        if needed == acc:
            continue
        op.set_nodeattr("accDataType", needed.name)
        if op.get_nodeattr("noActivation"):  # the output is the accumulator
            out = _last_word(needed) if node.output[0] in outputs else needed
            op.set_nodeattr("outputDataType", out.name)
            model.set_tensor_datatype(node.output[0], out)
        widened.append(Widened(node.name, acc.name, needed.name, top))
    if widened:
        model = model.transform(InferDataTypes())
    return model, widened
