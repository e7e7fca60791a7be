"""The microcontroller target: the int8 .tflite run in TensorFlow Lite Micro, its arena measured and
checked against the board's SRAM, the file against its flash.

Package contents: as the tflite target (model.tflite, tflite_info.json, QONNX
model and card, report), with the memory figures in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdk.report import Table, kib, percent, utilisation_plot
from targets.base import ComparisonCells
from targets.tflite.adapter import Measured, TfliteFamilyTarget, info_input
from targets.tflite.writer import expose_all_tensors
from targets.tflm.runtime import MemoryFit, TflmRunner, check_memory, raise_if_too_large, run_tflm


def every_tensor_in_tflm(path: Path, x: np.ndarray, workdir: Path) -> dict[str, np.ndarray]:
    """Every tensor TFLM computes: a copy of the file with all of them as graph outputs
    (TFLM hands out nothing else)."""
    exposed = workdir / f"{path.stem}.all_tensors.tflite"
    expose_all_tensors(path, exposed)
    return run_tflm(exposed, x, measure_arena=False).outputs


def memory_table(fits: list[MemoryFit], what: dict[str, str]) -> Table:
    return Table(
        "Memory against the board's capacity",
        ["memory", "holds", "used bytes", "capacity bytes", "used %", "headroom %"],
        [
            [
                f.resource.upper(),
                what[f.resource],
                f.used_bytes,
                f.capacity_bytes,
                f.used_bytes / f.capacity_bytes,
                f.headroom,
            ]
            for f in fits
        ],
    )


def memory_cells(summary: dict[str, Any], ram: int | None, flash: int | None) -> str:
    """SRAM and flash used, and their share of the board's, for the comparison table."""
    return (
        f"SRAM {kib(ram)} ({percent(summary.get('sram_used'))}) "
        f"flash {kib(flash)} ({percent(summary.get('flash_used'))})"
    )


def memory_plot(fits: list[MemoryFit]):
    def draw(pkg, report) -> None:
        utilisation_plot(
            pkg,
            report,
            "memory.png",
            {f.resource.upper(): f.used_bytes for f in fits},
            {f.resource.upper(): f.capacity_bytes for f in fits},
            None,
            title="Memory against capacity",
        )

    return draw


class TflmTarget(TfliteFamilyTarget):
    flow = "tflm"
    rounding = "tflm"
    runtime_label = "TensorFlow Lite Micro"
    default_io = "int8"
    int4_refusal = (
        "TFLite Micro has no int4 FULLY_CONNECTED kernel, and every zoo model ends in one",
        "deploy without --int4-weights (2..4-bit weights are stored exactly as int8), or use --target tflite",
    )

    tool_packages = ("tflite-micro", "flatbuffers")

    def open_runtime(self, path: Path, interpreter) -> TflmRunner:
        return TflmRunner(path)

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells:
        return ComparisonCells(
            "needs the board", memory_cells(summary, summary.get("arena_bytes"), summary.get("model_bytes"))
        )

    def check_fits(self, path: Path, x: np.ndarray, board, workdir: Path) -> None:
        arena = run_tflm(path, x, measure_arena=True)
        raise_if_too_large(check_memory(arena.arena_used_bytes, arena.model_bytes, board), board)

    def measure(self, path, info, request, pkg, progress) -> Measured:
        board = request.board
        x = info_input(request.x, info)
        tensors = every_tensor_in_tflm(path, x, request.workdir)
        progress("measure the TFLM arena")
        arena = run_tflm(path, x[:1], measure_arena=True)
        fits = check_memory(arena.arena_used_bytes, arena.model_bytes, board)
        raise_if_too_large(fits, board)
        sram, flash = fits
        return Measured(
            tensors,
            summary={
                "arena_bytes": arena.arena_used_bytes,
                "sram_used": round(1 - sram.headroom, 4),
                "flash_used": round(1 - flash.headroom, 4),
            },
            report_lines={
                "tensor arena (measured in TFLM)": f"{arena.arena_used_bytes:,} bytes of {sram.capacity_bytes:,} SRAM "
                f"({sram.headroom:.1%} headroom)",
                "model in flash": f"{arena.model_bytes:,} bytes of {flash.capacity_bytes:,} "
                f"({flash.headroom:.1%} headroom)",
            },
            tables=[memory_table(fits, {"sram": "tensor arena", "flash": "model.tflite"})],
            data={"tflm": arena.to_dict(), "memory": [f.to_dict() for f in fits]},
            messages=[
                "The arena is the smallest with which TFLM's reference kernels run the model on this 64-bit host; "
                "CMSIS-NN kernels may ask for scratch buffers on top."
            ],
            plot=memory_plot(fits),
        )
