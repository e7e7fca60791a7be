"""Third-party chatter stays out of the SDK's output unless --verbose.

Brevitas, qonnx, torch.onnx, FINN, onnxscript, LiteRT, matplotlib ... warn, log
and print while the SDK calls them. None of it is something a user of the SDK
can act on, and on stdout it would break --json. Inside `quiet()`:

- Python warnings are recorded, not shown (the SDK itself reports through its
  own output, never through `warnings`);
- third-party loggers are set to ERROR and whatever reaches the root logger is
  collected (records of the SDK's own `sdk.*` / `targets.*` loggers still show);
- what native code writes straight to file descriptor 2 (LiteRT's "Created
  TensorFlow Lite XNNPACK delegate", absl) goes to a temporary file, while
  Python's `sys.stderr` is pointed at a copy of the real stderr, so the SDK's
  progress bars and messages still show;
- `hush_stdout()` around one library call collects what Python code prints to
  stdout during it (the SDK's own results are printed after such calls).

With verbose=True nothing is touched: everything shows as it happens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import FileIO, StringIO, TextIOWrapper
from typing import TextIO

# Roots of the logger trees of the libraries the SDK itself drives; their children inherit the level. Each flow's
# toolchain adds its own (its registry entry's `loggers`): third_party_loggers().
THIRD_PARTY_LOGGERS = (
    "brevitas",
    "qonnx",
    "torch",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "onnxruntime",
    "onnx_passes",
    "matplotlib",
    "PIL",
    "tensorflow",
    "absl",
    "numba",
    "jax",
    "h5py",
)
OWN_LOGGERS = ("sdk", "targets", "__main__")


def third_party_loggers() -> tuple[str, ...]:
    """The logger roots quiet() sets to ERROR: the SDK's libraries and every registered flow's toolchain."""
    from targets.registry import FLOWS  # the registry is the core's one way to reach a flow

    flows = tuple(name for info in FLOWS.values() for name in info.loggers)
    return tuple(dict.fromkeys(THIRD_PARTY_LOGGERS + flows))


@dataclass
class Captured:
    """What third-party code said while quiet; shown by nobody, kept for a bug report or a test."""

    warnings: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    native: str = ""

    def lines(self) -> list[str]:
        """Every collected line, warnings first."""
        text = "".join(self.stdout) + self.native
        return [*self.warnings, *self.log_lines, *(line for line in text.splitlines() if line.strip())]


_ACTIVE: list[Captured] = []  # innermost quiet() block last


class _Collector(logging.Handler):
    """Root handler while quiet: third-party records are collected, the SDK's own still printed."""

    def __init__(self, captured: Captured):
        super().__init__(logging.NOTSET)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in OWN_LOGGERS and record.levelno >= logging.WARNING:
            print(self.format(record), file=sys.stderr)
        else:
            self.captured.log_lines.append(f"{record.levelname}:{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _warnings_recorded(captured: Captured) -> Iterator[None]:
    with warnings.catch_warnings():

        def record(message, category, filename, lineno, file=None, line=None) -> None:
            captured.warnings.append(f"{filename}:{lineno}: {category.__name__}: {message}")

        warnings.showwarning = record
        yield


@contextlib.contextmanager
def _logging_collected(captured: Captured) -> Iterator[None]:
    root = logging.getLogger()
    handler = _Collector(captured)
    names = third_party_loggers()
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    root.addHandler(handler)  # with a handler on root, logging's lastResort (stderr) stays silent
    try:
        yield
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


_REAL_STDERR: TextIO | None = None  # a Python stream on a copy of the real fd 2, made once per process


def _real_stderr() -> TextIO:
    """A stream on a duplicate of the current fd 2; reused while fd 2 still is the same file.

    It is never closed: a handler or console created inside a quiet block may keep
    writing to it afterwards, and it still reaches the real stderr.
    """
    global _REAL_STDERR
    if _REAL_STDERR is None or not os.path.sameopenfile(_REAL_STDERR.fileno(), 2):
        old = sys.stderr
        _REAL_STDERR = TextIOWrapper(
            FileIO(os.dup(2), "w", closefd=True),
            encoding=getattr(old, "encoding", None) or "utf-8",
            errors=getattr(old, "errors", None) or "backslashreplace",
            line_buffering=True,
            write_through=True,
        )
    return _REAL_STDERR


def _is_fd(stream: TextIO | None, fd: int) -> bool:
    try:
        return stream is not None and stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


@contextlib.contextmanager
def _native_stderr_captured(captured: Captured) -> Iterator[None]:
    """fd 2 into a temporary file; sys.stderr (when it is fd 2) keeps writing to the real stderr."""
    try:
        os.fstat(2)
    except OSError:  # no fd 2 (a detached process): nothing native can reach the user anyway
        yield
        return
    with tempfile.TemporaryFile(mode="w+b", prefix="sdk-native-") as sink:
        rebind = _is_fd(sys.stderr, 2)
        real = _real_stderr() if rebind else None
        old_stream = sys.stderr
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        if rebind:
            sys.stderr = real
        try:
            yield
        finally:
            if rebind:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                sys.stderr = old_stream
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.native += sink.read().decode("utf-8", "replace")


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[Captured]:
    """Collect third-party warnings, log records and native stderr output unless `verbose`."""
    captured = Captured()
    if verbose:
        yield captured
        return
    _ACTIVE.append(captured)
    try:
        with _warnings_recorded(captured), _logging_collected(captured), _native_stderr_captured(captured):
            yield captured
    finally:
        _ACTIVE.remove(captured)


@contextlib.contextmanager
def hush_stdout() -> Iterator[None]:
    """Around one library call inside quiet(): what Python code prints to stdout is collected.

    Outside a quiet block (or under --verbose) it does nothing. Keep the SDK's own
    printing outside it.
    """
    if not _ACTIVE:
        yield
        return
    buffer = StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        _ACTIVE[-1].stdout.append(buffer.getvalue())
