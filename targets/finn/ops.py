"""One entry per FINN HW op: its simulator kernel, its folding knobs and its check.

Adding a HW layer to the FPGA flow is one `HwOp` here (plus, if FINN needs a
new conversion, one line in hw_layers.convert_to_hw). Keys are op types
without the `_hls` / `_rtl` suffix: the math does not depend on the style.

The second table, UNMAPPED_HINTS, is keyed by the ONNX op types that can be
left over after conversion: why FINN did not map them, and what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from targets.finn import kernels

Get = Callable[[str], object]  # a node's attribute getter (FINN's get_nodeattr)


@dataclass(frozen=True)
class HwOp:
    """What the SDK knows of one FINN HW op type."""

    kernel: Callable  # kernels.HwNode -> list of output arrays (bit-exact simulation)
    knobs: Callable[[Get], list[tuple[str, int]]]  # folding attributes and the dimension each must divide
    check: Callable | None = None  # (node, model) -> (why, fix) where FINN maps the layer but computes it wrongly


def _no_knobs(get: Get) -> list[tuple[str, int]]:
    return []


def _mvau_knobs(get: Get) -> list[tuple[str, int]]:
    return [("SIMD", get("MW")), ("PE", get("MH"))]


def _vvau_knobs(get: Get) -> list[tuple[str, int]]:
    k = get("Kernel")
    return [("SIMD", k[0] * k[1]), ("PE", get("Channels"))]


def _window_knobs(get: Get) -> list[tuple[str, int]]:
    # a depthwise window generator follows the PE of its consumer (see folding.linked_producer)
    return [] if get("depthwise") else [("SIMD", get("IFMChannels"))]


def _pe_of(attribute: str) -> Callable[[Get], list[tuple[str, int]]]:
    return lambda get: [("PE", get(attribute))]


def _simd_of(attribute: str) -> Callable[[Get], list[tuple[str, int]]]:
    return lambda get: [("SIMD", get(attribute))]


def _elementwise_knobs(get: Get) -> list[tuple[str, int]]:
    # PE elements of the last (channel) axis per cycle, as FINN's SetFolding folds ElementwiseBinaryOperation
    return [("PE", int(get("out_shape")[-1]))]


def _binary_padding(node, model) -> tuple[str, str] | None:
    """Brevitas pads bipolar (+-1) activations with 0; after FINN's XNOR conversion 0 stands for -1."""
    if model.get_tensor_datatype(node.input[0]).name == "BINARY":
        return (
            "zero padding of 1-bit (bipolar) activations: FINN's XNOR form reads the padding as -1, not 0",
            "use 2-bit activations (e.g. w1a2) for padded convolutions, or convolutions without padding",
        )
    return None


def window_generates(op) -> bool:
    """Whether FINN can write the RTL of this sliding window (a ConvolutionInputGenerator_rtl instance) at its
    folding (SIMD, parallel_window): FINN's own code-generation arithmetic, run on the attributes alone. Over a map
    of one or two output positions the parallel style sizes a loop counter by the log of 0 and fails."""
    try:
        if op.select_impl_style() == "parallel":
            op.prepare_codegen_parallel()
        else:
            op.prepare_codegen_default()
    except (ArithmeticError, AssertionError, ValueError):  # FINN's asserts and math errors on this folding
        return False
    return True


def _window_generable(node, model) -> tuple[str, str] | None:
    """A sliding window FINN cannot write in any folding (SIMD a divisor of the channels, either style)."""
    import copy

    from qonnx.custom_op.registry import getCustomOp

    rtl = copy.deepcopy(node)
    rtl.op_type, rtl.domain = f"{kernels.base_op_type(node.op_type)}_rtl", "finn.custom_op.fpgadataflow.rtl"
    op = getCustomOp(rtl)
    channels = int(op.get_nodeattr("IFMChannels"))
    for simd in (d for d in range(1, channels + 1) if channels % d == 0):
        for parallel in (0, 1):
            op.set_nodeattr("SIMD", simd)
            op.set_nodeattr("parallel_window", parallel)
            if window_generates(op):
                return None
    kernel, ifm, ofm = (list(op.get_nodeattr(a)) for a in ("ConvKernelDim", "IFMDim", "OFMDim"))
    return (
        f"a sliding window (kernel {kernel} over a {ifm} map, {ofm} output positions) that FINN's RTL sliding-window "
        "generator cannot be written for in any folding: its address counters need more output positions",
        "give the layer at least three output positions (a longer input, a smaller kernel or stride), or, where its "
        "kernel covers the whole map, flatten the map and use a linear layer (QuantLinear) in its place",
    )


HW_OPS: dict[str, HwOp] = {
    "MVAU": HwOp(kernels.mvau, _mvau_knobs),
    "VVAU": HwOp(kernels.vvau, _vvau_knobs),
    "Thresholding": HwOp(kernels.thresholding, _pe_of("NumChannels")),
    "ConvolutionInputGenerator": HwOp(kernels.conv_input_generator, _window_knobs, check=_window_generable),
    "FMPadding": HwOp(kernels.fm_padding, _simd_of("NumChannels"), check=_binary_padding),
    "Pool": HwOp(kernels.pool, _pe_of("Channels")),
    "GlobalAccPool": HwOp(kernels.global_acc_pool, _pe_of("NumChannels")),
    "LabelSelect": HwOp(kernels.label_select, _pe_of("Labels")),
    "DuplicateStreams": HwOp(kernels.duplicate, _pe_of("NumChannels")),
    "StreamingDataWidthConverter": HwOp(kernels.identity, _no_knobs),
    "StreamingFIFO": HwOp(kernels.identity, _no_knobs),
    **{op: HwOp(kernels.elementwise, _elementwise_knobs) for op in kernels.ELEMENTWISE},
}
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(HW_OPS))


def hw_op(op_type: str) -> HwOp | None:
    return HW_OPS.get(kernels.base_op_type(op_type))


UNMAPPED_HINTS: dict[str, tuple[str, str]] = {
    "Transpose": (
        "a layout change FINN could not absorb (often a flatten of a feature map wider than 1x1 before a Linear layer)",
        "reduce the feature map to 1x1 before flattening (pooling or a conv whose kernel covers it)",
    ),
    "Reshape": ("a reshape FINN could not absorb", "flatten only 1x1 feature maps, or flatten at the input"),
    "Add": (
        "an addition FINN could not map (residual add of operands with different scales or datatypes)",
        "quantize both summands with one shared quantizer (one QuantIdentity applied to both), so the add sums "
        "integers of one scale",
    ),
    "Mul": (
        "a float scale inside the network that streamlining could not move into thresholds",
        "put a quantized activation after every BatchNorm / scale, with no float op between layers",
    ),
    "MultiThreshold": (
        "a quantizer that did not merge into a HW layer",
        "check that its input comes from a quantized layer",
    ),
    "MatMul": (
        "a matrix product FINN could not map (non-integer or float input)",
        "quantize the input of this layer (a quantized activation before it)",
    ),
    "Conv": (
        "a convolution FINN could not lower",
        "use square kernels, groups of 1 or depthwise, and a quantized input",
    ),
    "Softmax": ("softmax in the middle of the network", "leave softmax out of the exported model; argmax the output"),
}


def unmapped_hint(op_type: str) -> tuple[str, str]:
    return UNMAPPED_HINTS.get(
        op_type, (f"FINN has no HW layer for {op_type} here", f"replace the {op_type} by layers FINN maps")
    )
