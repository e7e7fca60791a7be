"""Residual networks on FPGA boards: FINN's DuplicateStreams + ElementwiseAdd (its AddStreams), after its
streamlining for residual blocks.

The zoo's resnet8 and a ResNet written the way users write them (one QuantIdentity shared by both summands)
deploy verified by the full rule; a residual sum whose summands no shared quantizer made is refused by `sdk check`
and `sdk deploy` alike, with exit 2, naming the Add as the user's file names it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from tampering import recompute_manifest
from test_own_models import _eval  # random BatchNorm statistics that spread activations
from torch import nn

from sdk import check, deploy
from sdk.deployment import DeployConfig
from sdk.deployment import check as run_check
from sdk.deployment import deploy as run_deploy
from sdk.errors import UnsupportedLayersError
from sdk.onnx_guard import load_onnx_safely

pytestmark = pytest.mark.slow

QUANT = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}
EXAMPLE = torch.zeros(1, 1, 8, 8)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the shortcut (a strided 1x1 conv where the shape changes), summed through one
    shared quantizer, then a ReLU: the ResNet basic block as Brevitas users write it for FINN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, shared: bool = True):
        super().__init__()
        self.conv1 = QuantConv2d(in_ch, out_ch, 3, stride=stride, padding=1, **QUANT)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = QuantReLU(bit_width=4)
        self.conv2 = QuantConv2d(out_ch, out_ch, 3, padding=1, **QUANT)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                QuantConv2d(in_ch, out_ch, 1, stride=stride, **QUANT), nn.BatchNorm2d(out_ch)
            )
        self.residual_quant = QuantIdentity(bit_width=8) if shared else None
        self.relu2 = QuantReLU(bit_width=4)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.residual_quant is not None:
            out = self.residual_quant(out) + self.residual_quant(identity)
        else:
            out = out + identity
        return self.relu2(out)


class MyResNet(nn.Module):
    def __init__(self, shared: bool = True):
        super().__init__()
        torch.manual_seed(23)
        self.conv1 = QuantConv2d(1, 8, 3, padding=1, **QUANT)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = QuantReLU(bit_width=4)
        self.layer1 = BasicBlock(8, 8, shared=shared)
        self.layer2 = BasicBlock(8, 16, stride=2, shared=shared)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.pool_quant = QuantIdentity(bit_width=4)
        self.fc = QuantLinear(16, 10, **QUANT)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool_quant(self.avgpool(x)), 1))


def _report(package) -> dict:
    return json.loads((package / "report.json").read_text())["data"]


def _assert_residual_hardware(package) -> None:
    """The accelerator forks and joins in hardware, every shortcut has its FIFO in the folding config, and every
    check of the rule passed with no differing value."""
    data = _report(package)
    ops = [layer["op_type"] for layer in data["estimate"]["layers"]]
    joins = [layer["name"] for layer in data["estimate"]["layers"] if layer["op_type"].startswith("ElementwiseAdd")]
    assert joins and any(op.startswith("DuplicateStreams") for op in ops), ops
    checks = data["verification"]["checks"]
    assert {c["name"] for c in checks} >= {
        "simulator = FINN python execution, every layer",
        "accelerator integer output = QAT model",
        "final output = QAT model",
    }
    assert all(c["passed"] and c["mismatch_rate"] == 0 for c in checks), checks
    # each shortcut's FIFO holds one frame of its words at the join's folding, so the fork cannot deadlock
    folding = json.loads((package / "folding_config.json").read_text())
    graph = ModelWrapper(load_onnx_safely(package / "dataflow_model.onnx", "package", finn_ops=True))
    fifos = {f["join"]: f for f in data["shortcut_fifos"]}
    assert set(fifos) == set(joins)
    for name, fifo in fifos.items():
        join = getCustomOp(graph.get_node_from_name(name))
        assert fifo["depth"] == int(np.prod(join.get_folded_input_shape(fifo["shortcut_input"])[:-1])) >= 2
        assert folding[name]["inFIFODepths"][fifo["shortcut_input"]] == fifo["depth"]


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104"])
def test_resnet8_deploys_verified_bit_exact(zoo_runs, tmp_path, board):
    run_check(DeployConfig(target=board, model=str(zoo_runs["resnet8"])))  # `sdk check` says it maps, as deploy does
    result = run_deploy(
        DeployConfig(target=board, model=str(zoo_runs["resnet8"]), out=str(tmp_path / board), samples=10),
        progress=False,
    )
    assert result.verified and result.exit_code == 0
    _assert_residual_hardware(tmp_path / board)
    if board != "pynq-z2":
        return
    # the packaged accelerator on the whole digits test split, through the CLI: every output identical
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "simulate", str(tmp_path / board), "--data", "digits", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    sim = json.loads(proc.stdout)
    assert sim["samples"] == 360 and sim["identical_outputs"] == 1.0 and sim["agreement"] == 1.0
    _tampered_join_is_refused(tmp_path / board)


def _tampered_join_is_refused(package) -> None:
    """A join whose second stream the attributes make another size (manifest recomputed): exit 2 naming the node,
    never a numpy error from the simulator."""
    import onnx

    graph = onnx.load(package / "dataflow_model.onnx")
    join = next(node for node in graph.graph.node if node.op_type.startswith("ElementwiseAdd"))
    shape = next(attribute for attribute in join.attribute if attribute.name == "rhs_shape")
    shape.ints[-1] //= 2
    onnx.save(graph, package / "dataflow_model.onnx")
    recompute_manifest(package, "dataflow_model.onnx")
    proc = subprocess.run([sys.executable, "-m", "sdk", "simulate", str(package)], capture_output=True, text=True)
    assert proc.returncode == 2 and join.name in proc.stderr and "input 1" in proc.stderr, proc.stderr


def test_a_users_resnet_with_a_shared_quantizer_deploys_verified(tmp_path):
    model = _eval(MyResNet())
    check(model, "pynq-z2", example_input=EXAMPLE)
    result = deploy(model, "pynq-z2", example_input=EXAMPLE, out=str(tmp_path / "fpga"), samples=50)
    assert result.verified and result.exit_code == 0
    _assert_residual_hardware(tmp_path / "fpga")
    shortcuts = _report(tmp_path / "fpga")["shortcut_fifos"]
    assert len(shortcuts) == 2 and [len(s["shortcut_layers"]) > 0 for s in shortcuts] == [True, True]


def _user_file(model: nn.Module, path) -> str:
    """The user's own file: Brevitas's export_qonnx, the residual Add renamed the way the user's tooling names it."""
    import onnx
    from brevitas.export import export_qonnx

    export_qonnx(model, input_t=EXAMPLE, export_path=str(path))
    graph = onnx.load(str(path))
    adds = [node for node in graph.graph.node if node.op_type == "Add"]
    for index, node in enumerate(adds):
        node.name = f"block{index + 1}/residual_add"
    onnx.save(graph, str(path))
    return str(path)


def test_a_residual_sum_without_a_shared_quantizer_is_refused_by_check_and_deploy(tmp_path):
    model = _eval(MyResNet(shared=False))
    with pytest.raises(UnsupportedLayersError) as info:
        check(model, "pynq-z2", example_input=EXAMPLE)
    assert info.value.exit_code == 2 and len(info.value.layers) == 2
    for layer in info.value.layers:
        assert layer.op_type == "Add" and "no quantizer" in layer.why and "shared quantizer" in layer.fix
    # the TFLite writer refuses such a sum as well: its check was asked, and the fix does not send the user there
    assert "deploy it to a TFLite target" not in info.value.render() and not info.value.alternative_check["accepts"]

    path = _user_file(model, tmp_path / "my_resnet.onnx")
    scale = ["--input-scale", str(1 / 255)]
    outputs = []
    for command in (["check"], ["deploy", "--out", str(tmp_path / "out"), "--samples", "4"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sdk", *command, "--target", "pynq-z2", "--model", path, *scale, "--json"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        outputs.append(json.loads(proc.stdout))
    for payload in outputs:
        assert [layer["name"] for layer in payload["layers"]] == ["block1/residual_add", "block2/residual_add"]
        assert all("BatchNormalization" in layer["why"] for layer in payload["layers"])
    assert outputs[0]["layers"] == outputs[1]["layers"]
    assert not (tmp_path / "out").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "check", "--target", "tflite", "--model", path, *scale, "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr  # so the FPGA refusal rightly sends nobody there
    assert "FPGA" not in json.loads(proc.stdout)["fix"]  # nor the TFLite refusal back to an FPGA


def test_summands_of_two_quantizers_with_different_scales_are_refused():
    """Each summand quantized, but by its own quantizer of another scale: FINN cannot add the integers."""

    class TwoQuantizers(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(29)
            self.conv = QuantConv2d(1, 8, 3, padding=1, **QUANT)
            self.act = QuantReLU(bit_width=4)
            self.branch = QuantConv2d(8, 8, 3, padding=1, **QUANT)
            self.branch_act = QuantReLU(bit_width=2)  # its own scale, 1/3 against the other's 1/15
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = QuantLinear(8, 10, **QUANT)

        def forward(self, x):
            x = self.act(self.conv(x))
            x = x + self.branch_act(self.branch(x))
            return self.fc(self.pool(x).flatten(1))

    with pytest.raises(UnsupportedLayersError) as info:
        check(_eval(TwoQuantizers()), "pynq-z2", example_input=EXAMPLE)
    (layer,) = info.value.layers
    assert layer.op_type == "Add" and "different scales" in layer.why and "shared quantizer" in layer.fix
