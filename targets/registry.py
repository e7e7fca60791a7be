"""The registry of flows: the only way the core reaches a target.

Adding a flow is a folder `targets/<flow>/` with an `adapter.py` whose class
implements `targets.base.Target`, plus one entry here. Adapters are imported
on first use, so listing flows stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache

from sdk.errors import SDKError


@dataclass(frozen=True)
class FlowInfo:
    """What a flow is, what it needs, and where its adapter lives."""

    flow: str
    kinds: tuple[str, ...]  # the board kinds it serves (fpga | cpu | mcu | npu); the first is its main one
    description: str
    python_package: str  # the toolchain package (its version is shown by `sdk targets` and `sdk doctor`)
    vendor_tools: str
    adapter: str  # "module:Class"
    tool_checks: str = ""  # "module:function" -> the flow's own tools for `sdk doctor` (Check fields as dicts)
    # The flow's section of a board file, as a YAML file beside its code ("package:file", the schema syntax of
    # boards/schema.yaml: section required|optional, fields, rules); "" = an optional section without fields.
    board_section: str = ""
    # "module:function"s, cheap (no toolchain import): checks of a board serving the flow beyond its section's
    # schema, and the name registries a schema field's `known:` may name (sdk/boards.py says how they are called).
    board_checks: str = ""
    known_names: str = ""
    graph_guard: str = ""  # module declaring the flow's own ONNX op domains and what sdk/onnx_guard refuses for it
    loggers: tuple[str, ...] = ()  # roots of the toolchain's logger trees, quiet unless --verbose

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str) or not self.kinds:  # ("fpga",), not "fpga": a string is a tuple of letters
            raise TypeError(f"FlowInfo {self.flow!r}: kinds must be a non-empty tuple of kinds, got {self.kinds!r}")

    def package_version(self) -> str | None:
        from importlib import metadata  # imported here: listing boards reads the registry, and this costs 20 ms

        try:
            return metadata.version(self.python_package)
        except metadata.PackageNotFoundError:
            return None


FLOWS: dict[str, FlowInfo] = {
    info.flow: info
    for info in (
        FlowInfo(
            "finn",
            ("fpga",),
            "FPGA dataflow accelerators through FINN (finn-plus)",
            "finn-plus",
            "Vivado + Vitis HLS for synthesis and bitfile (optional)",
            "targets.finn.adapter:FinnTarget",
            "targets.finn.verilator:doctor_checks",
            board_section="targets.finn:board_section.yaml",
            board_checks="targets.finn.board_checks:board_checks",
            known_names="targets.finn.board_checks:known_names",
            graph_guard="targets.finn.graph_guard",
            loggers=("finn", "finn_plus"),
        ),
        FlowInfo(
            "tflite",
            ("cpu",),
            "int8 .tflite for LiteRT on application CPUs",
            "ai-edge-litert",
            "none",
            "targets.tflite.adapter:TfliteTarget",
            loggers=("ai_edge_litert",),
        ),
        FlowInfo(
            "tflm",
            ("mcu", "npu"),
            "int8 .tflite for TensorFlow Lite Micro on Cortex-M",
            "tflite-micro",
            "none",
            "targets.tflm.adapter:TflmTarget",
            loggers=("tflite_micro",),
        ),
        FlowInfo(
            "ethosu",
            ("npu",),
            "int8 .tflite compiled by Vela for Arm Ethos-U NPUs",
            "ethos-u-vela",
            "none",
            "targets.ethosu.adapter:EthosuTarget",
            board_section="targets.ethosu:board_section.yaml",
            loggers=("ethosu",),
        ),
    )
}


def flow_info(flow: str) -> FlowInfo:
    if flow not in FLOWS:
        raise SDKError(f"Unknown flow '{flow}'.", where="flow", fix=f"one of {', '.join(FLOWS)} (see `sdk targets`)")
    return FLOWS[flow]


@cache
def get_target(flow: str):
    """The adapter instance of a flow (imported on first use)."""
    module, _, name = flow_info(flow).adapter.partition(":")
    return getattr(importlib.import_module(module), name)()


def tool_checks(flow: str) -> list[dict]:
    """What `sdk doctor` shows of a flow's own tools: dicts of name, present, version, detail, needed_for."""
    entry = flow_info(flow).tool_checks
    if not entry:
        return []
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)()
