"""FINN MVAU chains built directly (no training, no export) and an exhaustive folding optimum, for the fit
search's tests and benchmarks/folding_vs_finn.py."""

from __future__ import annotations

import itertools

import hw_graphs
import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from targets.finn import folding

KEYS = ("lut", "bram18", "uram", "dsp")
# (MW, MH, numInputVectors, input type, thresholds?) of the zoo's TFC at 28x28 and CNV at 32x32, w2a2
TFC = [(784, 64, [1], "UINT8", True), (64, 64, [1], "UINT2", True), (64, 64, [1], "UINT2", True)]
TFC += [(64, 10, [1], "UINT2", False)]
CNV = [(27, 32, [1, 32, 32], "UINT8", True), (288, 32, [1, 32, 32], "UINT2", True)]
CNV += [(288, 64, [1, 16, 16], "UINT2", True), (576, 64, [1, 16, 16], "UINT2", True)]
CNV += [(4096, 128, [1], "UINT2", True), (128, 10, [1], "UINT2", False)]


def mvau_chain(layers, seed: int = 0) -> ModelWrapper:
    """FINN MVAU_hls nodes in a chain, fully folded, FINN's default memory styles."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(seed)
    nodes, initializers, infos, current = [], {}, [], "x"
    for i, (mw, mh, vectors, idt, act) in enumerate(layers):
        out = f"y{i}"
        inputs = [current, f"w{i}"] + ([f"t{i}"] if act else [])
        attributes = {"outputDataType": "UINT2" if act else "INT32", "accDataType": "INT32", "ActVal": 0}
        attributes |= {"name": f"MVAU_hls_{i}", "backend": "fpgadataflow"}
        nodes.append(hw_graphs.mvau(inputs, out, mw, mh, idt, "INT2", vectors, op_type="MVAU_hls", **attributes))
        initializers[f"w{i}"] = rng.integers(-2, 2, size=(mw, mh))
        if act:
            initializers[f"t{i}"] = np.sort(rng.integers(-20, 21, size=(mh, 3)), axis=1)
        infos.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, *vectors[1:], mh]))
        current = out
    first = layers[0]
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *first[2][1:], first[0]])],
        [infos[-1]],
        value_info=infos[:-1],
    )
    model = ModelWrapper(qonnx_make_model(graph, producer_name="sdk-test"))
    for name, value in initializers.items():
        model.set_initializer(name, value.astype(np.float32))
        model.set_tensor_datatype(name, DataType["INT2"] if name.startswith("w") else DataType["INT32"])
    model.set_tensor_datatype("x", DataType[first[3]])
    return model


SMALL_MLP = [(48, 12, [1], "UINT4", True), (12, 8, [1], "UINT2", True), (8, 10, [1], "UINT2", False)]


def every_option(model: ModelWrapper, board) -> list[np.ndarray]:
    """Per layer, (cycles, LUT, BRAM18, URAM, DSP) of every (SIMD, PE, memory and multiplier style) assignment,
    estimated with FINN's estimators; options no faster and no cheaper than another are dropped (never needed)."""
    per_layer = []
    for node in model.graph.node:
        op = getCustomOp(node)
        types = op.get_nodeattr_types()
        styles = [[(a, v) for v in types[a][3] if v != "ultra" or board.capacity["uram"]] for a in folding.STYLE_ATTRS]
        options = []
        for simd, pe, *style in itertools.product(
            folding._divisors(op.get_nodeattr("MW")), folding._divisors(op.get_nodeattr("MH")), *styles
        ):
            for attr, value in [("SIMD", simd), ("PE", pe), *style]:
                op.set_nodeattr(attr, value)
            if folding.within_hls_limits(node, op):
                cycles, res = folding.node_cost(node, board.part, op)
                options.append([cycles, *(res[r] for r in folding.RESOURCES)])
        options = np.unique(np.array(options), axis=0)
        dominated = [bool(np.any(np.all(options <= row, axis=1) & np.any(options < row, axis=1))) for row in options]
        per_layer.append(options[~np.array(dominated)])
    return per_layer


def exhaustive_optimum(per_layer: list[np.ndarray], board, cap: float) -> int:
    """The fewest cycles per frame under the cap over every combination of the layers' options: each
    combination's cycles (its slowest layer) and resources (the sum) compared at once."""
    limits = np.array([board.capacity[k] * cap for k in KEYS])
    cycles, res = np.zeros(1), np.zeros((1, len(KEYS)))
    for options in per_layer:  # every combination so far with every option of the next layer
        cycles = np.maximum(cycles[:, None], options[None, :, 0]).reshape(-1)
        res = (res[:, None, :] + options[None, :, 1:]).reshape(-1, len(KEYS))
    fits = np.all(res <= limits + 1e-6, axis=1)
    return int(cycles[fits].min())
