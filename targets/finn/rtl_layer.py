"""One FINN RTL node read for simulation: its HDL files in compile order, memory images and streams.

The layer is what FINN's code generation wrote for the node (PrepareIP / `generate_hdl`) with its finn-rtllib
sources. MVAU_rtl runs as FINN's IP integration assembles it for mem_mode internal_decoupled: its wrapper fed
by finn-rtllib's weight streamer (memstream, reading the layer's memblock.dat) in a small generated top. On the
FPGA finn-rtllib's MVU multiplies in DSP48E1 / DSP48E2 / DSP58 slices, which Verilator has no models of; mvu.sv
selects its own behavioural model of the slices under `ifdef VERILATOR` (the same lane packing, with the DSP
primitives left out), and that is what runs here. finn-rtllib files Verilator rejects are compiled from a
corrected copy in rtl_patches/ (RTL_PATCHES), and only when the shipped file is byte for byte the one patched.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import SimulationError
from targets.finn import ops
from targets.finn.streams import Stream
from targets.finn.verilator import rtl_cache_dir

# Op types whose RTL was checked bit-exact against the numpy kernel (tests/test_rtlsim.py): ops.HW_OPS' `Rtl`s.
SUPPORTED_RTL_OPS = ops.rtl_simulated()
KNOWN_FAILURES: dict[str, str] = ops.rtl_known_failures()  # op type -> why its RTL cannot be simulated here
# finn-rtllib files Verilator 5.48 rejects, compiled from a corrected copy instead (targets/finn/rtl_patches/):
# file name -> (sha256 of the finn-rtllib file the copy was made from, the copy). A file whose contents differ
# (another FINN version) is compiled as FINN ships it: the copy is only ever a stand-in for the file it fixes.
RTL_PATCHES_DIR = Path(__file__).resolve().parent / "rtl_patches"
RTL_PATCHES = {
    # a constant function declared under generate (IEEE 1800-2023 13.4.3): moved to module scope
    "add_multi.sv": (
        "245c88f80677355afd487f9cb69d71b85c4873eceae5bb828b1dcac43ca71f94",
        RTL_PATCHES_DIR / "add_multi.sv",
    ),
    # a constant function sizing the FIFO memory (INIT_ABITS) Verilator cannot evaluate: constant expressions
    "fifo.sv": (
        "88ad786a5885c7994c7e2d26e1ef2ffdf688310e941feaa0651332da49ec58c4",
        RTL_PATCHES_DIR / "fifo.sv",
    ),
}
DATA_SUFFIXES = {".dat", ".mem"}  # memory images the RTL reads with $readmemh at run time


@dataclass(frozen=True)
class RtlLayer:
    """What the RTL simulation needs of one FINN RTL node, read from the node and its generated sources."""

    name: str
    op_type: str
    top: str  # the Verilog top module
    hdl: tuple[Path, ...]  # in compile order
    data: tuple[Path, ...]  # memory images, copied next to the testbench for $readmemh
    inp: Stream
    out: Stream
    in_shape: tuple[int, ...]  # the node's normal input / output shape without the batch axis
    out_shape: tuple[int, ...]
    exp_cycles: int  # FINN's estimate per sample (get_exp_cycles)
    # a depthwise window generator with SIMD < channels streams each window channel-fold by channel-fold:
    # (kernel positions, channel folds, SIMD) of the beats are (channel folds, kernel positions, SIMD); None: in order
    interleaved: tuple[int, int, int] | None = None


def finn_rtllib_ready() -> None:
    """FINN's RTL file lists read its settings; a deploy has set them (prepare_finn), a bare call has not."""
    import finn.util.settings as settings

    # not FINN's own get_settings(): with FINN_BUILD_DIR set it reads ~/.finn/settings.yaml with yaml's unsafe Loader
    if settings._SETTINGS is None:
        from targets.finn.environment import prepare_finn

        # FINN's own build folder (make_build_dir), which FINN fills and never empties: the temp folder, not the cache
        prepare_finn(Path(tempfile.gettempdir()) / "sdk_finn_rtlsim")


def _node(model, node):
    if isinstance(node, str):
        found = [n for n in model.graph.node if n.name == node]
        if not found:
            raise SimulationError(
                f"The graph has no node named '{node}'.",
                where="targets.finn.rtlsim",
                fix=f"name one of: {', '.join(n.name for n in model.graph.node)}",
            )
        return found[0]
    return node


def rtl_layer(model, node, sources_dir: Path | None = None) -> RtlLayer:
    """Describe an RTL node of a specialised dataflow graph for simulation.

    `sources_dir` holds the layer's generated files: a deploy's `sources/<layer>` (targets.finn.codegen)
    or, if None, the node's own `code_gen_dir_ipgen` after FINN's PrepareIP.
    """
    from qonnx.custom_op.registry import getCustomOp

    onnx_node = copy.deepcopy(_node(model, node))  # attributes set below stay off the caller's graph
    where = f"dataflow node {onnx_node.name} ({onnx_node.op_type})"
    if onnx_node.op_type not in SUPPORTED_RTL_OPS:
        why = KNOWN_FAILURES.get(onnx_node.op_type, "it is not an RTL layer this simulation was verified on")
        raise SimulationError(
            f"The RTL of {onnx_node.op_type} cannot be simulated with Verilator here: {why}.",
            where=where,
            fix=f"RTL simulation covers {', '.join(SUPPORTED_RTL_OPS)}; other layers are verified by the numpy "
            "simulator (and FINN's rtlsim with Vivado)",
        )
    op = getCustomOp(onnx_node)
    if onnx_node.op_type == "MVAU_rtl":
        _check_mvau(op, where)
    generated = sources_dir if sources_dir is not None else op.get_nodeattr("code_gen_dir_ipgen")
    source = Path(generated) if generated else None
    if source is None or not source.is_dir():
        raise SimulationError(
            f"No generated RTL sources for {onnx_node.name}" + (f" in {source}." if sources_dir else "."),
            where=where,
            fix="run the FINN steps through generate_sources (FinnConfig.sources_dir) and pass sources_dir / <layer>",
        )
    op.set_nodeattr("code_gen_dir_ipgen", str(source.resolve()))
    if not op.get_nodeattr("gen_top_module"):  # set by generate_hdl on the graph code generation transformed
        op.set_nodeattr("gen_top_module", op.get_verilog_top_module_name())
    finn_rtllib_ready()
    hdl = tuple(Path(f) for f in op.get_rtl_file_list(abspath=True))
    if onnx_node.op_type == "MVAU_rtl":  # the weight streamer FINN's IP integration puts beside it
        hdl += _memstream_files(source, where)
    absent = [str(f) for f in hdl if not f.is_file()]
    if absent:
        raise SimulationError(
            f"RTL sources of {onnx_node.name} are missing: {', '.join(absent)}.",
            where=where,
            fix="regenerate the layer's sources (FINN steps through generate_sources)",
        )
    data = tuple(sorted(p for p in source.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES))
    folded_in, folded_out = op.get_folded_input_shape(0), op.get_folded_output_shape(0)
    inp = Stream("in0_V", op.get_input_datatype(0), int(folded_in[-1]), int(np.prod(folded_in[:-1])))
    out = Stream("out0_V", op.get_output_datatype(0), int(folded_out[-1]), int(np.prod(folded_out[:-1])))
    for stream, width in ((inp, op.get_instream_width(0)), (out, op.get_outstream_width(0))):
        if stream.bits != width:
            raise SimulationError(
                f"{onnx_node.name}: its folded shape makes {stream.bits}-bit beats on {stream.port}; "
                f"its stream width is {width}.",
                where=where,
                fix="the node's folding attributes are inconsistent; rerun set_folding",
            )
    top = op.get_nodeattr("gen_top_module")
    if onnx_node.op_type == "MVAU_rtl":  # hdl[-1]: the weight streamer's wrapper (_memstream_files)
        glue = _mvau_with_weights(op, top, hdl[-1], data, inp, out, where)
        hdl, top = (*hdl, glue), glue.stem
    return RtlLayer(
        name=onnx_node.name,
        op_type=onnx_node.op_type,
        top=top,
        hdl=tuple(patched(path) for path in hdl),
        data=data,
        inp=inp,
        out=out,
        in_shape=tuple(int(d) for d in op.get_normal_input_shape(0)[1:]),
        out_shape=tuple(int(d) for d in op.get_normal_output_shape(0)[1:]),
        exp_cycles=int(op.get_exp_cycles()),
        interleaved=_depthwise_interleaving(onnx_node, op),
    )


def _depthwise_interleaving(node, op) -> tuple[int, int, int] | None:
    """FINN's depthwise window generator streams (OFM, channel folds, kernel, SIMD), the order its VVAU / pool
    consumers read, where the node's tensor is im2col's (OFM, kernel, channels): FINN's cppsim of the layer
    interleaves the same way (ConvolutionInputGenerator_rtl.execute_node)."""
    if node.op_type != "ConvolutionInputGenerator_rtl" or not op.get_nodeattr("depthwise"):
        return None
    simd, channels = op.get_nodeattr("SIMD"), op.get_nodeattr("IFMChannels")
    kernel = int(np.prod(op.get_nodeattr("ConvKernelDim")))
    return None if simd == channels else (kernel, channels // simd, simd)


def in_tensor_order(values: np.ndarray, layer: RtlLayer) -> np.ndarray:
    """A batch of the layer's output as its stream carries it -> the node's tensor layout (see RtlLayer.interleaved)."""
    if layer.interleaved is None:
        return values
    kernel, folds, simd = layer.interleaved
    pixels = values.reshape(len(values), -1, folds, kernel, simd)
    return pixels.transpose(0, 1, 3, 2, 4).reshape(values.shape)


def patched(path: Path) -> Path:
    """`path`, or the corrected copy standing in for it (RTL_PATCHES) when its contents are the ones patched."""
    patch = RTL_PATCHES.get(path.name)
    if patch is not None and hashlib.sha256(path.read_bytes()).hexdigest() == patch[0]:
        return patch[1]
    return path


def _check_mvau(op, where: str) -> None:
    """The MVAU_rtl configurations the simulation covers: weights from the layer's own memory, one clock."""
    mem_mode = op.get_nodeattr("mem_mode")
    if mem_mode != "internal_decoupled":
        raise SimulationError(
            f"This MVAU_rtl takes its weights with mem_mode {mem_mode}; the RTL simulation streams them from the "
            "layer's own weight memory (mem_mode internal_decoupled) only.",
            where=where,
            fix="set mem_mode to internal_decoupled (FINN's default), or verify this layer with the numpy simulator",
        )
    if op.get_nodeattr("pumpedCompute") or op.get_nodeattr("pumpedMemory"):
        raise SimulationError(
            f"{op.onnx_node.name} runs on two clocks (ap_clk2x); the RTL simulation drives one.",
            where=where,
            fix="set pumpedCompute / pumpedMemory to 0 for this layer",
        )
    if op.get_nodeattr("TH") > 1 or op.get_nodeattr("mlo_max_iter") or op.get_nodeattr("bodies"):
        raise SimulationError(
            f"{op.onnx_node.name} is a tiled (TH > 1) or loop-body MVAU_rtl; the RTL simulation was verified on the "
            "plain matrix-vector unit (TH = 1, one weight set) only.",
            where=where,
            fix="set TH to 1, or verify this layer with the numpy simulator",
        )


def _memstream_files(source: Path, where: str) -> tuple[Path, ...]:
    """finn-rtllib's weight streamer and its generated wrapper, as MVAU code_generation_ipi adds them."""
    import finn.util.settings as settings

    wrappers = sorted(source.glob("*_memstream_wrapper.v"))
    if len(wrappers) != 1:
        raise SimulationError(
            f"The MVAU_rtl sources in {source} hold {len(wrappers)} weight streamer wrappers "
            "(*_memstream_wrapper.v); FINN's code generation writes one.",
            where=where,
            fix="regenerate the layer's sources (FINN steps through generate_sources)",
        )
    rtllib = Path(settings.get_settings().finn_rtllib)
    hdl = rtllib / "memstream" / "hdl"
    return (rtllib / "axi" / "hdl" / "axilite.sv", hdl / "memstream.sv", hdl / "memstream_axi.sv", wrappers[0])


_PARAMETER = r'parameter\s+{}\s*=\s*("[^"]*"|\d+)'
_MVAU_TOP = """// Generated by targets/finn/rtl_layer.py: {core} fed by its weight streamer {streamer},
// connected as FINN's IP integration connects them (mem_mode internal_decoupled), AXI-lite idle, ap_clk2x = ap_clk.
module {name} (
    input ap_clk,
    input ap_rst_n,
    input [{in_msb}:0] in0_V_TDATA,
    input in0_V_TVALID,
    output in0_V_TREADY,
    output [{out_msb}:0] out0_V_TDATA,
    output out0_V_TVALID,
    input out0_V_TREADY
);
    wire [{weights_msb}:0] weights_TDATA;
    wire weights_TVALID, weights_TREADY;
    {streamer} #(.INIT_FILE("{image}")) weights (
        .ap_clk(ap_clk), .ap_clk2x(ap_clk), .ap_rst_n(ap_rst_n),
        .s_axilite_AWVALID(1'b0), .s_axilite_AWPROT(3'b0), .s_axilite_AWADDR('0),
        .s_axilite_WVALID(1'b0), .s_axilite_WDATA(32'b0), .s_axilite_WSTRB(4'b0), .s_axilite_BREADY(1'b0),
        .s_axilite_ARVALID(1'b0), .s_axilite_ARPROT(3'b0), .s_axilite_ARADDR('0), .s_axilite_RREADY(1'b0),
        .s_axilite_AWREADY(), .s_axilite_WREADY(), .s_axilite_BVALID(), .s_axilite_BRESP(),
        .s_axilite_ARREADY(), .s_axilite_RVALID(), .s_axilite_RRESP(), .s_axilite_RDATA(),
        .s_axis_0_tvalid(1'b0), .s_axis_0_tdata('0), .s_axis_0_tready(),
        .m_axis_0_tdata(weights_TDATA), .m_axis_0_tvalid(weights_TVALID), .m_axis_0_tready(weights_TREADY)
    );
    {core} core (
        .ap_clk(ap_clk), .ap_clk2x(ap_clk), .ap_rst_n(ap_rst_n),
        .in1_V_TDATA(weights_TDATA), .in1_V_TVALID(weights_TVALID), .in1_V_TREADY(weights_TREADY),
        .in0_V_TDATA(in0_V_TDATA), .in0_V_TVALID(in0_V_TVALID), .in0_V_TREADY(in0_V_TREADY),
        .out0_V_TDATA(out0_V_TDATA), .out0_V_TVALID(out0_V_TVALID), .out0_V_TREADY(out0_V_TREADY)
    );
endmodule
"""


def _mvau_with_weights(op, core: str, streamer: Path, data, inp: Stream, out: Stream, where: str) -> Path:
    """A generated top: the MVAU_rtl wrapper fed by its weight streamer, the weights read from the run folder."""
    text = streamer.read_text()
    init, sets, width = (re.search(_PARAMETER.format(name), text) for name in ("INIT_FILE", "SETS", "WIDTH"))
    image = Path(init[1].strip('"')).name if init else ""
    if not image or image not in {path.name for path in data}:
        raise SimulationError(
            f"The weight streamer of {op.onnx_node.name} reads no memory image of its sources "
            f"(INIT_FILE {init[1] if init else 'absent'}); its weights would be written over AXI-lite at run time.",
            where=f"{where}: {streamer}",
            fix="use ram_style auto, block or distributed (UltraRAM weights outside Versal have no initial image)",
        )
    weight_bits = -(-op.get_instream_width(1) // 8) * 8
    if not sets or int(sets[1]) != 1 or not width or -(-int(width[1]) // 8) * 8 != weight_bits:
        raise SimulationError(
            f"The weight streamer of {op.onnx_node.name} ({streamer.name}) has "
            f"{sets[1] if sets else '?'} weight set(s) of {width[1] if width else '?'} bits; the layer reads one "
            f"set of {op.get_instream_width(1)}-bit weight beats.",
            where=where,
            fix="regenerate the layer's sources (FINN steps through generate_sources)",
        )
    name = f"{core}_with_weights"
    verilog = _MVAU_TOP.format(
        name=name,
        core=core,
        streamer=streamer.stem,
        image=image,
        in_msb=inp.padded_bits - 1,
        out_msb=out.padded_bits - 1,
        weights_msb=weight_bits - 1,
    )
    return _generated_file(f"{name}.sv", verilog)


def _generated_file(name: str, text: str) -> Path:
    """`text` in a file named `name` under the RTL cache's tops/, in a folder named by its digest (never rewritten)."""
    path = rtl_cache_dir("tops") / hashlib.sha256(text.encode()).hexdigest()[:16] / name
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}")
        partial.write_text(text)
        os.replace(partial, path)
    return path
