"""Streamlined graphs from the cache: the same graph as streamlining gives, and never a damaged or foreign one."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from targets.finn import frontend, graph_cache, streamline
from targets.finn.steps import load_qonnx

CODE = [Path(streamline.__file__)]


@pytest.fixture(scope="module")
def finn_graph(tfc_export):
    return frontend.qonnx_to_finn(load_qonnx(tfc_export))


@pytest.fixture(scope="module")
def streamlined(finn_graph):
    return streamline.streamline(finn_graph)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))


def _entry(tmp_path: Path) -> Path:
    (entry,) = (tmp_path / "cache" / graph_cache.FOLDER).glob("streamlined-*.onnx")
    return entry


def test_the_second_streamlining_comes_from_the_cache_byte_for_byte(finn_graph, streamlined):
    fresh, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    assert not hit and fresh.model.SerializeToString() == streamlined.model.SerializeToString()
    again, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    assert hit and again.model.SerializeToString() == fresh.model.SerializeToString()
    other, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE + [Path(__file__)])
    assert not hit  # other code: streamlined afresh


@pytest.mark.parametrize("damage", ["truncated", "foreign_domain"])
def test_a_damaged_or_foreign_entry_is_streamlined_again_and_replaced(finn_graph, streamlined, tmp_path, damage):
    graph_cache.cached("streamlined", finn_graph, lambda model: streamlined, CODE)  # the entry, as a deploy writes it
    entry = _entry(tmp_path)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:200])
    else:  # a node whose domain would make qonnx import a Python module
        proto = onnx.load(str(entry))
        proto.graph.node[0].domain = "os"
        entry.write_bytes(proto.SerializeToString())
    again, hit = graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)
    assert not hit and again.model.SerializeToString() == streamlined.model.SerializeToString()
    assert graph_cache.cached("streamlined", finn_graph, streamline.streamline, CODE)[1]  # the entry was replaced


def test_cache_off_writes_nothing(finn_graph, streamlined, tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_CACHE_DIR", "off")
    calls = []

    def transform(model):
        calls.append(model)
        return streamlined

    assert not graph_cache.cached("streamlined", finn_graph, transform, CODE)[1]
    assert not graph_cache.cached("streamlined", finn_graph, transform, CODE)[1]
    assert len(calls) == 2 and not (tmp_path / "cache").exists()
