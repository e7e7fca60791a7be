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

from pathlib import Path
from typing import Callable

import numpy as np

from sdk.boards import Board
from sdk.errors import SDKError
from sdk.package import PackageBuilder
from sdk.report import Report, Table, bar_plot, utilisation_plot
from sdk.verify import Verification, compare_float_outputs, compare_integer_outputs, compare_layers, same_class
from targets.base import BuildOutcome, BuildRequest
from targets.finn import codegen, folding, hardware
from targets.finn import target as finn
from targets.finn.environment import find_vendor_tools

DATAFLOW_NAME = "dataflow_model.onnx"
PARENT_NAME = "parent_model.onnx"


def host_input(card: dict, x: np.ndarray) -> np.ndarray:
    """uint8 samples in the layout the exported graph takes (flat for MLPs, NCHW for conv nets)."""
    return x.reshape(len(x), -1).astype(np.float32) if card["input"]["flatten"] else x.astype(np.float32)


class FinnTarget:
    flow = "finn"

    def check(self, model_path: Path, board: Board, workdir: Path, qat_model=None) -> None:
        finn.check(model_path, board, workdir)

    def build(self, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]) -> BuildOutcome:
        from sdk.sim import simulate_parent

        board = request.board
        tools = find_vendor_tools()
        if request.options.get("require_bitfile") and not tools.complete:
            raise SDKError(f"A bitfile was required, but {' and '.join(tools.missing())} cannot be found.", where=f"board {board.name}",
                           fix="source Vivado's and Vitis HLS's settings64.sh, or deploy without --require-bitfile")
        progress("QONNX -> FINN, streamline, HW layers")
        hw_model = finn.check(request.model_path, board, request.workdir)
        options = finn.FinnOptions(fps=request.options.get("fps"), max_util=request.options.get("max_util", 0.8),
                                   clock_mhz=request.options.get("clock_mhz"))
        build = finn.compile_model(hw_model, board, options, request.workdir, progress)

        progress("simulate and verify")
        xs = host_input(request.card, request.x)
        result = simulate_parent(build.parent, build.dataflow, xs)
        verification = self._verify(build, result, xs, request)

        progress("generate HLS C++ / RTL")
        build.sources = codegen.generate_sources(build.dataflow, board.part, build.clock_mhz, pkg.path("sources"))
        build.dataflow.save(str(pkg.path(DATAFLOW_NAME)))
        finn.relocatable_parent(build.parent, DATAFLOW_NAME).save(str(pkg.path(PARENT_NAME)))
        folding.write_folding_config(build.dataflow, pkg.path("folding_config.json"))
        pkg.write_text(hardware.FINISH_SCRIPT, hardware.finish_script(board, build.clock_mhz))

        progress("vendor tools")
        outcome = hardware.run_hardware_steps(pkg.temp_dir, tools)
        if request.options.get("require_bitfile") and outcome.bitfile is None:
            raise SDKError(f"A bitfile was required but Vivado's run failed: {outcome.message}", where=f"board {board.name}",
                           fix="deploy without --require-bitfile and run finish_bitfile.py in the package to see the log")
        report, summary = self._report(build, verification, outcome, pkg)
        return BuildOutcome(report, verification, summary, [outcome.message])

    def _verify(self, build: finn.FinnBuild, result, xs: np.ndarray, request: BuildRequest) -> Verification:
        verification = Verification(rule="FPGA (FINN): integer tensors identical to FINN's execution of the same layers and to "
                                         "the QAT model; dequantized output equal up to float32 rounding")
        layers = list(build.dataflow.graph.node)
        n = finn.FINN_REFERENCE_SAMPLES
        dataflow_x = finn.host_side_input(build.parent, xs[:n])
        # the deploy's own simulation already kept every layer's output: compare its first n samples
        ours_per_layer = [(node.name, result.dataflow.intermediates[node.output[0]][:n]) for node in layers]
        theirs = finn.finn_layer_outputs(build.dataflow_hw, dataflow_x)
        verification.checks.append(compare_layers(
            "simulator = FINN python execution, every layer", ours_per_layer, theirs,
            f"{len(layers)} layers of the folded accelerator vs FINN's execution of the unspecialised layers"))
        expected_int = finn.invert_output_ops(build.parent, request.reference)
        rounded = np.rint(expected_int)
        integral = float(np.max(np.abs(expected_int - rounded), initial=0.0)) < 1e-2
        verification.checks.append(compare_integer_outputs(
            "accelerator integer output = QAT model", result.integer_output, rounded.astype(np.int64),
            "QAT output with the output scale removed" + ("" if integral else " (NOT integral: the scale does not invert cleanly)")))
        verification.checks.append(compare_float_outputs("dequantized output = QAT model", result.output, request.reference,
                                                         "float output after the output scale"))
        if result.dataflow.overflows:
            from sdk.verify import Check

            verification.checks.append(Check("accumulators within their FINN datatypes", False, len(xs), "; ".join(result.dataflow.overflows),
                                              first_difference=result.dataflow.overflows[0].split(":")[0]))
        predicted = result.output.argmax(1)
        verification.accuracy = {"accelerator": float(np.mean(predicted == request.y)),
                                 "qat_model": float(np.mean(request.reference.argmax(1) == request.y)),
                                 "agreement": float(np.mean(same_class(result.output, request.reference)))}
        return verification

    def _report(self, build: finn.FinnBuild, verification: Verification, outcome, pkg: PackageBuilder):
        board, net = build.board, build.estimate
        layers = net.layers
        summary = {
            "board": f"{board.display_name} ({board.part}, {build.clock_mhz:g} MHz)",
            "verified": verification.passed,
            "accuracy": verification.accuracy["accelerator"],
            "qat_accuracy": verification.accuracy["qat_model"],
            "folding": build.folding_mode,
            "fps": round(net.fps, 1),
            "latency_us": round(net.latency_us, 3),
            "bottleneck": net.bottleneck,
            "utilisation": {k: round(v, 4) for k, v in net.utilisation.items()},
            "bitfile": outcome.bitfile or ("needs Vivado" if not outcome.ran else "failed"),
        }
        report = Report(title=f"FINN deployment to {board.display_name}", summary={
            "board": summary["board"], "exactness rule": verification.rule,
            "verification": "PASSED" if verification.passed else f"FAILED at {verification.first_failure.first_difference}",
            "accuracy on samples (accelerator / QAT)": f"{verification.accuracy['accelerator']:.2%} / {verification.accuracy['qat_model']:.2%}",
            "folding": build.folding_mode, "throughput": f"{net.fps:,.0f} frames/s at {build.clock_mhz:g} MHz",
            "latency": f"{net.latency_cycles:,} cycles = {net.latency_us:.2f} us", "bottleneck layer": net.bottleneck,
            "hardware": outcome.message,
        })
        report.tables.append(Table("Per layer", ["layer", "op", "PE", "SIMD", "cycles", "LUT", "BRAM18", "URAM", "DSP"],
                                   [[l.name, l.op_type, l.pe, l.simd, l.cycles, l.lut, l.bram18, l.uram, l.dsp] for l in layers]))
        report.tables.append(Table("Resources against capacity", ["resource", "estimate", "capacity", "utilisation %"],
                                   [[k.upper(), net.totals[k], net.capacity[k], net.utilisation[k]] for k in ("lut", "bram18", "uram", "dsp")]))
        report.tables.append(Table("Verification", ["check", "passed", "samples", "first difference", "mismatch %", "detail"],
                                   [[c.name, c.passed, c.samples, c.first_difference, c.mismatch_rate, c.detail] for c in verification.checks]))
        if build.fit:
            report.notes.append(f"fit search: {build.fit.steps} steps; stopped because {build.fit.stop_reason}.")
        report.notes.append("Resource figures are FINN's analytical estimates of the accelerator alone (no shell, DMA or FIFOs).")
        bar_plot(pkg, report, "cycles_per_layer.png", [l.name for l in layers], [l.cycles for l in layers],
                 "Expected cycles per frame, per layer", "cycles", highlight=[l.name for l in layers].index(net.bottleneck))
        utilisation_plot(pkg, report, "utilisation.png", {k.upper(): net.totals[k] for k in ("lut", "bram18", "uram", "dsp")},
                         {k.upper(): net.capacity[k] for k in ("lut", "bram18", "uram", "dsp")},
                         build.max_util)
        report.data = {"estimate": net.to_dict(), "verification": verification.to_dict(), "folding_mode": build.folding_mode,
                       "fit": None if build.fit is None else {"steps": build.fit.steps, "stop_reason": build.fit.stop_reason},
                       "hardware": outcome.to_dict(), "sources": build.sources}
        return report, summary

