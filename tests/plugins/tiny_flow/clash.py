"""A second test flow whose option `io` clashes with the TFLite family's declaration of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from targets.registry import FlowInfo


@dataclass
class Options:
    io: str = field(default="any", metadata={"help": "Another meaning of --io."})


FLOW = FlowInfo(
    "clash", "cpu", "a flow whose option clashes", "qonnx", "none", "tiny_flow.adapter:TinyTarget", options=Options
)

SECOND_TFLITE = FlowInfo("tflite", "cpu", "a second flow named tflite", "qonnx", "none", "tiny_flow.adapter:TinyTarget")
