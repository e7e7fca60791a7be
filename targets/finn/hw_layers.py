"""Stage 3: convert streamlined nodes to FINN's abstract HW layers, and say what did not convert.

The conversion mirrors FINN's step_convert_to_hw for the layer kinds the zoo
and typical Brevitas models produce. Whatever is left outside a HW layer,
other than the float output scale at the very end, is reported by name with
the reason and the fix, before any long work starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes

from sdk.graph_names import describe, source_of, source_op
from targets.finn.ops import hw_op, unmapped_hint
from targets.finn.simulator import HOST_INPUT_OPS, is_host_output_op
from targets.finn.streamline import has_join_add, is_join_add

HW_DOMAIN = "finn.custom_op.fpgadataflow"


@dataclass
class UnmappedLayer:
    """A node that stayed outside FINN's HW layers, and what to do about it."""

    name: str
    op_type: str
    inputs: list[str]
    why: str
    fix: str

    def to_dict(self) -> dict:
        return asdict(self)


def convert_to_hw(model: ModelWrapper, standalone_thresholds: bool = False) -> ModelWrapper:
    """FINN's HW layers for the streamlined graph, in the order of FINN's step_convert_to_hw.

    `standalone_thresholds` (FINN's build option of that name): every activation becomes its own Thresholding
    layer before the matrix layers are converted, so no MVAU embeds thresholds; FINN implements an MVAU in
    RTL only without them (`--rtlsim` asks for this, to run the matrix layers in Verilator too)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.binary_matrix_vector_activation import (
        InferBinaryMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import InferDuplicateStreamsLayer
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.fm_padding import InferFMPadding
    from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import InferGlobalAccPoolLayer
    from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.pool_from_reduce import InferPoolFromReduce
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import InferVectorVectorActivation
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten

    def present(*op_types: str) -> bool:
        return any(model.get_nodes_by_op_type(op) for op in op_types)

    # A global average pool becomes an accumulating pool and a scalar Mul: convert it first,
    # so that the Mul is absorbed into the thresholds that follow it, or moves past the linear layer
    # that reads the pool directly (a classifier over the averaged features) into the output scale.
    if present("GlobalAveragePool"):
        from finn.transformation.streamline.collapse_repeated import CollapseRepeatedMul
        from finn.transformation.streamline.reorder import MoveScalarLinearPastInvariants, MoveScalarMulPastMatMul

        for transformation in (
            InferGlobalAccPoolLayer(),
            MoveScalarLinearPastInvariants(),
            MoveScalarMulPastMatMul(),
            CollapseRepeatedMul(),
            InferDataTypes(),  # a MatMul the scale moved past now multiplies integers
            absorb.AbsorbMulIntoMultiThreshold(),
            absorb.AbsorbTransposeIntoMultiThreshold(),
            InferDataLayouts(),
        ):
            model = model.transform(transformation)
    steps = [(("MultiThreshold",), InferThresholdingLayer)] if standalone_thresholds else []
    steps += [
        (("XnorPopcountMatMul",), InferBinaryMatrixVectorActivation),
        (("MatMul",), InferQuantizedMatrixVectorActivation),
        (("MatMul",), InferVectorVectorActivation),
        (("TopK",), InferLabelSelectLayer),
        (("MultiThreshold",), InferThresholdingLayer),
        (("Pad",), InferFMPadding),
        (("MaxPool", "MaxPoolNHWC", "AveragePool", "QuantAvgPool2d"), InferPool),
        (("ReduceMax", "ReduceSum", "ReduceMean"), InferPoolFromReduce),
        (("Im2Col",), InferConvInpGen),
        (("ConvolutionInputGenerator",), RemoveCNVtoFCFlatten),
    ]
    for op_types, transformation in steps:
        if present(*op_types):
            model = model.transform(transformation())
    model = model.transform(InferDuplicateStreamsLayer())
    if has_join_add(model):  # the residual joins become ElementwiseAdd (FINN's AddStreams), nothing else
        model = model.transform(InferElementwiseBinaryOperation(is_join_add))
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    # RoundAndClipThresholds: integer inputs make ceil(threshold) exact, and RTL code generation needs integers.
    for transformation in (
        absorb.AbsorbConsecutiveTransposes(),
        RemoveCNVtoFCFlatten(),
        RoundAndClipThresholds(),
        GiveUniqueNodeNames(),
        InferDataLayouts(),
        InferDataTypes(),
        InferShapes(),
    ):
        model = model.transform(transformation)
    return model


def is_hw(node) -> bool:
    return node.domain.startswith(HW_DOMAIN)


def unmapped_layers(model: ModelWrapper) -> list[UnmappedLayer]:
    """Every non-HW node, except the layout ops before the first HW layer and the float ops after the last one."""
    nodes = list(model.graph.node)
    last_hw = max((i for i, n in enumerate(nodes) if is_hw(n)), default=-1)
    first_hw = min((i for i, n in enumerate(nodes) if is_hw(n)), default=len(nodes))
    unmapped = []
    for i, node in enumerate(nodes):
        # the host runs layout ops before the accelerator and float ops after it (the simulator's tables)
        if is_hw(node) or (i < first_hw and node.op_type in HOST_INPUT_OPS):
            continue
        if i > last_hw and is_host_output_op(model, node):
            continue
        why, fix = unmapped_hint(node.op_type)
        if last_hw < 0:
            why, fix = (
                "no layer of this network was mapped to FINN HW layers",
                "quantize weights and activations of every layer (see sdk.zoo)",
            )
        unmapped.append(UnmappedLayer(node.name, node.op_type, list(node.input), why, fix))
    unmapped += _float_hw_layers(model)
    return in_user_names(model, _root_causes(model, unmapped) + wrongly_mapped_layers(model))


def in_user_names(model: ModelWrapper, layers: list[UnmappedLayer]) -> list[UnmappedLayer]:
    """The layers named as the user's file names them (sdk.graph_names): FINN's nodes (`Transpose_1`, `MVAU_0`) by
    the node of the file they come from, with its op type; two FINN nodes of one file node are told once."""
    nodes = {node.name: node for node in model.graph.node}
    named, seen = [], set()
    for layer in layers:
        node = nodes.get(layer.name)
        mark = source_of(node) if node is not None else None
        if node is not None:
            layer.name, layer.op_type = describe(node), source_op(node)
            if layer.op_type != node.op_type:  # a node FINN made for this one: say which
                layer.why = (
                    f"a {node.op_type.removesuffix('_hls').removesuffix('_rtl')} FINN put at this node: {layer.why}"
                )
        if mark is not None and mark["inputs"]:
            layer.inputs = list(mark["inputs"])
        if (layer.name, layer.why) not in seen:
            seen.add((layer.name, layer.why))
            named.append(layer)
    return named


FLOAT_SCALE_HINT = (
    "a float scale FINN could not absorb into integer thresholds, so every layer after it computes in float",
    "put a quantized activation after every BatchNorm and scale, with no float op between layers; a residual add "
    "needs both summands quantized by one shared quantizer",
)


def _float_hw_layers(model: ModelWrapper) -> list[UnmappedLayer]:
    """HW layers whose output is float and feeds further layers: FINN mapped them, but the rest cannot be."""
    outputs = {o.name for o in model.graph.output}
    found = []
    for node in model.graph.node:
        if is_hw(node) and any(t not in outputs and not model.get_tensor_datatype(t).is_integer() for t in node.output):
            found.append(UnmappedLayer(node.name, node.op_type, list(node.input), *FLOAT_SCALE_HINT))
    return found


def _root_causes(model: ModelWrapper, layers: list[UnmappedLayer]) -> list[UnmappedLayer]:
    """The layers that fail on their own account; each names the layers after it that fail only because of it."""
    nodes = {node.name: node for node in model.graph.node}

    def label(name: str) -> str:  # as the user's file names the node
        return describe(nodes[name]) if name in nodes else name

    by_name = {layer.name: layer for layer in layers}
    producer = {t: n.name for n in model.graph.node for t in n.output}
    caused_by: dict[str, str] = {}
    for node in model.graph.node:  # topological order: a cause is resolved before its consequences
        if node.name not in by_name:
            continue
        upstream = [producer[t] for t in node.input if t in producer and producer[t] in by_name]
        if upstream:
            caused_by[node.name] = caused_by.get(upstream[0], upstream[0])
    roots = []
    for layer in layers:
        if layer.name in caused_by:
            continue
        after = [name for name, root in caused_by.items() if root == layer.name]
        scale = next((n for n in after if by_name[n].why == FLOAT_SCALE_HINT[0]), None)
        if scale is not None:  # the root's own hint would mislead: the float scale after it is the cause
            layer.why = f"{FLOAT_SCALE_HINT[0]}: {label(scale)} after this layer"
            layer.fix = FLOAT_SCALE_HINT[1]
        if after:
            labels = list(dict.fromkeys(label(name) for name in after))  # FINN's nodes of one file node: once
            shown = ", ".join(labels[:6]) + (" ..." if len(labels) > 6 else "")
            layer.why += f"; the {len(labels)} layer(s) after it ({shown}) cannot be mapped because of it"
        roots.append(layer)
    return roots


def wrongly_mapped_layers(model: ModelWrapper) -> list[UnmappedLayer]:
    """Layers FINN maps but computes differently from the QAT model (each HwOp's check), refused here rather
    than found by a failed verification."""
    wrong = []
    for node in model.graph.node:
        op = hw_op(node.op_type) if is_hw(node) else None
        problem = op.check(node, model) if op is not None and op.check is not None else None
        if problem:
            wrong.append(UnmappedLayer(node.name, node.op_type, list(node.input), *problem))
    return wrong
