"""Stage after code generation (`--rtlsim`): run the generated RTL in Verilator on the samples, layer by layer and
stitched.

The numpy simulator proves the folded graph computes what the QAT model computes; this proves the Verilog
FINN generated computes what the simulator computes, cycle by cycle, with no vendor tool. Each RTL layer gets
the simulator's own input of that layer, so a difference names the layer. Then each maximal chain of RTL layers
(the whole accelerator when every layer is RTL) runs stitched through FINN's FIFOs (rtl_stitch): its pace and
latency against FINN's estimates, a deadlock caught, and the FIFO depths that keep its pace sized. Layers with
no RTL variant the SDK can simulate (HLS layers) are listed as verified at graph level only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import PackageError, SimulationError
from sdk.report import Table
from sdk.verify import Check
from targets.finn import ops
from targets.finn.rtl_guard import check_identifier
from targets.finn.rtl_stitch import SegmentVerification, converter_tensors, verify_segments, with_width_converters
from targets.finn.rtlsim import (
    KNOWN_FAILURES,
    SUPPORTED_RTL_OPS,
    build_layer,
    rtl_layer,
    simulate_layer,
    wants_optimized,
)

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
