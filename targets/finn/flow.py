"""The FPGA flow's registration: its name, boards, options and tools (nothing of FINN is imported here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdk.errors import ConfigError
from targets.registry import Alternative, FlowInfo

DEFAULT_MAX_UTIL = 0.8  # the fit search's cap on LUT, BRAM18, URAM and DSP utilisation


@dataclass
class Options:
    """The FPGA flow's own deploy options."""

    fps: float | None = field(  # throughput target in frames/s: FINN's SetFolding; None: the fit search
        default=None,
        metadata={
            "help": "FPGA: throughput target in frames/s (FINN's SetFolding), held to 100 % of the board (exit 2 "
            "above it); without it, the fastest folding under --max-util."
        },
    )
    max_util: float = field(  # fit search: cap on LUT, BRAM18, URAM and DSP utilisation, in (0, 1]
        default=DEFAULT_MAX_UTIL,
        metadata={
            "help": "FPGA: utilisation cap (LUT, BRAM18, URAM, DSP) of the fastest-folding search used without "
            "--fps (--fps is held to 100 %)."
        },
    )
    require_bitfile: bool = field(
        default=False, metadata={"help": "Fail when no bitfile can be built (no Vivado / Vitis HLS)."}
    )
    rtlsim: bool = field(
        default=False,
        metadata={
            "help": "FPGA: prefer RTL layers and run each one's generated Verilog in Verilator on the samples "
            "(bit-exact)."
        },
    )

    def validate(self) -> None:
        from targets.base import finite_positive

        finite_positive(self.fps, "--fps", "50000")
        if not isinstance(self.rtlsim, bool):
            raise ConfigError(f"--rtlsim is a switch (true or false), got {self.rtlsim!r}.", where="--rtlsim")
        if isinstance(self.max_util, bool) or not (isinstance(self.max_util, int | float) and 0 < self.max_util <= 1):
            raise ConfigError(
                f"--max-util must be in (0, 1], got {self.max_util}.",
                where="--max-util",
                fix=f"e.g. --max-util {DEFAULT_MAX_UTIL}",
            )


@dataclass
class SimulateOptions:
    """What `sdk simulate` and sdk.simulate take for an FPGA package."""

    rtlsim: bool = field(
        default=False,
        metadata={
            "help": "FPGA package: also run each RTL layer's Verilog in Verilator.",
            "purpose": "runs an FPGA package's RTL layers in Verilator",
        },
    )


FLOW = FlowInfo(
    "finn",
    ("fpga",),
    "FPGA dataflow accelerators through FINN (finn-plus)",
    "finn-plus",
    "Vivado + Vitis HLS for synthesis and bitfile (optional)",
    "targets.finn.adapter:FinnTarget",
    "targets.finn.tools:doctor_checks",
    options=Options,
    simulate_options=SimulateOptions,
    listing_order=10,
    alternative=Alternative("pynq-z2", "an FPGA board", "the FPGA boards refuse"),
    board_section="targets.finn:board_section.yaml",
    board_checks="targets.finn.board_checks:board_checks",
    known_names="targets.finn.board_checks:known_names",
    graph_guard="targets.finn.graph_guard",
    loggers=("finn", "finn_plus"),
    needs_part=True,  # `sdk simulate --rtlsim` regenerates the RTL for the package's part
)
