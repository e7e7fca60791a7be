"""The LiteRT flow's registration, and the deploy options the whole TFLite family (tflite, tflm, ethosu) shares
(nothing of LiteRT is imported here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdk.errors import ConfigError
from targets.registry import Alternative, FlowInfo

IO_MODES = ("int8", "float")


@dataclass
class Options:
    """The TFLite family's own deploy options."""

    io: str | None = field(  # "int8" or "float" model input/output; None: the flow's default
        default=None,
        metadata={
            "help": "TFLite family: model input/output type (default: float on tflite, int8 on MCUs and NPUs).",
            "choices": IO_MODES,
        },
    )
    int4_weights: bool = field(  # pack weights as int4 where the runtime runs them, else refuse (exit 2)
        default=False,
        metadata={"help": "TFLite family: packed int4 weights where the runtime runs them (else exit 2)."},
    )

    def validate(self) -> None:
        if self.io is not None and self.io not in IO_MODES:
            raise ConfigError(
                f"--io must be one of {', '.join(IO_MODES)}, got {self.io!r}.", where="--io", fix="e.g. --io int8"
            )
        if not isinstance(self.int4_weights, bool):
            raise ConfigError(
                f"--int4-weights is a switch (true or false), got {self.int4_weights!r}.", where="--int4-weights"
            )


FLOW = FlowInfo(
    "tflite",
    ("cpu",),
    "int8 .tflite for LiteRT on application CPUs",
    "ai-edge-litert",
    "none",
    "targets.tflite.adapter:TfliteTarget",
    options=Options,
    loggers=("ai_edge_litert",),
    listing_order=20,
    family="tflite",
    alternative=Alternative(
        "tflite",
        "a TFLite target (tflite; a Cortex-M or Ethos-U board where it fits their memory)",
        "the TFLite targets refuse",
    ),
)
