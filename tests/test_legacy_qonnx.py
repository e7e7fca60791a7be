"""Older QONNX files: quantizers in the domain `finn.custom_op.general`, as older converters (QKeras's) wrote them.

The file is the SDK's own export of the committed TFC run with its Quant nodes moved to the legacy domain (and the
opset import with them), without a model card beside it, as such a converter leaves it. Quant, BipolarQuant and
Trunc are read as qonnx's by a fixed table; any other op in that domain is refused, named.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from sdk.errors import ExportError
from sdk.onnx_guard import LEGACY_DOMAIN, LEGACY_TARGET, load_onnx_safely


def _legacy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as an older converter wrote it: every qonnx op and its opset import in FINN's general domain."""
    for node in model.graph.node:
        if node.domain == LEGACY_TARGET:
            node.domain = LEGACY_DOMAIN
    for opset in model.opset_import:
        if opset.domain == LEGACY_TARGET:
            opset.domain, opset.version = LEGACY_DOMAIN, 1
    return model


@pytest.fixture
def legacy_file(tfc_export, tmp_path) -> Path:
    path = tmp_path / "qkeras_tfc.onnx"  # no card beside it: the card is read off the graph
    onnx.save(_legacy(onnx.load(tfc_export)), path)
    return path


@pytest.fixture
def multithreshold_file(tfc_export, tmp_path) -> Path:
    """The legacy file with one activation quantizer replaced by FINN's MultiThreshold, in the same domain."""
    model = _legacy(onnx.load(tfc_export))
    index, quant = next((i, n) for i, n in enumerate(model.graph.node) if n.name == "Quant_4")
    model.graph.initializer.append(helper.make_tensor("thresholds", TensorProto.FLOAT, [1, 3], [0.5, 1.5, 2.5]))
    threshold = helper.make_node(
        "MultiThreshold", [quant.input[0], "thresholds"], [quant.output[0]], "MultiThreshold_0", domain=LEGACY_DOMAIN
    )
    model.graph.node.remove(quant)
    model.graph.node.insert(index, threshold)
    path = tmp_path / "streamlined.onnx"
    onnx.save(model, path)
    return path


def test_legacy_quantizers_are_read_as_qonnx_ops_with_a_note(legacy_file, caplog):
    assert {n.domain for n in onnx.load(legacy_file).graph.node} == {"", LEGACY_DOMAIN}
    renamed: list[str] = []
    with caplog.at_level(logging.WARNING, logger="sdk.onnx_guard"):
        model = load_onnx_safely(legacy_file, "--model qkeras_tfc.onnx", renamed=renamed)
    quantizers = [n for n in model.graph.node if n.op_type == "Quant"]
    assert len(quantizers) == 7 and {n.domain for n in quantizers} == {LEGACY_TARGET}
    assert renamed == [n.name for n in quantizers]
    imports = {opset.domain: opset.version for opset in model.opset_import}
    assert LEGACY_DOMAIN not in imports and imports[LEGACY_TARGET] == 1
    assert "--model qkeras_tfc.onnx" in caplog.text and LEGACY_DOMAIN in caplog.text and "Quant_0" in caplog.text


def test_bipolar_quant_and_trunc_are_renamed_and_keep_the_legacy_opset_version(tmp_path):
    """The table holds exactly Quant, BipolarQuant and Trunc; the legacy import's version picks Trunc's semantics."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    bits = helper.make_tensor("bits", TensorProto.FLOAT, [], [8.0])
    out_bits = helper.make_tensor("out_bits", TensorProto.FLOAT, [], [4.0])
    nodes = [
        helper.make_node("BipolarQuant", ["x", "one"], ["b"], "BipolarQuant_0", domain=LEGACY_DOMAIN),
        helper.make_node(
            "Trunc", ["b", "one", "zero", "bits", "one", "out_bits"], ["y"], "Trunc_0", domain=LEGACY_DOMAIN
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [one, zero, bits, out_bits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(LEGACY_DOMAIN, 2)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    loaded = load_onnx_safely(path, "m.onnx")
    assert [n.domain for n in loaded.graph.node] == [LEGACY_TARGET, LEGACY_TARGET]
    assert {o.domain: o.version for o in loaded.opset_import} == {"": 13, LEGACY_TARGET: 2}
    # a package graph (FINN's domains allowed) is read as FINN wrote it: nothing renamed
    assert {n.domain for n in load_onnx_safely(path, "m.onnx", finn_ops=True).graph.node} == {LEGACY_DOMAIN}


def test_another_op_in_the_legacy_domain_is_refused_naming_the_node(multithreshold_file):
    with pytest.raises(ExportError) as info:
        load_onnx_safely(multithreshold_file, "--model streamlined.onnx")
    error = info.value
    assert "'MultiThreshold_0' (MultiThreshold" in error.what and LEGACY_DOMAIN in error.what
    assert error.where == "--model streamlined.onnx" and "before any FINN transformation" in error.fix
    assert "QKeras" in error.fix


def _sdk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdk", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_legacy_file_checks_and_deploys_verified_to_pynq_z2_and_tflite(legacy_file, tmp_path):
    for target in ("pynq-z2", "tflite"):
        proc = _sdk("check", "--model", str(legacy_file), "--target", target)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "supported" in proc.stdout and LEGACY_DOMAIN in proc.stderr
    out = tmp_path / "d"
    proc = _sdk("deploy", "--model", str(legacy_file), "--target", "pynq-z2,tflite", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count(f"older domain '{LEGACY_DOMAIN}'") == 1  # noted once, not by every later reader
    results = json.loads(proc.stdout)["results"]
    assert [(r["board"], r["verified"], r["exit_code"]) for r in results] == [("pynq-z2", True, 0), ("tflite", True, 0)]
    for board in ("pynq-z2", "tflite"):
        package = out / board
        assert any(LEGACY_DOMAIN in note for note in json.loads((package / "report.json").read_text())["notes"])
        shipped = onnx.load(package / "model.qonnx.onnx")  # the package's graph loads anywhere qonnx runs
        assert {n.domain for n in shipped.graph.node} == {"", LEGACY_TARGET}


@pytest.mark.slow
def test_the_cli_refuses_a_finn_op_in_the_legacy_domain_with_exit_2(multithreshold_file, tmp_path):
    proc = _sdk("check", "--model", str(multithreshold_file), "--target", "pynq-z2", "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    payload = json.loads(proc.stdout)
    assert "MultiThreshold_0" in payload["what"] and "Traceback" not in proc.stderr
