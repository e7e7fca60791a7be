"""What is on this machine: the Python stack, compilers and vendor tools.

Vendor tools are optional: without them every flow still runs to a verified,
hardware-ready package; with them a flow may go further (e.g. to a bitfile).
Each flow names its own tools (`FlowInfo.tool_checks`), built with the helpers here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from sdk.datasets import dataset_checks

# The core's own stack; each flow's toolchain package comes from the registry of flows.
CORE_STACK = {
    "torch": "training",
    "brevitas": "training and export",
    "onnx": "export",
    "onnxruntime": "checking exports",
    "qonnx": "export",
    "numpy": "core",
    "click": "core",
    "rich": "core",
    "matplotlib": "report plots",
}


@dataclass
class Check:
    name: str
    present: bool
    version: str | None
    detail: str
    needed_for: str

    def to_dict(self) -> dict:
        return asdict(self)


def _package(name: str, needed_for: str) -> Check:
    try:
        return Check(name, True, metadata.version(name), "python package", needed_for)
    except metadata.PackageNotFoundError:
        return Check(name, False, None, "not installed: run `make install`", needed_for)


def command_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def vendor_tool(env_var: str, binary: str, needed_for: str) -> Check:
    """A vendor tool found on PATH or under its settings variable's bin/ (e.g. XILINX_VIVADO)."""
    root = os.environ.get(env_var)
    path = shutil.which(binary) or (
        os.path.join(root, "bin", binary) if root and os.path.exists(os.path.join(root, "bin", binary)) else None
    )
    if root and path:
        return Check(binary, True, command_version([path, "-version"]), f"{env_var}={root}", needed_for)
    detail = f"{env_var} is not set" if not root else f"{env_var}={root} but bin/{binary} is missing"
    return Check(binary, False, None, detail, needed_for)


def run_checks() -> list[Check]:
    checks = [Check("python", True, sys.version.split()[0], sys.executable, "everything")]
    from targets.registry import FLOWS

    needs = dict(CORE_STACK)
    for info in FLOWS.values():
        needs[info.python_package] = f"the {info.flow} flow: {info.description}"
    checks += [_package(name, needed_for) for name, needed_for in needs.items()]
    gxx = shutil.which("g++")
    checks.append(
        Check(
            "g++",
            bool(gxx),
            command_version(["g++", "--version"]) if gxx else None,
            gxx or "not on PATH",
            "compiling generated HLS C++ for testing (optional)",
        )
    )
    from targets.registry import tool_checks

    for info in FLOWS.values():  # a flow's own tools beyond its package (simulators, vendor tools, compilers)
        checks += [Check(**found) for found in tool_checks(info.flow)]
    checks += [Check(**found) for found in dataset_checks()]  # the built-in data sets that must be installed
    return checks
