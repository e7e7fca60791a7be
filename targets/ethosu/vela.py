"""Compile an int8 .tflite for an Arm Ethos-U NPU with Arm's Vela, and read its estimates.

Vela (ethos-u-vela) is run as `python -m ethosu.vela` with the interpreter of this
venv, so the compiler is the one pinned with the SDK, whatever is on PATH. It
writes three files used here:

- `<stem>_vela.tflite`: NPU work folded into `ethos-u` custom ops; every other
  op is left for the CPU (TFLM) and listed as a CPU op here;
- `<stem>_summary_<system config>.csv`: cycles, memory in KiB, inferences/s at the
  system config's core clock;
- `<stem>_per-layer.csv` (from --verbose-performance): cycles per operator; these
  sum to the summary's total cycles.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ai_edge_litert import schema_py_generated as schema

from sdk.boards import Board
from targets.ethosu.errors import VelaError
from targets.tflite.schema import OP_NAMES, builtin_code, is_tflite

NPU_CUSTOM_CODE = b"ethos-u"


def vela_ini() -> Path:
    """Vela's bundled Arm/vela.ini, where the boards' system configs and memory modes are defined.

    `ethosu` is a namespace package (its __file__ is None): go through ethosu.vela.
    """
    import ethosu.vela

    return Path(ethosu.vela.__file__).parent.parent / "config_files" / "Arm" / "vela.ini"


@dataclass
class VelaResult:
    """What Vela made of one model for one board.

    summary holds: cycles (Vela's total estimate, compute and memory traffic
    together), npu_cycles (compute alone), inferences_per_second (board clock /
    cycles), vela_inferences_per_second (Vela's own, at its system config's core
    clock), sram_bytes, flash_bytes (off- plus on-chip flash), dram_bytes, macs,
    cpu_ops (op, output tensor and Vela's reason for each op left to the CPU),
    npu_ops (source operators Vela put on the NPU, as Vela counts them) and
    npu_command_streams (ethos-u custom ops in the output).
    """

    optimised_tflite: Path
    summary: dict[str, Any]
    per_layer: list[tuple[str, int]] = field(default_factory=list)  # (output tensor name, NPU cycles), in order
    vela_version: str = ""
    log_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimised_tflite": str(self.optimised_tflite),
            "summary": self.summary,
            "per_layer": [{"name": n, "cycles": c} for n, c in self.per_layer],
            "vela_version": self.vela_version,
            "log_path": str(self.log_path) if self.log_path else None,
        }


def vela_command(tflite_path: Path, board: Board, out_dir: Path) -> list[str]:
    """The Vela command line for a board (argument list: no shell)."""
    vela = board.section("ethosu")
    return [
        sys.executable,
        "-m",
        "ethosu.vela",
        str(tflite_path),
        "--accelerator-config",
        vela["accelerator_config"],
        "--system-config",
        vela["system_config"],
        "--memory-mode",
        vela["memory_mode"],
        "--config",
        str(vela_ini()),
        "--output-dir",
        str(out_dir),
        "--verbose-performance",
    ]


def _tail(text: str, lines: int = 4) -> str:
    """Vela's own message: the exception line after a traceback, else the last lines."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in kept):
        kept = kept[-1:]
    return "\n".join(kept[-lines:]) or "(no output)"


def _run(tflite_path: Path, board: Board, out_dir: Path) -> tuple[str, Path]:
    """Run Vela; its stdout on success, the full log in out_dir/vela.log either way."""
    command = vela_command(tflite_path, board, out_dir)
    log = out_dir / "vela.log"
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=out_dir, timeout=1800)
    except subprocess.TimeoutExpired:
        raise VelaError(
            f"Vela did not finish compiling {tflite_path.name} for {board.name} in 30 minutes.",
            where=str(tflite_path),
            fix="compile a smaller model, or run the command in the log by hand",
        ) from None
    log.write_text(
        f"$ {' '.join(command)}\n[exit {done.returncode}]\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    if done.returncode != 0:
        head = tflite_path.read_bytes()[:8]
        hint = "" if is_tflite(head) else " (the file is not a TFLite flatbuffer: no 'TFL3' identifier)"
        raise VelaError(
            f"Vela failed to compile {tflite_path.name} for {board.display_name}{hint}:\n"
            f"{_tail(done.stderr or done.stdout)}",
            where=f"{tflite_path} (full log: {log})",
            fix="pass an int8 .tflite written by the SDK's TFLite writer; if the file is valid, "
            f"check the board's vela settings in {board.path} against `vela --list-configs {vela_ini()}`",
        )
    return done.stdout, log


def _expect(path: Path, log: Path) -> Path:
    if not path.is_file():  # Vela's output naming changed: a bug of this adapter, not the user's
        raise RuntimeError(f"Vela succeeded but wrote no {path.name}; see {log}")
    return path


def _cpu_reasons(stdout: str) -> dict[str, str]:
    """Why Vela left each op to the CPU, by output tensor, from its 'Warning (supported operators)' lines."""
    pattern = re.compile(r"operator: \w+, ofm: '([^']*)'\s*\n\s*Reason: (.+)")
    return {name: reason.strip() for name, reason in pattern.findall(stdout)}


def _ops(optimised: Path, reasons: dict[str, str]) -> tuple[int, list[dict[str, str]]]:
    """(number of ethos-u command streams, ops left for the CPU with Vela's reason) in Vela's output .tflite."""
    model = schema.ModelT.InitFromPackedBuf(optimised.read_bytes(), 0)
    codes = model.operatorCodes or []
    npu_streams, cpu_ops = 0, []
    for graph in model.subgraphs:
        for op in graph.operators or []:
            code = codes[op.opcodeIndex]
            if code.customCode == NPU_CUSTOM_CODE:
                npu_streams += 1
                continue
            builtin = OP_NAMES.get(builtin_code(code), "?")
            name = code.customCode.decode("utf-8", "replace") if code.customCode else builtin
            output = graph.tensors[op.outputs[0]].name.decode("utf-8", "replace") if len(op.outputs) else ""
            cpu_ops.append({"op": name, "output": output, "reason": reasons.get(output, "")})
    return npu_streams, cpu_ops


def _per_layer(path: Path) -> list[tuple[str, int]]:
    """NPU cycles per output tensor, merging the rows Vela splits one op into (e.g. FC + fused Relu)."""
    cycles: dict[str, int] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Target"] == "NPU":
                cycles[row["Name"]] = cycles.get(row["Name"], 0) + int(float(row["Op Cycles"]))
    return list(cycles.items())


def _kib(value: str) -> int:
    return round(float(value) * 1024)


def compile_vela(tflite_path: Path | str, board: Board, out_dir: Path | str) -> VelaResult:
    """Compile tflite_path for board (kind npu) into out_dir and summarise Vela's estimates.

    inferences_per_second is computed from Vela's total cycles at board.clock_mhz,
    so a board file's clock is what the report uses; Vela's own figure (at the
    system config's core clock, equal for the built-in boards) is kept beside it.
    """
    tflite_path, out_dir = Path(tflite_path).resolve(), Path(out_dir).resolve()
    vela = board.section("ethosu")
    if not vela:
        raise VelaError(
            f"Board '{board.name}' is not an Ethos-U board (no vela settings).",
            where=str(board.path),
            fix="pick an Ethos-U board (`sdk boards --kind npu`) or add a vela: section to the board file",
        )
    if not tflite_path.is_file():
        raise VelaError(
            f"TFLite file {tflite_path} does not exist.", where=str(tflite_path), fix="write the .tflite first"
        )
    from targets.tflite.reader import parse_tflite

    parse_tflite(
        tflite_path.read_bytes(), VelaError, str(tflite_path), "pass the int8 .tflite written by the SDK's writer"
    )  # checked before Vela reads it
    out_dir.mkdir(parents=True, exist_ok=True)
    stdout, log = _run(tflite_path, board, out_dir)
    stem = tflite_path.stem
    optimised = _expect(out_dir / f"{stem}_vela.tflite", log)
    with _expect(out_dir / f"{stem}_summary_{vela['system_config']}.csv", log).open(newline="") as f:
        row = next(csv.DictReader(f))
    npu_streams, cpu_ops = _ops(optimised, _cpu_reasons(stdout))
    counted = re.search(r"^NPU operators = (\d+)", stdout, re.MULTILINE)
    cycles = int(float(row["cycles_total"]))
    summary = {
        "accelerator_config": vela["accelerator_config"],
        "system_config": vela["system_config"],
        "memory_mode": vela["memory_mode"],
        "clock_mhz": board.clock_mhz,
        "cycles": cycles,
        "npu_cycles": int(float(row["cycles_npu"])),
        "inferences_per_second": board.clock_mhz * 1e6 / cycles if cycles else None,
        "vela_inferences_per_second": float(row["inferences_per_second"]),
        "vela_core_clock_mhz": float(row["core_clock"]) / 1e6,
        "sram_bytes": _kib(row["sram_memory_used"]),
        "flash_bytes": _kib(row["off_chip_flash_memory_used"]) + _kib(row["on_chip_flash_memory_used"]),
        "dram_bytes": _kib(row["dram_memory_used"]),
        "macs": int(float(row["nn_macs"])),
        "cpu_ops": cpu_ops,
        "npu_ops": int(counted.group(1)) if counted else None,
        "npu_command_streams": npu_streams,
    }
    per_layer = _per_layer(_expect(out_dir / f"{stem}_per-layer.csv", log))
    return VelaResult(optimised, summary, per_layer, metadata.version("ethos-u-vela"), log)
