"""The Ethos-U flow's registration (nothing of Vela is imported here)."""

from __future__ import annotations

from targets.registry import FlowInfo
from targets.tflite.flow import Options

FLOW = FlowInfo(
    "ethosu",
    ("npu",),
    "int8 .tflite compiled by Vela for Arm Ethos-U NPUs",
    "ethos-u-vela",
    "none",
    "targets.ethosu.adapter:EthosuTarget",
    "targets.ethosu.tools:doctor_checks",
    options=Options,
    board_section="targets.ethosu:board_section.yaml",
    loggers=("ethosu",),
    listing_order=40,
    family="tflite",
)
