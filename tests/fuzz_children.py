"""Readers in native code (LiteRT, TFLite Micro, torch's zip reader), run on fuzzed files in forked children.

A signal in native code would kill the test run, so each file is read in a child. Forking the pytest worker
itself costs about 20 ms a child (it holds torch, FINN and Brevitas); a small server process that holds only what
its readers need forks in 1-6 ms. The server reads "reader<TAB>path" lines, forks a child per line and answers
with the child's end ("exit N", "signal N" or "hang") and its report (a traceback, when it raised).

Every case ends in one Outcome of four kinds, the columns of the fuzz table (tests/fuzz_table.py): clean (an
SDKError or a success), traceback (another exception, an InternalError or a signal), wrongly accepted (a success
an oracle refutes: the case raises WronglyAccepted) and hang (past the case's time limit).

This module is imported by the server, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EXIT_OK, EXIT_FOREIGN, EXIT_SDK, EXIT_INTERNAL, EXIT_WRONG = 0, 1, 2, 3, 4
CLEAN, TRACEBACK, WRONG, HANG = "clean", "traceback", "wrongly accepted", "hang"
KINDS = (CLEAN, TRACEBACK, WRONG, HANG)
CHILD_MEMORY = 3 << 30  # bytes a forked child may map beyond its parent's: a memory bomb is a MemoryError, not OOM


class WronglyAccepted(Exception):
    """Raised by a case's oracle: the reader accepted (or ran) what it must refuse."""


class Hang(BaseException):
    """An in-process case passed its time limit (a BaseException: the SDK's `except Exception` lets it through)."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # one of KINDS
    detail: str = ""  # the traceback, the oracle's finding or the signal; "ok" / "sdk" for a clean case
    seconds: float = field(default=0.0, compare=False)  # how long the case took

    @property
    def signature(self) -> str:
        """What tells two failures apart: the exception (type and first words) and the innermost frame raising it."""
        if self.kind in (CLEAN, HANG):
            return self.kind
        lines = [line for line in self.detail.strip().splitlines() if line.strip()]
        if not lines or not lines[0].startswith("Traceback"):  # "signal N"
            return lines[0] if lines else self.kind
        last_exception = lines[-1]
        if self.kind == WRONG:  # the oracle's sentence, its numbers and quoted values left out: one line per kind
            sentence = last_exception.split("WronglyAccepted: ", 1)[-1]
            return re.sub(r"'[^']*'|\"[^\"]*\"|-?\d+(\.\d+)?(e[-+]?\d+)?", "#", sentence)[:160]
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', self.detail.rsplit("Traceback", 1)[-1])
        where = ""
        if frames:
            path, line, name = frames[-1]
            where = f" at {re.sub(r'^.*/(site-packages|wt-[^/]+|main)/', '', path)}:{line} in {name}"
        words = re.sub(r"\s+", " ", last_exception)
        return f"{words[:100]}{where}"


def outcome_of(end: str, value: int, report: str) -> Outcome:
    """The Outcome of a forked child's end (see run_forked)."""
    if end == "hang":
        return Outcome(HANG)
    if end == "signal":
        return Outcome(TRACEBACK, f"signal {value} ({signal.Signals(value).name})")
    if value == EXIT_OK:
        return Outcome(CLEAN, "ok")
    if value == EXIT_SDK:
        return Outcome(CLEAN, "sdk")
    if value == EXIT_WRONG:
        return Outcome(WRONG, report)
    return Outcome(TRACEBACK, report or f"exit {value}")


def timed(run: Callable[[], Outcome]) -> Outcome:
    """run()'s Outcome with the seconds it took."""
    start = time.perf_counter()
    outcome = run()
    return replace(outcome, seconds=time.perf_counter() - start)


def run_in_process(call: Callable[[], object], timeout: float) -> Outcome:
    """`call` in this process under a SIGALRM time limit (for readers in Python: a loop in Python is a hang; one in
    native code is not caught, which is what the forked children are for)."""
    return timed(lambda: _run_in_process(call, timeout))


def _run_in_process(call: Callable[[], object], timeout: float) -> Outcome:
    from sdk.errors import InternalError, SDKError

    def expire(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        call()
        return Outcome(CLEAN, "ok")
    except Hang:
        return Outcome(HANG)
    except WronglyAccepted:
        return Outcome(WRONG, traceback.format_exc())
    except InternalError:
        return Outcome(TRACEBACK, traceback.format_exc())
    except SDKError as exc:
        if not exc.what or exc.exit_code != 2:
            return Outcome(TRACEBACK, f"an SDKError without what or exit 2: {exc!r}")
        return Outcome(CLEAN, "sdk")
    except Exception:
        return Outcome(TRACEBACK, traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _limit_memory(extra: int) -> None:
    """Let this process map at most `extra` bytes more than it has mapped now."""
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, mapped + extra))


def zeros_input(model, batch: int = 2) -> np.ndarray:
    """Zeros of a .tflite object model's input (batch x its shape without the batch)."""
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    tensor = graph.tensors[int(graph.inputs[0])]
    dtype = np.float32 if tensor.type == schema.TensorType.FLOAT32 else np.int8
    return np.zeros([batch, *[int(d) for d in tensor.shape[1:]]], dtype)


def _input_for(path: Path) -> np.ndarray:
    from ai_edge_litert import schema_py_generated as schema

    try:
        return zeros_input(schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0), 1)
    except Exception:
        return np.zeros((1, 1), np.int8)  # a file this broken is refused before the input matters


def read_litert(path: Path) -> None:
    """Open, feed zeros of the file's input, invoke (LiteRT's C++ on the file)."""
    from targets.tflite.runtime import run_litert

    x = _input_for(path)
    with contextlib.suppress(ValueError):  # _feed's own check of the caller's x against the file's input
        run_litert(path, x)


def read_tflm(path: Path) -> None:
    """TFLite Micro's own reader and interpreter on the file (arena measured, as a deploy does)."""
    from targets.tflm.runtime import run_tflm

    x = _input_for(path)
    with contextlib.suppress(ValueError):
        run_tflm(path, x)


def read_checkpoint(path: Path) -> None:
    """A run folder's checkpoint through the SDK's loader (torch's zip reader, then the model built from it)."""
    from sdk.qat import load_checkpoint

    load_checkpoint(path)


READERS = {"litert": read_litert, "tflm": read_tflm, "checkpoint": read_checkpoint}
PRELOAD = {"litert": ["targets.tflite.runtime"], "tflm": ["targets.tflm.runtime"], "checkpoint": ["sdk.qat"]}


def run_forked(call, timeout: float, memory: int | None = CHILD_MEMORY) -> tuple[str, int, str]:
    """(end, value, report) of `call` in a forked child: ("exit", code, traceback or "") or ("signal", N, "") or
    ("hang", 0, ""). The child may map `memory` bytes beyond what it inherits (None: no limit)."""
    from sdk.errors import InternalError, SDKError

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running anyone's teardown
        os.close(read)
        faulthandler.disable()  # a crash is the parent's to report, without pytest's dump of the child's stack
        code, text = EXIT_OK, b""
        try:
            if memory is not None:
                _limit_memory(memory)
            call()
        except WronglyAccepted:
            code, text = EXIT_WRONG, traceback.format_exc().encode()
        except InternalError:
            code, text = EXIT_INTERNAL, traceback.format_exc().encode()
        except SDKError as exc:
            code = EXIT_SDK
            if not exc.what or exc.exit_code != 2:
                code, text = EXIT_INTERNAL, f"an SDKError without what or exit 2: {exc!r}".encode()
        except BaseException:
            code, text = EXIT_FOREIGN, traceback.format_exc().encode()
        os.write(write, text[-4000:])
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        if not select.select([fh], [], [], timeout)[0]:  # the pipe closes when the child ends, however it ends
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang", 0, ""
        report = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status), report
    return "exit", os.WEXITSTATUS(status), report


def serve(timeout: float) -> None:
    """The server's loop: one forked child per request line, one answer each."""
    out = os.fdopen(os.dup(1), "wb")  # the answers' own channel: whatever a reader prints goes to stderr
    os.dup2(2, 1)
    for line in sys.stdin:
        reader, path = line.rstrip("\n").split("\t", 1)
        end, value, report = run_forked(lambda reader=reader, path=path: READERS[reader](Path(path)), timeout)
        data = report.encode()
        out.write(f"{end} {value} {len(data)}\n".encode() + data)
        out.flush()


class ChildServer:
    """A server process for one reader: `read(path)` is the Outcome of the reader on the file, in a child."""

    def __init__(self, reader: str, warm_up: Path, timeout: float = 120.0):
        """`warm_up`: a good file, read once in the server itself, so that what a read imports or initialises
        lazily is there before the first fork and not done again in every child."""
        root = HERE.parent
        code = (
            "import sys, importlib, pathlib, fuzz_children as f\n"
            f"[importlib.import_module(m) for m in {PRELOAD[reader]!r}]\n"
            f"f.READERS[{reader!r}](pathlib.Path({str(warm_up)!r}))\n"
            f"f.serve({timeout!r})\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(root), os.environ.get("PYTHONPATH", "")])}
        self.reader, self.timeout = reader, timeout
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, env=env
        )

    def read(self, path: Path) -> Outcome:
        start = time.perf_counter()
        self.process.stdin.write(f"{self.reader}\t{path}\n".encode())
        self.process.stdin.flush()
        header = self.process.stdout.readline().decode()
        if not header:
            raise RuntimeError(f"the {self.reader} server ended (exit {self.process.wait()})")
        end, value, size = header.split()
        report = self.process.stdout.read(int(size)).decode(errors="replace")
        return replace(outcome_of(end, int(value), report), seconds=time.perf_counter() - start)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
