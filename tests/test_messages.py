"""Messages name what the user's file names, and fix advice never goes in circles.

The QONNX files are written the way users write them: Brevitas's export_qonnx through torch's TorchScript exporter
(nodes `/conv1/Conv`, `/up/Resize`, tensors `/conv1/Conv_output_0`, an input `x.159`), without a model card, so
the SDK cleans them up with qonnx (which renames everything: `Conv_0`, `global_in`) and FINN renames again. Every
refusal, through the real CLI (`sdk check`, `sdk deploy`, --json), names the file's nodes; a node the SDK added is
"the input scale the SDK added"; a file without node names gets its nodes' places. A refusal names another target
only where that target's own check accepts the model: an upsampling CNN and an LSTM are refused by both families,
and neither sends the user to the other; a 1-bit-activation MLP refused by the TFLite writer is sent to the FPGA
boards, whose check accepts it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat, SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from torch import nn

PIXELS = "0.00392156862745098"  # --input-scale: the files take floats, the SDK feeds pixels / 255
WEIGHTS = {"bias": False, "weight_bit_width": 4, "weight_quant": Int8WeightPerTensorFloat}
# names of the form qonnx's clean-up and FINN's steps give (`global_in`, `Conv_0`, `Conv_0_out0`, `MVAU_1`)
GIVEN_NAME = re.compile(r"\bglobal_(?:in|out)\b|(?<![/\w:.])[A-Z][A-Za-z]*_\d+(?:_out\d+|_param\d+)?\b")
FPGA_ADVICE = re.compile(r"FPGA board|pynq|FINN", re.I)
TFLITE_ADVICE = re.compile(r"TFLite target|--target tflite", re.I)


class Upsampler(nn.Module):
    """A CNN with a nearest-neighbour upsampling (Resize) between its convolutions: no FPGA or TFLite mapping."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = QuantIdentity(bit_width=8)
        self.conv1, self.act1 = QuantConv2d(1, 4, 3, padding=1, **WEIGHTS), QuantReLU(bit_width=4)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv2, self.act2 = QuantConv2d(4, 4, 3, padding=1, **WEIGHTS), QuantReLU(bit_width=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = QuantLinear(4, 3, **WEIGHTS)

    def forward(self, x):
        x = self.act2(self.conv2(self.up(self.act1(self.conv1(self.inp(x))))))
        return self.fc(self.pool(x).flatten(1))


class Recurrent(nn.Module):
    """An LSTM over 8 steps of 8 features, between quantizers: recurrent, which neither family maps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = QuantIdentity(bit_width=8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.out_quant = QuantIdentity(bit_width=8)
        self.fc = QuantLinear(8, 2, **WEIGHTS)

    def forward(self, x):
        out, _ = self.lstm(self.inp(x).reshape(x.shape[0], 8, 8))
        return self.fc(self.out_quant(out[:, -1]))


class BipolarMLP(nn.Module):
    """1-bit weights and a 1-bit (bipolar) activation: FINN's XNOR layers run it; the TFLite writer refuses it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        binary = {"bias": False, "weight_quant": SignedBinaryWeightPerTensorConst, "weight_bit_width": 1}
        self.inp = QuantIdentity(bit_width=8)
        self.fc1, self.bn1 = QuantLinear(64, 32, **binary), nn.BatchNorm1d(32)
        self.act1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.fc2 = QuantLinear(32, 10, **binary)

    def forward(self, x):
        return self.fc2(self.act1(self.bn1(self.fc1(self.inp(x)))))


def _export(module: nn.Module, example: torch.Tensor, path: Path, unnamed: bool = False) -> Path:
    """The module as a user's QONNX file: Brevitas's export through torch's TorchScript exporter (or, unnamed, the
    same graph with every node name removed, as some converters leave it). No model card beside it."""
    export_qonnx(module.eval(), input_t=example, export_path=str(path), dynamo=False)
    if unnamed:
        model = onnx.load(path)
        for node in model.graph.node:
            node.name = ""
        onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("messages")
    return {
        "upsampler": _export(Upsampler(), torch.zeros(1, 1, 8, 8), folder / "upsampler.onnx"),
        "unnamed": _export(Upsampler(), torch.zeros(1, 1, 8, 8), folder / "unnamed.onnx", unnamed=True),
        "lstm": _export(Recurrent(), torch.zeros(1, 64), folder / "lstm.onnx"),
        "bipolar": _export(BipolarMLP(), torch.zeros(1, 64), folder / "bipolar.onnx"),
    }


def node_names(path: Path) -> set[str]:
    return {node.name for node in onnx.load(path).graph.node}


def invented(payload: dict, path: Path) -> list[str]:
    """Names in a message that look like qonnx's or FINN's and are not the file's own (its nodes and tensors)."""
    graph = onnx.load(path).graph
    own = node_names(path) | {t for node in graph.node for t in [*node.input, *node.output]}
    own |= {t.name for t in [*graph.input, *graph.output, *graph.initializer]}
    return [name for name in GIVEN_NAME.findall(json.dumps(payload)) if name not in own]


def sdk(*args: str, code: int = 2) -> dict:
    """`sdk ... --json` as a user runs it; the JSON it prints."""
    proc = subprocess.run([sys.executable, "-m", "sdk", *args, "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def check(path: Path, target: str, code: int = 2) -> dict:
    return sdk("check", "--model", str(path), "--input-scale", PIXELS, "--target", target, code=code)


def advice(fix: str) -> str:
    """A fix without the other family's refusal it quotes: what the user is told to do."""
    return fix.split(" (the TFLite targets refuse")[0].split(" (the FPGA boards refuse")[0]


def test_the_deployed_graph_keeps_the_files_names_and_marks_the_sdks_input_scale(files, tmp_path):
    """The clean-up's renaming is undone: nodes, tensors and the input carry the file's names; the Mul the SDK puts
    in front for --input-scale is described as the SDK's."""
    from sdk.deployment import resolve_model
    from sdk.graph_names import SDK_INPUT_SCALE, describe, node_phrase

    source = onnx.load(files["upsampler"]).graph
    resolved = resolve_model(str(files["upsampler"]), tmp_path, float(PIXELS))
    graph = onnx.load(resolved.onnx_path).graph
    by_name = {node.name: node for node in graph.node}
    assert {"/conv1/Conv", "/up/Resize", "/conv2/Conv", "/fc/MatMul"} <= set(by_name)
    assert by_name["/conv1/Conv"].output[0] == next(n for n in source.node if n.name == "/conv1/Conv").output[0]
    original_input = source.input[0].name  # e.g. x.159, as torch numbers it
    assert graph.input[0].name == f"{original_input}_pixels"
    scale = next(node for node in graph.node if node.op_type == "Mul" and node.input[0] == graph.input[0].name)
    assert scale.output[0] == original_input
    assert describe(scale) == SDK_INPUT_SCALE and node_phrase(scale) == f"{SDK_INPUT_SCALE} (Mul)"
    names = " ".join([t.name for t in [*graph.input, *graph.output, *graph.value_info]] + list(by_name))
    assert "global_in" not in names and "Conv_0" not in names and "Resize_0" not in names


@pytest.mark.parametrize("target", ["pynq-z2", "tflite"])
def test_check_refusals_name_the_files_nodes_and_advice_is_not_circular(files, target):
    """An upsampling CNN: FINN and the TFLite writer both refuse it; each names the file's nodes, and neither sends
    the user to the other. FINN's refusal asked the TFLite check, and quotes its refusal (`alternative` tells
    scripts); the writer's refusal of a Resize, an op FINN does not map either, names no other target at all."""
    payload = check(files["upsampler"], target)
    assert not invented(payload, files["upsampler"]), payload
    if target == "tflite":
        assert payload["what"] == "Node /up/Resize (Resize) has no int8 TFLite mapping."
        assert not FPGA_ADVICE.search(payload["fix"]) and "alternative" not in payload, payload["fix"]
        return
    assert {layer["name"] for layer in payload["layers"]} <= node_names(files["upsampler"]), payload["layers"]
    assert "/up/Resize" in payload["what"]
    assert not TFLITE_ADVICE.search(advice(payload["fix"]))
    assert "the TFLite targets refuse this model too" in payload["fix"]
    assert all(not TFLITE_ADVICE.search(layer["fix"]) for layer in payload["layers"])
    assert payload["alternative"]["accepts"] is False and payload["alternative"]["reason"]


def test_an_lstm_is_refused_by_both_families_without_circular_advice(files):
    fpga, tflite = check(files["lstm"], "pynq-z2"), check(files["lstm"], "tflite")
    assert [layer["name"] for layer in fpga["layers"]] == ["/lstm/LSTM"]
    assert "recurrence" in fpga["layers"][0]["fix"] and not TFLITE_ADVICE.search(advice(fpga["fix"]))
    assert not FPGA_ADVICE.search(advice(tflite["fix"]))
    assert tflite["what"].startswith("Node /")
    assert not invented(tflite, files["lstm"]) and not invented(fpga, files["lstm"])
    # the TFLite writer stops at the reshape into time steps, a refusal of the model's form: no target is advised
    assert "alternative" not in tflite and "FPGA" not in tflite["fix"]
    assert fpga["alternative"]["accepts"] is False


def test_a_file_without_node_names_gets_its_nodes_places(files):
    """Nodes without names are told by their place in the file (counted from 1), never by the names qonnx gives."""
    ops = [node.op_type for node in onnx.load(files["unnamed"]).graph.node]
    resize = ops.index("Resize") + 1
    tflite = check(files["unnamed"], "tflite")
    assert tflite["what"] == f"Unnamed node #{resize} (Resize) has no int8 TFLite mapping."
    fpga = check(files["unnamed"], "pynq-z2")
    assert all(re.fullmatch(r"unnamed node #\d+", layer["name"]) for layer in fpga["layers"]), fpga["layers"]
    assert f"unnamed node #{resize}" in fpga["what"]
    assert not invented(tflite, files["unnamed"]) and not invented(fpga, files["unnamed"])


def test_advice_names_the_other_target_only_when_its_check_accepts_the_model(files):
    """A bipolar activation: the TFLite family refuses it, FINN's check accepts the model, so the fix says so."""
    assert check(files["bipolar"], "pynq-z2", code=0) == {
        "target": "pynq-z2",
        "model": str(files["bipolar"]),
        "supported": True,
    }
    for target in ("tflite", "ethos-u55-128"):
        payload = check(files["bipolar"], target)
        assert payload["what"].startswith("Node /act1/") and "1 bit" in payload["what"]
        assert "deploy it to an FPGA board: `sdk check --target pynq-z2` accepts it" in payload["fix"]
        assert payload["alternative"] == {"target": "pynq-z2", "accepts": True, "reason": None}


@pytest.mark.parametrize("target", ["pynq-z2", "tflite"])
def test_deploy_refusals_name_the_files_nodes_and_leave_no_package(files, tmp_path, target):
    out = tmp_path / "package"
    payload = sdk(
        "deploy", "--model", str(files["upsampler"]), "--input-scale", PIXELS, "--target", target,
        "--samples", "2", "--out", str(out),
    )  # fmt: skip
    assert "/up/Resize" in payload["what"] and not invented(payload, files["upsampler"]), payload
    assert payload.get("alternative", {"accepts": False})["accepts"] is False
    assert not (TFLITE_ADVICE if target == "pynq-z2" else FPGA_ADVICE).search(advice(payload["fix"]))
    assert not out.exists()


def test_names_a_file_shares_and_doc_strings_that_are_not_marks():
    """Two nodes of one name are told apart by place; a doc_string the SDK did not write (torch's, or a broken or
    oversized one) is no name; marks survive qonnx's clean-up, which renames every node and tensor."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from sdk.graph_names import MARK_KEY, describe, keep_names, mark_nodes, node_phrase

    nodes = [
        helper.make_node("Relu", ["input.1"], ["a"], "act", doc_string="torch: relu at model.py:12"),
        helper.make_node("Neg", ["a"], ["b"], "act"),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = ModelWrapper(helper.make_model(graph))
    assert describe(model.graph.node[0]) == "act"  # no mark yet: its name
    mark_nodes(model.graph, fresh=True)
    model = keep_names(model, cleanup_model)
    described = [describe(node) for node in model.graph.node]
    assert described == [
        "act (node #1; the file has several of that name)",
        "act (node #2; the file has several of that name)",
        "unnamed node #3",
    ]
    assert node_phrase(model.graph.node[2]) == "unnamed node #3 (Relu)"
    assert model.graph.input[0].name == "input.1" and model.graph.output[0].name == "y"
    assert [node.output[0] for node in model.graph.node] == ["a", "b", "y"]
    for forged in ("{" * 5000, f'{{"{MARK_KEY}": [1, 2]}}', f'{{"{MARK_KEY}": {{"name": "x"}}}}', "x" * 10**5):
        model.graph.node[2].doc_string = forged
        assert describe(model.graph.node[2]) == model.graph.node[2].name  # the graph's own name, nothing invented


def test_a_modules_refusals_name_the_exported_node_and_the_modules_layer():
    """sdk's own export of a module (the Python API, `sdk.export_module`): the node by the exported file's name and
    the module's layer it comes from; the Mul the export puts in front (pixels / 255) is the SDK's."""
    from sdk import check as api_check
    from sdk.errors import UnsupportedLayersError
    from targets.tflite.errors import TfliteConversionError

    with pytest.raises(TfliteConversionError) as tflite:
        api_check(Upsampler(), "tflite", example_input=torch.zeros(1, 1, 8, 8))
    assert tflite.value.what == "Node Resize_0 of layer up (Resize) has no int8 TFLite mapping."
    assert not FPGA_ADVICE.search(tflite.value.fix)
    with pytest.raises(UnsupportedLayersError) as fpga:
        api_check(Upsampler(), "pynq-z2", example_input=torch.zeros(1, 1, 8, 8))
    layers = [layer.name for layer in fpga.value.layers]
    assert all(re.fullmatch(r"[A-Za-z]+_\d+( of layer \w+)?", name) for name in layers), layers
    assert "of layer" in " ".join(layers) and "the TFLite targets refuse this model too" in fpga.value.fix


def test_the_exports_input_scale_is_the_sdks(tmp_path):
    from sdk.export import export_module
    from sdk.graph_names import SDK_INPUT_SCALE, describe

    exported = export_module(BipolarMLP().eval(), (1, 64), tmp_path / "m.onnx")
    graph = onnx.load(exported.onnx_path).graph
    first = next(node for node in graph.node if graph.input[0].name in node.input)
    assert first.op_type == "Mul" and describe(first) == SDK_INPUT_SCALE
    fc1 = next(node for node in graph.node if node.op_type in ("MatMul", "Gemm"))
    assert describe(fc1) == f"{fc1.name} of layer fc1"


def test_the_input_map_keeps_the_files_input_name_and_its_mul_is_the_sdks(files, tmp_path):
    """A float input quantized first (no --input-scale): the SDK cuts the first quantizer off into the input map and
    puts a Mul of its own there; the graph input keeps the file's name, and that Mul is the SDK's."""
    from sdk.deployment import resolve_model
    from sdk.graph_names import SDK_INPUT_SCALE, describe

    source = onnx.load(files["bipolar"]).graph
    graph = onnx.load(resolve_model(str(files["bipolar"]), tmp_path).onnx_path).graph
    assert graph.input[0].name == source.input[0].name != "global_in"
    first = next(node for node in graph.node if graph.input[0].name in node.input)
    assert first.op_type == "Mul" and describe(first) == SDK_INPUT_SCALE
    assert {"/fc1/MatMul", "/fc2/MatMul"} <= {node.name for node in graph.node}
