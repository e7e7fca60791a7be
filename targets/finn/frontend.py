"""Stage 1: QONNX -> FINN-ONNX, then FINN's tidy-up (shapes, constants, names, datatypes)."""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveStaticGraphInputs
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model


def tidy_up(model: ModelWrapper) -> ModelWrapper:
    for transformation in (
        InferShapes(),
        FoldConstants(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
        InferDataTypes(),
        RemoveStaticGraphInputs(),
    ):
        model = model.transform(transformation)
    return model


def spatial_mean_to_global_pool(model: ModelWrapper) -> ModelWrapper:
    """torch exports a global average pool as ReduceMean over H and W; FINN maps GlobalAveragePool."""
    from onnx import helper

    for index, node in enumerate(list(model.graph.node)):
        if node.op_type != "ReduceMean" or len(node.input) < 2:
            continue
        axes = model.get_initializer(node.input[1])
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        shape = model.get_tensor_shape(node.input[0])
        if (
            axes is None
            or shape is None
            or len(shape) != 4
            or sorted(int(a) % 4 for a in axes) != [2, 3]
            or not keepdims
        ):
            continue
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]], name=node.name)
        model.graph.node.remove(node)
        model.graph.node.insert(index, pool)
    return model


def qonnx_to_finn(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    model = cleanup_model(model)
    model = spatial_mean_to_global_pool(model)
    model = model.transform(ConvertQONNXtoFINN())
    return tidy_up(model)


def unsupported_nodes(model: ModelWrapper) -> list:
    """Nodes FINN's frontend and streamlining cannot take, named with the fix before they are run."""
    from sdk.graph_names import describe
    from targets.finn.hw_layers import UnmappedLayer

    found = []
    for node in model.graph.node:
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        if node.op_type == "Conv" and kernel is not None and len(kernel) != 2:
            found.append(
                UnmappedLayer(
                    describe(node),
                    node.op_type,
                    list(node.input),
                    f"a {len(kernel)}-D convolution (kernel {kernel}); FINN lowers 2-D convolutions only",
                    "write it as a 2-D convolution over (N, C, 1, L) with kernel (1, k) (QuantConv2d)",
                )
            )
        if node.op_type in ("LSTM", "GRU", "RNN", "Loop", "Scan", "If"):
            found.append(
                UnmappedLayer(
                    describe(node),
                    node.op_type,
                    list(node.input),
                    "a recurrent or control-flow op; FINN builds feed-forward dataflow accelerators",
                    "unroll the recurrence into feed-forward layers, or run this part of the model on the host",
                )
            )
    return found
