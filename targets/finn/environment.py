"""FINN's process-wide settings and the vendor tools it may use.

FINN transformations read global settings and write into FINN_BUILD_DIR; both
are set once per build, pointing into the build's own folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

FINN_SETTINGS_FILE = Path(__file__).resolve().with_name("finn_settings.yaml")  # "{}": FINN's defaults


def prepare_finn(build_dir: Path) -> None:
    """Point FINN at this build's scratch folder and give it its (dummy) settings.

    FINN reads its settings file with PyYAML's unsafe Loader (a `!!python/object/apply` tag runs code) from
    FINN_SETTINGS, else ~/.finn/settings.yaml (creating ~/.finn). The SDK points it at its own empty settings file,
    installed with its code (never one in a build or temporary folder, which another user could swap)."""
    point_finn_at(build_dir)
    import finn.util.settings as settings

    settings.initialize_dummy_settings()


def point_finn_at(build_dir: Path) -> None:
    """Only the environment of prepare_finn: whatever FINN reads later reads the SDK's settings file and writes
    into `build_dir`. Enough where no FINN step runs (a package's simulation), without importing FINN's settings
    module (pydantic: 0.2 s of an `sdk simulate`)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(build_dir)
    os.environ["FINN_SETTINGS"] = str(FINN_SETTINGS_FILE)


@dataclass(frozen=True)
class VendorTools:
    """Vivado / Vitis HLS as found through XILINX_VIVADO / XILINX_HLS."""

    vivado: Path | None
    vitis_hls: Path | None

    @property
    def complete(self) -> bool:
        return self.vivado is not None and self.vitis_hls is not None

    def missing(self) -> list[str]:
        return [
            name
            for name, path in (("Vivado (XILINX_VIVADO)", self.vivado), ("Vitis HLS (XILINX_HLS)", self.vitis_hls))
            if path is None
        ]


def _tool(env_var: str, binary: str) -> Path | None:
    root = os.environ.get(env_var)
    if root and (Path(root) / "bin" / binary).exists():
        return Path(root) / "bin" / binary
    found = shutil.which(binary) if root else None
    return Path(found) if found else None


def find_vendor_tools() -> VendorTools:
    return VendorTools(_tool("XILINX_VIVADO", "vivado"), _tool("XILINX_HLS", "vitis_hls"))
