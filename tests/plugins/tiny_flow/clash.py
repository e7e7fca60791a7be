"""A second test flow whose option `io` clashes with the TFLite family's declaration of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from targets.registry import FlowInfo


@dataclass
class Options:
    io: str = field(default="any", metadata={"help": "Another meaning of --io."})


FLOW = FlowInfo(
    "clash", ("cpu",), "a flow whose option clashes", "qonnx", "none", "tiny_flow.adapter:TinyTarget", options=Options
)

SECOND_TFLITE = FlowInfo(
    "tflite", ("cpu",), "a second flow named tflite", "qonnx", "none", "tiny_flow.adapter:TinyTarget"
)


@dataclass
class SamplesOption:
    samples: int = field(default=3, metadata={"help": "The deploy's own --samples, declared again."})


CORE_CLASH = FlowInfo(
    "core_clash", ("cpu",), "a flow whose option is a core flag", "qonnx", "none", "x:Y", options=SamplesOption
)
UPPER = FlowInfo("Tiny", ("cpu",), "a flow whose name is not a word", "qonnx", "none", "tiny_flow.adapter:TinyTarget")
