"""`--rtlsim`, after code generation: the generated RTL against the simulator, layer by layer and stitched.

The numpy simulator proves the folded graph computes what the QAT model computes; this proves the Verilog
FINN generated computes what the simulator computes, cycle by cycle, with no vendor tool. Each RTL layer gets
the simulator's own input of that layer, so a difference names the layer. Then each maximal chain of RTL layers
(the whole accelerator when every layer is RTL) runs stitched through FINN's FIFOs (rtl_stitch): its pace and
latency against FINN's estimates, a deadlock caught, and the FIFO depths that keep its pace sized (fifo_sizing).
Layers with no RTL variant the SDK can simulate (HLS layers) are listed as verified at graph level only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import PackageError, SimulationError
from sdk.report import Table
from sdk.verify import Check
from targets.finn import ops, rtl_stitch
from targets.finn.fifo_sizing import (
    FINN_DEFAULT_FIFO_DEPTH,
    SIZING_BUILDS,
    SIZING_SAMPLES,
    FifoSizing,
    size_segment_fifos,
)
from targets.finn.rtl_guard import check_identifier
from targets.finn.rtl_layer import KNOWN_FAILURES, SUPPORTED_RTL_OPS, rtl_layer
from targets.finn.rtl_stitch import SegmentResult, segment_layers, segments, stitch
from targets.finn.rtlsim import simulate_layer
from targets.finn.verilator import build_layer, wants_optimized
from targets.finn.width_converters import converter_tensors, with_width_converters

RTL_PREFERRED = ops.rtl_preferred()  # ops.HW_OPS whose `Rtl` is preferred


def prefer_rtl(model) -> None:
    """Ask FINN's layer specialisation for the RTL variant of every layer the SDK can simulate in Verilator.

    For an MVAU FINN grants it only where its DSP datapath can (no embedded thresholds, signed weights, widths
    within the DSP; narrow weights on DSP48E1) and keeps HLS otherwise; unasked, it also wants 4-bit operands."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.op_type in RTL_PREFERRED:
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")


@dataclass
class RtlVerification:
    check: Check
    rows: list[list] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # layers run in Verilator, equal to the simulator
    graph_level: list[str] = field(default_factory=list)  # layers only the numpy simulator checks
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    stitched: SegmentVerification | None = None  # chains of RTL layers run together (None: not run)

    @property
    def checks(self) -> list[Check]:
        return [self.check] + ([self.stitched.check] if self.stitched and self.stitched.rows else [])

    def tables(self) -> list[Table]:
        return [self.table()] + ([self.stitched.table()] if self.stitched and self.stitched.rows else [])

    def fifo_depth_attributes(self) -> dict[str, dict[str, list[int]]]:
        """FIFO depths sized by the stitched simulation, as FINN's folding-config node attributes."""
        return self.stitched.fifo_depth_attributes() if self.stitched else {}

    def table(self) -> Table:
        return Table(
            "RTL simulation (Verilator), per layer",
            ["layer", "op", "checked at", "cycles / sample (measured)", "FINN estimate", "compile s", "cached"],
            self.rows,
        )

    def to_dict(self) -> dict:
        return {
            "verified_at_rtl": self.verified,
            "graph_level_only": self.graph_level,
            "stitched_at_rtl": self.stitched.stitched_layers() if self.stitched else [],
            "compile_seconds": round(self.compile_seconds, 3),
            "run_seconds": round(self.run_seconds, 3),
            "stitched": self.stitched.to_dict() if self.stitched else None,
        }


def _first_difference(ours: np.ndarray, expected: np.ndarray) -> tuple[int, int]:
    """(sample, element) of the first value that differs."""
    diff = (ours != expected).reshape(len(ours), -1)
    sample = int(np.argmax(diff.any(axis=1)))
    return sample, int(np.argmax(diff[sample]))


def verify_rtl_layers(
    dataflow,
    tensors: dict[str, np.ndarray],
    sources_dir: Path,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda message: None,
) -> RtlVerification:
    """Every RTL layer of the specialised dataflow graph on the simulator's own inputs (`tensors`: graph tensor
    name -> batch, the simulator's intermediates and the accelerator's input)."""
    result = RtlVerification(Check("RTL (Verilator) = simulator, every RTL layer", True, 0, ""))
    samples = len(next(iter(tensors.values()))) if tensors else 0
    for node in dataflow.graph.node:
        if node.op_type not in SUPPORTED_RTL_OPS:
            why = KNOWN_FAILURES.get(node.op_type, "no RTL variant the SDK simulates")
            result.graph_level.append(node.name)
            result.rows.append([node.name, node.op_type, f"graph level ({why})", None, None, None, None])
            continue
        progress(f"RTL simulation of {node.name} (Verilator)")
        layer = rtl_layer(dataflow, node, sources_dir / node.name)
        # no Verilator, or RTL it cannot compile: raised, the deploy stops (exit 2)
        build_layer(layer, cache_dir, wants_optimized(layer, len(tensors[node.input[0]])))
        try:
            run = simulate_layer(layer, tensors[node.input[0]], cache_dir)
        except SimulationError as error:  # the generated hardware hung, stopped or fell out of step: it fails
            result.rows.append([node.name, node.op_type, "RTL, Verilator: stopped", None, layer.exp_cycles, None, None])
            if result.check.passed:
                result.check = Check(result.check.name, False, samples, error.what, first_difference=node.name)
            continue
        expected = tensors[node.output[0]].reshape(run.output.shape)
        result.compile_seconds += 0.0 if run.cached else run.compile_seconds
        result.run_seconds += run.run_seconds
        result.rows.append(
            [
                node.name,
                node.op_type,
                "RTL, Verilator",
                round(run.cycles / max(run.samples, 1), 1),
                run.exp_cycles,
                round(run.compile_seconds, 2),
                run.cached,
            ]
        )
        if np.array_equal(run.output, expected):
            result.verified.append(node.name)
        elif result.check.passed:
            sample, element = _first_difference(run.output, expected)
            result.check = Check(
                result.check.name,
                False,
                samples,
                f"{node.name}'s RTL output differs from the simulator's at sample {sample}, element {element} "
                f"({int(run.output.reshape(len(run.output), -1)[sample, element])} against "
                f"{int(expected.reshape(len(expected), -1)[sample, element])})",
                first_difference=node.name,
                mismatch_rate=float(np.mean(np.any((run.output != expected).reshape(len(expected), -1), axis=1))),
                first_sample=sample,
            )
    if result.check.passed:
        result.check.samples = samples
        result.check.detail = (
            f"{len(result.verified)} layer(s) run cycle by cycle in Verilator, bit-exact with the simulator"
            + (f"; {len(result.graph_level)} checked at graph level only" if result.graph_level else "")
        )
    return result


# ---------------------------------------------------------------------------
# every stitched segment


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
        # the step stitches too: reading each layer's ports (from the build cache, or in Verilator) is part of it
        progress(f"stitched RTL simulation of {chain[0].name} ... {chain[-1].name} (Verilator)")
        try:
            layers = segment_layers(dataflow, chain, sources_dir, converter_sources)
            top = stitch(layers, 0, work_dir, cache_dir)  # direct wires: FINN builds no FIFO of its default depth (2)
        except SimulationError as error:
            result.not_stitched[label] = error.what
            result.rows.append([label, *[None] * 9, f"not stitched: {error.what}"])
            continue
        x, expected = tensors[chain[0].input[0]], tensors[chain[-1].output[0]]
        try:
            run = rtl_stitch.simulate_stitched(top, layers, x, cache_dir)  # on the module, as fifo_sizing calls it
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


def verify_rtl(
    dataflow,
    tensors: dict[str, np.ndarray],
    sources_dir: Path,
    cache_dir: Path,
    fpga_part: str,
    progress: Callable[[str], None] = lambda message: None,
    size: bool = True,
) -> RtlVerification:
    """Every RTL layer alone (verify_rtl_layers), then every chain of RTL layers stitched through FIFOs, width
    converters inserted where FINN's stitching inserts them, with `size` its FIFOs sized by simulation (a deploy;
    `sdk simulate` checks a package whose FIFOs are sized already). `tensors`: graph tensor name -> batch, the
    accelerator's input and every node's output in the simulator."""
    result = verify_rtl_layers(dataflow, tensors, sources_dir, cache_dir, progress)
    try:
        stitched_graph, converters = with_width_converters(dataflow, fpga_part, cache_dir)
        unconverted = None
    except Exception as error:  # FINN's InsertDWC refuses the graph (a fan-out): segments end at width changes
        stitched_graph, converters = dataflow, {}
        unconverted = f"FINN's InsertDWC cannot process the graph ({type(error).__name__}: {error})"
    result.stitched = verify_segments(
        stitched_graph,
        converter_tensors(stitched_graph, tensors),
        sources_dir,
        cache_dir,
        size=size,
        progress=progress,
        converter_sources=converters,
    )
    if unconverted:
        result.stitched.not_stitched["width converters"] = unconverted
    for run in result.stitched.results:
        result.compile_seconds += 0.0 if run.cached else run.compile_seconds
        result.run_seconds += run.run_seconds
    return result


# Node attributes that hold paths of a build machine: a package's graph may carry them, the SDK never reads them.
PATH_ATTRIBUTES = (
    "code_gen_dir_ipgen",
    "code_gen_dir_cppsim",
    "ipgen_path",
    "ip_path",
    "executable_path",
    "rtlsim_so",
    "gen_top_module",
)


def without_paths(model):
    """A copy of `model` with every PATH_ATTRIBUTES attribute dropped: FINN's code generation then writes into
    fresh folders of its own, never into a folder the graph names."""
    from qonnx.core.modelwrapper import ModelWrapper

    clean = ModelWrapper(copy.deepcopy(model.model))
    for node in clean.graph.node:
        keep = [attribute for attribute in node.attribute if attribute.name not in PATH_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(keep)
    return clean


def _tree(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {path.relative_to(root).as_posix(): path for path in sorted(root.rglob("*")) if not path.is_dir()}


def regenerate_sources(dataflow, fpga_part: str, clock_mhz: float, packaged: Path, out_dir: Path):
    """The package's RTL is never trusted: regenerate every layer's sources from the package's dataflow graph as the
    deploy did (FINN's PrepareIP, targets.finn.codegen) into `out_dir`, and compare them byte for byte with the
    packaged `sources/` (`packaged`). A difference is tampering: PackageError naming the file. Returns the graph
    the sources were generated from (path attributes dropped), to simulate with `out_dir` as its sources."""
    from targets.finn import codegen

    for node in dataflow.graph.node:
        check_identifier(node.name, "The layer name", f"dataflow_model.onnx, node {node.name[:60]!r}")
    clean = without_paths(dataflow)
    codegen.generate_sources(clean, fpga_part, clock_mhz, out_dir)
    ours, theirs = _tree(out_dir), _tree(packaged)
    differing = sorted(set(ours) ^ set(theirs))
    differing += [rel for rel in sorted(set(ours) & set(theirs)) if ours[rel].read_bytes() != theirs[rel].read_bytes()]
    if differing:
        rel = differing[0]
        what = "is not what" if rel in theirs and rel in ours else ("is missing from" if rel in ours else "is not in")
        more = f" (and {len(differing) - 1} more)" if len(differing) > 1 else ""
        raise PackageError(
            f"sources/{rel}{more} {what} the SDK regenerates from dataflow_model.onnx: the packaged RTL was changed "
            "after the deploy, so it is not simulated.",
            where=str(packaged / rel),
            fix="deploy the model again; a package's RTL is always the SDK's own",
        )
    return clean


def write_fifo_depths(folding_config: Path, attributes: dict[str, dict[str, list[int]]]) -> None:
    """Add the sized FIFO depths to a package's folding_config.json, in the node attributes FINN's ApplyConfig
    sets (inFIFODepths / outFIFODepths), so FINN's InsertFIFO builds those FIFOs."""
    import json

    config = json.loads(folding_config.read_text())
    for layer, values in attributes.items():
        config.setdefault(layer, {}).update(values)
    folding_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
