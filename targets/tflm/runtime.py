"""Run an int8 .tflite on the real TensorFlow Lite Micro interpreter and measure its tensor arena.

TFLM is the runtime a microcontroller runs, so its outputs (not LiteRT's, not
XNNPACK's) are what the board will compute, and its arena is the SRAM the board
must set aside. The tflite-micro Python package wraps the C++ interpreter:

- it reports memory only through `print_allocations()`, which writes to C-level
  stderr (fd 2), so the output is captured by pointing fd 2 at a temporary file;
- its input batch is fixed at 1, so a batch is run one sample at a time;
- it exposes neither the number of inputs/outputs nor tensor names, so those
  are read from the flatbuffer itself;
- it trusts the flatbuffer, and its failure path for a too-small arena can
  segfault: so the file is validated in Python first, the outputs are computed
  with a generous arena, and the search for the smallest arena runs in a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sdk.boards import Board
from sdk.errors import BoardError, ModelTooLargeError
from targets.tflite.schema import OP_NAMES, builtin_code, is_tflite
from targets.tflm.errors import TflmError

# The arena search starts no lower: below ~500 bytes not even TFLM's allocator objects fit.
_ALLOCATOR_FLOOR = 1024
# Far beyond any microcontroller's SRAM; untouched arena pages cost nothing on the host.
_GENEROUS_ARENA = 1 << 28


@dataclass
class TflmRun:
    """Outputs of a batch run on TFLM and the memory the model needs.

    arena_used_bytes is the smallest arena with which this TFLM build allocates
    and invokes the model (found by bisection): the number to give
    `tensor_arena[]`. It is measured on a 64-bit host with TFLM's reference
    kernels and recording allocator; a 32-bit Cortex-M build has smaller structs
    (an upper bound there), though CMSIS-NN kernels may ask for scratch buffers
    the reference kernels do not. arena_recorded_bytes is print_allocations'
    "Arena allocation total" (head + tail), which leaves out the allocator's own
    objects and so is too small to run with. arena_allocated_bytes is the
    generous arena the outputs were computed with.
    """

    outputs: dict[str, np.ndarray]  # output tensor name -> outputs stacked over the batch
    arena_used_bytes: int
    arena_recorded_bytes: int
    arena_allocated_bytes: int
    model_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; output values are left out, only their shapes and types."""
        return {
            "outputs": {name: {"shape": list(v.shape), "dtype": str(v.dtype)} for name, v in self.outputs.items()},
            "arena_used_bytes": self.arena_used_bytes,
            "arena_recorded_bytes": self.arena_recorded_bytes,
            "arena_allocated_bytes": self.arena_allocated_bytes,
            "model_bytes": self.model_bytes,
        }


@dataclass
class MemoryFit:
    """One memory of the board against what the model needs of it."""

    resource: str  # "sram" (tensor arena) or "flash" (the .tflite)
    used_bytes: int
    capacity_bytes: int
    headroom: float  # 1 - used / capacity; negative when it does not fit
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "used_bytes": self.used_bytes,
            "capacity_bytes": self.capacity_bytes,
            "headroom": self.headroom,
            "fits": self.fits,
        }


@contextmanager
def _c_stderr(log: BinaryIO | None = None) -> Iterator[list[str]]:
    """Redirect fd 2 (where TFLM's C++ code logs) to a temp file (`log`: one the caller keeps open, emptied here, so
    that a loaded model's runs open no file); the text is in the list after exit.

    fd 2 is process-wide: do not call TFLM from two threads at once.
    """
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with nullcontext(log) if log is not None else tempfile.TemporaryFile() as tmp:
        tmp.seek(0)
        tmp.truncate()
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace"))


def _runtime() -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _load_model(path: Path) -> tuple[bytes, schema.ModelT]:
    """The file's bytes and parsed flatbuffer; refuses what is not a .tflite before TFLM sees it."""
    fix = (
        "pass the .tflite written by the SDK (`sdk deploy` or targets.tflite.writer.write_tflite); a Vela-compiled "
        "file (ethos-u custom op) needs the Ethos-U driver: run TFLM on the .tflite before Vela"
    )
    if not path.is_file():
        raise TflmError(f"TFLite file {path} does not exist.", where=str(path), fix=fix)
    data = path.read_bytes()
    if not is_tflite(data):
        raise TflmError(f"{path.name} is not a TFLite flatbuffer (no 'TFL3' identifier).", where=str(path), fix=fix)
    from targets.tflite.reader import parse_tflite

    model = parse_tflite(data, TflmError, str(path), fix)  # checked before TFLM's native code reads a byte
    if not model.subgraphs or len(model.subgraphs[0].inputs) != 1:
        raise TflmError(f"{path.name} must have one subgraph with one input.", where=str(path), fix=fix)
    return data, model


def _op_names(model: schema.ModelT) -> list[str]:
    names = []
    for code in model.operatorCodes or []:
        builtin = builtin_code(code)
        name = OP_NAMES.get(builtin, str(builtin))
        names.append(f"{name}({code.customCode.decode('utf-8', 'replace')})" if code.customCode else name)
    return names


def _load_error(path: Path, model: schema.ModelT, log: str) -> TflmError:
    """Turn TFLM's stderr after a failed load into a message saying which op and what to do."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    detail = "; ".join(lines[-3:]) or "no message from TFLM"
    ops = ", ".join(_op_names(model))
    if "Failed to allocate" in log:
        return TflmError(
            f"{path.name} needs more than {_GENEROUS_ARENA >> 20} MiB of tensor arena: {detail}",
            where=f"{path} (ops: {ops})",
            fix="no microcontroller has that much SRAM: "
            "train a smaller model (fewer or narrower layers, smaller input)",
        )
    if "registration" in log or "Didn't find op" in log or "failed to prepare" in log:
        return TflmError(
            f"TFLM cannot run an operator of {path.name}: {detail}",
            where=f"{path} (ops: {ops})",
            fix=f"keep to the ops and types the SDK writer emits (int8 {', '.join(_written_ops())}; no int4 "
            "FULLY_CONNECTED); a Vela-compiled file needs the Ethos-U driver: run TFLM on the .tflite before Vela",
        )
    return TflmError(
        f"TFLM could not load {path.name}: {detail}",
        where=f"{path} (ops: {ops})",
        fix="re-export the model with the SDK; if it persists, report it with this file",
    )


def _written_ops() -> list[str]:
    """The builtin ops the SDK's writer emits, by their TFLite names (one OpSpec each)."""
    from targets.tflite.ops import OP_SPECS

    return [OP_NAMES[code] for code in OP_SPECS]


def _new_interpreter(data: bytes, arena: int) -> tuple[Any | None, str]:
    """(interpreter or None, TFLM's log) for one arena size."""
    runtime = _runtime()
    with _c_stderr() as log:
        try:
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=arena)
        except RuntimeError:
            interpreter = None
    return interpreter, log[0]


# Child process that answers "does this arena size load and invoke?" one size per line.
_PROBE = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
for line in sys.stdin:
    try:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(line))
        detail = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
        interpreter.invoke()
        print(1, flush=True)
    except RuntimeError:
        print(0, flush=True)
"""


class _ArenaProber:
    """Tries arena sizes in a child process, because TFLM's failure path for a too-small
    arena segfaults at some sizes (seen at 4520-4532 bytes for a 4648-byte model): a
    crash of the child counts as "does not fit" and a fresh child takes the next size."""

    def __init__(self, path: Path):
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    def __call__(self, arena: int) -> bool:
        if self.proc is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _PROBE, str(self.path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(f"{arena}\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:  # the child crashed
            self.close()
            return False
        return answer.strip() == "1"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _smallest_arena(path: Path, recorded: int, works: int) -> int:
    """Bisect [recorded total, a size known to work] for the smallest arena that loads and invokes."""
    probe = _ArenaProber(path)
    try:
        low, high = max(recorded, _ALLOCATOR_FLOOR), works
        guess = recorded + 4096  # the allocator's own objects are well under this: shortens the search
        if low < guess < high:
            high, low = (guess, low) if probe(guess) else (high, guess + 1)
        while low < high:
            mid = (low + high) // 2
            if probe(mid):
                high = mid
            else:
                low = mid + 1
        return low
    finally:
        probe.close()


def _recorded_total(interpreter: Any) -> int:
    """print_allocations' 'Arena allocation total N bytes', captured from fd 2."""
    with _c_stderr() as log:
        interpreter.print_allocations()
    for line in log[0].splitlines():
        if "Arena allocation total" in line:
            return int(line.split("total")[1].split()[0])
    raise RuntimeError(f"print_allocations gave no arena total:\n{log[0]}")  # a TFLM version change: a bug here


class TflmRunner:
    """A .tflite read, checked and made into one TFLM interpreter (with a generous arena), for any number of batches:
    a loaded package's runs read no file."""

    def __init__(self, tflite_path: Path | str):
        self.path = Path(tflite_path)
        self.data, self.model = _load_model(self.path)
        graph = self.model.subgraphs[0]
        self.out_names = [graph.tensors[i].name.decode("utf-8", "replace") for i in graph.outputs]
        interpreter, log = _new_interpreter(self.data, _GENEROUS_ARENA)
        if interpreter is None:
            raise _load_error(self.path, self.model, log)
        self.interpreter = interpreter
        detail = interpreter.get_input_details(0)
        self.shape, self.dtype = tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"])
        self._log = tempfile.TemporaryFile()  # TFLM's log of each run, in a file opened once
        weakref.finalize(self, self._log.close)

    def __call__(self, x_int8: np.ndarray) -> dict[str, np.ndarray]:
        """Each of the N samples in x_int8 through TFLM (its input batch is 1); the outputs stacked over the batch."""
        x = np.asarray(x_int8)
        if x.dtype != self.dtype or x.ndim == 0 or len(x) == 0 or x[0].size != int(np.prod(self.shape)):
            raise TflmError(
                f"Input of dtype {x.dtype} and shape {x.shape} does not fit the model's input {self.dtype} "
                f"{list(self.shape)}.",
                where=f"run_tflm({self.path.name})",
                fix=f"pass N samples of {int(np.prod(self.shape))} {self.dtype} values each",
            )
        samples = x.reshape((len(x), *self.shape))
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in self.out_names}
        with _c_stderr(self._log) as log:
            try:
                for sample in samples:
                    self.interpreter.set_input(sample, 0)
                    self.interpreter.invoke()
                    for i, name in enumerate(self.out_names):
                        outputs[name].append(self.interpreter.get_output(i).copy())
            except RuntimeError:
                pass
        if len(outputs[self.out_names[0]]) != len(samples):
            raise _load_error(self.path, self.model, log[0])
        return {name: np.concatenate(values) for name, values in outputs.items()}


def run_tflm(tflite_path: Path | str, x_int8: np.ndarray, measure_arena: bool = True) -> TflmRun:
    """Run each of the N samples in x_int8 through TFLM; outputs stacked over the batch.

    x_int8 is (N, ...) with the model's input dtype and N * prod(input shape without batch)
    values. With measure_arena=False the arena search is skipped and arena_used_bytes
    is the recorded total (faster, but too small to run with by a few hundred bytes).
    """
    runner = TflmRunner(tflite_path)
    stacked = runner(x_int8)
    recorded = _recorded_total(runner.interpreter)
    used = _smallest_arena(runner.path, recorded, _GENEROUS_ARENA) if measure_arena else recorded
    return TflmRun(stacked, used, recorded, _GENEROUS_ARENA, len(runner.data))


def _fit(resource: str, used: int, capacity: int) -> MemoryFit:
    headroom = 1.0 - used / capacity if capacity else float("-inf")
    return MemoryFit(resource, int(used), int(capacity), headroom, used <= capacity)


def check_memory(arena_bytes: int, model_bytes: int, board: Board) -> list[MemoryFit]:
    """The arena against the board's SRAM, the .tflite against its flash.

    Only the model is counted: the TFLM library, the application, its stack and
    buffers also live there, which is what the headroom is for.
    """
    missing = [key for key in ("sram_bytes", "flash_bytes") if key not in board.capacity]
    if missing:
        raise BoardError(
            f"Board '{board.name}' gives no {', '.join(missing)}, so the model's memory cannot be checked.",
            where=str(board.path),
            fix=f"add capacity.{missing[0]} to the board file",
        )
    return [
        _fit("sram", arena_bytes, board.capacity["sram_bytes"]),
        _fit("flash", model_bytes, board.capacity["flash_bytes"]),
    ]


def raise_if_too_large(fits: list[MemoryFit], board: Board) -> None:
    """Raise ModelTooLargeError naming every memory the model overflows."""
    over = [f for f in fits if not f.fits]
    if not over:
        return
    what = "; ".join(
        f"{'tensor arena' if f.resource == 'sram' else 'model file'} needs {f.used_bytes:,} bytes of "
        f"{f.resource.upper()}, the board has {f.capacity_bytes:,}"
        for f in over
    )
    needs = " and ".join(f.resource.upper() for f in over)
    raise ModelTooLargeError(
        f"Model does not fit {board.display_name}: {what}.",
        where=f"board {board.name} ({board.path})",
        fix=f"train a smaller model (fewer or narrower layers, a smaller input; the .tflite stores 2..8-bit "
        f"weights as int8, so fewer bits alone do not shrink it) or pick a board with more {needs} (`sdk boards`)",
    )
