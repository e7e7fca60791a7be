"""`--rtlsim` end to end: a user's network whose every layer is RTL, deployed, its layers simulated one by one and
stitched into one accelerator in Verilator, FIFO depths sized into the package's folding config; a changed
generated parameter fails the deploy naming the layer. Everything here compiles RTL (seconds to minutes): slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat
from step_table import report_steps
from torch import nn

from sdk import deploy
from targets.finn import codegen

FPS = 20_000  # a folding small enough to compile in seconds; the fit search would unroll the whole matrix
SAMPLES = 8
PIXELS = 1 / 255  # these modules take pixels / 255: the device takes uint8 pixels (README, the device interface)


class LinearClassifier(nn.Module):
    """A user's smallest MLP every layer of which FINN builds in RTL: an 8-bit input quantizer (Thresholding_rtl)
    and a 4-bit linear layer (MVAU_rtl)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.quant_in = QuantIdentity(bit_width=8)
        self.classifier = QuantLinear(64, 10, bias=False, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.classifier(self.quant_in(x))


def _rtl_report(package: Path) -> dict:
    return json.loads((package / "report.json").read_text())["data"]["rtl_simulation"]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl_mlp") / "pkg"
    return deploy(
        LinearClassifier().eval(), "pynq-z2", example_input=torch.zeros(1, 64), out=str(out), samples=SAMPLES,
        rtlsim=True, fps=FPS, input_scale=PIXELS,
    )  # fmt: skip


@pytest.mark.slow
def test_every_layer_rtl_runs_stitched_with_pace_latency_and_fifo_depths_in_the_folding_config(mlp):
    from qonnx.core.modelwrapper import ModelWrapper

    assert mlp.verified and mlp.exit_code == 0, (mlp.package / "report.md").read_text()
    layers = [n.name for n in ModelWrapper(str(mlp.package / "dataflow_model.onnx")).graph.node]
    assert layers == ["Thresholding_rtl_0", "MVAU_rtl_0"]
    rtl = _rtl_report(mlp.package)
    assert rtl["verified_at_rtl"] == layers and rtl["graph_level_only"] == []
    assert rtl["stitched_at_rtl"] == layers  # the whole accelerator as one stitched top
    (segment,) = rtl["stitched"]["segments"]
    assert segment["layers"] == layers and segment["samples"] == SAMPLES
    # measured against FINN's estimates: the slowest layer sets the pace; the pipeline adds latency to the sum
    assert segment["ii_cycles_finn_estimate"] > 0 and segment["latency_cycles_finn_estimate"] > 0
    assert 0 < segment["ii_cycles"] <= 1.25 * segment["ii_cycles_finn_estimate"], segment
    assert segment["latency_cycles"] >= segment["first_output_cycle"] > 0
    assert segment["compile_seconds"] >= 0 and segment["run_seconds"] > 0
    assert rtl["compile_seconds"] >= 0 and rtl["run_seconds"] > 0

    # the sized depth, in the attributes FINN's ApplyConfig sets and InsertFIFO reads (2: FINN's default, no FIFO)
    (depth,) = segment["sized_fifo_depths"]
    expected = max(2, depth)
    folding = json.loads((mlp.package / "folding_config.json").read_text())
    assert folding["Thresholding_rtl_0"]["outFIFODepths"] == [expected]
    assert folding["MVAU_rtl_0"]["inFIFODepths"] == [expected]
    assert folding["MVAU_rtl_0"]["PE"] and folding["MVAU_rtl_0"]["SIMD"]  # the folding itself still there
    assert rtl["stitched"]["fifo_depth_attributes"] == {
        "Thresholding_rtl_0": {"outFIFODepths": [expected]},
        "MVAU_rtl_0": {"inFIFODepths": [expected]},
    }

    report = (mlp.package / "report.md").read_text()
    assert "Stitched RTL segments" in report and "Thresholding_rtl_0 -> MVAU_rtl_0" in report
    assert "the whole accelerator (2 layers) stitched" in report
    assert "2 layer(s) verified in Verilator, 2 of them also stitched" in report
    checks = {
        c["name"]: c for c in json.loads((mlp.package / "report.json").read_text())["data"]["verification"]["checks"]
    }
    assert checks["stitched RTL segments (Verilator) = simulator"]["passed"]
    # stitching (the layers' ports, kept with their builds) is timed in the stitched run's own step, not in the
    # last layer's simulation; the package's files after every RTL step
    names = report_steps(mlp.package)
    at = names.index("stitched RTL simulation of Thresholding_rtl_0 ... MVAU_rtl_0 (Verilator)")
    assert names[at - 2 : at] == [f"RTL simulation of {layer} (Verilator)" for layer in layers]
    assert names.index("save the graphs and folding config") > at


@pytest.mark.slow
def test_simulate_rtlsim_runs_the_stitched_accelerator_again_on_other_samples(mlp, tmp_path):
    from sdk.simulation import simulate_package

    x = np.random.default_rng(1).integers(0, 256, size=(5, 64), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    again = simulate_package(mlp.package, str(tmp_path / "x.npz"), rtlsim=True)
    assert not again.failures
    assert again.runtime_agreement == {
        "RTL layers in Verilator (2) = simulator": 1.0,
        "stitched RTL segments in Verilator (1) = simulator": 1.0,
    }


def _change_one_weight(sources_dir: Path) -> None:
    """The first weight word of MVAU_rtl_0's memory image, its lowest hex digit flipped: one weight differs."""
    (image,) = (Path(sources_dir) / "MVAU_rtl_0").glob("memblock*.dat")
    lines = image.read_text().splitlines()
    first = lines[0]
    lines[0] = first[:-1] + format(int(first[-1], 16) ^ 1, "x")
    image.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_a_changed_generated_weight_fails_the_deploy_naming_the_layer(tmp_path, monkeypatch):
    original = codegen.generate_sources

    def generate_then_change_a_weight(model, part, clock, sources_dir):
        sources = original(model, part, clock, sources_dir)
        _change_one_weight(sources_dir)
        return sources

    monkeypatch.setattr(codegen, "generate_sources", generate_then_change_a_weight)
    bad = deploy(
        LinearClassifier().eval(), "pynq-z2", example_input=torch.zeros(1, 64), out=str(tmp_path / "bad"),
        samples=SAMPLES, rtlsim=True, fps=FPS, input_scale=PIXELS,
    )  # fmt: skip
    assert not bad.verified and bad.exit_code == 1
    checks = json.loads((bad.package / "report.json").read_text())["data"]["verification"]["checks"]
    layer = next(c for c in checks if c["name"].startswith("RTL (Verilator)"))
    assert not layer["passed"] and layer["first_difference"] == "MVAU_rtl_0", layer
    assert "MVAU_rtl_0's RTL output differs from the simulator's at sample" in layer["detail"]
    stitched = next(c for c in checks if c["name"].startswith("stitched"))
    assert not stitched["passed"] and stitched["first_difference"] == "Thresholding_rtl_0 -> MVAU_rtl_0"
    assert "differs from the simulator's output of MVAU_rtl_0 at sample" in stitched["detail"]
    assert "/tmp" not in layer["detail"] + stitched["detail"]
    # no depths sized for a segment that computes the wrong values
    folding = json.loads((bad.package / "folding_config.json").read_text())
    assert "inFIFODepths" not in folding["MVAU_rtl_0"]


def test_doctor_shows_the_verilator_rtlsim_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "doctor", "--json"], capture_output=True, text=True, check=True, timeout=120
    )
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    verilator = checks["verilator"]
    assert verilator["present"] and verilator["version"] == "5.48.0", verilator
    assert "--rtlsim" in verilator["needed_for"] and "runs" in verilator["detail"]


class StridedCNN(nn.Module):
    """A user's conv net with strided convolutions instead of pooling (FINN has no RTL pool): under --rtlsim's
    standalone thresholds every layer is RTL, hidden activations included."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        q = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}
        self.inp = QuantIdentity(bit_width=8)
        self.conv1, self.bn1 = QuantConv2d(1, 8, 3, stride=2, padding=1, **q), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = QuantConv2d(8, 8, 3, stride=2, padding=1, **q), nn.BatchNorm2d(8)
        self.act1, self.act2 = QuantReLU(bit_width=4), QuantReLU(bit_width=4)
        self.fc = QuantLinear(8 * 2 * 2, 10, **q)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(self.inp(x))))
        return self.fc(self.act2(self.bn2(self.conv2(x))).flatten(1))


@pytest.mark.slow
def test_a_conv_net_runs_entirely_in_rtl_as_one_stitched_accelerator(tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper

    result = deploy(
        StridedCNN().eval(), "pynq-z2", example_input=torch.zeros(1, 1, 8, 8), out=str(tmp_path / "pkg"),
        samples=SAMPLES, rtlsim=True, input_scale=PIXELS,
    )  # fmt: skip
    assert result.verified and result.exit_code == 0, (result.package / "report.md").read_text()
    layers = [n.name for n in ModelWrapper(str(result.package / "dataflow_model.onnx")).graph.node]
    assert {"MVAU_rtl_0", "MVAU_rtl_1", "MVAU_rtl_2", "Thresholding_rtl_1", "Thresholding_rtl_2"} <= set(layers)
    assert all("_rtl_" in name for name in layers)
    rtl = _rtl_report(result.package)
    assert rtl["verified_at_rtl"] == layers and rtl["graph_level_only"] == []
    (segment,) = rtl["stitched"]["segments"]  # the whole accelerator, FINN's width converters inserted
    assert [name for name in segment["layers"] if not name.startswith("StreamingDataWidthConverter")] == layers
    assert segment["ii_cycles"] > 0 and segment["ii_cycles_finn_estimate"] > 0 and segment["latency_cycles"] > 0
    config = json.loads((result.package / "folding_config.json").read_text())
    assert all("inFIFODepths" in config[name] for name in layers[1:])  # sized by the stitched simulation
