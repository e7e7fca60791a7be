"""Consecutive RTL layers stitched through finn-rtllib FIFOs into one top, and run: values, pace, latency, deadlock.

rtlsim.py runs one layer at a time between an always-valid source and an always-ready sink: that proves each
layer's values, not how the layers pace each other. Here the SDK writes the top level FINN's stitching would
build for a run of consecutive RTL layers (a segment): each layer's out0_V into the next layer's in0_V through
finn-rtllib's fifo.sv, instantiated as StreamingFIFO_rtl's template does (or a direct wire for depth 0), one
clock and reset, AXI-lite ports tied off. The segment is one `RtlLayer`, so rtlsim's cached Verilator build
and testbench run it unchanged. Its output must equal its last layer's; its measured initiation interval and
latency stand beside FINN's estimates; a stall with no output is a deadlock of the segment (fifo_sizing.py
finds the FIFO depths that keep the deep-FIFO throughput).

HLS layers cannot run in Verilator, so a segment ends at them; the whole accelerator is one segment when every
layer is RTL. A stream-width change ends a segment of the packaged graph, which has no width converters: FINN's
stitching inserts one there, and width_converters.py does the same first (`--rtlsim` stitches that graph).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import SimulationError
from targets.finn import rtlsim, verilator
from targets.finn.rtl_layer import SUPPORTED_RTL_OPS, RtlLayer, finn_rtllib_ready, patched, rtl_layer
from targets.finn.verilator import MONITOR_SUFFIX, check_ports, rtl_cache_dir
from targets.finn.width_converters import CONVERTER_OP

RAM_STYLE = "auto"  # StreamingFIFO_rtl's default ram_style
_DECLARES = re.compile(r"^\s*(?:module|package|interface)\s+(\w+)", re.MULTILINE)
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


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


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
    its corrected copy (rtl_layer.RTL_PATCHES: Verilator cannot evaluate its constant function INIT_ABITS)."""
    from finn.util.basic import fifo_rtl_files

    finn_rtllib_ready()
    return [patched(Path(p).resolve()) for p in fifo_rtl_files(abspath=True, gauge=False)]


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
    return f"fifo{k}{MONITOR_SUFFIX}"


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


def stitch(
    layers: Sequence[RtlLayer],
    fifo_depth: int | Sequence[int] | None = None,
    work_dir: Path | None = None,
    cache_dir: Path | None = None,
):
    """The generated top of `layers` (consecutive, in stream order) as one RtlLayer for rtlsim's build and stream.

    `fifo_depth`: one for every connection or one per connection; 0 wires the layers directly; None sizes each
    FIFO to two samples of its beats (deep_depths). The top is written to a folder of `work_dir` named by its
    contents, so the build cache keys on it and a top already written is reused. `cache_dir`: the build cache,
    where each layer's ports are kept (verilator.layer_ports).
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
    ports = [verilator.layer_ports(layer, cache_dir) for layer in layers]
    for layer, layer_ports in zip(layers, ports):
        check_ports(layer, layer_ports, "the stitched simulation")
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
    root = Path(work_dir) if work_dir is not None else rtl_cache_dir("stitch")
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
    return [rtl_layer(dataflow, node, extra.get(name, Path(sources_dir) / name)) for node, name in zip(nodes, names)]


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
    return simulate_stitched(stitch(layers, fifo_depth, work_dir, cache_dir), layers, x, cache_dir, idle_limit)
