"""The README's core promise: an artifact that computes something else never passes.

Each test deploys a real model through the real flow, with one weight of the
artifact changed on the way (a step added to the flow, as a miscompiling tool
would), and expects `sdk deploy` to exit 1 naming the first differing layer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sdk.cli import main

pytestmark = pytest.mark.slow


def _deploy(target: str, model, out) -> tuple[int, dict]:
    result = CliRunner().invoke(
        main, ["deploy", "--target", target, "--model", str(model), "--out", str(out), "--samples", "20", "--json"]
    )
    return result.exit_code, json.loads(result.stdout)


def _insert_step_before(monkeypatch, step_name: str, step) -> None:
    """Run `step` (model, cfg) -> model in the FINN flow just before the step called `step_name`."""
    from targets.finn import steps

    position = steps.STEP_NAMES.index(step_name)
    flow = [*steps.STEPS[:position], (step.__name__, step.__name__, step), *steps.STEPS[position:]]
    monkeypatch.setattr(steps, "STEPS", flow)
    monkeypatch.setattr(steps, "STEP_NAMES", [name for name, _, _ in flow])


def test_a_finn_accelerator_with_one_weight_changed_fails_naming_the_layer(tfc_run, tmp_path, monkeypatch):
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    changed = {}

    def change_one_weight(model, cfg):
        node = next(n for n in model.graph.node if n.op_type.startswith("MVAU"))
        weights = model.get_initializer(node.input[1]).copy()
        datatype = DataType[getCustomOp(node).get_nodeattr("weightDataType")]
        row = weights[weights.shape[0] // 2 - 4]  # an input near the image centre: every digit lights it
        row[0] = datatype.min() if row[0] != datatype.min() else datatype.max()
        model.set_initializer(node.input[1], weights)
        changed["layer"] = node.name
        return model

    _insert_step_before(monkeypatch, "minimize_bit_widths_after_folding", change_one_weight)

    code, result = _deploy("pynq-z2", tfc_run, tmp_path / "finn")
    report = json.loads((tmp_path / "finn" / "report.json").read_text())
    assert code == 1 and result["verified"] is False
    failed = [c for c in report["data"]["verification"]["checks"] if not c["passed"]]
    assert failed[0]["first_difference"] == changed["layer"]


def test_a_tflite_file_with_one_weight_changed_fails_naming_the_tensor(tfc_run, tmp_path, monkeypatch):
    from targets.tflite import writer

    original = writer.lower
    changed = {}

    def lower_then_change_one_weight(*args, **kwargs):
        lowered = original(*args, **kwargs)
        layer = [layer for layer in lowered.layers if layer.weights is not None][-1]  # the classifier: no clamp
        rows = layer.weights.reshape(len(layer.weights), -1)
        column = int(np.abs(rows.astype(np.int64)).sum(axis=0).argmax())  # the input the classifier leans on most
        rows[0, column] = -128 if rows[0, column] >= 0 else 127
        changed["tensor"] = layer.name
        return lowered

    monkeypatch.setattr(writer, "lower", lower_then_change_one_weight)
    code, result = _deploy("tflite", tfc_run, tmp_path / "tflite")
    report = json.loads((tmp_path / "tflite" / "report.json").read_text())
    assert code == 1 and result["verified"] is False
    failed = [c for c in report["data"]["verification"]["checks"] if not c["passed"]]
    assert failed and failed[0]["first_difference"] == changed["tensor"]


def test_an_accelerator_that_parts_from_the_qat_model_is_failed_at_the_first_differing_layer(
    tfc_run, tmp_path, monkeypatch
):
    """Weights changed in the second HW layer before FINN's own execution is taken: simulator and FINN agree with
    each other, only the QAT comparison can catch it, and it names that layer, not just the network output."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    def change_the_second_layer(model, cfg):
        node = [n for n in model.graph.node if n.op_type.startswith("MVAU")][1]
        weights = model.get_initializer(node.input[1]).copy()
        weights[:, :8] = DataType[getCustomOp(node).get_nodeattr("weightDataType")].max()
        model.set_initializer(node.input[1], weights)
        return model

    _insert_step_before(monkeypatch, "check_mapping", change_the_second_layer)

    code, result = _deploy("pynq-z2", tfc_run, tmp_path / "finn")
    report = json.loads((tmp_path / "finn" / "report.json").read_text())
    assert code == 1 and result["verified"] is False
    checks = {c["name"]: c for c in report["data"]["verification"]["checks"]}
    assert checks["simulator = FINN python execution, every layer"]["passed"]
    failed = [c for c in checks.values() if not c["passed"]]
    assert failed[0]["first_difference"].startswith("MVAU") and failed[0]["first_difference"].endswith("_1"), failed
    assert f"sample: {failed[0]['first_sample']}" in failed[0]["detail"]
    assert "first parts from the QAT model at " + failed[0]["first_difference"] in failed[0]["detail"]
