"""A residual CNN whose summands share one quantizer, on the TFLite family, by the full rule.

Its 4-bit pool quantizer takes the mean of 16 codes at 1/15, which lands exactly on k + 0.5 for many inputs: the
QONNX graph (onnxruntime's float32) and the Brevitas module (PyTorch's) round such a tie apart by one code, and the
classifier after it turns one code into ~2 LSB of the output. The final-output check feeds the graph's tensors, so
on those tie samples it holds the artifact to the graph's own output (counted as ties); everywhere else, and for any
op that the lowering gets wrong, it holds as before.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_residual_fpga import EXAMPLE, MyResNet, _eval
from test_verify_tolerance import _patched_lowering

from sdk import deploy
from targets.tflite.verify import compare_final_output

TARGETS = "tflite,stm32f746g-disco,ethos-u55-128"  # LiteRT, TFLite Micro on a Cortex-M, Vela for an Ethos-U


def _checks(package) -> dict[str, dict]:
    checks = json.loads((package / "report.json").read_text())["data"]["verification"]["checks"]
    return {c["name"].split(" ")[0]: c for c in checks}  # "LiteRT ...", "every op ...", "final output ..."


@pytest.mark.slow
def test_my_resnet_is_verified_on_the_tflite_family(tmp_path):
    results = deploy(_eval(MyResNet()), TARGETS, example_input=EXAMPLE, out=str(tmp_path / "rn"), samples=100)
    assert [(r.verified, r.exit_code) for r in results] == [(True, 0)] * 3, [r.failure for r in results]
    for result in results:
        checks = _checks(result.package)
        assert all(c["passed"] for c in checks.values()), checks
        assert all(c["mismatch_rate"] == 0 for key, c in checks.items() if key != "every"), checks
        final = checks["final"]
        # the 100 random inputs hold two samples where the graph and the module round the pool's tie apart: the
        # old check failed them (2.18 LSB); they pass against the graph, counted, and they are the only ones
        assert 1 <= final["ties"] <= 5 and "round apart" in final["detail"], final


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["shortcut dropped", "classifier mis-lowered"])
def test_a_broken_lowering_of_my_resnet_still_fails(broken, tmp_path, monkeypatch):
    """A residual add that reads its main branch twice (the shortcut dropped) fails at that add; a classifier whose
    one class has its weights negated, beyond the last compared tensor, fails at the network output, the tie
    samples included (the artifact follows neither the module nor the graph there)."""

    def change(layers):
        if broken == "shortcut dropped":
            add = [layer for layer in layers if layer.op == "add"][-1]
            add.inputs = [add.inputs[0], add.inputs[0]]
        else:
            last = layers[-1]
            assert last.op == "fc"
            last.weights = last.weights.copy()
            last.weights[3] = -last.weights[3]
            last.compared = False

    _patched_lowering(monkeypatch, change)
    results = deploy(
        _eval(MyResNet()), "tflite,stm32f746g-disco", example_input=EXAMPLE, out=str(tmp_path / "rn"), samples=100
    )
    for result in results:
        assert (result.verified, result.exit_code) == (False, 1)
        checks = _checks(result.package)
        if broken == "shortcut dropped":
            assert not checks["every"]["passed"] and checks["every"]["first_difference"] == "Add_1"
        else:
            final = checks["final"]
            assert not final["passed"] and final["first_difference"] == "network output"
            assert final["ties"] == 0 and final["mismatch_rate"] > 0.5


def test_a_tie_is_excused_only_where_the_artifact_follows_the_graph():
    """Per sample: beyond the tolerance of the source model passes only on a tie sample and within the tolerance
    of the graph the fed tensors came from."""
    reference = np.zeros((4, 3))
    graph = reference.copy()
    graph[:3, 0] = 2.0  # the graph rounded a tie apart from the module on samples 0-2
    fed = graph.copy()
    fed[2, 0] = 4.0  # sample 2: the artifact is beyond the graph too
    ties = np.array([True, False, True, True])
    check = compare_final_output(fed, fed, reference, 1.0, graph=graph, ties=lambda: ties)
    assert not check.passed and check.ties == 1 and check.first_sample == 1  # sample 1 differs but is no tie
    assert check.mismatch_rate == 0.5  # samples 1 and 2
    without_graph = compare_final_output(fed, fed, reference, 1.0)
    assert without_graph.mismatch_rate == 0.75 and without_graph.ties == 0
    fed[1:3, 0] = graph[1:3, 0] = 0.0
    passed = compare_final_output(fed, fed, reference, 1.0, graph=graph, ties=lambda: ties)
    assert passed.passed and passed.ties == 1 and "round apart" in passed.detail
