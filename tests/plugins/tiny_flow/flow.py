"""The tiny flow's registration: what an out-of-tree flow's package declares (no heavy import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from targets.registry import FlowInfo


@dataclass
class Options:
    """The tiny flow's own deploy option."""

    tiny_stamp: str = field(default="", metadata={"help": "Tiny flow: text written into the artifact's doc_string."})


@dataclass
class SimulateOptions:
    """The tiny flow's own simulate option."""

    tiny_repeat: int = field(
        default=1,
        metadata={"help": "Tiny flow: run the artifact this many times.", "purpose": "repeats a tiny flow's run"},
    )


FLOW = FlowInfo(
    "tiny",
    ("cpu",),
    "the QONNX graph itself, run with qonnx (a test's plug-in)",
    "qonnx",
    "none",
    "tiny_flow.adapter:TinyTarget",
    "tiny_flow.tools:doctor_checks",
    options=Options,
    simulate_options=SimulateOptions,
)
