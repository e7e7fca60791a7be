"""The FPGA flow's tools as `sdk doctor` shows them: Verilator (--rtlsim), Vivado and Vitis HLS (bitfiles)."""

from __future__ import annotations

from sdk.doctor import vendor_tool
from targets.finn.verilator import doctor_checks as verilator_checks


def doctor_checks() -> list[dict]:
    return [
        *verilator_checks(),
        vendor_tool("XILINX_VIVADO", "vivado", "FPGA: stitched IP, synthesis, bitfile").to_dict(),
        vendor_tool("XILINX_HLS", "vitis_hls", "FPGA: HLS synthesis of generated layers").to_dict(),
    ]
