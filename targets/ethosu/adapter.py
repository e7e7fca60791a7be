"""The Ethos-U target: the int8 .tflite verified in TensorFlow Lite Micro (the CPU-side runtime of
an Ethos-U system), then compiled by Vela for the board's accelerator, system config and memory mode.

Package contents: as the tflite target, plus
  model_vela.tflite       Vela's output: the NPU command stream(s) in ethos-u custom ops
  vela_summary.json       cycles, inferences/s at the board clock, SRAM and flash, ops left to the CPU
  vela.log                Vela's own output
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sdk.report import Table, bar_plot
from targets.base import ComparisonCells
from targets.ethosu.vela import compile_vela
from targets.tflite.adapter import Measured, TfliteFamilyTarget, info_input
from targets.tflm.adapter import every_tensor_in_tflm, memory_cells, memory_plot, memory_table
from targets.tflm.runtime import TflmRunner, check_memory, raise_if_too_large

VELA_MODEL_NAME = "model_vela.tflite"


class EthosuTarget(TfliteFamilyTarget):
    flow = "ethosu"
    rounding = "tflm"
    runtime_label = "TensorFlow Lite Micro (pre-Vela)"
    default_io = "int8"
    int4_refusal = (
        "the pre-Vela model is verified in TFLite Micro, which has no int4 FULLY_CONNECTED kernel",
        "deploy without --int4-weights (2..4-bit weights are stored exactly as int8)",
    )

    artifact_name = VELA_MODEL_NAME
    tool_packages = ("tflite-micro", "ethos-u-vela", "flatbuffers")

    def open_runtime(self, path: Path, interpreter) -> TflmRunner:
        return TflmRunner(path)

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells:
        per_second = summary.get("inferences_per_second")
        return ComparisonCells(
            f"{per_second:,.0f}/s (Vela)" if per_second else "-",
            memory_cells(summary, summary.get("sram_bytes"), summary.get("off_chip_bytes")),
        )

    def check_fits(self, path: Path, x: np.ndarray, board, workdir: Path) -> None:
        s = compile_vela(path, board, workdir / "vela").summary
        raise_if_too_large(check_memory(s["sram_bytes"], s["flash_bytes"] + s["dram_bytes"], board), board)

    def measure(self, path, info, request, pkg, progress) -> Measured:
        board = request.board
        tensors = every_tensor_in_tflm(path, info_input(request.x, info), request.workdir)
        progress(f"compile with Vela for {board.section('ethosu')['accelerator_config']}")
        if request.clock_mhz != board.clock_mhz:  # --clock-mhz: Vela's cycles at the overriding clock
            board = replace(board, clock_mhz=request.clock_mhz)
        vela = compile_vela(path, board, request.workdir / "vela")
        s = vela.summary
        off_chip = s["flash_bytes"] + s["dram_bytes"]  # weights live in flash, or in DRAM in the Dedicated_Sram modes
        fits = check_memory(s["sram_bytes"], off_chip, board)
        raise_if_too_large(fits, board)
        shutil.copyfile(vela.optimised_tflite, pkg.path(VELA_MODEL_NAME))
        if vela.log_path is not None:  # the build's scratch paths are no part of the package (nor its identity)
            log = vela.log_path.read_text(errors="replace")
            for scratch, shown in ((request.workdir / "vela", "vela-output"), (path.parent, ".")):
                log = log.replace(str(scratch.resolve()), shown).replace(str(scratch), shown)
            pkg.write_text("vela.log", log)
        pkg.write_json(
            "vela_summary.json", vela.to_dict() | {"optimised_tflite": VELA_MODEL_NAME, "log_path": "vela.log"}
        )
        cpu_ops = [f"{op['op']} ({op.get('reason') or 'not supported on the NPU'})" for op in s["cpu_ops"]]
        per_second = s["inferences_per_second"] or 0.0  # None when Vela reports no cycles
        latency_us = 1e6 / per_second if per_second else None
        names, cycles = [n for n, _ in vela.per_layer], [c for _, c in vela.per_layer]

        def plots(pkg_, report) -> None:
            if names:
                bar_plot(
                    pkg_, report, "vela_cycles_per_layer.png", names, cycles, "Vela's NPU cycles per layer", "cycles"
                )
            memory_plot(fits)(pkg_, report)

        return Measured(
            tensors,
            summary={
                "inferences_per_second": round(per_second, 1),
                "latency_us": None if latency_us is None else round(latency_us, 2),
                "cycles": s["cycles"],
                "sram_bytes": s["sram_bytes"],
                "off_chip_bytes": off_chip,
                "sram_used": round(1 - fits[0].headroom, 4),
                "flash_used": round(1 - fits[1].headroom, 4),
                "cpu_ops": len(s["cpu_ops"]),
            },
            report_lines={
                "Vela": f"{vela.vela_version}: {s['accelerator_config']}, {s['system_config']}, {s['memory_mode']}",
                "estimated throughput": f"{per_second:,.0f} inferences/s "
                f"({s['cycles']:,} cycles at {board.clock_mhz:g} MHz)",
                "SRAM (Vela's arena)": f"{s['sram_bytes']:,} bytes of {fits[0].capacity_bytes:,}",
                "flash / DRAM (weights, command stream)": f"{off_chip:,} bytes of {fits[1].capacity_bytes:,}",
                "ops left to the CPU": ", ".join(cpu_ops) or "none",
            },
            tables=[
                memory_table(fits, {"sram": "Vela's tensor arena", "flash": "weights and command stream"}),
                Table("Vela per layer (NPU cycles)", ["layer", "cycles"], [list(row) for row in vela.per_layer]),
            ],
            data={
                "vela": vela.to_dict() | {"optimised_tflite": VELA_MODEL_NAME, "log_path": "vela.log"},
                "memory": [f.to_dict() for f in fits],
            },
            messages=[
                f"Vela's figures are its performance estimates for {s['accelerator_config']}; "
                f"{len(s['cpu_ops'])} op(s) run on the CPU: {', '.join(cpu_ops) or 'none'}."
            ],
            plot=plots,
        )
