"""The protocol every target adapter implements, and the registry of flows.

A target turns a QONNX model (with its model card) into an artifact for one
board: check -> compile -> estimate -> simulate. It never trains, and it knows
nothing of how the package is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Protocol


@dataclass(frozen=True)
class FlowInfo:
    """What a flow is, what it needs, and how far it is built in this SDK version."""

    flow: str
    kind: str
    description: str
    python_package: str
    vendor_tools: str
    status: str  # "available" once its adapter is in targets/<flow>/, else "planned"

    def package_version(self) -> str | None:
        try:
            return metadata.version(self.python_package)
        except metadata.PackageNotFoundError:
            return None


class Target(Protocol):
    """A compiler for one flow. Implemented by targets/<flow>/."""

    flow: str

    def check(self, model_path, card, board) -> list: ...
    def compile(self, model_path, card, board, workdir): ...
    def estimate(self, artifact, board) -> dict: ...
    def simulate(self, artifact, inputs): ...


FLOWS: dict[str, FlowInfo] = {
    "finn": FlowInfo("finn", "fpga", "FPGA dataflow accelerators through FINN (finn-plus)", "finn-plus",
                     "Vivado + Vitis HLS for synthesis and bitfile (optional)", "planned"),
    "tflite": FlowInfo("tflite", "cpu", "int8 .tflite for LiteRT on application CPUs", "ai-edge-litert", "none", "planned"),
    "tflm": FlowInfo("tflm", "mcu", "int8 .tflite for TensorFlow Lite Micro on Cortex-M", "tflite-micro", "none", "planned"),
    "ethosu": FlowInfo("ethosu", "npu", "int8 .tflite compiled by Vela for Arm Ethos-U NPUs", "ethos-u-vela", "none", "planned"),
}
