"""FIFO depths of a stitched segment sized by simulation, as FINN sizes them with rtlsim: measured, then confirmed.

A FIFO may be shallower than the deep-FIFO reference as long as the segment keeps that reference's pace: each
FIFO's peak occupancy in a deep run gives its depth, and a run with those depths confirms the initiation interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import SimulationError
from targets.finn import rtl_stitch
from targets.finn.rtl_layer import RtlLayer
from targets.finn.rtl_stitch import SegmentResult, deep_depths, segment_layers, stitch

SIZING_SAMPLES = 6  # a batch this long reaches steady state for a chain of streaming layers
SIZING_BUILDS = 8  # `--rtlsim`: compiles of a segment the FIFO search may spend before it answers the deep depths
FINN_DEFAULT_FIFO_DEPTH = 2  # HWCustomOp's inFIFODepths / outFIFODepths default; FINN makes no FIFO at or below it


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
            result = rtl_stitch.simulate_stitched(stitch(layers, depths, work_dir, cache_dir), layers, x, cache_dir)
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
