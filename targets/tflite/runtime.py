"""Run and time a .tflite file on the real LiteRT interpreter, on a chosen set of kernels.

Two kernel sets, never mixed up:
  "reference"  OpResolverType.BUILTIN_REF: LiteRT's portable reference kernels, the
               stand-in for a microcontroller or NPU. The default resolver would hand
               ops to XNNPACK without saying so; this one cannot, and open_tflite
               checks that no delegate node appeared.
  "xnnpack"    the default resolver: optimised builtin kernels plus the XNNPACK
               delegate on the ops it accepts (what a phone or a Linux CPU runs).
               Ops XNNPACK declines (e.g. int8 MINIMUM) stay on the builtin kernels.

A missing, truncated or corrupt file raises TfliteFileError (an SDKError), never a
bare ValueError from inside LiteRT, nor a crash: LiteRT's C++ kernels trust a file's
shapes, types and indices (a constant written to, a buffer shorter than its shape, an
op fed the wrong tensors end in SIGSEGV or SIGABRT), so open_tflite first checks the
file with golden.parse_tflite, in Python, against what the SDK's writer emits.
"""

from __future__ import annotations

import gc
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from sdk.errors import ConfigError
from targets.tflite.errors import TfliteFileError
from targets.tflite.reader import MAX_TFLITE_BYTES, parse_tflite
from targets.tflite.schema import is_tflite

KERNELS = ("reference", "xnnpack")
_RESOLVERS = {"reference": OpResolverType.BUILTIN_REF, "xnnpack": OpResolverType.AUTO}
_FIX_REWRITE = (
    "write the .tflite again with the SDK (targets.tflite.writer.write_tflite); "
    "a copy or download may have been cut short"
)


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one invoke() at `batch` samples, over `runs` timed calls (after warm-up)."""

    median_us: float
    p10_us: float
    p90_us: float
    runs: int
    kernels: str  # "reference", "xnnpack" (or a caller's label, e.g. "pytorch")
    threads: int
    batch: int = 1
    delegate_nodes: int = 0  # XNNPACK partitions in the graph (0: every op on builtin kernels)

    @property
    def per_sample_us(self) -> float:
        return self.median_us / self.batch

    @property
    def samples_per_s(self) -> float:
        return 1e6 * self.batch / self.median_us

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_sample_us": self.per_sample_us, "samples_per_s": self.samples_per_s}


def latency_from_samples(
    samples_ns: list[int] | np.ndarray, kernels: str, threads: int, batch: int = 1, delegate_nodes: int = 0
) -> Latency:
    """Median and 10th/90th percentiles of per-call times (ns), in microseconds.

    Medians, not means: the machine is shared, and a stray preemption must not move the result.
    """
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    if us.size == 0:
        raise ValueError("no timing samples")
    p10, median, p90 = np.percentile(us, [10, 50, 90])
    return Latency(float(median), float(p10), float(p90), int(us.size), kernels, threads, batch, delegate_nodes)


def _check_kernels(kernels: str) -> OpResolverType:
    if kernels not in _RESOLVERS:
        raise ConfigError(
            f"Unknown LiteRT kernels '{kernels}'.", where="kernels", fix=f"use one of: {', '.join(KERNELS)}"
        )
    return _RESOLVERS[kernels]


def _check_file(path: Path) -> None:
    """The checks LiteRT makes with a worse message, or not at all: exists, a TFL3 flatbuffer, every index in range
    and every constant buffer the size of its tensor's shape (LiteRT's C++ reads a malformed file unchecked)."""
    try:
        if not path.is_file():
            what = f"{path} is a folder, not a .tflite file." if path.is_dir() else f"No .tflite file at {path}."
            raise TfliteFileError(
                what,
                where=str(path),
                fix="pass the path of a .tflite written by the SDK (a deployment package holds one)",
            )
        if path.stat().st_size > MAX_TFLITE_BYTES:
            raise TfliteFileError(f"{path.name} is larger than a flatbuffer can be.", where=str(path), fix=_FIX_REWRITE)
        buf = path.read_bytes()
    except OSError as exc:
        raise TfliteFileError(
            f"{path.name} cannot be read: {exc.strerror or exc}.", where=str(path), fix="check the file"
        ) from None
    if not is_tflite(buf):
        found = f"{len(buf)} bytes in all" if len(buf) < 8 else f"identifier {buf[4:8]!r}"
        raise TfliteFileError(
            f"{path.name} is not a TFLite flatbuffer (expected identifier b'TFL3' at bytes 4..8, found {found}).",
            where=str(path),
            fix=f"pass a .tflite file; if this is one, it is damaged: {_FIX_REWRITE}",
        )
    parse_tflite(
        buf,
        TfliteFileError,
        str(path),
        f"the file is truncated or damaged; {_FIX_REWRITE}",
        lead=f"LiteRT cannot load {path.name}: the file is malformed",
    )


def delegate_nodes(interpreter: Interpreter) -> int:
    """How many graph nodes a delegate (XNNPACK) took over; valid after allocate_tensors().

    Uses LiteRT's op listing, where each delegated partition is one "DELEGATE" node.
    """
    return sum(1 for op in interpreter._get_ops_details() if op["op_name"] == "DELEGATE")


def open_tflite(
    path: Path | str, kernels: str = "reference", threads: int | None = 1, all_tensors: bool = False
) -> Interpreter:
    """A LiteRT Interpreter on `kernels`, with tensors allocated, or a TfliteFileError that says why not.

    all_tensors keeps every intermediate tensor readable (LiteRT's
    experimental_preserve_all_tensors); with "xnnpack" the tensors inside one
    XNNPACK partition are still undefined.
    """
    resolver = _check_kernels(kernels)
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():  # LiteRT warns that preserving tensors is for debugging: that is why we ask
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            interpreter = Interpreter(
                model_path=str(path),
                experimental_op_resolver_type=resolver,
                num_threads=threads,
                experimental_preserve_all_tensors=all_tensors,
            )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TfliteFileError(
            f"LiteRT cannot load {path.name}: {reason}",
            where=str(path),
            fix=f"the file is truncated, corrupt, or uses ops this LiteRT lacks; {_FIX_REWRITE}",
        ) from None
    if kernels == "reference" and delegate_nodes(interpreter):
        raise RuntimeError(
            f"{path}: a delegate took nodes on BUILTIN_REF kernels; the reference run would not be a reference"
        )
    return interpreter


def _input_detail(interpreter: Interpreter) -> dict[str, Any]:
    details = interpreter.get_input_details()
    if len(details) != 1:
        raise ValueError(f"the model has {len(details)} inputs; run_litert feeds exactly one")
    return details[0]


def _feed(interpreter: Interpreter, x: np.ndarray) -> int:
    """Resize the input to x's batch (the writer marks the batch dim -1), allocate and set it."""
    detail = _input_detail(interpreter)
    x = np.asarray(x)
    if x.dtype != detail["dtype"]:
        raise ValueError(
            f"input {detail['name']!r} is {np.dtype(detail['dtype']).name}, got {x.dtype.name} "
            f"(int8 inputs are uint8 pixels - 128)"
        )
    if x.ndim != len(detail["shape"]) or list(x.shape[1:]) != list(detail["shape"][1:]):
        raise ValueError(
            f"input {detail['name']!r} takes (batch, {', '.join(map(str, detail['shape'][1:]))}), got {tuple(x.shape)}"
        )
    if list(x.shape) != list(detail["shape"]):
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
        try:
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:  # an op whose shapes do not follow at this batch size
            raise TfliteFileError(
                f"LiteRT cannot run the file at batch {len(x)}: {str(exc).strip()[:200] or type(exc).__name__}",
                where=f"input {detail['name']!r}",
                fix=f"the file's operators do not fit its tensors; {_FIX_REWRITE}",
            ) from None
    interpreter.set_tensor(detail["index"], np.ascontiguousarray(x))
    return detail["index"]


def _invoke(interpreter: Interpreter, path: Path | str) -> None:
    """invoke(), with a kernel's refusal (a shape or type the file gets wrong) as a TfliteFileError."""
    try:
        interpreter.invoke()
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TfliteFileError(
            f"LiteRT cannot run {Path(path).name}: {reason}",
            where=str(path),
            fix=f"the file's operators do not fit its tensors; {_FIX_REWRITE}",
        ) from None


def run_interpreter(interpreter: Interpreter, x: np.ndarray, tflite_path: Path | str) -> dict[str, np.ndarray]:
    """One batched invoke on an interpreter opened once (open_tflite; a loaded package runs it on many batches):
    the graph outputs by name."""
    _feed(interpreter, x)
    _invoke(interpreter, tflite_path)
    return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()}


def run_litert(
    tflite_path: Path | str, x: np.ndarray, kernels: str = "reference", all_tensors: bool = False
) -> dict[str, np.ndarray]:
    """One batched invoke on the real LiteRT interpreter: the outputs by name (every tensor with all_tensors).

    x is the whole batch in the model's input dtype and layout (int8 p - 128 for
    the SDK's files). Constant tensors (weights, biases) are included with all_tensors.
    """
    interpreter = open_tflite(tflite_path, kernels, all_tensors=all_tensors)
    if not all_tensors:
        return run_interpreter(interpreter, x, tflite_path)
    _feed(interpreter, x)
    _invoke(interpreter, tflite_path)
    tensors = {}
    for detail in interpreter.get_tensor_details():
        try:
            tensors[detail["name"]] = interpreter.get_tensor(detail["index"]).copy()
        except ValueError:  # a tensor without data (a delegate's scratch): nothing to return
            continue
    return tensors


def measure_latency(
    tflite_path: Path | str,
    x_one_sample: np.ndarray,
    kernels: str = "reference",
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
    batch: int = 1,
) -> Latency:
    """Time invoke() alone (time.perf_counter_ns around each call) at batch 1, or at `batch` copies of the sample.

    x_one_sample is one input with or without its batch axis. Only invoke() is timed:
    set_tensor and Python glue are the caller's cost on any runtime. The garbage
    collector is paused while timing so that its pauses do not land in one run.
    """
    if runs < 1 or warmup < 0 or batch < 1:
        raise ConfigError(
            f"runs={runs}, warmup={warmup}, batch={batch} are out of range.",
            where="measure_latency",
            fix="runs >= 1, warmup >= 0, batch >= 1",
        )
    interpreter = open_tflite(tflite_path, kernels, threads=threads)
    sample = np.asarray(x_one_sample)
    rank = len(_input_detail(interpreter)["shape"])
    if sample.ndim == rank - 1:
        sample = sample[None]
    if sample.ndim != rank or sample.shape[0] != 1:
        raise ValueError(f"x_one_sample must be one input (shape {tuple(sample.shape)} is not)")
    _feed(interpreter, np.repeat(sample, batch, axis=0))
    _invoke(interpreter, tflite_path)  # a file LiteRT cannot run fails here, before the timing
    for _ in range(warmup):
        interpreter.invoke()
    times = np.empty(runs, dtype=np.int64)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            started = time.perf_counter_ns()
            interpreter.invoke()
            times[i] = time.perf_counter_ns() - started
    finally:
        if gc_was_enabled:
            gc.enable()
    return latency_from_samples(times, kernels, threads, batch, delegate_nodes(interpreter))
