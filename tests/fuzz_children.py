"""Readers in native code (LiteRT, TFLite Micro, torch's zip reader), run on fuzzed files in forked children.

A signal in native code would kill the test run, so each file is read in a child. Forking the pytest worker
itself costs about 20 ms a child (it holds torch, FINN and Brevitas); a small server process that holds only what
its readers need forks in 1-6 ms. The server reads "reader<TAB>path" lines, forks a child per line and answers
with the child's end ("exit N", "signal N" or "hang") and its report (a traceback, when it raised).

This module is imported by the server, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import select
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EXIT_OK, EXIT_FOREIGN, EXIT_SDK, EXIT_INTERNAL = 0, 1, 2, 3


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


def run_forked(call, timeout: float) -> tuple[str, int, str]:
    """(end, value, report) of `call` in a forked child: ("exit", code, traceback or "") or ("signal", N, "") or
    ("hang", 0, "")."""
    from sdk.errors import InternalError, SDKError

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running anyone's teardown
        os.close(read)
        faulthandler.disable()  # a crash is the parent's to report, without pytest's dump of the child's stack
        code, text = EXIT_OK, b""
        try:
            call()
        except InternalError:
            code, text = EXIT_INTERNAL, traceback.format_exc().encode()
        except SDKError:
            code = EXIT_SDK
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


def verdict(end: str, value: int, report: str, timeout: float) -> str:
    """'ok' or 'sdk' (an SDKError) for a child's end; a failed test for a hang, a signal or another exception."""
    import pytest

    if end == "hang":
        pytest.fail(f"the reader hung for {timeout:.0f} s")
    assert end != "signal", f"the reader crashed with signal {value}"
    assert value in (EXIT_OK, EXIT_SDK), f"the reader raised a foreign exception:\n{report}"
    return "ok" if value == EXIT_OK else "sdk"


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
    """A server process for one reader: `read(path)` is 'ok' or 'sdk', and fails the test on anything else."""

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

    def read(self, path: Path) -> str:
        import pytest

        self.process.stdin.write(f"{self.reader}\t{path}\n".encode())
        self.process.stdin.flush()
        header = self.process.stdout.readline().decode()
        if not header:
            pytest.fail(f"the {self.reader} server ended (exit {self.process.wait()})")
        end, value, size = header.split()
        return verdict(end, int(value), self.process.stdout.read(int(size)).decode(errors="replace"), self.timeout)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
