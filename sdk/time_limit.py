"""A time limit for a third-party step that may loop: FINN's and qonnx's transformations repeat until the graph
stops changing, and a graph that keeps changing (a NaN threshold is never equal to itself) would repeat forever.

`with time_limit(step_timeout()):` raises StepTimeout once the limit has passed; the caller turns it into an SDK
error naming the step. SDK_STEP_TIMEOUT (seconds, default STEP_TIMEOUT_SECONDS) sets it; the SDK's models take
seconds per step, so the default is generous.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sdk.errors import ConfigError

STEP_TIMEOUT_SECONDS = 600.0  # per step; the longest FINN step of the SDK's models takes under 10 s
STEP_TIMEOUT_VARIABLE = "SDK_STEP_TIMEOUT"


class StepTimeout(BaseException):
    """Raised inside a step when its time is up. A BaseException, so that FINN's own `except Exception` clauses
    do not swallow it."""


def step_timeout() -> float:
    """SDK_STEP_TIMEOUT in seconds (a positive number), or the default."""
    raw = os.environ.get(STEP_TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return STEP_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            f"{STEP_TIMEOUT_VARIABLE}={raw[:40]!r} is not a positive number of seconds.",
            where=f"environment variable {STEP_TIMEOUT_VARIABLE}",
            fix=f"unset it (default {STEP_TIMEOUT_SECONDS:.0f} s) or give seconds, e.g. {STEP_TIMEOUT_VARIABLE}=1800",
        )
    return seconds


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in this thread once `seconds` have passed. In the main thread a SIGALRM timer interrupts
    Python loops and blocking calls; in another thread (signals reach only the main one) a timer thread raises
    the exception asynchronously in this one, at its next Python instruction."""
    if threading.current_thread() is threading.main_thread():

        def expired(signum, frame):
            raise StepTimeout

        outer, _ = signal.getitimer(signal.ITIMER_REAL)  # a caller's own timer (e.g. pytest-timeout) is kept
        if 0 < outer <= seconds:
            yield  # it fires first anyway
            return
        began = time.monotonic()
        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer > 0:
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - began), 1e-3))
        return
    target = ctypes.c_ulong(threading.get_ident())
    done = threading.Event()
    lock = threading.Lock()

    def interrupt() -> None:
        with lock:
            if not done.is_set():
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(StepTimeout))

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done.set()
            timer.cancel()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)  # one raised but not yet delivered: cleared
