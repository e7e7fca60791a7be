"""The built-in data sets' cached splits: the same arrays as a fresh split, and never a damaged or changed entry."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sdk import dataset_cache
from sdk.data import load_dataset


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))


def _same(a, b) -> None:
    assert a.name == b.name and a.labels == b.labels and a.fingerprint() == b.fingerprint()
    for name in dataset_cache.ARRAYS:
        got, want = getattr(a, name), getattr(b, name)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), name


def test_a_cached_split_equals_a_fresh_one_and_loads_without_scikit_learn(tmp_path, monkeypatch):
    fresh = load_dataset("digits", seed=3, image_size=12)
    entries = sorted((tmp_path / "cache" / dataset_cache.FOLDER).glob("*.npz"))
    assert len(entries) == 1
    _same(load_dataset("digits", seed=3, image_size=12), fresh)
    monkeypatch.setenv("SDK_CACHE_DIR", "off")
    _same(load_dataset("digits", seed=3, image_size=12), fresh)  # what the cache holds is what a split gives
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    assert load_dataset("digits", seed=4).fingerprint() != fresh.fingerprint()  # another seed: another entry
    code = "import sys; from sdk.data import load_dataset; load_dataset('digits', seed=3, image_size=12); "
    code += "assert 'sklearn' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "SDK_CACHE_DIR": str(tmp_path / "cache")}
    )


@pytest.mark.parametrize("damage", ["truncated", "changed_pixels", "no_record"])
def test_a_damaged_or_changed_entry_is_split_again_and_replaced(tmp_path, damage):
    fresh = load_dataset("digits")
    (entry,) = (tmp_path / "cache" / dataset_cache.FOLDER).glob("*.npz")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:1000])
    elif damage == "changed_pixels":  # a whole, valid .npz with other data: its sha256 is not the recorded one
        arrays = {name: getattr(fresh, name) for name in dataset_cache.ARRAYS}
        arrays["x_train"] = 255 - arrays["x_train"]
        with entry.open("wb") as out:
            np.savez(out, **arrays)
    else:
        entry.with_suffix(".json").unlink()
    _same(load_dataset("digits"), fresh)
    key = entry.stem
    assert dataset_cache.read(key) is not None  # replaced by the fresh split


def test_cache_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", "off")
    load_dataset("digits")
    assert not (tmp_path / "cache").exists()
