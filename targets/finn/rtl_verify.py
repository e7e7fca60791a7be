"""Stage after code generation (`--rtlsim`): run the generated RTL of each layer in Verilator on the samples.

The numpy simulator proves the folded graph computes what the QAT model computes; this proves the Verilog
FINN generated for each RTL layer computes what the simulator computes, cycle by cycle, with no vendor tool.
Each RTL layer gets the simulator's own input of that layer, so a difference names the layer. Layers with
no RTL variant the SDK can simulate (HLS layers) are listed as verified at graph level only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.report import Table
from sdk.verify import Check
from targets.finn.rtlsim import KNOWN_FAILURES, SUPPORTED_RTL_OPS, simulate_node

RTL_PREFERRED = ("Thresholding", "FMPadding", "ConvolutionInputGenerator", "StreamingDataWidthConverter")


def prefer_rtl(model) -> None:
    """Ask FINN's layer specialisation for the RTL variant of every layer the SDK can simulate in Verilator."""
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
            "compile_seconds": round(self.compile_seconds, 3),
            "run_seconds": round(self.run_seconds, 3),
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
        run = simulate_node(dataflow, node, tensors[node.input[0]], cache_dir, sources_dir / node.name)
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
