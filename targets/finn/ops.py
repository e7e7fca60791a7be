"""One record per FINN HW op: everything the SDK knows of it, in one `HwOp`.

A record carries the op's simulator kernel and the static ranges of its outputs
(kernels.py), whether it reads a window generator's windows as they are, its
folding rules (the attributes folding varies, the dimension each must divide,
and how it is folded together with a neighbour), its RTL support (whether the
SDK simulates FINN's `<op>_rtl` in Verilator and asks for it with --rtlsim, why
not where it cannot, what FINN can write at a folding), its check of a graph
FINN maps but computes wrongly, and its own check of a package's graph. The
tables other modules read are derived from `HW_OPS`: rtlsim.SUPPORTED_RTL_OPS
and KNOWN_FAILURES, rtl_verify.RTL_PREFERRED, the simulator's supported ops and
graph_check's known layers. Keys are op types without the `_hls` / `_rtl`
suffix: the math does not depend on the style.

Adding an op: write its kernel (and, if its output range is known statically,
its range rule) in kernels.py, add one `HwOp` to `HW_OPS` with its folding knobs
and, if FINN has an RTL variant the SDK simulates, its `Rtl`; if FINN needs a
new conversion, one line in hw_layers.convert_to_hw. Then one test of the
kernel against FINN's own execution of the op in tests/test_sim_finn.py (its
node from tests/hw_graphs.py), and, with an `Rtl`, one against its Verilog in
tests/test_rtlsim.py. Nothing else names the op.

The second table, UNMAPPED_HINTS, is keyed by the ONNX op types that can be
left over after conversion: why FINN did not map them, and what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from targets.finn import kernels

Get = Callable[[str], object]  # a node's attribute getter (FINN's get_nodeattr)


@dataclass(frozen=True)
class Rtl:
    """FINN's RTL variant of an op (`<op>_rtl`) as the SDK uses it."""

    simulated: bool = True  # its Verilog runs in Verilator, checked bit-exact against the kernel (test_rtlsim.py)
    preferred: bool = True  # asked of FINN's layer specialisation with --rtlsim (rtl_verify.prefer_rtl)
    known_failure: str = ""  # why its RTL cannot be simulated here (said instead of the generic reason)
    writable: Callable[[object], bool] | None = None  # FINN can write its RTL at the op's current folding
    make_writable: Callable[[object], None] | None = None  # refolds what SetFolding chose where FINN cannot write it


@dataclass(frozen=True)
class HwOp:
    """What the SDK knows of one FINN HW op type."""

    kernel: Callable  # kernels.HwNode -> list of output arrays (bit-exact simulation)
    knobs: Callable[[Get], list[tuple[str, int]]]  # folding attributes and the dimension each must divide
    check: Callable | None = None  # (node, model) -> (why, fix) where FINN maps the layer but computes it wrongly
    graph_check: Callable | None = None  # (model, node, op) -> why graph_check refuses a package's node, or None
    ranges: Callable | None = None  # kernels.HwNode -> static ranges of its outputs (None: unknown)
    takes_windows: bool = False  # the kernel reads a ConvolutionInputGenerator's `kernels.Windows` as they are
    # folding: a node whose SIMD FINN ties to the PE of the layer it feeds (a depthwise window generator) ...
    follows_consumer: Callable[[Get], bool] | None = None
    # ... is folded together with a consumer that takes it (folding.linked_producer)
    takes_linked_window: bool = False
    # SIMD > 1 reads several window positions at once: FINN needs PE = the whole PE dimension first, and a
    # parallel window from an RTL window generator before it
    simd_reads_window: bool = False
    rtl: Rtl | None = None  # None: no RTL variant the SDK simulates in Verilator

    def output_ranges(self, node: kernels.HwNode) -> list[kernels.Range]:
        """Static ranges of the node's outputs from those of its inputs (`node.ranges`); None where unknown."""
        return self.ranges(node) if self.ranges else [None] * len(node.onnx.output)


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


def _depthwise(get: Get) -> bool:
    return bool(get("depthwise"))


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


def _vvau_weights(model, node, op) -> str | None:
    """A depthwise layer's weights: one per channel and kernel position (the kernel reshapes them so)."""
    weights = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
    channels, (k_h, k_w) = int(op.get_nodeattr("Channels")), (int(k) for k in op.get_nodeattr("Kernel"))
    if weights is None or weights.size != channels * k_h * k_w:
        size = None if weights is None else weights.size
        return f"has {size} weights; Channels and Kernel make {channels * k_h * k_w}"
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


def _writable_window(op) -> None:
    """A sliding window SetFolding folded so that FINN could not write it (a parallel window, or any window with a
    1 x 1 kernel, over one or two output positions): the default style, then fewer SIMD lanes until it can be
    written. A depthwise window keeps the SIMD its consumer's PE fixes."""
    if window_generates(op):
        return
    op.set_nodeattr("parallel_window", 0)
    channels, simd = int(op.get_nodeattr("IFMChannels")), int(op.get_nodeattr("SIMD"))
    divisors = [d for d in range(channels, 0, -1) if channels % d == 0]
    lanes = [simd] if op.get_nodeattr("depthwise") else [d for d in divisors if d <= simd]
    for candidate in lanes:
        op.set_nodeattr("SIMD", candidate)
        if window_generates(op):
            return
    op.set_nodeattr("SIMD", simd)  # nothing FINN can write: its code generation names the layer


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


# The RTL ops are listed in the order messages name them (rtlsim.SUPPORTED_RTL_OPS).
HW_OPS: dict[str, HwOp] = {
    "Thresholding": HwOp(kernels.thresholding, _pe_of("NumChannels"), ranges=kernels.thresholding_range, rtl=Rtl()),
    "FMPadding": HwOp(
        kernels.fm_padding, _simd_of("NumChannels"), check=_binary_padding, ranges=kernels.padded_range, rtl=Rtl()
    ),
    "ConvolutionInputGenerator": HwOp(
        kernels.conv_input_generator,
        _window_knobs,
        check=_window_generable,
        ranges=kernels.same_range,
        follows_consumer=_depthwise,
        rtl=Rtl(writable=window_generates, make_writable=_writable_window),
    ),
    "StreamingDataWidthConverter": HwOp(kernels.identity, _no_knobs, ranges=kernels.same_range, rtl=Rtl()),
    "MVAU": HwOp(kernels.mvau, _mvau_knobs, ranges=kernels.mvau_range, takes_windows=True, rtl=Rtl()),
    "VVAU": HwOp(
        kernels.vvau,
        _vvau_knobs,
        graph_check=_vvau_weights,
        ranges=kernels.vvau_range,
        takes_windows=True,
        takes_linked_window=True,
        simd_reads_window=True,
    ),
    "Pool": HwOp(
        kernels.pool, _pe_of("Channels"), ranges=kernels.pool_range, takes_windows=True, takes_linked_window=True
    ),
    "GlobalAccPool": HwOp(kernels.global_acc_pool, _pe_of("NumChannels"), ranges=kernels.global_pool_range),
    "LabelSelect": HwOp(kernels.label_select, _pe_of("Labels"), ranges=kernels.label_select_range),
    "DuplicateStreams": HwOp(kernels.duplicate, _pe_of("NumChannels"), ranges=kernels.same_range),
    "StreamingFIFO": HwOp(kernels.identity, _no_knobs, ranges=kernels.same_range),
    **{
        op: HwOp(kernels.elementwise, _elementwise_knobs, ranges=kernels.elementwise_range)
        for op in kernels.ELEMENTWISE
    },
}
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(HW_OPS))


def hw_op(op_type: str) -> HwOp | None:
    return HW_OPS.get(kernels.base_op_type(op_type))


def rtl_of(op_type: str) -> Rtl | None:
    """The `Rtl` record of an `<op>_rtl` node's op; None for HLS and abstract nodes and ops without one."""
    op = hw_op(op_type) if op_type.endswith("_rtl") else None
    return op.rtl if op else None


def rtl_simulated() -> tuple[str, ...]:
    """`<op>_rtl` of every op whose RTL the SDK simulates in Verilator (rtlsim.SUPPORTED_RTL_OPS)."""
    return tuple(f"{name}_rtl" for name, op in HW_OPS.items() if op.rtl and op.rtl.simulated)


def rtl_preferred() -> tuple[str, ...]:
    """Ops whose RTL variant --rtlsim asks of FINN's specialisation (rtl_verify.RTL_PREFERRED)."""
    return tuple(name for name, op in HW_OPS.items() if op.rtl and op.rtl.preferred)


def rtl_known_failures() -> dict[str, str]:
    """`<op>_rtl` -> why its RTL cannot be simulated here (rtlsim.KNOWN_FAILURES)."""
    return {f"{name}_rtl": op.rtl.known_failure for name, op in HW_OPS.items() if op.rtl and op.rtl.known_failure}


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
    "Sub": (
        "a subtraction of two computed tensors, which FINN does not stream (it streams a residual Add, not a Sub)",
        "make the difference an Add for the FPGA (e.g. negate the second branch's last weights or scale), or deploy "
        "the model to a TFLite target",
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
