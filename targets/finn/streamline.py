"""Stage 2: streamlining - move float scales and biases into integer thresholds.

After this stage every hidden layer is MatMul (integer weights) followed by
MultiThreshold; convolutions are lowered to Im2Col + MatMul in NHWC. A residual
block (an Add of two computed tensors) gets FINN's streamlining for residual
topologies as well, the way FINN's ResNet-50 build alternates its linear and
non-linear passes: the scale of a tensor that feeds two branches is copied into
each branch, the shared scale of the two summands moves past the Add, and the
layout changes move past the fork and the join, until the Add sums integers.
"""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
from qonnx.transformation.general import RemoveUnusedTensors
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

# Rounds of the residual passes at most: each round moves a scale or a layout change past one fork or join at
# least, and resnet8 settles after 3 (the 4th finds nothing to move). A graph still changing after this many
# rounds is left as it is; the mapping check then names what stayed in float.
RESIDUAL_ROUNDS = 12


def streamline(model: ModelWrapper) -> ModelWrapper:
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    if model.get_nodes_by_op_type("Conv"):
        for transformation in (
            LowerConvsToMatMul(),
            MakeMaxPoolNHWC(),
            absorb.AbsorbTransposeIntoMultiThreshold(),
            MakeMaxPoolNHWC(),
            absorb.AbsorbConsecutiveTransposes(),
        ):
            model = model.transform(transformation)
    if has_join_add(model):
        model = streamline_residual(model)
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(Streamline())
    model = model.transform(InferDataLayouts())
    return model.transform(RemoveUnusedTensors())


def is_join_add(model: ModelWrapper, node) -> bool:
    """An Add of two computed tensors (a residual join), not of a tensor and a constant bias."""
    return (
        node.op_type == "Add"
        and len(node.input) == 2
        and all(model.get_initializer(name) is None for name in node.input)
    )


def has_join_add(model: ModelWrapper) -> bool:
    return any(is_join_add(model, node) for node in model.graph.node)


def streamline_residual(model: ModelWrapper) -> ModelWrapper:
    """FINN's passes for forks and joins, alternated with its linear streamlining until the graph stops changing."""
    import finn.transformation.streamline.absorb as absorb
    import finn.transformation.streamline.reorder as reorder
    from finn.transformation.streamline import Streamline

    passes = (
        reorder.MoveLinearPastFork(),  # a scale feeding two branches: one copy per branch
        reorder.MoveTransposePastFork(),
        reorder.MoveLinearPastEltwiseAdd(),  # (x * s) + (y * s) -> (x + y) * s: the shared quantizer's scale
        reorder.MoveScalarLinearPastInvariants(),
        reorder.MoveTransposePastJoinAdd(),
        absorb.AbsorbTransposeIntoMultiThreshold(),
        absorb.AbsorbConsecutiveTransposes(),
    )
    streamlined = None  # the graph as the last linear streamlining left it
    for _ in range(RESIDUAL_ROUNDS):
        for transformation in passes:
            model = model.transform(transformation)
        if _fingerprint(model) == streamlined:
            break  # the fork and join passes found nothing new: streamlining again would change nothing either
        model = model.transform(Streamline())  # the linear passes (seconds each): absorb what moved
        streamlined = _fingerprint(model)
    return model


def _fingerprint(model: ModelWrapper) -> bytes:
    return model.model.graph.SerializeToString(deterministic=True)
