"""Streamlined graphs cached by the graph they were made from.

Streamlining is most of a FINN deploy's graph work (2-3 s of a conv net's 4-5 s, 10 s for a residual net), and it
depends on nothing but the graph and the FINN, qonnx and SDK code that transforms it: not on the board, the
folding or the samples. Deploying one model to another board, with another --fps or --max-util, or once more,
reads the streamlined graph from the SDK's cache instead. The key is the sha256 of the incoming graph's bytes,
the FINN and qonnx versions and the SDK's streamlining code, so any change to one of them streamlines afresh.

A cached graph is read back through sdk.onnx_guard like every other graph (no node may name a Python module),
and exactly as written: no qonnx clean-up on load. Caching is an optimisation: an unreadable entry is
streamlined again and replaced, and a cache folder that cannot be written is skipped. The same SDK_CACHE_DIR
as exports ("off" turns it off).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from sdk.atomic_write import write_bytes_atomic
from sdk.errors import SDKError

FOLDER = "finn-graphs"


def cached(
    name: str, model: ModelWrapper, transform: Callable[[ModelWrapper], ModelWrapper], code: list[Path]
) -> tuple[ModelWrapper, bool]:
    """(transform(model), whether it came from the cache). `code`: the source files that define `transform`."""
    from sdk.export_cache import cache_root

    root = cache_root()
    if root is None:
        return transform(model), False
    entry = root / FOLDER / f"{name}-{_key(model, code)}.onnx"
    hit = _read(entry, model)
    if hit is not None:
        return hit, True
    result = transform(model)
    _write(entry, result)
    return result, False


def _key(model: ModelWrapper, code: list[Path]) -> str:
    digest = hashlib.sha256(model.model.SerializeToString(deterministic=True))
    for package in ("finn-plus", "qonnx", "onnx"):
        digest.update(f"\0{package}={importlib.metadata.version(package)}".encode())
    for path in (*code, Path(__file__)):
        digest.update(b"\0" + path.read_bytes())
    return digest.hexdigest()[:40]


def _read(entry: Path, like: ModelWrapper) -> ModelWrapper | None:
    from sdk.onnx_guard import load_onnx_safely

    if not entry.is_file():
        return None
    try:
        proto = load_onnx_safely(entry, f"the cached graph {entry.name}", finn_ops=True)
    except (SDKError, OSError):
        return None  # damaged or foreign: transformed again and replaced
    wrapper = ModelWrapper(proto, fix_missing_initializer_valueinfo=False)
    wrapper.fix_float64 = like.fix_float64
    return wrapper


def _write(entry: Path, model: ModelWrapper) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(entry, model.model.SerializeToString())  # a parallel deploy never reads half a graph
    except OSError:
        return
