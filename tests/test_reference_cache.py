"""The QAT model's outputs are cached by graph and batch: reused only for the same bytes, recomputed when damaged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sdk.graph_run import run_qonnx
from sdk.reference_cache import FOLDER, cached_outputs


def _codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)


def _never() -> np.ndarray:
    raise AssertionError("computed although an intact entry for this graph and batch is cached")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SDK_CACHE_DIR", str(folder))
    return folder


def test_the_outputs_are_computed_once_and_read_back_equal(tfc_export, cache):
    x = _codes(40)
    first = cached_outputs(tfc_export, x, True, lambda: run_qonnx(tfc_export, x, True))
    again = cached_outputs(tfc_export, x, True, _never)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(first, run_qonnx(tfc_export, x, True))


def test_another_batch_or_another_graph_is_not_a_hit(tfc_export, cache, tmp_path):
    x = _codes(40)
    cached_outputs(tfc_export, x, True, lambda: run_qonnx(tfc_export, x, True))
    other = _codes(40, seed=1)
    with pytest.raises(AssertionError, match="computed although"):
        cached_outputs(tfc_export, other, True, _never)
    with pytest.raises(AssertionError, match="computed although"):
        cached_outputs(tfc_export, x[:39], True, _never)
    changed = tmp_path / "changed.onnx"
    shutil.copyfile(tfc_export, changed)
    with changed.open("ab") as handle:  # one more byte: another file, whatever it computes
        handle.write(b"\0")
    with pytest.raises(AssertionError, match="computed although"):
        cached_outputs(changed, x, True, _never)


def test_a_damaged_entry_is_recomputed_and_replaced(tfc_export, cache):
    x = _codes(16)
    truth = cached_outputs(tfc_export, x, True, lambda: run_qonnx(tfc_export, x, True))
    (entry,) = (cache / FOLDER).glob("*.npy")
    raw = bytearray(entry.read_bytes())
    raw[-1] ^= 0xFF  # a flipped bit in the last output
    entry.write_bytes(bytes(raw))
    recomputed = cached_outputs(tfc_export, x, True, lambda: run_qonnx(tfc_export, x, True))
    np.testing.assert_array_equal(recomputed, truth)
    np.testing.assert_array_equal(cached_outputs(tfc_export, x, True, _never), truth)


def test_with_the_cache_off_every_call_computes(tfc_export, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", "off")
    x = _codes(8)
    cached_outputs(tfc_export, x, True, lambda: run_qonnx(tfc_export, x, True))
    with pytest.raises(AssertionError, match="computed although"):
        cached_outputs(tfc_export, x, True, _never)
