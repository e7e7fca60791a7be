"""A run is exported once per checkpoint: later deploys copy the cached export, and a damaged entry is redone."""

from __future__ import annotations

import json

from sdk import export
from sdk.export_cache import export_run_cached


def test_the_second_export_of_a_checkpoint_comes_from_the_cache(tfc_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = export.export_run
    monkeypatch.setattr(export, "export_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = export_run_cached(tfc_run, tmp_path / "a.onnx")
    second = export_run_cached(tfc_run, tmp_path / "b.onnx")
    assert len(calls) == 1
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert second.card["onnx_sha256"] == first.card["onnx_sha256"]
    assert json.loads((tmp_path / "b.json").read_text())["source_checkpoint"]["path"].startswith(str(tfc_run))

    (entry,) = (tmp_path / "cache" / "exports").iterdir()
    (entry / "model.qonnx.onnx").write_bytes(b"damaged")  # no longer the graph its card names
    third = export_run_cached(tfc_run, tmp_path / "c.onnx")
    assert len(calls) == 2 and third.card["onnx_sha256"] == first.card["onnx_sha256"]


def test_caching_can_be_turned_off(tfc_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", "off")
    calls = []
    real = export.export_run
    monkeypatch.setattr(export, "export_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    export_run_cached(tfc_run, tmp_path / "a.onnx")
    export_run_cached(tfc_run, tmp_path / "b.onnx")
    assert len(calls) == 2
