"""Stage 10: the vendor-tool steps (HLS synthesis, stitched IP, bitfile, PYNQ driver).

They need Vivado and Vitis HLS. Every package carries finish_bitfile.py, which
checks the package against its manifest and then runs FINN's own builder on
the packaged, already folded dataflow model; the deploy runs it where the
tools are present and otherwise says, in one line, the command that finishes
the job on a machine that has them. A bitfile is never made up.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.boards import Board
from sdk.errors import BoardError, ConfigError
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
SHELL_FLOWS = {"zynq": "VIVADO_ZYNQ", "alveo": "VITIS_ALVEO"}  # board file's finn.shell -> FINN's ShellFlowType
MAX_FIELD_CHARS = 1000
_INPUTS_MARK = "@INPUTS_JSON@"

_CHECK_MARK = "@PACKAGE_CHECK@"

# The script is this fixed text plus one Python string literal: repr() of the JSON of its inputs. Whatever a board
# file holds (quotes, triple quotes, newlines, backslashes) stays inside that literal and is read as data. It carries
# the SDK's package check (sdk/package_check.py, standard library only): a Vivado machine need not have the SDK.
_SCRIPT = f'''"""Finish this package on a machine with Vivado and Vitis HLS (XILINX_VIVADO, XILINX_HLS set).

Checks the package against its manifest.json first (every file's sha256, size
and mode, no file added, the manifest's identity) and refuses a changed
package before any vendor tool runs. Then runs FINN's own builder on the
packaged dataflow model with the packaged folding: HLS synthesis, FIFO sizing,
stitched IP, bitfile and PYNQ driver for the board, part and clock in INPUTS
below. Output: ./hardware/

    python {FINISH_SCRIPT}
"""
{_CHECK_MARK}
import sys

HERE = Path(__file__).resolve().parent
INPUTS = json.loads({_INPUTS_MARK})


def verify():
    """The package as the SDK wrote it (the same check as `sdk simulate`), or exit 2 naming what changed."""
    try:
        manifest = load_manifest(HERE / MANIFEST_NAME)
        problems = file_problems(HERE, manifest)
        if problems:
            shown = "; ".join(rel + " " + what for rel, what in problems[:8])
            raise ManifestProblem("the package was changed after it was written: " + shown, problems[0][0])
        check_identity(manifest)
    except FileNotFoundError:
        sys.stderr.write("finish_bitfile.py: no " + MANIFEST_NAME + " beside it: run it in its package\\n")
        sys.exit(2)
    except (ManifestProblem, OSError) as exc:
        what = exc.what if isinstance(exc, ManifestProblem) else str(exc)
        sys.stderr.write("finish_bitfile.py: refused, " + what + "\\n  fix: restore the package or deploy again\\n")
        sys.exit(2)


def build():
    """FINN's builder on the packaged model: needs Vivado and Vitis HLS."""
    target = "%s (part %s, FINN board %s) at %g MHz" % (
        INPUTS["display_name"], INPUTS["fpga_part"], INPUTS["board"], INPUTS["clock_mhz"]
    )
    print("finish_bitfile:", target.encode("ascii", "backslashreplace").decode("ascii"))
    if not os.environ.get("XILINX_VIVADO") or not os.environ.get("XILINX_HLS"):
        sys.exit("finish_bitfile.py needs Vivado and Vitis HLS: source their settings64.sh first")
    os.environ.setdefault("FINN_BUILD_DIR", str(HERE / "hardware" / "build"))

    import finn.util.settings as settings

    settings.initialize_dummy_settings()
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType, ShellFlowType

    platform = {{"vitis_platform": INPUTS["vitis_platform"]}} if INPUTS["vitis_platform"] else {{}}
    cfg = DataflowBuildConfig(
        output_dir=str(HERE / "hardware"),
        synth_clk_period_ns=INPUTS["synth_clk_period_ns"],
        board=INPUTS["board"],
        fpga_part=INPUTS["fpga_part"],
        shell_flow_type=ShellFlowType[INPUTS["shell_flow_type"]],
        folding_config_file=str(HERE / "folding_config.json"),
        steps=list(INPUTS["steps"]),
        generate_outputs=[
            DataflowOutputType.BITFILE,
            DataflowOutputType.PYNQ_DRIVER,
            DataflowOutputType.DEPLOYMENT_PACKAGE,
        ],
        **platform,
    )
    return build_dataflow_cfg(str(HERE / "dataflow_model.onnx"), cfg)


if __name__ == "__main__":
    verify()
    sys.exit(build())
'''
# How the deploy runs the script in the package it is building, before the manifest exists: its build() alone.
_DEPLOY_RUN = "import finish_bitfile, sys; sys.exit(finish_bitfile.build())"


def _package_check_source() -> str:
    """sdk/package_check.py without its docstring, to be carried by the script."""
    import ast

    from sdk import package_check

    text = Path(package_check.__file__).read_text(encoding="utf-8")
    body = ast.parse(text).body
    return "".join(text.splitlines(keepends=True)[body[1].lineno - 1 :])  # body[0]: the docstring


def _text(board: Board, value: Any, field_name: str, required: bool = True) -> str | None:
    """A board value that goes to FINN: text of sane length (it reaches the script only as JSON data)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise BoardError(
            f"Board field {field_name} must be non-empty text of at most {MAX_FIELD_CHARS} characters, "
            f"got {str(value)[:60]!r}.",
            where=f"board {board.name}, field {field_name}",
            fix="fix the board file (see boards/schema.yaml)",
        )
    return value


def finish_script_inputs(board: Board, clock_mhz: float) -> dict[str, Any]:
    """Everything from the board file and the deploy that the finishing script needs, as JSON-ready data."""
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, int | float) or not math.isfinite(clock_mhz):
        raise ConfigError(
            f"The clock must be a finite number of MHz, got {clock_mhz!r}.", where="--clock-mhz", fix="e.g. 100"
        )
    if not 0 < clock_mhz <= 10_000:
        raise ConfigError(
            f"The clock must be in (0, 10000] MHz, got {clock_mhz!r}.", where="--clock-mhz", fix="e.g. 100"
        )
    finn = board.section("finn")
    shell = finn.get("shell")
    if shell not in SHELL_FLOWS:
        raise BoardError(
            f"Board field finn.shell must be one of {', '.join(SHELL_FLOWS)}, got {str(shell)[:60]!r}.",
            where=f"board {board.name}, field finn.shell",
            fix="fix the board file (see boards/schema.yaml)",
        )
    return {
        "display_name": _text(board, board.display_name, "display_name"),
        "board": _text(board, finn.get("board"), "finn.board"),
        "fpga_part": _text(board, board.part, "chip"),
        "shell_flow_type": SHELL_FLOWS[shell],
        "vitis_platform": _text(board, finn.get("platform"), "finn.platform", required=False),
        "clock_mhz": float(clock_mhz),
        "synth_clk_period_ns": 1000.0 / float(clock_mhz),
        "steps": list(HARDWARE_STEPS),
    }


def finish_script(board: Board, clock_mhz: float) -> str:
    """A self-contained script: FINN's builder, from the packaged dataflow model to bitfile and driver.

    The board's and the deploy's values enter it only as one string literal of JSON (ASCII, so the file's
    encoding cannot matter), never as code."""
    inputs = json.dumps(finish_script_inputs(board, clock_mhz), ensure_ascii=True, sort_keys=True)
    return _SCRIPT.replace(_CHECK_MARK, _package_check_source()).replace(_INPUTS_MARK, repr(inputs))


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
    # build() alone: the package is not yet committed, so it has no manifest to check (`python finish_bitfile.py`,
    # the user's command, checks it first); -B: no __pycache__ of the import left in the package
    proc = subprocess.run(
        [sys.executable, "-B", "-c", _DEPLOY_RUN], cwd=package_dir, capture_output=True, text=True, check=False
    )
    (package_dir / "hardware").mkdir(exist_ok=True)
    (package_dir / "hardware" / "finish_bitfile.log").write_text(proc.stdout + proc.stderr)
    bitfiles = sorted((package_dir / "hardware").rglob("*.bit")) + sorted((package_dir / "hardware").rglob("*.xclbin"))
    if proc.returncode != 0 or not bitfiles:
        return HardwareOutcome(
            True, None, f"FINN's hardware steps failed (exit {proc.returncode}); see hardware/finish_bitfile.log"
        )
    return HardwareOutcome(True, str(bitfiles[0].relative_to(package_dir)), "bitfile built by Vivado")
