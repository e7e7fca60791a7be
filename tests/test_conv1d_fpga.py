"""1-D convolutions on FPGAs, through FINN's 1-D sliding windows.

A keyword spotter written the way users write one (10 MFCC-like channels x 49 frames as (N, C, T), an unsigned
8-bit input quantizer, Conv1d + BatchNorm1d + ReLU with a stride, a dilation and zero padding, a max pool or a
global average, a linear classifier) deploys to pynq-z2 verified by the full rule, and the same model to tflite;
what FINN cannot take is refused by `sdk check` and `sdk deploy` alike, naming the layer. Weights are random with
well-conditioned BatchNorm statistics: exactness does not depend on training.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv1d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from hw_graphs import HW, hw_graph
from test_own_models import _eval as _well_conditioned  # random BatchNorm statistics that spread activations
from torch import nn

from sdk import check, deploy, simulate

CHANNELS, FRAMES = 10, 49
EXAMPLE = torch.zeros(1, CHANNELS, FRAMES)


class FeatureQuant(Uint8ActPerTensorFloat):
    """Features in [0, 1] on an unsigned 8-bit grid (scale 1/255)."""

    max_val = 1.0


class KeywordSpotter(nn.Module):
    """Three Conv1d blocks over MFCC-like frames (a max pool between, or a global average or maximum after), and
    12 keyword logits."""

    def __init__(self, pool: str = "max", groups: int = 1):
        super().__init__()
        torch.manual_seed(19)
        quant = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}
        self.features = QuantIdentity(act_quant=FeatureQuant)
        self.conv1 = QuantConv1d(CHANNELS, 16, 3, **quant)
        self.bn1 = nn.BatchNorm1d(16)
        self.relu1 = QuantReLU(bit_width=4)
        self.conv2 = QuantConv1d(16, 16, 3, stride=2, groups=groups, **quant)
        self.bn2 = nn.BatchNorm1d(16)
        self.relu2 = QuantReLU(bit_width=4)
        self.pool = nn.MaxPool1d(2) if pool == "max" else None
        self.global_max = pool == "global_max"  # else a global average
        self.conv3 = QuantConv1d(16, 16, 3, dilation=2, padding=2, **quant)
        self.bn3 = nn.BatchNorm1d(16)
        self.relu3 = QuantReLU(bit_width=4)
        self.classifier = QuantLinear(16 * 11 if pool == "max" else 16, 12, **quant)

    def forward(self, x):
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(self.features(x)))))))
        if self.pool is not None:
            x = self.pool(x)
        x = self.relu3(self.bn3(self.conv3(x)))
        x = x.flatten(1) if self.pool is not None else x.amax(-1) if self.global_max else x.mean(-1)
        return self.classifier(x)


def _features(n: int, seed: int) -> np.ndarray:
    """uint8 features (N, C, T), as a user stores them: the module takes them / 255 (what the packages take too:
    the module's own input, `_inputs`)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, CHANNELS, FRAMES), dtype=np.uint8)


def _inputs(x: np.ndarray) -> np.ndarray:
    """What the module's forward takes: the features / 255 (its first quantizer's codes are the uint8 values)."""
    return (x.astype(np.float32) / 255).astype(np.float32)


def _module(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(_inputs(x))).numpy()


def _assert_fpga_equals_module(package, model: nn.Module, x: np.ndarray) -> None:
    """The FPGA package's outputs are the module's up to float32 rounding, except on samples where some quantizer
    sees a value within float32 rounding of a rounding boundary: there torch and any exact integer datapath may
    round either way (the verification counts such samples as ties)."""
    from sdk.graph_run import tie_samples

    close = np.abs(simulate(package, _inputs(x)) - _module(model, x)).max(axis=1) <= 1e-5
    ties = tie_samples(package / "model.qonnx.onnx", x[:, :, None, :], flat=False)
    assert close[~ties].all() and close.mean() >= 0.9, (np.where(~close)[0], np.where(ties)[0])


def _checks(package) -> dict[str, bool]:
    checks = json.loads((package / "report.json").read_text())["data"]["verification"]["checks"]
    return {c["name"]: c["passed"] for c in checks}


# ---------------------------------------------------------------------------
# (N, C, T) samples: the card's (C, 1, T)


def test_sequence_samples_are_taken_as_c_by_t_and_a_wrong_shape_is_named_so():
    from sdk.deployment import in_model_layout
    from sdk.errors import DatasetError
    from sdk.model_card import _card_problem, graph_input_shape, input_spec

    card = {"input": input_spec([CHANNELS, 1, FRAMES], flat=False, sequence=True)}
    assert card["input"]["layout"] == "NCW" and graph_input_shape(card) == [1, CHANNELS, FRAMES]
    x = _features(3, seed=1)
    for given in (x[:, None], x[:, :, None]):  # (N, C, T) as --data expands it, and the card's own (N, C, 1, T)
        np.testing.assert_array_equal(in_model_layout(given, card, "--data x.npz"), x[:, :, None])
    with pytest.raises(DatasetError) as info:
        in_model_layout(x[:, None, :, :40], card, "--data x.npz")
    assert "(10, 40)" in info.value.what and f"(N, {CHANNELS}, {FRAMES})" in info.value.fix
    bad = {"input": {**card["input"], "image_shape": [CHANNELS, 2, FRAMES]}}
    assert "not (C, 1, T)" in _card_problem(bad)


# ---------------------------------------------------------------------------
# the SDK's simulator on FINN's 1-D sliding windows, against FINN's own execution


def _window(
    ifm: tuple[int, int], kernel: int, stride: int, dilation: int, depthwise: int, simd: int, channels: int = 4
):
    """A ConvolutionInputGenerator over a 1-D map, (T, 1) as FINN's 1-D flow has it or (1, T)."""
    from onnx import helper
    from qonnx.custom_op.general.im2col import compute_conv_output_dim

    axis = 0 if ifm[1] == 1 else 1
    k, s, d = ([kernel, 1], [stride, 1], [dilation, 1]) if axis == 0 else ([1, kernel], [1, stride], [1, dilation])
    ofm = [compute_conv_output_dim(ifm[i], k[i], s[i], 0, d[i]) for i in range(2)]
    node = helper.make_node(
        "ConvolutionInputGenerator",
        ["x"],
        ["y"],
        domain=HW,
        backend="fpgadataflow",
        ConvKernelDim=k,
        IFMChannels=channels,
        IFMDim=list(ifm),
        OFMDim=ofm,
        SIMD=simd,
        Stride=s,
        Dilation=d,
        inputDataType="UINT4",
        outputDataType="UINT4",
        depthwise=depthwise,
        is1D=1,
    )
    return hw_graph([node], {"x": (1, *ifm, channels), "y": (1, *ofm, kernel * channels)}, {}, "UINT4")


@pytest.mark.parametrize(
    ("ifm", "kernel", "stride", "dilation", "depthwise", "simd"),
    [
        ((20, 1), 3, 1, 1, 0, 4),
        ((20, 1), 3, 2, 1, 0, 2),
        ((20, 1), 2, 5, 1, 0, 4),
        ((20, 1), 3, 1, 3, 0, 1),
        ((20, 1), 3, 2, 2, 1, 2),
        ((1, 20), 5, 3, 2, 0, 4),
        ((20, 1), 20, 1, 1, 0, 4),
    ],
    ids=["k3", "k3_stride2", "stride_over_kernel", "dilation3", "depthwise_s2_d2", "1xT", "kernel_covers_T"],
)
def test_one_dimensional_sliding_windows_equal_finn_python_execution(
    tmp_path, ifm, kernel, stride, dilation, depthwise, simd
):
    from finn.core.onnx_exec import execute_onnx
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp

    from targets.finn.environment import prepare_finn
    from targets.finn.ops import window_generates
    from targets.finn.simulator import simulate_dataflow

    prepare_finn(tmp_path)
    model = _window(ifm, kernel, stride, dilation, depthwise, simd)
    x = np.random.default_rng(kernel + stride).integers(0, 16, size=(6, *ifm, 4)).astype(np.float32)
    finn = np.concatenate([execute_onnx(model, {"x": x[i : i + 1]})["y"] for i in range(len(x))])
    specialized = model.transform(SpecializeLayers("xc7z020clg400-1"))
    (node,) = specialized.graph.node
    assert node.op_type == "ConvolutionInputGenerator_rtl" and window_generates(getCustomOp(node))
    np.testing.assert_array_equal(simulate_dataflow(specialized, x).output, finn.astype(np.int64))


@pytest.mark.parametrize("fps", [1e8, None], ids=["fps", "fit"])
@pytest.mark.parametrize(("ifm", "kernel"), [((20, 1), 19), ((40, 1), 39), ((2, 1), 1)])
def test_every_folding_keeps_every_window_writable(tmp_path, ifm, kernel, fps):
    """Over one or two output positions FINN cannot write a parallel window, nor a 1 x 1 kernel's window with
    SIMD = channels: FINN's SetFolding (--fps) picks them, and the fit search would (the fastest); the folding step
    never leaves one for code generation, where a deploy would fail after `sdk check` passed."""
    from qonnx.custom_op.registry import getCustomOp

    from sdk.boards import get_board
    from targets.finn import steps
    from targets.finn.ops import window_generates

    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path, fps=fps, sources_dir=tmp_path / "sources")
    window = _window(ifm, kernel, 2 if kernel == 1 else 1, 1, 0, 4)
    model = steps.run_steps(window, cfg, start="specialize_layers", stop="set_folding")
    assert window_generates(getCustomOp(model.graph.node[0]))
    steps.run_steps(model, cfg, start="minimize_bit_widths_after_folding")  # code generation included


def test_a_window_no_folding_can_write_is_named_by_the_mapping_check(tmp_path):
    """One channel, a 1 x 1 kernel, one output position: FINN's RTL window cannot be written at any SIMD, so
    `sdk check` refuses it (exit 2, naming the layer) rather than the deploy failing at code generation."""
    from sdk.boards import get_board
    from sdk.errors import UnsupportedLayersError
    from targets.finn import steps

    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path)
    with pytest.raises(UnsupportedLayersError) as info:
        steps.run_steps(_window((2, 1), 1, 2, 1, 0, 1, channels=1), cfg, start="check_mapping", stop="check_mapping")
    (layer,) = info.value.layers
    assert layer.op_type == "ConvolutionInputGenerator" and "cannot be written" in layer.why
    assert "three output positions" in layer.fix and info.value.exit_code == 2
    steps.run_steps(_window((3, 1), 1, 1, 1, 0, 1, channels=1), cfg, start="check_mapping", stop="check_mapping")


@pytest.mark.slow  # compiles one layer per case (cached by source hash)
@pytest.mark.parametrize(
    ("ifm", "kernel", "stride", "dilation", "depthwise", "simd", "parallel"),
    [
        ((20, 1), 2, 5, 1, 0, 4, 0),
        ((20, 1), 3, 1, 3, 0, 1, 0),
        ((20, 1), 3, 2, 2, 1, 2, 0),
        ((1, 20), 5, 3, 2, 0, 4, 0),
        ((20, 1), 3, 2, 1, 0, 4, 1),
    ],
    ids=["stride_over_kernel", "dilation3_simd1", "depthwise_s2_d2", "1xT", "parallel_window"],
)
def test_finn_rtl_of_one_dimensional_windows_equals_the_simulator(
    tmp_path, export_cache, ifm, kernel, stride, dilation, depthwise, simd, parallel
):
    """FINN's RTL sliding window, generated for 1-D maps and run cycle by cycle in Verilator: strides past the
    kernel, dilations and depthwise windows are FINN's to compute, so the FPGA flow does not refuse them."""
    from qonnx.custom_op.registry import getCustomOp

    from sdk.boards import get_board
    from targets.finn import rtlsim, steps
    from targets.finn.simulator import simulate_dataflow

    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path, sources_dir=tmp_path / "sources")
    window = _window(ifm, kernel, stride, dilation, depthwise, simd)
    model = steps.run_steps(window, cfg, start="specialize_layers", stop="estimate")
    (node,) = model.graph.node
    getCustomOp(node).set_nodeattr("SIMD", simd)
    getCustomOp(node).set_nodeattr("parallel_window", parallel)
    model = steps.run_steps(model, cfg, start="generate_sources")
    x = np.random.default_rng(kernel * stride).integers(0, 16, size=(8, *ifm, 4))
    expected = simulate_dataflow(model, x.astype(np.float32)).output
    result = rtlsim.simulate_node(model, node, x, export_cache / "verilator", sources_dir=cfg.sources_dir / node.name)
    np.testing.assert_array_equal(result.output, expected)


# ---------------------------------------------------------------------------
# the keyword spotter, end to end


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["max", "mean", "global_max"])
def test_a_conv1d_keyword_spotter_deploys_to_pynq_z2_bit_exact(tmp_path, pool):
    import onnx

    model = _well_conditioned(KeywordSpotter(pool))
    check(model, "pynq-z2", example_input=EXAMPLE)  # the same verdict as the deploy
    result = deploy(model, "pynq-z2", example_input=EXAMPLE, out=str(tmp_path / "fpga"), samples=60)
    assert result.verified and result.exit_code == 0, (result.package / "report.md").read_text()
    checks = _checks(result.package)
    assert checks["simulator = FINN python execution, every layer"]
    assert checks["accelerator integer output = QAT model"] and checks["final output = QAT model"]
    dataflow = onnx.load(str(result.package / "dataflow_model.onnx")).graph
    windows = [n for n in dataflow.node if n.op_type == "ConvolutionInputGenerator_rtl"]
    assert len(windows) >= 3  # FINN's 1-D sliding windows, (T, 1) maps
    for node in windows:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["is1D"] == 1 and attributes["IFMDim"][1] == 1
    _assert_fpga_equals_module(result.package, model, _features(40, seed=3))


@pytest.mark.slow
def test_the_same_keyword_spotter_deploys_to_tflite_and_both_packages_take_the_same_x(tmp_path):
    model = _well_conditioned(KeywordSpotter("max"))
    fpga, tflite = deploy(model, "pynq-z2,tflite", example_input=EXAMPLE, out=str(tmp_path / "p"), samples=60)
    assert fpga.verified and tflite.verified and tflite.exit_code == 0, (tflite.package / "report.md").read_text()
    x = _features(40, seed=4)  # the same x, (N, C, T) as the module takes it, for both packages
    _assert_fpga_equals_module(fpga.package, model, x)
    lsb = json.loads((tflite.package / "tflite_info.json").read_text())["metadata"]["logits_scale"]
    assert float(np.abs(simulate(tflite.package, _inputs(x)) - _module(model, x)).max()) <= 2 * lsb  # int8 logits


@pytest.mark.slow
def test_a_conv1d_qonnx_file_without_a_card_deploys_from_the_cli(tmp_path):
    """Brevitas's own export of the module (a float (1, C, T) input, no model card), --input-scale for the features,
    --data of (N, C, T) samples."""
    from brevitas.export import export_qonnx

    model = _well_conditioned(KeywordSpotter("mean"))
    export_qonnx(model, input_t=EXAMPLE, export_path=str(tmp_path / "kws.onnx"))
    x = _features(30, seed=5)
    np.savez(tmp_path / "features.npz", x=x)
    args = ["--target", "pynq-z2", "--model", str(tmp_path / "kws.onnx"), "--input-scale", str(1 / 255)]
    _sdk("check", *args)
    proc = _sdk("deploy", *args, "--data", str(tmp_path / "features.npz"), "--out", str(tmp_path / "p"), "--json")
    assert json.loads(proc.stdout)["verified"]
    _assert_fpga_equals_module(tmp_path / "p", model, x)


def _sdk(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sdk", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_a_grouped_conv1d_is_refused_by_check_and_deploy_naming_the_layer(tmp_path):
    """FINN lowers plain and depthwise convolutions; a grouped one is refused before any FINN step, as the file
    names it, with a fix that is a change of the model (the TFLite writer refuses it too)."""
    from sdk.export import export_module

    exported = export_module(_well_conditioned(KeywordSpotter(groups=2)), EXAMPLE, tmp_path / "kws.onnx")
    names = {n.name for n in __import__("onnx").load(str(exported.onnx_path)).graph.node if n.op_type == "Conv"}
    args = ["--target", "pynq-z2", "--model", str(exported.onnx_path), "--json"]
    for command in (["check"], ["deploy", "--out", str(tmp_path / "p")]):
        error = json.loads(_sdk(*command, *args, code=2).stdout)
        (layer,) = error["layers"]
        # the exported file's node name, with the module's layer it comes from (sdk.graph_names)
        assert layer["name"].split(" of layer ")[0] in names and "grouped convolution (2 groups of 8" in layer["why"]
        assert "groups=1" in layer["fix"] and "deploy it to a TFLite target" not in error["fix"]
    assert not (tmp_path / "p").exists()
