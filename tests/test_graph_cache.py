"""Streamlined graphs from the cache: the same graph as streamlining gives, and never a damaged or foreign one."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from targets.finn import frontend, graph_cache, streamline
from targets.finn.steps import load_qonnx

CODE = [Path(streamline.__file__)]


@pytest.fixture
def finn_graph(tfc_export, tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    return frontend.qonnx_to_finn(load_qonnx(tfc_export))


def _entry(tmp_path: Path) -> Path:
    (entry,) = (tmp_path / "cache" / graph_cache.FOLDER).glob("streamlined-*.onnx")
    return entry


def test_the_second_streamlining_comes_from_the_cache_byte_for_byte(finn_graph, tmp_path):
    fresh, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    assert not hit and fresh.get_nodes_by_op_type("MultiThreshold")
    again, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    assert hit and again.model.SerializeToString() == fresh.model.SerializeToString()
    other, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE + [Path(__file__)])
    assert not hit  # other code: streamlined afresh


@pytest.mark.parametrize("damage", ["truncated", "foreign_domain"])
def test_a_damaged_or_foreign_entry_is_streamlined_again_and_replaced(finn_graph, tmp_path, damage):
    fresh, _ = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    entry = _entry(tmp_path)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:200])
    else:  # a node whose domain would make qonnx import a Python module
        proto = onnx.load(str(entry))
        proto.graph.node[0].domain = "os"
        entry.write_bytes(proto.SerializeToString())
    again, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    assert not hit and again.model.SerializeToString() == fresh.model.SerializeToString()
    assert graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)[1]  # the entry was replaced


def test_cache_off_writes_nothing(finn_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", "off")
    assert not graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)[1]
    assert not graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)[1]
    assert not (tmp_path / "cache").exists()
