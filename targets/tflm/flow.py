"""The TensorFlow Lite Micro flow's registration (nothing of TFLM is imported here)."""

from __future__ import annotations

from targets.registry import FlowInfo
from targets.tflite.flow import Options

FLOW = FlowInfo(
    "tflm",
    ("mcu", "npu"),
    "int8 .tflite for TensorFlow Lite Micro on Cortex-M",
    "tflite-micro",
    "none",
    "targets.tflm.adapter:TflmTarget",
    options=Options,
    loggers=("tflite_micro",),
    listing_order=30,
    family="tflite",
)
