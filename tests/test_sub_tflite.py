"""A model that subtracts one quantized branch from another (an ONNX Sub of two int8 tensors), on the TFLite family.

Written the way users write it: two conv branches, each through its own QuantIdentity (8 and 6 bits: two scales),
`a - b`, then a QuantReLU. The writer lowers the Sub to int8 SUB at the QuantReLU's quantization (with its fused RELU),
as a residual Add; LiteRT, TFLite Micro on a Cortex-M and Vela for an Ethos-U take it, verified by the full rule.
"""

from __future__ import annotations

import json

import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat
from test_own_models import _eval  # random BatchNorm statistics that spread activations
from test_verify_tolerance import _patched_lowering
from torch import nn

from sdk import deploy

QUANT = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}
EXAMPLE = torch.zeros(1, 1, 8, 8)
TARGETS = "tflite,stm32f746g-disco,ethos-u55-128"  # LiteRT, TFLite Micro on a Cortex-M, Vela for an Ethos-U


class TwoBranchDifference(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv_a = QuantConv2d(1, 8, 3, padding=1, **QUANT)
        self.bn_a = nn.BatchNorm2d(8)
        self.quant_a = QuantIdentity(bit_width=8)
        self.conv_b = QuantConv2d(1, 8, 3, padding=1, **QUANT)
        self.bn_b = nn.BatchNorm2d(8)
        self.quant_b = QuantIdentity(bit_width=6)  # another scale than quant_a
        self.relu = QuantReLU(bit_width=4)
        self.fc = QuantLinear(8 * 8 * 8, 10, **QUANT)

    def forward(self, x):
        a = self.quant_a(self.bn_a(self.conv_a(x)))
        b = self.quant_b(self.bn_b(self.conv_b(x)))
        return self.fc(torch.flatten(self.relu(a - b), 1))


def _report(package) -> dict:
    return json.loads((package / "report.json").read_text())["data"]


@pytest.mark.slow
def test_a_difference_of_two_branches_is_verified_on_the_tflite_family(tmp_path):
    results = deploy(
        _eval(TwoBranchDifference()), TARGETS, example_input=EXAMPLE, out=str(tmp_path / "sub"), samples=100
    )
    assert [(r.verified, r.exit_code) for r in results] == [(True, 0)] * 3, [r.failure for r in results]
    for result in results:
        report = _report(result.package)
        checks = report["verification"]["checks"]
        assert all(c["passed"] for c in checks), checks
        assert all(c["mismatch_rate"] == 0 for c in checks if not c["name"].startswith("every op")), checks
        layers = {layer["name"]: layer for layer in report["tflite"]["layers"]}
        (sub,) = [layer for layer in layers.values() if layer["op"] == "sub"]
        first, second = (layers[name] for name in sub["inputs"])
        assert first["scale"] != second["scale"], sub  # one quantizer per branch: SUB rescales both terms
        assert [op["op"] for op in report["tflite"]["ops"]].count("SUB") == 1
    assert _report(results[2].package)["vela"]["summary"]["cpu_ops"] == []  # Vela runs SUB on the NPU


@pytest.mark.slow
def test_a_difference_lowered_with_its_terms_swapped_fails_at_the_sub(tmp_path, monkeypatch):
    """The verification compares the Sub's own tensor: a lowering that computes b - a fails there."""

    def swap(layers):
        sub = next(layer for layer in layers if layer.op == "sub")
        sub.inputs = sub.inputs[::-1]

    _patched_lowering(monkeypatch, swap)
    result = deploy(_eval(TwoBranchDifference()), "tflite", example_input=EXAMPLE, out=str(tmp_path / "sub"))
    assert (result.verified, result.exit_code) == (False, 1)
    (every,) = [c for c in _report(result.package)["verification"]["checks"] if c["name"].startswith("every op")]
    assert not every["passed"] and every["first_difference"] == "Sub_0", every
