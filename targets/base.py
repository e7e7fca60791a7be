"""The protocol every target adapter implements, and the registry of flows.

A target turns a QONNX model (with its model card) into an artifact for one
board: check -> compile -> estimate -> simulate -> verify, writing its files
and report into the package it is handed. It never trains, and it does not
know how the package is committed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from sdk.boards import Board
from sdk.package import PackageBuilder
from sdk.report import Report
from sdk.verify import Verification


@dataclass
class BuildRequest:
    """Everything a target needs for one board."""

    model_path: Path            # QONNX file
    card: dict[str, Any]        # its model card
    board: Board
    options: dict[str, Any]     # target options from DeployConfig (fps, max_util, clock_mhz, ...)
    workdir: Path               # scratch space, removed after the deploy
    x: np.ndarray               # verification samples, uint8 in the model card's input layout
    y: np.ndarray               # their labels
    reference: np.ndarray       # the QAT model's float outputs on x
    qat_model: Any = None       # the Brevitas model, where its checkpoint is at hand (the TFLite writer needs it)


@dataclass
class BuildOutcome:
    report: Report
    verification: Verification
    summary: dict[str, Any]     # the headline numbers for the CLI and the comparison table
    messages: list[str] = field(default_factory=list)  # one-line notices (e.g. what needs Vivado)


class Target(Protocol):
    flow: str

    def check(self, model_path: Path, board: Board, workdir: Path, qat_model: Any = None) -> None: ...

    def build(self, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]) -> BuildOutcome: ...


@dataclass(frozen=True)
class FlowInfo:
    """What a flow is, what it needs, and how far it is built in this SDK version."""

    flow: str
    kind: str
    description: str
    python_package: str
    vendor_tools: str
    adapter: str | None  # "module:Class" once its adapter exists

    @property
    def status(self) -> str:
        return "available" if self.adapter else "planned"

    def package_version(self) -> str | None:
        try:
            return metadata.version(self.python_package)
        except metadata.PackageNotFoundError:
            return None

    def load(self) -> Target:
        module, _, name = (self.adapter or "").partition(":")
        return getattr(importlib.import_module(module), name)()


FLOWS: dict[str, FlowInfo] = {
    "finn": FlowInfo("finn", "fpga", "FPGA dataflow accelerators through FINN (finn-plus)", "finn-plus",
                     "Vivado + Vitis HLS for synthesis and bitfile (optional)", "targets.finn.deploy:FinnTarget"),
    "tflite": FlowInfo("tflite", "cpu", "int8 .tflite for LiteRT on application CPUs", "ai-edge-litert", "none",
                       "targets.tflite.deploy:TfliteTarget"),
    "tflm": FlowInfo("tflm", "mcu", "int8 .tflite for TensorFlow Lite Micro on Cortex-M", "tflite-micro", "none",
                     "targets.tflm.deploy:TflmTarget"),
    "ethosu": FlowInfo("ethosu", "npu", "int8 .tflite compiled by Vela for Arm Ethos-U NPUs", "ethos-u-vela", "none",
                       "targets.ethosu.deploy:EthosuTarget"),
}
