"""Readers in native code (LiteRT, TFLite Micro, torch's zip reader), `sdk check` and a package's `sdk.simulate`, run
on fuzzed files in forked children.

A signal in native code would kill the test run, so each file is read in a child; `sdk check` and `sdk.simulate` may
loop or allocate without bound, so they run in one with a time and a memory limit. Forking the pytest worker itself
costs about 20 ms a child (it holds torch, FINN and Brevitas) and more for the pages a child then touches; a small
server process that holds only what its readers need forks in 1-6 ms. The server reads "reader<TAB>path" lines,
forks a child per line and answers with the child's end ("exit N", "signal N" or "hang") and its report (a
traceback, when it raised).

Every case ends in one Outcome of four kinds, the columns of the fuzz table (tests/fuzz_table.py): clean (an
SDKError or a success), traceback (another exception, an InternalError or a signal), wrongly accepted (a success
an oracle refutes: the case raises WronglyAccepted) and hang (past the case's time limit).

This module is imported by the server, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import ast
import contextlib
import faulthandler
import json
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
            return _generic(last_exception.split("WronglyAccepted: ", 1)[-1])[:160]
        frames = list(re.finditer(r'File "([^"]+)", line (\d+), in (\S+)', self.detail))
        where = ""
        if frames:
            path, line, name = frames[-1].groups()
            where = f" at {re.sub(r'^.*/(site-packages|wt-[^/]+|main)/', '', path)}:{line} in {name}"
            after = self.detail[frames[-1].end() :].splitlines()[1:]  # the frame's source line, carets, the exception
            exception = [text for text in after if text.strip() and not text.startswith(" ")]
            last_exception = exception[0] if exception else last_exception
        return f"{_generic(last_exception)[:100]}{where}"


def _generic(message: str) -> str:
    """A message with its numbers and quoted values as #: failures that differ only in them are one failure."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|-?\d+(\.\d+)?(e[-+]?\d+)?", "#", re.sub(r"\s+", " ", message))


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


def must_refuse(data: bytes) -> list[str]:
    """What an oracle can tell about a graph every reader must refuse: a non-finite initializer (a NaN in one
    BatchNormalization parameter hung FINN's check), an annotation qonnx would eval() that is not a Python literal
    (code in the file)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception:
        return []  # not a graph: the reader refuses it, or it is some other graph than the oracle can judge
    reasons = []
    for tensor in model.graph.initializer:
        with contextlib.suppress(Exception):
            array = numpy_helper.to_array(tensor)
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                reasons.append(f"the initializer {tensor.name!r} holds NaN or inf")
    for annotation in model.graph.quantization_annotation:
        for entry in annotation.quant_parameter_tensor_names:
            if entry.key in ("tensor_layout", "tensor_sparsity") and not _is_literal(entry.value):
                reasons.append(f"{annotation.tensor_name!r} has the {entry.key} {entry.value[:60]!r}, not a literal")
    return reasons


def _is_literal(text: str) -> bool:
    """A Python literal (which qonnx's eval() could not turn into code): any other text must be refused."""
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def refused_or_correct(run: Callable[[], object], graphs: list[Path], marker: Path) -> object:
    """run(), then the oracle: code from the file ran (the marker file exists), or one of `graphs` must be refused
    (must_refuse) and was accepted: WronglyAccepted. A wrong result run() itself reports (WronglyAccepted) is said by
    its cause where the oracle knows it."""
    from sdk.errors import SDKError

    def reasons() -> list[str]:
        return [reason for graph in graphs for reason in must_refuse(graph.read_bytes())]

    try:
        result = run()
    except SDKError:
        if marker.exists():
            raise WronglyAccepted("code from the file ran (an annotation was eval()ed), then refused") from None
        raise
    except WronglyAccepted:
        if not (marker.exists() or reasons()):
            raise
        result = None
    if marker.exists():
        raise WronglyAccepted("code from the file ran (an annotation was eval()ed)")
    found = reasons()
    if found:
        raise WronglyAccepted(f"accepted although {found[0]}")
    return result


def read_check(path: Path, target: str) -> None:
    """The whole `sdk check` of a .onnx file (its card beside it, if any) for `target`, with the oracle; a payload
    in the file leaves the marker <stem>-code-ran beside it."""
    from sdk.deployment import DeployConfig, check

    marker = path.with_name(f"{path.stem}-code-ran")
    refused_or_correct(lambda: check(DeployConfig(target=target, model=str(path))), [path], marker)


PACKAGE_GRAPHS = ("dataflow_model.onnx", "parent_model.onnx")


def package_marker(package: Path) -> Path:
    """The file a payload in a package's graph leaves when it runs."""
    return package.parent / "package-code-ran"


def read_package(package: Path) -> None:
    """sdk.simulate of a package on a fixed batch: one finite row of scores per sample and class, with the oracle
    on its graphs."""
    from sdk.api import simulate

    def run() -> None:
        card = json.loads((package / "model.qonnx.json").read_text())  # not edited: its hash is the packaged one
        classes, shape = len(card["labels"]), card["input"]["image_shape"]
        x = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
        outputs = simulate(package, x)
        if not isinstance(outputs, np.ndarray) or outputs.shape != (len(x), classes):
            raise WronglyAccepted(f"sdk.simulate returned {type(outputs).__name__} {getattr(outputs, 'shape', '')}")
        if not np.all(np.isfinite(outputs)):
            raise WronglyAccepted("sdk.simulate returned NaN or inf scores")

    refused_or_correct(run, [package / name for name in PACKAGE_GRAPHS], package_marker(package))


READERS = {
    "litert": read_litert,
    "tflm": read_tflm,
    "checkpoint": read_checkpoint,
    "check-pynq-z2": lambda path: read_check(path, "pynq-z2"),
    "check-tflite": lambda path: read_check(path, "tflite"),
    "package": read_package,
}
PRELOAD = {
    "litert": ["targets.tflite.runtime"],
    "tflm": ["targets.tflm.runtime"],
    "checkpoint": ["sdk.qat"],
    "check-pynq-z2": ["sdk.deployment"],
    "check-tflite": ["sdk.deployment"],
    "package": ["sdk.api", "sdk.simulation"],
}


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
    out.write(b"ready\n")  # warmed up: the files may change now
    out.flush()
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
        if self.process.stdout.readline() != b"ready\n":  # its warm-up reads `warm_up`: wait before it changes
            raise RuntimeError(f"the {reader} server did not start (exit {self.process.wait()}): see its stderr")

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
