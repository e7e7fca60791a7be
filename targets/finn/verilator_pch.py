"""A precompiled verilated.h, shared by the Verilator builds of one cache.

Every layer build compiles two C++ files, the design and its testbench, and both begin by parsing Verilator's
verilated.h. At -O0 that parse is most of their compile time: about 0.8 s of each on a 2-core machine, where
reading a precompiled header takes 0.1-0.2 s. The header is compiled once per cache, Verilator, compiler and
optimisation level, by the build's own makefile, so its flags are the build's flags. GCC reads a precompiled
header only when it matches the compile; otherwise it parses verilated.h as before. A missing or stale header
costs time, never a wrong build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

HEADER = "sdk_verilated_pch.h"
HEADER_TEXT = '#include "verilated.h"\n'


def include_flags(
    obj: Path,
    cache_dir: Path,
    identity: Sequence[str],
    level: str,
    run: Callable[[list[str]], subprocess.CompletedProcess],
) -> tuple[str, ...]:
    """make arguments that put the shared precompiled verilated.h first in every compile of the build in `obj`,
    compiling the header when the cache has none for `level` yet; () when it cannot be compiled.

    `identity`: what the header is valid for (Verilator, compiler, flags); `run`: runs a command in obj's parent.
    The caller holds the cache's lock on the header, so that parallel builds compile it once."""
    variant = _variant(cache_dir, identity, level)
    folder = variant.parent.parent
    if not variant.is_file():
        (obj / HEADER).write_text(HEADER_TEXT)
        made = obj / f"{HEADER}.fast.gch"  # verilated.mk's rule: the design's fast-path flags at `level`
        proc = run(["make", "-C", obj.name, "-f", "Vdut.mk", f"OPT_FAST={level}", made.name])
        if proc.returncode != 0 or not made.is_file():
            return ()
        variant.parent.mkdir(parents=True, exist_ok=True)
        (folder / HEADER).write_text(HEADER_TEXT)
        os.replace(made, variant)  # obj lies in the cache folder: a rename, so GCC never sees the file half-written
    # relative to obj: a cache path with spaces would split make's variable
    return (f"USER_CPPFLAGS=-include {os.path.relpath(folder / HEADER, obj)}",)


def discard(cache_dir: Path, identity: Sequence[str], level: str) -> None:
    """Remove the header for `level`: GCC stops on a damaged one (a truncated file) instead of ignoring it."""
    _variant(cache_dir, identity, level).unlink(missing_ok=True)


def _variant(cache_dir: Path, identity: Sequence[str], level: str) -> Path:
    digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    return cache_dir / f"verilator-pch-{digest}" / f"{HEADER}.gch" / f"{level.lstrip('-')}.gch"  # GCC tries each
