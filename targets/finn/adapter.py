"""The FPGA target adapter: stages -> verified, hardware-ready package for one FINN board.

Package contents:
  dataflow_model.onnx     the specialised, folded FINN dataflow graph (what goes to hardware)
  parent_model.onnx       the network around it (host-side layout and output scale)
  folding_config.json     the folding in FINN's own format (take it to FINN with Vivado)
  sources/<layer>/        generated HLS C++ and RTL per layer
  finish_bitfile.py       FINN's builder from here to bitfile and driver, where Vivado is
  model.qonnx.onnx/.json  the QONNX model and its card, as deployed
  report.json, report.md, plots
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sdk.boards import Board
from sdk.errors import ExportError, PackageError, SDKError
from sdk.graph_names import describe
from sdk.graph_run import activation_codes, tie_samples
from sdk.onnx_guard import load_onnx_safely
from sdk.package import PackageBuilder
from sdk.report import PLOTS_STEP, Report, Table, bar_plot, utilisation_plot, verification_table
from sdk.scratch import scratch_dir
from sdk.verify import (
    Check,
    Verification,
    accuracy,
    binary_threshold,
    compare_float_outputs,
    compare_integer_outputs,
    compare_layers,
    same_class,
    share,
)
from targets.base import BuildOutcome, BuildRequest, ComparisonCells, SimulatedOutputs
from targets.finn import folding, hardware, shortcuts, steps
from targets.finn.environment import find_vendor_tools, point_finn_at, prepare_finn
from targets.finn.flow import SimulateOptions
from targets.finn.graph_check import check_dataflow, check_parent
from targets.finn.kernels import datatype_range
from targets.finn.partition import relocatable_parent
from targets.finn.rtl_verify import RtlVerification, regenerate_sources, verify_rtl, write_fifo_depths
from targets.finn.simulator import (
    ParentResult,
    accelerator_output_of,
    host_input,
    output_is_invertible,
    prepare_dataflow,
    prepare_host,
    simulate_parent,
)

DATAFLOW_NAME = "dataflow_model.onnx"
PARENT_NAME = "parent_model.onnx"
RULE_TEXT = (
    "FPGA (FINN): integer tensors identical to FINN's execution of the same layers and to "
    "the QAT model; dequantized output equal up to float32 rounding"
)


def graph_input(card: dict, x: np.ndarray, parent) -> np.ndarray:
    """Device codes (sdk.input_map), samples (N, C, H, W), in the shape of the parent graph's input, float32:
    (N, F) for MLPs, (N, C, H, W) for conv nets, (N, C, T, 1) for 1-D nets (samples (C, 1, T), FINN's (T, 1)
    maps: the same order of values).

    FINN computes a bipolar input's products as XNOR-popcounts on its bits: it relabels a BIPOLAR input BINARY,
    so the accelerator takes b = (code + 1) / 2, which the host computes here (and a board's driver alike)."""
    return _as_graph_input(x, *_graph_input_form(card, x.shape[1:], parent))


def _graph_input_form(card: dict, sample: tuple[int, ...], parent) -> tuple[tuple[int, ...], bool]:
    """(the parent graph input's sample shape, whether the host turns bipolar codes into bits) for samples shaped
    `sample`; a PackageError where the graph's input does not hold as many values."""
    name = parent.graph.input[0].name
    shape = parent.get_tensor_shape(name) or []
    if len(shape) < 2 or int(np.prod(shape[1:])) != int(np.prod(sample)):
        raise PackageError(
            f"The parent graph's input '{name}' has shape {shape}; the model card's samples are {tuple(sample)}.",
            where=f"{PARENT_NAME}, input {name}",
            fix="the package's files do not belong together; deploy again",
        )
    bipolar = card["input"].get("map", {}).get("dtype") == "BIPOLAR" and _input_datatype(parent) == "BINARY"
    return tuple(shape[1:]), bipolar


def _as_graph_input(x: np.ndarray, shape: tuple[int, ...], bipolar: bool, as_float: bool = True) -> np.ndarray:
    """as_float=False: integer codes stay integers (the host's input ops only move values, and the simulator takes
    the codes in their narrowest type: a float32 copy would only be cast back)."""
    x = x.reshape(len(x), *shape)
    if bipolar or as_float:
        x = x.astype(np.float32)
    return (x + 1) / 2 if bipolar else x


def input_notes(card: dict) -> list[str]:
    """What report.md says of the package's input beyond its map: a bipolar input reaches the accelerator as bits."""
    from sdk.model_card import input_map_of

    if input_map_of(card).dtype != "BIPOLAR":
        return []
    return [
        "FINN computes a bipolar input's products as XNOR-popcounts: the accelerator takes the bits "
        "b = (code + 1) / 2, which the host computes (`sdk simulate`, sdk.simulate)."
    ]


def _input_datatype(parent) -> str:
    return parent.get_tensor_datatype(parent.graph.input[0].name).name


def first_parting_layer(
    layers: list[tuple[str, np.ndarray]], quantizers: list[tuple[str, np.ndarray]], sample: int
) -> str | None:
    """The first accelerator layer whose output differs from the QAT model on `sample`.

    Layers and the QONNX graph's activation quantizers are paired in order: each layer takes the next quantizer
    with as many values per sample (a sliding window or a pool has none and is passed over, as is a layer that
    only passes its input on). Codes may differ by a constant offset (FINN may shift signed codes). None when
    every paired layer agrees on that sample."""
    start, previous = 0, None
    for name, output in layers:
        flat = output.reshape(len(output), -1)
        if previous is not None and previous.shape == flat.shape and np.array_equal(previous, flat):
            continue
        previous = flat
        k = next((k for k in range(start, len(quantizers)) if quantizers[k][1].shape == flat.shape), None)
        if k is None:
            continue
        start = k + 1
        diff = flat - quantizers[k][1]
        if not np.all(diff[sample] == int(np.median(diff))):
            return name
    return None


def _load_onnx(path: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    if not path.is_file():
        raise PackageError(
            f"The package lacks {path.name}.", where=str(path), fix="deploy again; packages are written whole"
        )
    try:
        return ModelWrapper(load_onnx_safely(path, f"package file {path.name}", finn_ops=True))
    except ExportError as exc:  # its `where` may name the node and attribute after the file
        detail = (exc.where or "").removeprefix(f"package file {path.name}")
        raise PackageError(exc.what, where=f"{path}{detail}", fix="the file is corrupt; deploy again") from exc
    except Exception as exc:  # qonnx on a graph the guard let through
        raise PackageError(
            f"{path.name} cannot be read: {type(exc).__name__}",
            where=str(path),
            fix="the file is corrupt; deploy again",
        ) from exc


def _rtl_clock(package: Path) -> tuple[str, float]:
    """(FPGA part, clock in MHz) of the package's RTL, from its manifest (verified by the caller)."""
    manifest = json.loads((package / "manifest.json").read_text())
    clock = manifest.get("clock_mhz") or manifest["board"].get("clock_mhz")
    if isinstance(clock, bool) or not isinstance(clock, int | float) or not 0 < clock < float("inf"):
        raise PackageError(
            "manifest.json names no clock for the package's RTL (clock_mhz, board.clock_mhz).",
            where=f"{package / 'manifest.json'} (field clock_mhz)",
            fix="deploy again; packages are written whole",
        )
    return manifest["board"]["part"], float(clock)


class _HostGraph:
    """The parent graph as the simulator's host ops read it (its nodes, its constants), the constants converted
    once: qonnx's get_initializer converts one from its protobuf on every read."""

    def __init__(self, parent) -> None:
        from onnx import numpy_helper

        self.graph = parent.graph
        self._constants: dict[str, np.ndarray] = {}
        for init in parent.graph.initializer:  # the first of a name, as qonnx reads it
            self._constants.setdefault(init.name, numpy_helper.to_array(init))

    def get_initializer(self, name: str) -> np.ndarray | None:
        return self._constants.get(name)


class LoadedFinn:
    """A FINN package in memory: the parent graph's host ops and the accelerator's prepared simulation plan."""

    def __init__(self, target: FinnTarget, package: Path, card: dict, parent, dataflow, plan, options) -> None:
        self.target, self.package, self.card, self.options = target, package, card, options
        self.parent, self.dataflow, self.plan = parent, dataflow, plan
        self.host = prepare_host(_HostGraph(parent))  # the host ops checked and bound, at load
        self.input_form = _graph_input_form(card, tuple(card["input"]["image_shape"]), parent)
        self.rtl_clock: tuple[str, float] | None = None

    def warm_up(self) -> None:
        """One sample of the input datatype's lowest value through the plan: the layers' weights are converted and
        their product paths built now, not in the first run (a run then opens no file, imports nothing)."""
        low = datatype_range(self.plan.in_type)
        if low is None:
            return
        try:
            self.plan.run(np.full((1, *self.plan.in_shape[1:]), low[0], np.float32), keep_intermediates=False)
        except SDKError:  # a layer the lowest input drives out of range: a run names it when real data does
            pass

    def run(self, x: np.ndarray, agreement: bool = True) -> SimulatedOutputs:
        """The simulator's outputs (bit-exact); with the `rtlsim` option, the Verilator runs beside them whatever
        `agreement` says (the caller asked for them)."""
        rtlsim = self.rtl_clock is not None
        xs = _as_graph_input(x, *self.input_form, as_float=rtlsim)
        dataflow = self.plan.run(self.host.input(xs), keep_intermediates=rtlsim)
        result = ParentResult(self.host.output(dataflow.output), dataflow.output, dataflow)
        simulated = SimulatedOutputs(result.output, bit_exact=True)
        if rtlsim:
            self._rtlsim(result, xs, simulated)
        return simulated

    def _rtlsim(self, result: ParentResult, xs: np.ndarray, simulated: SimulatedOutputs) -> None:
        """Each RTL layer's Verilog in Verilator beside the simulator (builds in a scratch folder)."""
        part, clock = self.rtl_clock
        with scratch_dir("sim") as tmp:
            prepare_finn(Path(tmp))
            # never the packaged RTL: the SDK's own, regenerated from the graph, equal to the packaged bytes
            sources = Path(tmp) / "regenerated" / "sources"
            dataflow = regenerate_sources(self.dataflow, part, clock, self.package / "sources", sources)
            cfg = steps.FinnConfig(None, Path(tmp), sources_dir=sources)
            cfg.parent = self.parent
            rtl = self.target._verify_rtl(cfg, dataflow, result, xs, part, lambda message: None, size=False)
        simulated.agreement[f"RTL layers in Verilator ({len(rtl.verified)}) = simulator"] = (
            1.0 - rtl.check.mismatch_rate
        )
        if rtl.stitched is not None and rtl.stitched.rows:
            simulated.agreement[f"stitched RTL segments in Verilator ({len(rtl.stitched.rows)}) = simulator"] = (
                1.0 - rtl.stitched.check.mismatch_rate
            )
        simulated.failures += [f"{check.name}: {check.detail}" for check in rtl.checks if not check.passed]


class FinnTarget:
    flow = "finn"
    rule_name = "bit-exact vs QAT"
    rule_text = RULE_TEXT
    artifact_name = DATAFLOW_NAME
    tool_packages = ("finn-plus", "qonnx", "onnx", "onnxruntime")

    def validate_board(self, board: Board) -> None:
        """Nothing beyond the board file's own checks (sdk/boards.py): the part and finn.board are names FINN knows,
        and the chip is the part FINN builds that board for."""

    def check(self, model_path: Path, board: Board, workdir: Path, qat_model=None) -> None:
        steps.check(model_path, board, workdir)

    def build(self, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]) -> BuildOutcome:
        board, options = request.board, request.options
        tools = find_vendor_tools()
        if options.require_bitfile and not tools.complete:
            raise SDKError(
                f"A bitfile was required, but {' and '.join(tools.missing())} cannot be found.",
                where=f"board {board.name}",
                fix="source Vivado's and Vitis HLS's settings64.sh, or deploy without --require-bitfile",
            )
        cfg = steps.FinnConfig(
            board,
            request.workdir,
            fps=options.fps,
            max_util=options.max_util,
            clock_mhz=request.clock_mhz,
            sources_dir=pkg.path("sources"),
            rtlsim=options.rtlsim,
        )
        dataflow = steps.run_steps(steps.load_qonnx(request.model_path), cfg, stop="estimate", progress=progress)

        progress("simulate and verify")
        xs = graph_input(request.card, request.x, cfg.parent)
        result = simulate_parent(cfg.parent, dataflow, xs)
        verification = self._verify(cfg, dataflow, result, xs, request)

        steps.run_steps(dataflow, cfg, start="generate_sources", progress=progress)
        rtl = None
        if options.rtlsim:
            rtl = self._verify_rtl(cfg, dataflow, result, xs, board.part, progress)
            verification.checks.extend(rtl.checks)
        progress("save the graphs and folding config")
        dataflow.save(str(pkg.path(DATAFLOW_NAME)))
        relocatable_parent(cfg.parent, DATAFLOW_NAME).save(str(pkg.path(PARENT_NAME)))
        folding.write_folding_config(dataflow, pkg.path("folding_config.json"))
        if cfg.shortcut_fifos:
            write_fifo_depths(pkg.path("folding_config.json"), shortcuts.fifo_depth_attributes(cfg.shortcut_fifos))
        if rtl is not None:
            write_fifo_depths(pkg.path("folding_config.json"), rtl.fifo_depth_attributes())
        pkg.write_text(hardware.FINISH_SCRIPT, hardware.finish_script(board, cfg.clock))

        progress("vendor tools")
        outcome = hardware.run_hardware_steps(pkg.temp_dir, tools)
        pkg.allow_unlisted("hardware")  # finish_bitfile.py writes the bitfile there later
        if outcome.ran:
            pkg.mark_volatile("hardware")  # Vivado's logs and bitfile carry timestamps
        if options.require_bitfile and outcome.bitfile is None:
            raise SDKError(
                f"A bitfile was required but Vivado's run failed: {outcome.message}",
                where=f"board {board.name}",
                fix="deploy without --require-bitfile and run finish_bitfile.py in the package to see the log",
            )
        report, summary = self._report(cfg, verification, outcome, pkg, request.data_label, progress, rtl)
        report.notes.extend(input_notes(request.card))
        return BuildOutcome(report, verification, summary, [outcome.message])

    def _verify_rtl(
        self, cfg: steps.FinnConfig, dataflow, result, xs: np.ndarray, fpga_part: str, progress, size: bool = True
    ) -> RtlVerification:
        """Each RTL layer's generated Verilog in Verilator, fed the simulator's own input of that layer; then each
        chain of RTL layers stitched through FIFOs, on the simulator's input of its first layer."""
        from sdk.export_cache import cache_root

        tensors = {dataflow.graph.input[0].name: host_input(cfg.parent, xs), **result.dataflow.intermediates}
        cache = (cache_root() or cfg.workdir) / "verilator"
        return verify_rtl(dataflow, tensors, cfg.sources_dir, cache, fpga_part, progress, size)

    def load(
        self, package: Path, card: dict[str, Any], options: SimulateOptions, threads: int | None = None
    ) -> LoadedFinn:
        """The package's two graphs read and checked, the accelerator's simulation plan prepared (its integer GEMM
        on `threads` threads, None: one per core): each run is the bit-exact simulator on the batch alone; with
        `rtlsim`, each RTL layer's Verilog in Verilator beside it."""
        with scratch_dir("sim") as tmp:
            (prepare_finn if options.rtlsim else point_finn_at)(Path(tmp))  # Verilator's run reads FINN's settings
            parent, dataflow = _load_onnx(package / PARENT_NAME), _load_onnx(package / DATAFLOW_NAME)
            check_dataflow(dataflow, DATAFLOW_NAME)  # what the simulator reads, before it reads it
            check_parent(parent, dataflow, PARENT_NAME)
            loaded = LoadedFinn(self, package, card, parent, dataflow, prepare_dataflow(dataflow, threads), options)
            if options.rtlsim:
                loaded.rtl_clock = _rtl_clock(package)
            loaded.warm_up()
        return loaded

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells:
        speed = "-"
        if summary.get("fps") is not None:
            speed = f"{summary['fps']:,.0f}/s, {summary.get('latency_us', 0):.2f} us"
        used = summary.get("utilisation", {})
        return ComparisonCells(speed, " ".join(f"{k.upper()} {v:.0%}" for k, v in used.items() if v) or "-")

    def _verify(self, cfg: steps.FinnConfig, dataflow, result, xs: np.ndarray, request: BuildRequest) -> Verification:
        verification = Verification(rule=RULE_TEXT)
        ties = tie_samples(request.model_path, request.x, request.card["input"]["flatten"])
        layers = list(dataflow.graph.node)
        n = steps.FINN_REFERENCE_SAMPLES
        # the deploy's own simulation already kept every layer's output: compare its first n samples
        ours_per_layer = [(node.name, result.dataflow.intermediates[node.output[0]][:n]) for node in layers]
        theirs = steps.finn_layer_outputs(cfg.dataflow_hw, host_input(cfg.parent, xs[:n]))
        verification.checks.append(
            compare_layers(
                "simulator = FINN python execution, every layer",
                ours_per_layer,
                theirs,
                f"{len(layers)} layers of the folded accelerator vs FINN's execution of the unspecialised layers",
            )
        )
        if output_is_invertible(cfg.parent):  # only scales and offsets after the accelerator
            expected_int = accelerator_output_of(cfg.parent, request.reference)
            rounded = np.rint(expected_int)
            integral = float(np.max(np.abs(expected_int - rounded), initial=0.0)) < 1e-2
            verification.checks.append(
                compare_integer_outputs(
                    "accelerator integer output = QAT model",
                    result.integer_output,
                    rounded.astype(np.int64),
                    "QAT output with the output scale removed"
                    + ("" if integral else " (NOT integral: the scale does not invert cleanly)"),
                    ties,
                )
            )
        verification.checks.append(
            compare_float_outputs(
                "final output = QAT model",
                result.output,
                request.reference,
                "the host's output after the accelerator (output scale"
                + ("" if output_is_invertible(cfg.parent) else ", then the float activation the host runs")
                + "), up to float32 rounding",
                ties,
            )
        )
        if result.dataflow.overflows:
            verification.checks.append(
                Check(
                    "accumulators within their FINN datatypes",
                    False,
                    len(xs),
                    "; ".join(result.dataflow.overflows),
                    first_difference=result.dataflow.overflows[0].split(":")[0],
                )
            )
        failed = next((c for c in verification.checks if not c.passed and c.first_sample is not None), None)
        if failed is not None:
            parting = first_parting_layer(
                [(node.name, result.dataflow.intermediates[node.output[0]]) for node in layers],
                activation_codes(request.model_path, request.x, request.card["input"]["flatten"]),
                failed.first_sample,
            )
            if parting is not None:
                failed.first_difference = parting
                source = next((describe(node) for node in layers if node.name == parting), parting)
                made_from = f" (made from {source})" if source != parting else ""  # the node of the user's file
                failed.detail += (
                    f"; on that sample the accelerator first parts from the QAT model at {parting}{made_from}"
                )
        threshold = binary_threshold(request.reference)
        verification.accuracy = {
            "accelerator": accuracy(result.output, request.y, threshold),
            "qat_model": accuracy(request.reference, request.y, threshold),
            "agreement": float(np.mean(same_class(result.output, request.reference))),
        }
        return verification

    def _report(
        self,
        cfg: steps.FinnConfig,
        verification: Verification,
        outcome,
        pkg: PackageBuilder,
        data_label: str,
        progress: Callable[[str], None],
        rtl: RtlVerification | None = None,
    ):
        """report.md, report.json and its plots (a step of their own), and the deploy's summary."""
        summary = _summary(cfg, verification, outcome, data_label)
        report = Report(
            title=f"FINN deployment to {cfg.board.display_name}",
            summary=_report_summary(cfg, verification, outcome, data_label, summary["board"]),
        )
        report.tables += [_layer_table(cfg.network), _resource_table(cfg.network), verification_table(verification)]
        if rtl is not None:
            _add_rtl(report, summary, rtl)
        _add_notes(report, cfg)
        progress(PLOTS_STEP)
        _add_plots(report, pkg, cfg)
        report.data = {
            "estimate": cfg.network.to_dict(),
            "verification": verification.to_dict(),
            "folding_mode": cfg.folding_mode,
            "fit": None if cfg.fit is None else cfg.fit.to_dict(),
            "hardware": outcome.to_dict(),
            "sources": cfg.sources,
            "step_seconds": cfg.step_seconds,
            "cached_steps": cfg.cached_steps,
            "widened_accumulators": [asdict(w) for w in cfg.widened],
            "shortcut_fifos": [f.to_dict() for f in cfg.shortcut_fifos],
            "rtl_simulation": None if rtl is None else rtl.to_dict(),
        }
        return report, summary


# ---------------------------------------------------------------------------------------------------------------------
# The report of a deploy

RESOURCES = ("lut", "bram18", "uram", "dsp")


def _summary(cfg: steps.FinnConfig, verification: Verification, outcome, data_label: str) -> dict[str, Any]:
    """The deploy's summary (DeployResult.summary, `sdk deploy`'s table and --json)."""
    board, net = cfg.board, cfg.network
    return {
        "board": f"{board.display_name} ({board.part}, {cfg.clock:g} MHz)",
        "verified": verification.passed,
        "accuracy": verification.accuracy["accelerator"],
        "qat_accuracy": verification.accuracy["qat_model"],
        "accuracy_on": data_label,
        "folding": cfg.folding_mode,
        "fps": round(net.fps, 1),
        "latency_us": round(net.latency_us, 3),
        "bottleneck": net.bottleneck,
        "utilisation": {k: round(v, 4) for k, v in net.utilisation.items()},
        "bitfile": outcome.bitfile or ("needs Vivado" if not outcome.ran else "failed"),
    }


def _report_summary(
    cfg: steps.FinnConfig, verification: Verification, outcome, data_label: str, board: str
) -> dict[str, str]:
    """The summary at the top of report.md."""
    net = cfg.network
    accuracy = verification.accuracy
    return {
        "board": board,
        "exactness rule": verification.rule,
        "verification": "PASSED" if verification.passed else f"FAILED at {verification.first_failure.first_difference}",
        f"accuracy on {data_label} (accelerator / QAT)": f"{share(accuracy['accelerator'])} / "
        f"{share(accuracy['qat_model'])}",
        "folding": cfg.folding_mode,
        "throughput": f"{net.fps:,.0f} frames/s at {cfg.clock:g} MHz",
        "latency": f"{net.latency_cycles:,} cycles = {net.latency_us:.2f} us",
        "bottleneck layer": net.bottleneck,
        "hardware": outcome.message,
    }


def _layer_table(net) -> Table:
    columns = ["layer", "op", "PE", "SIMD", "cycles", "LUT", "BRAM18", "URAM", "DSP"]
    rows = [
        [layer.name, layer.op_type, layer.pe, layer.simd, layer.cycles, layer.lut, layer.bram18, layer.uram, layer.dsp]
        for layer in net.layers
    ]
    return Table("Per layer", columns, rows)


def _resource_table(net) -> Table:
    rows = [[k.upper(), net.totals[k], net.capacity[k], net.utilisation[k]] for k in RESOURCES]
    return Table("Resources against capacity", ["resource", "estimate", "capacity", "utilisation %"], rows)


def _add_rtl(report: Report, summary: dict[str, Any], rtl: RtlVerification) -> None:
    """--rtlsim: its tables, the layers it verified, and a note of what ran in Verilator."""
    report.tables.extend(rtl.tables())
    summary["rtl_verified_layers"] = rtl.verified
    summary["graph_level_only_layers"] = rtl.graph_level
    depths = rtl.fifo_depth_attributes()
    report.notes.append(
        f"RTL simulation: {len(rtl.verified)} layer(s) verified in Verilator, "
        f"{len(rtl.stitched.stitched_layers()) if rtl.stitched else 0} of them also stitched with their "
        f"neighbours; {len(rtl.graph_level)} at graph level only"
        + (f" ({', '.join(rtl.graph_level)})" if rtl.graph_level else "")
        + f". Verilator: {rtl.compile_seconds:.1f} s compiling, {rtl.run_seconds:.1f} s running."
        + (
            " FIFO depths sized by the stitched simulation are in folding_config.json "
            "(inFIFODepths / outFIFODepths of " + ", ".join(sorted(depths)) + ")."
            if depths
            else ""
        )
    )


def _add_notes(report: Report, cfg: steps.FinnConfig) -> None:
    """How the folding was found, what the SDK changed or reused, and what the estimates cover."""
    if cfg.fit:
        fit = cfg.fit
        report.notes.append(
            f"fit search ({fit.foldings:,} layer foldings estimated, {fit.seconds:.2f} s): stopped because "
            f"{fit.stop_reason}. At 100 % of the board: {fit.fps_at_full_board:,.0f} fps; "
            f"fully unfolded: {fit.fps_unfolded:,.0f} fps."
        )
    if cfg.widened:
        report.notes.append(
            "Widened beyond FINN's minimised bit widths (an XNOR layer accumulates the popcount, up to its "
            "inputs; an HLS layer compares in its thresholds' type): " + "; ".join(map(str, cfg.widened)) + "."
        )
    if cfg.shortcut_fifos:
        _add_shortcuts(report, cfg.shortcut_fifos)
    if cfg.cached_steps:
        report.notes.append(
            f"From the SDK cache (the same graph went through them before): {', '.join(cfg.cached_steps)}; "
            "SDK_CACHE_DIR=off runs every step afresh."
        )
    report.notes.append(
        "Resource figures are FINN's analytical estimates of the accelerator alone (no shell, DMA or FIFOs)."
    )


def _add_shortcuts(report: Report, fifos: list) -> None:
    """Each residual shortcut's FIFO, and why its depth rules out a deadlock."""
    report.tables.append(
        Table(
            "Residual shortcuts (DuplicateStreams -> ElementwiseAdd)",
            ["join", "fork", "shortcut layers", "other branch layers", "shortcut FIFO words", "word bits"],
            [[f.join, f.fork, ", ".join(f.shortcut_layers) or "-", f.long_layers, f.depth, f.bits] for f in fifos],
        )
    )
    report.notes.append(
        "Each residual shortcut buffers one frame of its words (folding_config.json: inFIFODepths of the "
        "join), so the fork never waits on it while the other branch computes: no deadlock, whatever that "
        "branch's latency. FINN's FIFO sizing on the Vivado machine (step_set_fifo_depths) may size every "
        "FIFO again by simulation."
    )


def _add_plots(report: Report, pkg: PackageBuilder, cfg: steps.FinnConfig) -> None:
    """cycles_per_layer.png (the bottleneck highlighted) and utilisation.png (against the fit's cap)."""
    net = cfg.network
    names = [layer.name for layer in net.layers]
    bar_plot(
        pkg,
        report,
        "cycles_per_layer.png",
        names,
        [layer.cycles for layer in net.layers],
        "Expected cycles per frame, per layer",
        "cycles",
        highlight=names.index(net.bottleneck),
    )
    utilisation_plot(
        pkg,
        report,
        "utilisation.png",
        {k.upper(): net.totals[k] for k in RESOURCES},
        {k.upper(): net.capacity[k] for k in RESOURCES},
        None if cfg.fps else cfg.max_util,
    )
