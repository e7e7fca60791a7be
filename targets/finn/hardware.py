"""Stage 10: the vendor-tool steps (HLS synthesis, stitched IP, bitfile, PYNQ driver).

They need Vivado and Vitis HLS. Every package carries finish_bitfile.py, which
runs FINN's own builder on the packaged, already folded dataflow model; the
deploy runs it where the tools are present and otherwise says, in one line,
the command that finishes the job on a machine that has them. A bitfile is
never made up.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sdk.boards import Board
from targets.finn.environment import VendorTools

FINISH_SCRIPT = "finish_bitfile.py"
HARDWARE_STEPS = [
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_generate_estimate_reports",
    "step_hw_codegen",
    "step_hw_ipgen",
    "step_set_fifo_depths",
    "step_create_stitched_ip",
    "step_synthesize_bitfile",
    "step_make_driver",
    "step_deployment_package",
]


def finish_script(board: Board, clock_mhz: float) -> str:
    """A self-contained script: FINN's builder, from the packaged dataflow model to bitfile and driver."""
    shell = "VIVADO_ZYNQ" if board.shell == "zynq" else "VITIS_ALVEO"
    platform = f"\n        vitis_platform={board.platform!r}," if board.platform else ""
    return f'''"""Finish this package on a machine with Vivado and Vitis HLS (XILINX_VIVADO, XILINX_HLS set).

Runs FINN's own builder on the packaged dataflow model with the packaged
folding: HLS synthesis, FIFO sizing, stitched IP, bitfile and PYNQ driver for
{board.display_name} ({board.part}) at {clock_mhz:g} MHz. Output: ./hardware/

    python {FINISH_SCRIPT}
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if not os.environ.get("XILINX_VIVADO") or not os.environ.get("XILINX_HLS"):
    sys.exit("finish_bitfile.py needs Vivado and Vitis HLS: source their settings64.sh first")
os.environ.setdefault("FINN_BUILD_DIR", str(HERE / "hardware" / "build"))

import finn.util.settings as settings  # noqa: E402

settings.initialize_dummy_settings()
from finn.builder.build_dataflow import build_dataflow_cfg  # noqa: E402
from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType, ShellFlowType  # noqa: E402

cfg = DataflowBuildConfig(
        output_dir=str(HERE / "hardware"),
        synth_clk_period_ns={1000.0 / clock_mhz!r},
        board={board.finn_board!r},
        fpga_part={board.part!r},
        shell_flow_type=ShellFlowType.{shell},{platform}
        folding_config_file=str(HERE / "folding_config.json"),
        steps={HARDWARE_STEPS!r},
        generate_outputs=[
            DataflowOutputType.BITFILE,
            DataflowOutputType.PYNQ_DRIVER,
            DataflowOutputType.DEPLOYMENT_PACKAGE,
        ],
)
sys.exit(build_dataflow_cfg(str(HERE / "dataflow_model.onnx"), cfg))
'''


@dataclass
class HardwareOutcome:
    ran: bool
    bitfile: str | None
    message: str

    def to_dict(self) -> dict:
        return {"ran": self.ran, "bitfile": self.bitfile, "message": self.message}


def run_hardware_steps(package_dir: Path, tools: VendorTools) -> HardwareOutcome:
    """Run the finishing script in the package being built, where the tools are; otherwise say what would finish it."""
    if not tools.complete:
        # No path in the message: it goes into the report, and packages of equal inputs must be equal.
        return HardwareOutcome(
            False,
            None,
            f"{' and '.join(tools.missing())} not found: the package is hardware-ready; "
            f"finish the bitfile on a machine with them: python {FINISH_SCRIPT} (in the package folder)",
        )
    proc = subprocess.run([sys.executable, FINISH_SCRIPT], cwd=package_dir, capture_output=True, text=True, check=False)
    (package_dir / "hardware").mkdir(exist_ok=True)
    (package_dir / "hardware" / "finish_bitfile.log").write_text(proc.stdout + proc.stderr)
    bitfiles = sorted((package_dir / "hardware").rglob("*.bit")) + sorted((package_dir / "hardware").rglob("*.xclbin"))
    if proc.returncode != 0 or not bitfiles:
        return HardwareOutcome(
            True, None, f"FINN's hardware steps failed (exit {proc.returncode}); see hardware/finish_bitfile.log"
        )
    return HardwareOutcome(True, str(bitfiles[0].relative_to(package_dir)), "bitfile built by Vivado")
