"""The built-in data sets' splits, cached: a deploy or `sdk simulate` on digits need not load scikit-learn.

Splitting goes through scikit-learn's stratified train_test_split, and importing scikit-learn takes about 2 s,
a quarter of a small deploy in a new process. The split of a built-in data set (sdk/datasets.py) depends only
on the seed, the image size, the fractions, the scikit-learn version (which ships digits and splits), the files
the data set is read from (its entry's source_files: size and time) and the SDK's data code, so it is written
once to the SDK's cache (SDK_CACHE_DIR, as exports) and read back from
there. An entry is used only while its bytes have the sha256 recorded beside it; anything else is split again
and replaced. A cache folder that cannot be written is skipped. User files (an .npz, an idx folder) are not
cached: they are the user's to change.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from sdk.atomic_write import write_bytes_atomic

FOLDER = "datasets"
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
CODE = ("data.py", "datasets.py")


def key(spec: str, source: list[Path], **options: Any) -> str | None:
    """The entry's name for a built-in data set's split, or None when caching is off."""
    from sdk.export_cache import cache_root

    if cache_root() is None:
        return None
    digest = hashlib.sha256(f"{spec}\0{sorted(options.items())!r}".encode())
    try:
        digest.update(importlib.metadata.version("scikit-learn").encode())
        for code in CODE:  # the SDK's data code: a changed loader or split is split afresh
            digest.update(Path(__file__).with_name(code).read_bytes())
        for path in source:  # the files a data set is read from: a reinstalled package is split afresh
            stat = path.stat()
            digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    except (OSError, importlib.metadata.PackageNotFoundError):
        return None  # not cached; loading it says what is missing
    return digest.hexdigest()[:40]


def read(entry_key: str | None):
    """The cached split as a Dataset, or None."""
    from sdk.data import Dataset
    from sdk.export_cache import cache_root

    root = cache_root()
    if entry_key is None or root is None:
        return None
    data_path, meta_path = _paths(root, entry_key)
    try:
        raw = data_path.read_bytes()
        meta = json.loads(meta_path.read_text())
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            return None
        with np.load(BytesIO(raw), allow_pickle=False) as arrays:
            parts = [arrays[name] for name in ARRAYS]
        return Dataset(meta["name"], *parts, [str(label) for label in meta["labels"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(entry_key: str | None, dataset) -> None:
    from sdk.export_cache import cache_root

    root = cache_root()
    if entry_key is None or root is None:
        return
    data_path, meta_path = _paths(root, entry_key)
    buffer = BytesIO()
    np.savez(buffer, **{name: getattr(dataset, name) for name in ARRAYS})
    raw = buffer.getvalue()
    meta = {"name": dataset.name, "labels": list(dataset.labels), "sha256": hashlib.sha256(raw).hexdigest()}
    try:
        data_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(data_path, raw)  # whole or absent; a data file without its record is a miss
        write_bytes_atomic(meta_path, json.dumps(meta).encode())
    except OSError:
        return


def _paths(root: Path, entry_key: str) -> tuple[Path, Path]:
    folder = root / FOLDER
    return folder / f"{entry_key}.npz", folder / f"{entry_key}.json"
