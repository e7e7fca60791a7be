"""Exports cached by checkpoint: a run is exported to QONNX (and checked against Brevitas) once, not per deploy.

The key is the sha256 of the checkpoint and its metrics, the SDK version and the export code itself, so a
retrained run, another SDK or a changed exporter exports afresh. A cached entry is used only while its graph
still has the sha256 its card records; anything else is exported again. Caching is an optimisation: a cache
folder that cannot be written is skipped. SDK_CACHE_DIR moves it (default ~/.cache/edge-qnn-sdk; "off" turns
it off).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from sdk.scratch import scratch_dir

CACHE_ENV = "SDK_CACHE_DIR"


def cache_root() -> Path | None:
    """Where exports are cached, or None when caching is off."""
    setting = os.environ.get(CACHE_ENV)
    if setting == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-qnn-sdk"


def _key(checkpoint: Path) -> str:
    from sdk import __version__
    from sdk.runs import METRICS_NAME

    digest = hashlib.sha256()
    code = [Path(__file__).with_name(name) for name in ("export.py", "graph_names.py")]  # graph_names: node marks
    for path in (checkpoint, checkpoint.parent / METRICS_NAME, *code):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    digest.update(__version__.encode())
    return digest.hexdigest()[:40]


def _cached(entry: Path, checkpoint: Path, out_path: Path):
    """The cached export copied to out_path, its card naming this checkpoint; None when absent or not intact."""
    from sdk.model_card import ExportResult, card_path_for
    from sdk.package import sha256_file

    onnx, card_path = entry / "model.qonnx.onnx", entry / "model.qonnx.json"
    try:
        card = json.loads(card_path.read_text())
        if not onnx.is_file() or card.get("onnx_sha256") != sha256_file(onnx):
            return None
        shutil.copyfile(onnx, out_path)
        card["source_checkpoint"]["path"] = str(checkpoint.resolve())
        card_path_for(out_path).write_text(json.dumps(card, indent=2))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ExportResult(out_path, card_path_for(out_path), card)


def export_run_cached(run_dir: Path | str, out_path: Path | str):
    """sdk.export.export_run, through the cache."""
    from sdk.model_card import card_path_for
    from sdk.runs import CHECKPOINT_NAME

    def export_run(*args):  # torch and Brevitas load only on a miss
        from sdk import export

        return export.export_run(*args)

    run_dir, out_path = Path(run_dir), Path(out_path)
    checkpoint = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    root = cache_root()
    if root is None or not checkpoint.is_file():
        return export_run(run_dir, out_path)
    entry = root / "exports" / _key(checkpoint)
    hit = _cached(entry, checkpoint, out_path)
    if hit is not None:
        return hit
    result = export_run(run_dir, out_path)
    try:  # store it whole: a sibling folder renamed into place
        entry.parent.mkdir(parents=True, exist_ok=True)
        with scratch_dir("cache", entry.parent, hidden=True) as tmp:
            shutil.copyfile(result.onnx_path, Path(tmp) / "model.qonnx.onnx")
            shutil.copyfile(card_path_for(result.onnx_path), Path(tmp) / "model.qonnx.json")
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
            os.makedirs(tmp)  # scratch_dir removes its folder on exit
    except OSError:
        pass
    return result
