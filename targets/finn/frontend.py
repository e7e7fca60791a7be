"""Stage 1: QONNX -> FINN-ONNX, then FINN's tidy-up (shapes, constants, names, datatypes)."""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveStaticGraphInputs
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from targets.finn import sequences


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


def _reduced_axes(model: ModelWrapper, node) -> list[int] | None:
    """A Reduce node's constant axes (an input from opset 18, an attribute before), or None."""
    if len(node.input) > 1 and node.input[1]:
        axes = model.get_initializer(node.input[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    found = next((a for a in node.attribute if a.name == "axes"), None)
    return None if found is None else list(found.ints)


def spatial_reduce_to_pool(model: ModelWrapper) -> ModelWrapper:
    """torch exports a global average (maximum) over a map as ReduceMean (ReduceMax) over H and W, with keepdims or
    without it (x.mean((2, 3)); x.mean(-1) of a 1-D model once its (N, C, T) is (N, C, T, 1)). FINN maps
    GlobalAveragePool and a MaxPool whose kernel covers the map; without keepdims a Flatten drops the 1 x 1."""
    from onnx import TensorProto, helper

    for node in list(model.graph.node):
        if node.op_type not in ("ReduceMean", "ReduceMax"):
            continue
        axes = _reduced_axes(model, node)
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        shape = model.get_tensor_shape(node.input[0])
        if axes is None or shape is None or len(shape) != 4 or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        pooled = node.output[0]
        if not keepdims:
            pooled = model.make_new_valueinfo_name()
            model.graph.value_info.append(helper.make_tensor_value_info(pooled, TensorProto.FLOAT, [*shape[:2], 1, 1]))
        if node.op_type == "ReduceMean":
            pool = helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=node.name)
        else:
            pool = helper.make_node(
                "MaxPool",
                [node.input[0]],
                [pooled],
                name=node.name,
                kernel_shape=shape[2:],
                strides=shape[2:],
                pads=[0, 0, 0, 0],
            )
        index = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(index, pool)
        if not keepdims:
            flatten = helper.make_node("Flatten", [pooled], [node.output[0]], name=f"{node.name}_flatten", axis=1)
            model.graph.node.insert(index + 1, flatten)
    return model


def qonnx_to_finn(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    model = cleanup_model(model)
    model = spatial_reduce_to_pool(model)
    model = model.transform(ConvertQONNXtoFINN())
    model = tidy_up(model)
    if sequences.is_one_dimensional(model):  # FINN's 1-D flow: (N, C, T) as (N, C, T, 1), then its 2-D steps
        model = tidy_up(spatial_reduce_to_pool(sequences.to_images(model)))
    return model


RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan", "If")


def _grouped_conv(model: ModelWrapper, node) -> tuple[str, str] | None:
    """Why FINN cannot lower a grouped convolution (FINN's LowerConvsToMatMul takes groups=1, or depthwise: as many
    groups as input channels, one output channel each), or None."""
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    weights = model.get_tensor_shape(node.input[1]) if len(node.input) > 1 else None
    if groups == 1 or not weights:
        return None
    outputs, inputs = int(weights[0]), int(weights[1]) * groups
    if groups == inputs == outputs:
        return None
    if groups == inputs:
        why = f"a depthwise convolution with {outputs // inputs} output channels per input channel"
    else:
        why = f"a grouped convolution ({groups} groups of {inputs // groups} input channels)"
    return (
        f"{why}; FINN lowers plain convolutions (groups=1) and depthwise ones (groups = channels, one output "
        "channel each)",
        "use groups=1, or a depthwise convolution with out_channels = in_channels followed by a pointwise "
        "(kernel 1) convolution for more channels",
    )


def unsupported_nodes(model: ModelWrapper) -> list:
    """Nodes FINN's frontend and streamlining cannot take, named with the fix before they are run."""
    from sdk.graph_names import describe
    from targets.finn.hw_layers import UnmappedLayer
    from targets.finn.residual import SHARED_QUANTIZER_FIX, node_label, unaligned_joins

    found = [
        UnmappedLayer(describe(node), node.op_type, list(node.input), why, fix)
        for node, why, fix in sequences.unsupported(model, named_elsewhere=RECURRENT_OPS)
    ]
    for node in model.graph.node:
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        if node.op_type == "Conv" and kernel is not None and len(kernel) not in (1, 2):
            found.append(
                UnmappedLayer(
                    describe(node),
                    node.op_type,
                    list(node.input),
                    f"a {len(kernel)}-D convolution (kernel {kernel}); FINN lowers 1-D and 2-D convolutions",
                    "no target of the SDK convolves in 3-D: write it with 2-D convolutions (QuantConv2d)",
                )
            )
        grouped = _grouped_conv(model, node) if node.op_type == "Conv" else None
        if grouped is not None:
            found.append(UnmappedLayer(describe(node), node.op_type, list(node.input), *grouped))
        if node.op_type in RECURRENT_OPS:
            found.append(
                UnmappedLayer(
                    describe(node),
                    node.op_type,
                    list(node.input),
                    "a recurrent or control-flow op; FINN builds feed-forward dataflow accelerators",
                    "unroll the recurrence into feed-forward layers, or run this part of the model on the host",
                )
            )
    for node, why in unaligned_joins(model):
        found.append(
            UnmappedLayer(
                node_label(node),
                node.op_type,
                list(node.input),
                f"a residual sum FINN cannot compute on integers: {why}; FINN adds two branches "
                "(DuplicateStreams + ElementwiseAdd) only where one quantizer made both summands",
                SHARED_QUANTIZER_FIX,
            )
        )
    return found
