"""Stitched RTL simulation: runs of consecutive RTL layers chained through FINN's RTL FIFOs, cycle by cycle.

rtlsim.py runs one layer at a time between an always-valid source and an always-ready sink: that proves each
layer's values, not how the layers pace each other. Here the SDK writes the top level FINN's stitching would
build for a run of consecutive RTL layers (a segment): each layer's out0_V into the next layer's in0_V through
finn-rtllib's fifo.sv, instantiated as StreamingFIFO_rtl's template does (or a direct wire for depth 0), one
clock and reset, AXI-lite ports tied off. The segment is one `RtlLayer`, so rtlsim's cached Verilator build
and testbench run it unchanged. Its output must equal its last layer's; its measured initiation interval and
latency stand beside FINN's estimates; a stall with no output is a deadlock of the segment; and the FIFO
depths that keep the deep-FIFO throughput are found by simulation.

HLS layers cannot run in Verilator, so a segment ends at them; the whole accelerator is one segment when every
layer is RTL. A stream-width change ends a segment of the packaged graph, which has no width converters: FINN's
stitching inserts one there, and with_width_converters does the same first (`--rtlsim` stitches that graph).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import SimulationError
from sdk.report import Table
from sdk.verify import Check
from targets.finn import rtlsim
from targets.finn.rtlsim import SUPPORTED_RTL_OPS, RtlLayer

STITCH_DIR = Path(tempfile.gettempdir()) / "sdk_rtl_stitch"  # generated tops, one folder per distinct top
SIZING_SAMPLES = 6  # a batch this long reaches steady state for a chain of streaming layers
SIZING_BUILDS = 8  # `--rtlsim`: compiles of a segment the FIFO search may spend before it answers the deep depths
RAM_STYLE = "auto"  # StreamingFIFO_rtl's default ram_style
_DECLARES = re.compile(r"^\s*(?:module|package|interface)\s+(\w+)", re.MULTILINE)
_PORT = re.compile(r"VL_(IN|OUT)(?:8|16|64|W)?\(&(\w+),(\d+),(\d+)(?:,\d+)?\);")
_STREAM = ("TDATA", "TVALID", "TREADY")


# ---------------------------------------------------------------------------
# which layers form a segment


def _dynamic_inputs(model, node) -> list[str]:
    return [name for name in node.input if name and model.get_initializer(name) is None]


def _linked(model, producer, consumer) -> bool:
    """`consumer` reads `producer`'s only stream and nothing else reads it, at the same stream width."""
    from qonnx.custom_op.registry import getCustomOp

    out = producer.output[0]
    if out in {t.name for t in model.graph.output}:
        return False
    if [n.name for n in model.find_consumers(out)] != [consumer.name] or _dynamic_inputs(model, consumer) != [out]:
        return False
    return getCustomOp(producer).get_outstream_width(0) == getCustomOp(consumer).get_instream_width(0)


def segments(dataflow, supported_ops: Sequence[str] = SUPPORTED_RTL_OPS) -> list[list]:
    """Maximal chains (two layers or more) of consecutive one-stream-in / one-stream-out layers of `supported_ops`.

    Parameters (thresholds, weights) are initializers, not streams. A chain breaks at any other layer, at a
    branch, and where the stream width changes (FINN stitches a width converter there).
    """
    chains: list[list] = []
    current: list = []
    for node in dataflow.graph.node:
        simple = node.op_type in supported_ops and len(_dynamic_inputs(dataflow, node)) == 1 and len(node.output) == 1
        if simple and current and _linked(dataflow, current[-1], node):
            current.append(node)
            continue
        chains.append(current)
        current = [node] if simple else []
    chains.append(current)
    return [chain for chain in chains if len(chain) >= 2]


# ---------------------------------------------------------------------------
# the generated top


def _ports(layer: RtlLayer) -> dict[str, tuple[str, int]]:
    """The layer top's ports as Verilator elaborates them (direction, width): ranges in the RTL are expressions."""
    key = (layer.top, tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in layer.hdl))
    if key in _PORT_CACHE:
        return _PORT_CACHE[key]
    tool = rtlsim.find_verilator()
    with tempfile.TemporaryDirectory(prefix="rtl-stitch-ports-") as tmp:
        cmd = [str(tool.driver), *rtlsim.VERILATOR_FLAGS, "--top-module", layer.top, "--prefix", "Vdut"]
        proc = subprocess.run(
            [*cmd, "--Mdir", tmp, *(str(p) for p in layer.hdl)],
            env=tool.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=rtlsim.BUILD_TIMEOUT_S,
        )
        header = Path(tmp) / "Vdut.h"
        if proc.returncode != 0 or not header.is_file():
            errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "%Error" in line]
            raise SimulationError(
                f"Verilator could not read the RTL of {layer.name}: " + ("; ".join(errors[:3]) or "no message"),
                where=f"{layer.top} from {', '.join(p.name for p in layer.hdl)}",
                fix="simulate the layer alone (rtlsim.simulate_node) to see the full log",
            )
        ports = {m[2]: (m[1], int(m[3]) - int(m[4]) + 1) for m in _PORT.finditer(header.read_text())}
    _PORT_CACHE[key] = ports
    return ports


_PORT_CACHE: dict[tuple, dict[str, tuple[str, int]]] = {}


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _check_layer_ports(layer: RtlLayer, ports: dict[str, tuple[str, int]]) -> None:
    where = f"RTL top {layer.top} of {layer.name} ({layer.op_type})"
    if "ap_clk2x" in ports:
        raise SimulationError(
            f"{layer.name} runs on two clocks (ap_clk2x); the stitched simulation drives one.",
            where=where,
            fix="set pumpedCompute / pumpedMemory to 0 for this layer",
        )
    for stream, direction in ((layer.inp, "IN"), (layer.out, "OUT")):
        flip = "OUT" if direction == "IN" else "IN"
        for signal, want in zip(_STREAM, (direction, direction, flip)):
            name = f"{stream.port}_{signal}"
            if ports.get(name, ("", 0))[0] != want:
                raise SimulationError(
                    f"The RTL top of {layer.name} has no {want.lower()}put port {name}.",
                    where=where,
                    fix="the generated wrapper does not follow FINN's interface names; regenerate the layer's sources",
                )
        if ports[f"{stream.port}_TDATA"][1] != stream.padded_bits:
            raise SimulationError(
                f"{stream.port}_TDATA of {layer.name} is {ports[f'{stream.port}_TDATA'][1]} bits wide; its node's "
                f"datatypes make {stream.padded_bits}.",
                where=where,
                fix="regenerate the layer's sources after minimize_bit_widths",
            )


def _depths(fifo_depth: int | Sequence[int] | None, layers: Sequence[RtlLayer]) -> tuple[int, ...]:
    connections = len(layers) - 1
    if fifo_depth is None:
        depths = deep_depths(layers)
    elif isinstance(fifo_depth, int | np.integer):
        depths = (int(fifo_depth),) * connections
    else:
        depths = tuple(int(d) for d in fifo_depth)
    if len(depths) != connections or any(d < 0 or d == 1 for d in depths):
        raise SimulationError(
            f"FIFO depths {list(depths)} for {connections} connection(s) between {len(layers)} layers.",
            where="targets.finn.rtl_stitch",
            fix="one depth per connection: 0 (a direct wire) or 2 and above (finn-rtllib's fifo.sv needs DEPTH >= 2)",
        )
    return depths


def deep_depths(layers: Sequence[RtlLayer], samples: int = 2) -> tuple[int, ...]:
    """Per connection, a power of two holding `samples` whole samples of the producer's beats: deep enough that
    the FIFO never throttles a chain whose layers share one period (the reference the sizing compares with)."""
    return tuple(max(2, 1 << int(samples * layer.out.beats - 1).bit_length()) for layer in layers[:-1])


def _declared(path: Path) -> set[str]:
    return set(_DECLARES.findall(path.read_text(errors="replace")))


def _sources(layers: Sequence[RtlLayer], fifo: bool) -> list[Path]:
    """Every layer's files once, in compile order; one declaration of each module (FINN's flat namespace)."""
    files: list[Path] = []
    owner: dict[str, tuple[Path, str]] = {}  # module / package name -> (file, its digest)
    for path in [p for layer in layers for p in layer.hdl] + (_fifo_sources() if fifo else []):
        path = Path(path).resolve()
        if path in files:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        names = _declared(path)
        clashes = {name: owner[name] for name in names if name in owner}
        if clashes and all(d == digest for _, d in clashes.values()) and len(clashes) == len(names):
            continue  # the same file again from another copy of finn-rtllib
        if clashes:
            name, (first, _) = next(iter(clashes.items()))
            raise SimulationError(
                f"Module {name} is declared in both {first} and {path}; a stitched top can hold only one.",
                where="the layers' generated RTL",
                fix="regenerate the layers' sources with unique node names (GiveUniqueNodeNames)",
            )
        owner.update(dict.fromkeys(names, (path, digest)))
        files.append(path)
    return files


def _fifo_sources() -> list[Path]:
    """finn-rtllib's FIFO, the files StreamingFIFO_rtl compiles (without the simulation-only gauge); fifo.sv from
    its corrected copy (rtlsim.RTL_PATCHES: Verilator cannot evaluate its constant function INIT_ABITS)."""
    from finn.util.basic import fifo_rtl_files

    rtlsim._finn_rtllib_ready()
    return [rtlsim._patched(Path(p).resolve()) for p in fifo_rtl_files(abspath=True, gauge=False)]


def _memory_images(layers: Sequence[RtlLayer]) -> tuple[dict[str, Path], dict[Path, str]]:
    """Every layer's memory images, run from one folder: a basename two layers share with different contents is
    renamed `<layer>__<name>` for the later layer, in a copy of that layer's own HDL naming it as a string."""
    images: dict[str, Path] = {}  # the name the RTL reads -> the file
    rewrites: dict[Path, str] = {}  # a layer's HDL file -> its text with the renamed images
    for index, layer in enumerate(layers):
        shared = {Path(p).resolve() for other in layers[:index] + layers[index + 1 :] for p in other.hdl}
        own = [Path(p).resolve() for p in layer.hdl if Path(p).resolve() not in shared]
        for image in layer.data:
            first = images.get(image.name)
            if first is None:
                images[image.name] = image
                continue
            if first.read_bytes() == image.read_bytes():
                continue  # the same contents: one copy serves both layers
            literal = re.compile(rf'"(\./)?{re.escape(image.name)}"')
            texts = {p: rewrites.get(p, p.read_text(errors="replace")) for p in own}
            naming = [p for p, text in texts.items() if literal.search(text)]
            if not naming:
                raise SimulationError(
                    f"{layer.name} and another layer of the segment both read a memory image named {image.name} "
                    "with different contents, and the RTL of "
                    f"{layer.name} does not name it as a string the SDK can rename.",
                    where=f"{image} and {first}",
                    fix="simulate these layers one at a time (rtlsim.simulate_node), or give the images unique names",
                )
            renamed = f"{_identifier(layer.name)}__{image.name}"
            for path in naming:
                rewrites[path] = literal.sub(f'"./{renamed}"', texts[path])
            images[renamed] = image
    return images, rewrites


def _occupancy_port(k: int) -> str:
    """The top's output carrying the peak occupancy of the FIFO after layer k - 1 (fifo.sv's maxcount)."""
    return f"fifo{k}{rtlsim.MONITOR_SUFFIX}"


def _count_bits(depth: int) -> int:
    """fifo.sv's count / maxcount width: [$clog2(DEPTH+1):0]."""
    return depth.bit_length() + 1


def _top_verilog(name: str, layers: Sequence[RtlLayer], ports: list[dict], depths: Sequence[int]) -> str:
    first, last = layers[0], layers[-1]
    chain = " -> ".join(layer.name for layer in layers)
    lines = [
        "// Generated by targets/finn/rtl_stitch.py: FINN RTL layers chained through finn-rtllib FIFOs.",
        f"// {chain}",
        f"// FIFO depths (0: a direct wire): {', '.join(map(str, depths))}",
        f"module {name} (",
        "    input ap_clk,",
        "    input ap_rst_n,",
        f"    input [{first.inp.padded_bits - 1}:0] in0_V_TDATA,",
        "    input in0_V_TVALID,",
        "    output in0_V_TREADY,",
        f"    output [{last.out.padded_bits - 1}:0] out0_V_TDATA,",
        "    output out0_V_TVALID,",
        "    input out0_V_TREADY",
        ");",
    ]
    # layer k reads s<k>_in (the top's in0_V for the first) and writes s<k+1>_out (out0_V for the last); a FIFO
    # joins s<k>_out to s<k>_in, a depth of 0 makes them one net
    count = len(layers)
    for k in range(1, count):  # each FIFO's peak occupancy, read by the testbench at the end of a run
        if depths[k - 1]:
            lines[-2] += ","
            lines.insert(-1, f"    output [{_count_bits(depths[k - 1]) - 1}:0] {_occupancy_port(k)}")
    ins = [[f"in0_V_{s}" for s in _STREAM]] + [[f"s{k}_in_{s}" for s in _STREAM] for k in range(1, count)]
    outs = [ins[k + 1] if not depths[k] else [f"s{k + 1}_out_{s}" for s in _STREAM] for k in range(count - 1)]
    outs.append([f"out0_V_{s}" for s in _STREAM])
    for k in range(1, count):
        width = layers[k - 1].out.padded_bits
        nets = [ins[k]] + ([outs[k - 1]] if depths[k - 1] else [])
        for data, valid, ready in nets:
            lines += [f"    wire [{width - 1}:0] {data};", f"    wire {valid}, {ready};"]
    for k, (layer, layer_ports) in enumerate(zip(layers, ports)):
        connect = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n"}
        connect |= {f"{layer.inp.port}_{s}": net for s, net in zip(_STREAM, ins[k])}
        connect |= {f"{layer.out.port}_{s}": net for s, net in zip(_STREAM, outs[k])}
        pins = [f".{port}({connect[port]})" for port in layer_ports if port in connect]
        for port, (direction, _) in layer_ports.items():  # AXI-lite, parameter streams: idle
            if port not in connect:
                pins.append(f".{port}('0)" if direction == "IN" else f".{port}()")
        lines.append(f"    {layer.top} u{k}_{_identifier(layer.name)} (")
        lines += [f"        {pin}," for pin in pins[:-1]] + [f"        {pins[-1]}", "    );"]
    for k in range(1, count):
        if not depths[k - 1]:
            continue
        (idat, ivld, irdy), (odat, ovld, ordy) = outs[k - 1], ins[k]
        lines += [
            f"    fifo #(.DEPTH({depths[k - 1]}), .DATA_WIDTH({layers[k - 1].out.padded_bits}), "
            f'.RAM_STYLE("{RAM_STYLE}")) fifo_{k} (',
            "        .clk(ap_clk), .rst(!ap_rst_n),",
            f"        .idat({idat}), .ivld({ivld}), .irdy({irdy}),",
            f"        .odat({odat}), .ovld({ovld}), .ordy({ordy}),",
            f"        .count(), .maxcount({_occupancy_port(k)})",
            "    );",
        ]
    lines += ["endmodule", ""]
    return "\n".join(lines)


def stitch(layers: Sequence[RtlLayer], fifo_depth: int | Sequence[int] | None = None, work_dir: Path | None = None):
    """The generated top of `layers` (consecutive, in stream order) as one RtlLayer for rtlsim's build and stream.

    `fifo_depth`: one for every connection or one per connection; 0 wires the layers directly; None sizes each
    FIFO to two samples of its beats (deep_depths). The top is written to a folder of `work_dir` named by its
    contents, so the build cache keys on it and a top already written is reused.
    """
    layers = list(layers)
    if len(layers) < 2:
        raise SimulationError(
            f"A segment needs two layers or more; got {len(layers)}.",
            where="targets.finn.rtl_stitch",
            fix="simulate a single layer with rtlsim.simulate_node",
        )
    names = " -> ".join(layer.name for layer in layers)
    for producer, consumer in zip(layers, layers[1:]):
        if producer.out.padded_bits != consumer.inp.padded_bits or producer.out.bits != consumer.inp.bits:
            raise SimulationError(
                f"{producer.name} streams {producer.out.bits}-bit beats; {consumer.name} reads {consumer.inp.bits}.",
                where=f"segment {names}",
                fix="FINN stitches a StreamingDataWidthConverter between them: segments() splits the chain there",
            )
    depths = _depths(fifo_depth, layers)
    ports = [_ports(layer) for layer in layers]
    for layer, layer_ports in zip(layers, ports):
        _check_layer_ports(layer, layer_ports)
    top = "segment_" + _identifier(f"{layers[0].name}__{layers[-1].name}")
    sources = _sources(layers, fifo=any(depths))
    if any(top in _declared(p) for p in sources):
        raise SimulationError(f"A layer's RTL already declares module {top}.", where=names, fix="rename the layer")
    verilog = _top_verilog(top, layers, ports, depths)
    images, rewrites = _memory_images(layers)
    digest = hashlib.sha256(verilog.encode())
    for path in sources:
        digest.update(f"{path}\0{rewrites.get(path, '')}\0".encode())
    for name, image in sorted(images.items()):
        digest.update(f"{name}\0{image.resolve()}\0".encode())
    root = Path(work_dir) if work_dir is not None else STITCH_DIR
    folder = root / f"{top}-{digest.hexdigest()[:16]}"
    if not (folder / f"{top}.sv").is_file():
        _write_folder(folder, verilog, top, rewrites, {n: p for n, p in images.items() if n != p.name})
    # a rewritten file replaces the layer's own: the same module, naming its renamed memory images
    hdl = [folder / p.name if p in rewrites else p for p in sources] + [folder / f"{top}.sv"]
    data = [folder / name if name != image.name else image for name, image in images.items()]
    return RtlLayer(
        name=f"segment {names}",
        op_type="stitched segment",
        top=top,
        hdl=tuple(hdl),
        data=tuple(data),
        inp=layers[0].inp,
        out=layers[-1].out,
        in_shape=layers[0].in_shape,
        out_shape=layers[-1].out_shape,
        exp_cycles=max(layer.exp_cycles for layer in layers),
        interleaved=_output_interleaving(layers),
    )


def _output_interleaving(layers: Sequence[RtlLayer]):
    """The order the segment's output stream carries: its last layer's, or (width converters only regroup beats)
    that of the last layer before its trailing converters."""
    for layer in reversed(layers):
        if layer.op_type != CONVERTER_OP:
            return layer.interleaved
    return None


def _write_folder(folder: Path, verilog: str, top: str, rewrites: dict[Path, str], renamed: dict[str, Path]) -> None:
    """Write in a staging folder, renamed into place whole: a concurrent run sees a complete folder or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for original, text in rewrites.items():
            (staging / original.name).write_text(text)
        for name, image in renamed.items():  # rtlsim copies images by their name; a link keeps the contents live
            (staging / name).symlink_to(image.resolve())
        (staging / f"{top}.sv").write_text(verilog)
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def segment_layers(
    dataflow, nodes: Sequence, sources_dir: Path, converter_sources: Mapping[str, Path] | None = None
) -> list[RtlLayer]:
    """rtlsim's description of each node (a NodeProto or its name), its sources in `sources_dir / <layer>`, or
    for a width converter the SDK inserted (with_width_converters) in `converter_sources[<layer>]`."""
    extra = converter_sources or {}
    names = [getattr(node, "name", node) for node in nodes]
    return [
        rtlsim.rtl_layer(dataflow, node, extra.get(name, Path(sources_dir) / name)) for node, name in zip(nodes, names)
    ]


def stitched_layer(
    dataflow,
    nodes: Sequence,
    sources_dir: Path,
    fifo_depth: int | Sequence[int] | None = None,
    work_dir: Path | None = None,
) -> RtlLayer:
    """The stitched top of consecutive RTL `nodes` of a dataflow graph (see stitch); sources as a deploy wrote."""
    return stitch(segment_layers(dataflow, nodes, sources_dir), fifo_depth, work_dir)


# ---------------------------------------------------------------------------
# simulation: values, pace, deadlock


@dataclass
class SegmentResult:
    """A batch through a stitched segment: the last layer's output, and how the chained layers paced it."""

    names: tuple[str, ...]
    fifo_depths: tuple[int, ...]
    output: np.ndarray  # int64, (N, *last layer's normal output shape)
    samples: int
    cycles: int  # the whole batch: first input offered to the last output beat
    ii: float | None  # cycles per sample in steady state: (cycles(N) - cycles(1)) / (N - 1); None for one sample
    latency: int  # one sample alone: first input offered to its last output beat
    first_output_cycle: int  # one sample alone: first input offered to its first output beat
    exp_ii: int  # FINN: the slowest layer's get_exp_cycles() (expected_cycles)
    exp_latency: int  # FINN: get_exp_cycles() summed along the chain (dataflow_performance's critical path)
    compile_seconds: float
    cached: bool
    run_seconds: float
    max_occupancy: tuple[int, ...] = ()  # per connection, the most beats its FIFO held in the batch (0: a wire)

    def to_dict(self) -> dict:
        return {
            "layers": list(self.names),
            "fifo_depths": list(self.fifo_depths),
            "fifo_max_occupancy": list(self.max_occupancy),
            "samples": self.samples,
            "ii_cycles": None if self.ii is None else round(self.ii, 2),
            "ii_cycles_finn_estimate": self.exp_ii,
            "latency_cycles": self.latency,
            "first_output_cycle": self.first_output_cycle,
            "latency_cycles_finn_estimate": self.exp_latency,
        }


_DEPTHS_LINE = re.compile(r"^// FIFO depths \(0: a direct wire\): ([\d, ]*)$", re.MULTILINE)


def _top_depths(top: RtlLayer) -> tuple[int, ...]:
    found = _DEPTHS_LINE.search(Path(top.hdl[-1]).read_text())
    return tuple(int(d) for d in found[1].split(",")) if found and found[1].strip() else ()


def expected_cycles(layer: RtlLayer) -> int:
    """FINN's cycles per sample of a layer (get_exp_cycles); for a width converter, which FINN counts as 0, its
    beats at one per cycle: a converter splitting wide beats for an HLS consumer sets the segment's pace."""
    if layer.op_type == CONVERTER_OP:
        return max(layer.exp_cycles, layer.inp.beats, layer.out.beats)
    return layer.exp_cycles


def default_idle_limit(layers: Sequence[RtlLayer]) -> int:
    """Generous: every layer may take a whole sample's worth of cycles before its first beat."""
    return 1000 + 4 * sum(max(layer.exp_cycles, layer.inp.beats, layer.out.beats) for layer in layers)


def simulate_stitched(
    top: RtlLayer, layers: Sequence[RtlLayer], x: np.ndarray, cache_dir: Path, idle_limit: int | None = None
) -> SegmentResult:
    """Run a batch through a stitched top (stitch / stitched_layer) of `layers`, then its first sample alone.

    The two runs give the steady-state initiation interval without the pipeline's fill, and the latency of one
    sample without queueing behind others. No output beat for `idle_limit` cycles is a deadlock of the segment.
    """
    names = tuple(layer.name for layer in layers)
    depths = _top_depths(top)
    limit = default_idle_limit(layers) if idle_limit is None else idle_limit
    runs = []
    for batch in (x, x[:1]) if len(x) > 1 else (x,):
        try:
            runs.append(rtlsim.simulate_layer(top, batch, cache_dir, idle_limit=limit))
        except SimulationError as error:
            if "deadlock" not in error.what.lower():
                raise
            raise SimulationError(
                f"Deadlock in the stitched segment {' -> '.join(names)} (FIFO depths {list(depths)}): no output "
                f"beat for {limit} cycles. {error.what}",
                where=f"generated top {top.top} ({top.hdl[-1]})",
                fix="a layer stopped taking or giving beats: a FIFO too shallow for a reconvergent path, or a layer "
                "waiting for more input than its node's shapes say; simulate the layers one by one "
                "(rtlsim.simulate_node) to find it, and raise idle_limit only if the layers legitimately pause so long",
            ) from error
    batch, single = runs[0], runs[-1]
    return SegmentResult(
        names=names,
        fifo_depths=depths,
        output=batch.output,
        samples=len(x),
        cycles=batch.cycles,
        ii=(batch.cycles - single.cycles) / (len(x) - 1) if len(x) > 1 else None,
        latency=single.cycles,
        first_output_cycle=single.first_output_cycle,
        exp_ii=max(expected_cycles(layer) for layer in layers),
        exp_latency=sum(expected_cycles(layer) for layer in layers),
        compile_seconds=batch.compile_seconds,
        cached=batch.cached,
        run_seconds=sum(run.run_seconds for run in runs),
        max_occupancy=tuple(batch.monitors.get(_occupancy_port(k), 0) for k in range(1, len(layers))),
    )


def simulate_segment(
    dataflow,
    nodes: Sequence,
    sources_dir: Path,
    x: np.ndarray,
    cache_dir: Path,
    fifo_depth: int | Sequence[int] | None = None,
    work_dir: Path | None = None,
    idle_limit: int | None = None,
) -> SegmentResult:
    """Consecutive RTL `nodes` of a dataflow graph stitched (see stitch) and run on a batch of their input."""
    layers = segment_layers(dataflow, nodes, sources_dir)
    return simulate_stitched(stitch(layers, fifo_depth, work_dir), layers, x, cache_dir, idle_limit)


# ---------------------------------------------------------------------------
# FIFO sizing by simulation


@dataclass
class FifoSizing:
    """Per connection, a FIFO depth that keeps the segment's deep-FIFO throughput, from measured occupancy."""

    names: tuple[str, ...]
    depths: tuple[int, ...]  # 0: a direct wire suffices
    ii: float  # measured with `depths`
    deep_depths: tuple[int, ...]
    deep_ii: float | None  # None: not simulated, direct wires already reached the segment's reachable II
    trials: list[tuple[tuple[int, ...], float]]  # every configuration simulated and its II, in order
    builds: int  # configurations compiled (the others were in the cache)
    seconds: float
    complete: bool = True  # False: the build budget ran out and `depths` are the deep depths (they keep the pace)
    deep_occupancy: tuple[int, ...] = ()  # per connection, the most beats its deep FIFO held (empty: not run)
    output: np.ndarray | None = None  # the batch's output with `depths`: what the sized hardware computed


def depth_for_occupancy(peak: int, deep: int) -> int:
    """One beat deeper than the most a deep FIFO held: room for every burst it saw (the confirming run checks the
    pace, since the shallower FIFO's kind and latency may differ); one that held no more than FINN's default
    depth is a direct wire, as FINN's RemoveShallowFIFOs leaves it."""
    return 0 if peak <= FINN_DEFAULT_FIFO_DEPTH else min(deep, peak + 1)


def _sizing_input(layer: RtlLayer, samples: int, seed: int = 0) -> np.ndarray:
    datatype = layer.inp.datatype
    rng = np.random.default_rng(seed)
    if datatype.name == "BIPOLAR":
        return rng.choice([-1, 1], size=(samples, *layer.in_shape))
    return rng.integers(int(datatype.min()), int(datatype.max()) + 1, size=(samples, *layer.in_shape))


def size_fifos(
    dataflow,
    nodes: Sequence,
    sources_dir: Path,
    cache_dir: Path,
    x: np.ndarray | None = None,
    samples: int = SIZING_SAMPLES,
    work_dir: Path | None = None,
    tolerance: float = 0.0,
    progress: Callable[[str], None] = lambda message: None,
) -> FifoSizing:
    """Size each FIFO of a segment by simulation, as FINN sizes FIFOs with rtlsim: run the segment with deep
    FIFOs, read how many beats each one held at most (fifo.sv's maxcount), make each one beat deeper than that
    (a wire where it held two or fewer), and run that to confirm it keeps the deep-FIFO throughput; if it does
    not, deepen them (doubling) until it does.

    Throughput is the measured II; depths keep it if II <= deep II x (1 + tolerance). Every configuration is one
    build (seconds; cached by the top's source) and two short runs. `x`: the batch, else `samples` random ones.
    """
    layers = segment_layers(dataflow, nodes, sources_dir)
    x = _sizing_input(layers[0], samples) if x is None else x
    return size_segment_fifos(layers, x, cache_dir, work_dir, tolerance, progress)


def size_segment_fifos(
    layers: Sequence[RtlLayer],
    x: np.ndarray,
    cache_dir: Path,
    work_dir: Path | None = None,
    tolerance: float = 0.0,
    progress: Callable[[str], None] = lambda message: None,
    reachable_ii: float | None = None,
    max_builds: int | None = None,
) -> FifoSizing:
    """size_fifos on a segment's layers (segment_layers) and a batch of their input.

    `reachable_ii`: an II no FIFO can improve on (FINN's estimate of the slowest layer): when direct wires reach
    it, they are the answer without building the deep-FIFO top (a build of the whole segment saved).
    `max_builds`: every trial compiles the whole segment (minutes for a large one); past this many compiles the
    search stops and answers the deep depths, which keep the pace but are not minimal (complete=False)."""
    began = time.perf_counter()
    names = tuple(layer.name for layer in layers)
    if len(x) < 2:
        raise SimulationError("FIFO sizing needs a batch of two samples or more.", fix=f"e.g. {SIZING_SAMPLES}")
    deep = deep_depths(layers)
    trials: list[tuple[tuple[int, ...], float]] = []
    measured: dict[tuple[int, ...], SegmentResult] = {}
    builds = 0

    def run(depths: tuple[int, ...]) -> SegmentResult:
        nonlocal builds
        if depths not in measured and max_builds is not None and builds >= max_builds and deep in measured:
            raise _BudgetSpent
        if depths not in measured:
            progress(f"FIFO sizing of {names[0]} -> {names[-1]}: depths {list(depths)}")
            result = simulate_stitched(stitch(layers, depths, work_dir), layers, x, cache_dir)
            builds += not result.cached
            measured[depths] = result
            trials.append((depths, result.ii))
        return measured[depths]

    def sizing(depths: tuple[int, ...], deep_ii: float | None, complete: bool = True) -> FifoSizing:
        peaks = measured[deep].max_occupancy if deep in measured else ()
        seconds = round(time.perf_counter() - began, 3)
        final = run(depths)
        return FifoSizing(
            names, depths, final.ii, deep, deep_ii, trials, builds, seconds, complete, peaks, final.output
        )

    wires = (0,) * len(deep)
    if reachable_ii is not None and run(wires).ii <= reachable_ii * (1 + tolerance) + 1e-9:
        return sizing(wires, None)
    deep_ii = run(deep).ii
    chosen = tuple(depth_for_occupancy(peak, d) for peak, d in zip(run(deep).max_occupancy, deep))
    try:
        while run(chosen).ii > deep_ii * (1 + tolerance) + 1e-9:  # rare: the FIFO kinds' latencies differ
            chosen = tuple(min(d, max(2, 2 * c)) for c, d in zip(chosen, deep))
    except _BudgetSpent:
        return sizing(deep, deep_ii, complete=False)
    return sizing(chosen, deep_ii)


class _BudgetSpent(Exception):
    """size_segment_fifos: the next trial would compile once more than max_builds allows."""


# ---------------------------------------------------------------------------
# width converters, as FINN's stitching inserts them

CONVERTER_OP = "StreamingDataWidthConverter_rtl"


def with_width_converters(dataflow, fpga_part: str, work_dir: Path):
    """A copy of the dataflow graph with FINN's width converters where a stream's width changes, and the folder of
    each converter's generated RTL (name -> folder).

    The package's graph has none: FINN's stitching inserts them (InsertDWC in step_set_fifo_depths). Inserted and
    specialised here the same way, a chain of RTL layers stitches across a width change as FINN's IP would.
    """
    import copy

    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    layer_of = {node.output[0]: node.name for node in dataflow.graph.node}  # names the transformations may change
    model = ModelWrapper(copy.deepcopy(dataflow.model)).transform(InsertDWC())
    for node in model.graph.node:
        if node.op_type == "StreamingDataWidthConverter":
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    model = model.transform(SpecializeLayers(fpga_part))
    for node in model.graph.node:
        node.name = layer_of.get(node.output[0], "")
    taken = set(layer_of.values())
    folders: dict[str, Path] = {}
    rtlsim._finn_rtllib_ready()
    for node in model.graph.node:
        if node.name:
            continue
        node.name = next(f"{node.op_type}_{k}" for k in range(len(taken) + 1) if f"{node.op_type}_{k}" not in taken)
        taken.add(node.name)
        if node.op_type != CONVERTER_OP:  # FINN kept an HLS converter: a segment ends there
            continue
        op = getCustomOp(node)
        widths = f"{op.get_instream_width(0)}to{op.get_outstream_width(0)}"
        folder = Path(work_dir) / "width_converters" / f"{node.name}-{widths}"
        folder.mkdir(parents=True, exist_ok=True)
        op.set_nodeattr("code_gen_dir_ipgen", str(folder))
        op.generate_hdl(model, fpga_part, 10.0)  # a template of the two widths: the part and clock are not used
        folders[node.name] = folder
    return model, folders


def converter_tensors(model, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`tensors` with each inserted width converter's output: its input, unchanged (only the beats differ)."""
    tensors = dict(tensors)
    for node in model.graph.node:
        if node.op_type == CONVERTER_OP and node.output[0] not in tensors and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    return tensors


# ---------------------------------------------------------------------------
# every segment of a deploy, for `--rtlsim`

FINN_DEFAULT_FIFO_DEPTH = 2  # HWCustomOp's inFIFODepths / outFIFODepths default; FINN makes no FIFO at or below it


@dataclass
class SegmentVerification:
    """Every segment of the dataflow graph stitched and run on the simulator's own tensors."""

    check: Check
    results: list[SegmentResult] = field(default_factory=list)
    sizings: dict[tuple[str, ...], FifoSizing] = field(default_factory=dict)
    not_stitched: dict[str, str] = field(default_factory=dict)  # segment -> why its top could not be built
    rows: list[list] = field(default_factory=list)
    converters: list[str] = field(default_factory=list)  # width converters inserted (with_width_converters)

    def table(self) -> Table:
        return Table(
            "Stitched RTL segments (Verilator, layers chained through FIFOs)",
            [
                "segment",
                "FIFO depths",
                "II cycles (measured)",
                "II (FINN estimate)",
                "latency cycles (measured)",
                "latency (FINN estimate)",
                "sized FIFO depths",
                "II with sized FIFOs",
                "compile s",
                "run s",
                "= simulator",
            ],
            self.rows,
        )

    def stitched_layers(self) -> list[str]:
        """The layers run inside a stitched segment, equal to the simulator (inserted converters left out)."""
        equal = {row[0] for row in self.rows if row[-1] is True}
        passed = [r for r in self.results if " -> ".join(r.names) in equal]
        return [name for r in passed for name in r.names if name not in self.converters]

    def fifo_depth_attributes(self) -> dict[str, dict[str, list[int]]]:
        """The sized depths as FINN's node attributes (layer -> {outFIFODepths / inFIFODepths: [depth]}).

        FINN's InsertFIFO makes the FIFO between two layers max(producer's outFIFODepths, consumer's
        inFIFODepths) deep; a depth at or below FINN's default of 2 makes none. A direct wire sized here is
        written as that default. Across an inserted width converter only the layer's own side is written: FINN
        inserts the converter, and its FIFOs, again.
        """
        attributes: dict[str, dict[str, list[int]]] = {}
        for names, sizing in self.sizings.items():
            for (producer, consumer), depth in zip(zip(names, names[1:]), sizing.depths):
                depth = max(FINN_DEFAULT_FIFO_DEPTH, int(depth))
                if producer not in self.converters:
                    attributes.setdefault(producer, {})["outFIFODepths"] = [depth]
                if consumer not in self.converters:
                    attributes.setdefault(consumer, {})["inFIFODepths"] = [depth]
        return attributes

    def to_dict(self) -> dict:
        segments = []
        for r in self.results:
            sizing = self.sizings.get(r.names)
            segments.append(
                {
                    **r.to_dict(),
                    "sized_fifo_depths": None if sizing is None else list(sizing.depths),
                    "ii_cycles_sized_fifos": None if sizing is None else round(sizing.ii, 2),
                    "sizing_seconds": None if sizing is None else sizing.seconds,
                    "sizing_complete": None if sizing is None else sizing.complete,
                    "fifo_max_occupancy_deep": None if sizing is None else list(sizing.deep_occupancy),
                    "compile_seconds": round(r.compile_seconds, 3),
                    "cached": r.cached,
                    "run_seconds": round(r.run_seconds, 3),
                }
            )
        return {
            "segments": segments,
            "not_stitched": self.not_stitched,
            "width_converters_inserted": self.converters,
            "stitched_layers": self.stitched_layers(),
            "fifo_depth_attributes": self.fifo_depth_attributes(),
        }


def _difference_check(
    name: str, label: str, last: str, output: np.ndarray, expected: np.ndarray, sized: tuple[int, ...] | None = None
) -> Check:
    """The failed check of a stitched run whose `output` differs from the simulator's (`expected`, its first
    len(output) samples): the first sample and element that differ, and how many samples do. `sized`: the run
    was the sizing's, with these FIFO depths."""
    where = label if sized is None else f"{label} with its sized FIFO depths {list(sized)}"
    got, want = output.reshape(len(output), -1), expected[: len(output)].reshape(len(output), -1)
    differs = np.any(got != want, axis=1)
    sample = int(np.argmax(differs))
    element = int(np.argmax(got[sample] != want[sample]))
    return Check(
        name,
        False,
        len(output),
        f"the stitched segment {where} differs from the simulator's output of {last} at sample {sample}, element "
        f"{element} ({int(got[sample, element])} against {int(want[sample, element])})",
        first_difference=label,
        mismatch_rate=float(np.mean(differs)),
        first_sample=sample,
    )


def verify_segments(
    dataflow,
    tensors: dict[str, np.ndarray],
    sources_dir: Path,
    cache_dir: Path,
    size: bool = True,
    work_dir: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
    converter_sources: Mapping[str, Path] | None = None,
) -> SegmentVerification:
    """Each segment on the simulator's input of its first layer, equal to the simulator's output of its last;
    `tensors` as rtl_verify's (graph tensor name -> batch). With `size`, its FIFOs sized by simulation.
    `converter_sources`: the folders of width converters with_width_converters inserted into `dataflow`."""
    result = SegmentVerification(
        Check("stitched RTL segments (Verilator) = simulator", True, 0, ""), converters=sorted(converter_sources or {})
    )
    work_dir = Path(cache_dir) / "stitched" if work_dir is None else work_dir
    for chain in segments(dataflow):
        label = " -> ".join(node.name for node in chain)
        try:
            layers = segment_layers(dataflow, chain, sources_dir, converter_sources)
            top = stitch(layers, 0, work_dir)  # direct wires: FINN builds no FIFO of its default depth (2)
        except SimulationError as error:
            result.not_stitched[label] = error.what
            result.rows.append([label, *[None] * 9, f"not stitched: {error.what}"])
            continue
        progress(f"stitched RTL simulation of {chain[0].name} ... {chain[-1].name} (Verilator)")
        x, expected = tensors[chain[0].input[0]], tensors[chain[-1].output[0]]
        try:
            run = simulate_stitched(top, layers, x, cache_dir)
        except SimulationError as error:  # a deadlock, or an assertion of the RTL
            if result.check.passed:
                result.check = Check(result.check.name, False, len(x), error.what, first_difference=label)
            result.rows.append([label, *[None] * 9, "deadlock" if "deadlock" in error.what.lower() else "stopped"])
            continue
        equal = np.array_equal(run.output, expected.reshape(run.output.shape))
        difference = (
            None if equal else _difference_check(result.check.name, label, chain[-1].name, run.output, expected)
        )
        sizing = None
        if size and equal and len(x) > 1:
            progress(f"FIFO sizing of {chain[0].name} ... {chain[-1].name} (Verilator)")
            sizing = size_segment_fifos(
                layers, x[:SIZING_SAMPLES], cache_dir, work_dir, reachable_ii=run.exp_ii, max_builds=SIZING_BUILDS
            )
            # the package gets the sized depths: the hardware with them must compute the same values, not only
            # keep the pace (sized depths that do not are left out of the folding config)
            if np.array_equal(sizing.output, expected[: len(sizing.output)].reshape(sizing.output.shape)):
                result.sizings[run.names] = sizing
            else:
                equal = False
                difference = _difference_check(
                    result.check.name, label, chain[-1].name, sizing.output, expected, sizing.depths
                )
        result.results.append(run)
        result.rows.append(
            [
                label,
                ", ".join(map(str, run.fifo_depths)),
                None if run.ii is None else round(run.ii, 1),
                run.exp_ii,
                run.latency,
                run.exp_latency,
                (", ".join(map(str, sizing.depths)) + ("" if sizing.complete else " (deep: search stopped)"))
                if sizing
                else None,
                round(sizing.ii, 1) if sizing else None,
                round(run.compile_seconds if not run.cached else 0.0, 2),
                round(run.run_seconds, 2),
                equal,
            ]
        )
        if difference is not None and result.check.passed:
            result.check = difference
    if result.check.passed:
        samples = len(next(iter(tensors.values()))) if tensors else 0
        result.check.samples = samples
        whole = len(result.results) == 1 and len(result.results[0].names) == len(dataflow.graph.node)
        result.check.detail = (
            f"the whole accelerator ({len(dataflow.graph.node)} layers) stitched"
            if whole
            else f"{len(result.results)} segment(s) of chained RTL layers"
        ) + " and run cycle by cycle, bit-exact with the simulator"
        if result.not_stitched:
            result.check.detail += f"; {len(result.not_stitched)} not stitched"
    return result
