"""Consecutive RTL layers stitched through finn-rtllib FIFOs and run in Verilator as one accelerator segment.

The segments come from a real deploy (a user's conv net through `sdk.deploy`) and from FINN's own folding of a
convolution's streaming layers; outputs are compared with the numpy simulator, pace with FINN's estimates.
Everything that compiles (seconds per top, cached by its source) is marked slow.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from sdk.errors import SimulationError
from targets.finn import rtl_stitch, rtlsim

CNN_SEGMENT = ["Thresholding_rtl_0", "FMPadding_rtl_0", "ConvolutionInputGenerator_rtl_0"]
SAMPLES = 8


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One build cache for the module: a top compiles once, Verilator's runtime objects once in all."""
    return tmp_path_factory.mktemp("stitch_cache")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stitch_tops")


@dataclass
class Deployed:
    """A deploy package's dataflow graph and sources, and the simulator's tensors on a batch."""

    model: object
    sources: Path
    x: np.ndarray  # the segment's input: the accelerator's input
    tensors: dict  # graph tensor -> the simulator's batch (the accelerator's input, every node's output)

    def nodes(self, names):
        return [next(n for n in self.model.graph.node if n.name == name) for name in names]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Deployed:
    """tests/test_rtlsim.py's conv net deployed with --rtlsim: its first conv's streaming layers are RTL."""
    from qonnx.core.modelwrapper import ModelWrapper
    from test_rtlsim import _small_cnn

    from sdk import deploy
    from targets.finn.simulator import simulate_dataflow

    model, example = _small_cnn()
    out = tmp_path_factory.mktemp("cnn") / "pkg"
    result = deploy(model, "pynq-z2", example_input=example, out=str(out), samples=8, rtlsim=True)
    assert result.verified
    dataflow = ModelWrapper(str(result.package / "dataflow_model.onnx"))
    x = np.random.default_rng(0).integers(0, 256, size=(SAMPLES, 8, 8, 1))
    x[0] = 0
    x[1] = 255
    reference = simulate_dataflow(dataflow, x.astype(np.float32))
    tensors = {dataflow.graph.input[0].name: x, **reference.intermediates}
    return Deployed(dataflow, result.package / "sources", x, tensors)


# ---------------------------------------------------------------------------
# no compiler


def test_fifo_depths_are_checked_and_deep_depths_hold_two_samples():
    from qonnx.core.datatype import DataType

    def layer(beats):
        stream = rtlsim.Stream("in0_V", DataType["UINT8"], 1, beats)
        return rtlsim.RtlLayer("l", "t", "t", (), (), stream, replace(stream, port="out0_V"), (beats,), (beats,), 1)

    layers = [layer(64), layer(100), layer(3)]
    assert rtl_stitch.deep_depths(layers) == (128, 256)
    assert rtl_stitch._depths(None, layers) == (128, 256)
    assert rtl_stitch._depths(0, layers) == (0, 0)
    assert rtl_stitch._candidates(128) == [0, 2, 4, 8, 16, 32, 64, 128]
    for bad in (1, (2,), (2, 2, 2), (4, -1)):
        with pytest.raises(SimulationError, match="DEPTH >= 2"):
            rtl_stitch._depths(bad, layers)
    narrow = replace(layers[1], inp=replace(layers[1].inp, datatype=DataType["UINT4"]))
    with pytest.raises(SimulationError, match="streams 8-bit beats; l reads 4") as error:
        rtl_stitch.stitch([layers[0], narrow])
    assert "StreamingDataWidthConverter" in error.value.fix


def test_installed_fifo_gets_the_verilator_rewrite_of_its_geometry():
    """If finn-rtllib's fifo.sv changes, this says so: the rewrite must still apply (or no longer be needed)."""
    fifo = rtl_stitch._fifo_sources()
    assert [p.name for p in fifo] == ["fifo.sv"]
    patched = rtl_stitch._fifo_for_verilator(fifo[0])
    assert patched is not None and "function abits_t INIT_ABITS" not in patched and "ABITS_SPLIT" in patched
    assert patched.count("module fifo") == 1


# ---------------------------------------------------------------------------
# tiny hand-written layers: memory images of one name in two layers


_ADD_IMAGE = """module {top} (
    input ap_clk, input ap_rst_n,
    input [7:0] in0_V_TDATA, input in0_V_TVALID, output in0_V_TREADY,
    output [7:0] out0_V_TDATA, output out0_V_TVALID, input out0_V_TREADY
);
    parameter PREFIX = "./";
    reg [7:0] mem [0:0];
    initial $readmemh({path}, mem);
    assign out0_V_TDATA = in0_V_TDATA + mem[0];
    assign out0_V_TVALID = in0_V_TVALID;
    assign in0_V_TREADY = out0_V_TREADY;
endmodule
"""


def _add_image_layer(folder: Path, top: str, value: int, path: str = '"./memblock.dat"') -> rtlsim.RtlLayer:
    """A pass-through adding the byte its memory image holds: the output says which image it read."""
    from qonnx.core.datatype import DataType

    folder.mkdir(parents=True)
    (folder / f"{top}.v").write_text(_ADD_IMAGE.format(top=top, path=path))
    (folder / "memblock.dat").write_text(f"{value:02x}\n")
    stream = rtlsim.Stream("in0_V", DataType["UINT8"], 1, 4)
    return rtlsim.RtlLayer(
        top, "test", top, (folder / f"{top}.v",), (folder / "memblock.dat",), stream, replace(stream, port="out0_V"),
        (4,), (4,), 4,
    )  # fmt: skip


@pytest.mark.slow  # compiles two tiny tops
def test_memory_images_of_one_name_are_renamed_per_layer(tmp_path, cache_dir, work_dir):
    first = _add_image_layer(tmp_path / "a", "add_a", 1)
    second = _add_image_layer(tmp_path / "b", "add_b", 2)
    x = np.arange(12).reshape(3, 4)
    for depth in (0, 2):
        top = rtl_stitch.stitch([first, second], depth, work_dir)
        assert sorted(p.name for p in top.data) == ["add_b__memblock.dat", "memblock.dat"]
        assert (tmp_path / "b" / "add_b.v").read_text().count('"./memblock.dat"') == 1  # the original is untouched
        result = rtl_stitch.simulate_stitched(top, [first, second], x, cache_dir)
        np.testing.assert_array_equal(result.output, x + 3)  # 1 from a's image, 2 from b's; one image would give 2 or 4
    # the same contents under one name: one image serves both
    same = _add_image_layer(tmp_path / "c", "add_c", 1)
    top = rtl_stitch.stitch([first, same], 0, work_dir)
    assert [p.name for p in top.data] == ["memblock.dat"]
    np.testing.assert_array_equal(rtl_stitch.simulate_stitched(top, [first, same], x, cache_dir).output, x + 2)
    # a path the RTL assembles from parts cannot be renamed: refused, not silently shared
    assembled = _add_image_layer(tmp_path / "d", "add_d", 5, path='{PREFIX, "mem", "block.dat"}')
    with pytest.raises(SimulationError, match="both read a memory image named memblock.dat"):
        rtl_stitch.stitch([first, assembled], 0, work_dir)
    # two layers declaring one module with different bodies cannot share a top
    clash = _add_image_layer(tmp_path / "e", "add_a", 1)
    (tmp_path / "e" / "add_a.v").write_text(_ADD_IMAGE.format(top="add_a", path='"./memblock.dat"') + "// other\n")
    with pytest.raises(SimulationError, match="Module add_a is declared in both"):
        rtl_stitch.stitch([first, clash], 0, work_dir)


# ---------------------------------------------------------------------------
# a real deploy's segment


@pytest.mark.slow  # deploys the net (seconds)
def test_segments_stop_at_hls_layers_and_width_changes(cnn):
    import copy

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    def names(model):
        return [[n.name for n in chain] for chain in rtl_stitch.segments(model)]

    found = rtl_stitch.segments(cnn.model)
    assert names(cnn.model)[0] == CNN_SEGMENT  # the window generator feeds MVAU_hls_0: the segment ends there
    for chain in found:
        assert len(chain) >= 2 and all(n.op_type in rtlsim.SUPPORTED_RTL_OPS for n in chain)
        assert all(consumer.input[0] == producer.output[0] for producer, consumer in zip(chain, chain[1:]))
    assert rtl_stitch.segments(cnn.model, supported_ops=()) == []
    # after the max pool (HLS): padder -> window generator, one chain exactly when their stream widths agree
    model = ModelWrapper(copy.deepcopy(cnn.model.model))
    node = {n.name: n for n in model.graph.node}
    padder, window = getCustomOp(node["FMPadding_rtl_1"]), getCustomOp(node["ConvolutionInputGenerator_rtl_2"])
    pair = ["FMPadding_rtl_1", "ConvolutionInputGenerator_rtl_2"]
    assert (pair in names(model)) == (padder.get_outstream_width(0) == window.get_instream_width(0))
    channels, simd = padder.get_nodeattr("NumChannels"), padder.get_nodeattr("SIMD")
    padder.set_nodeattr("SIMD", next(s for s in range(1, channels + 1) if channels % s == 0 and s != simd))
    assert padder.get_outstream_width(0) != window.get_instream_width(0)
    assert names(model) == [CNN_SEGMENT]  # FINN stitches a width converter there: no segment


@pytest.mark.slow  # three builds of the stitched top
def test_cnn_segment_equals_the_simulator_at_every_fifo_style(cnn, cache_dir, work_dir):
    from qonnx.custom_op.registry import getCustomOp

    nodes = cnn.nodes(CNN_SEGMENT)
    expected = cnn.tensors[nodes[-1].output[0]]
    beats = max(
        int(np.prod(shape[:-1]))
        for n in nodes
        for shape in (getCustomOp(n).get_folded_input_shape(0), getCustomOp(n).get_folded_output_shape(0))
    )
    # None: deep FIFOs (distributed RAM); 0: direct wires; 2 and 600: fifo.sv's shift register and block RAM
    for depth in (None, 0, (2, 600)):
        result = rtl_stitch.simulate_segment(cnn.model, nodes, cnn.sources, cnn.x, cache_dir, depth, work_dir)
        assert result.output.shape == expected.shape
        np.testing.assert_array_equal(result.output, expected, err_msg=f"FIFO depths {result.fifo_depths}")
        assert result.names == tuple(CNN_SEGMENT) and result.samples == SAMPLES
        # FINN: the slowest layer (the window generator) sets the pace; one beat per cycle bounds it below
        assert result.exp_ii == max(getCustomOp(n).get_exp_cycles() for n in nodes) == 102
        assert beats <= result.ii <= 1.1 * result.exp_ii, result
        # the layers overlap: one sample takes less than FINN's sum of the layers, more than the slowest alone
        assert result.exp_latency == sum(getCustomOp(n).get_exp_cycles() for n in nodes)
        assert 0 < result.first_output_cycle < result.latency
        assert beats <= result.latency <= result.exp_latency, result
        assert result.cycles >= result.latency + (SAMPLES - 1) * beats
    assert rtl_stitch.simulate_segment(cnn.model, nodes, cnn.sources, cnn.x, cache_dir, 0, work_dir).cached


@pytest.mark.slow
def test_a_stalled_layer_is_reported_as_a_deadlock_of_the_segment(cnn, cache_dir, work_dir, tmp_path):
    nodes = cnn.nodes(CNN_SEGMENT)
    layers = rtl_stitch.segment_layers(cnn.model, nodes, cnn.sources)
    top = rtl_stitch.stitch(layers, 0, work_dir)
    x = cnn.x[:3]
    fine = rtl_stitch.simulate_stitched(top, layers, x, cache_dir, idle_limit=300)  # the limit suffices when it flows
    assert fine.ii is not None
    # the link from the padder to the window generator cut both ways (never valid, never ready): the window
    # generator starves, the padder and the thresholds back up, nothing comes out. (Tying only the padder's
    # TREADY low is no deadlock: the window generator reads the padder's one held beat again and again.)
    verilog = top.hdl[-1].read_text()
    ready, valid = ".out0_V_TREADY(s2_in_TREADY),", ".in0_V_TVALID(s2_in_TVALID),"
    assert verilog.count(ready) == 1 and verilog.count(valid) == 1
    stalled = tmp_path / top.hdl[-1].name
    stalled.write_text(verilog.replace(ready, ".out0_V_TREADY(1'b0),").replace(valid, ".in0_V_TVALID(1'b0),"))
    began = time.perf_counter()
    with pytest.raises(SimulationError) as error:
        rtl_stitch.simulate_stitched(replace(top, hdl=(*top.hdl[:-1], stalled)), layers, x, cache_dir, idle_limit=300)
    assert time.perf_counter() - began < 60  # a build and a stopped run, not a hang
    message = error.value.render()
    assert (
        "Deadlock in the stitched segment Thresholding_rtl_0 -> FMPadding_rtl_0 -> ConvolutionInputGenerator" in message
    )
    assert "no output beat for 300 cycles" in message and "FIFO depths [0, 0]" in message
    assert "where:" in message and "fix:" in message


@pytest.mark.slow  # the segment, and the segment again with changed thresholds (the same build)
def test_verify_segments_reports_pace_and_fails_naming_a_changed_segment(cnn, cache_dir, work_dir, tmp_path):
    label = " -> ".join(CNN_SEGMENT)
    report = rtl_stitch.verify_segments(cnn.model, cnn.tensors, cnn.sources, cache_dir, size=True, work_dir=work_dir)
    assert report.check.passed and report.check.samples == SAMPLES, report.check
    assert not report.not_stitched
    assert len(report.rows) == len(rtl_stitch.segments(cnn.model)) == len(report.results)
    row = next(r for r in report.rows if r[0] == label)
    assert row[3] == 102 and row[-1] is True
    entry = next(e for e in report.to_dict()["segments"] if e["layers"] == CNN_SEGMENT)
    assert entry["ii_cycles"] == row[2] and entry["ii_cycles_finn_estimate"] == 102
    assert entry["sized_fifo_depths"] == [0, 0]  # these three layers keep their pace wired directly
    sizing = report.sizings[tuple(CNN_SEGMENT)]
    assert sizing.ii == sizing.deep_ii and sizing.trials[1][0] == (0, 0) and len(sizing.trials) == 2
    assert report.table().rows == report.rows

    changed = tmp_path / "sources"
    shutil.copytree(cnn.sources, changed)
    for dat in (changed / "Thresholding_rtl_0").glob("*.dat"):
        dat.write_text("40\n" * len(dat.read_text().split()))  # every threshold 64: other outputs
    bad = rtl_stitch.verify_segments(cnn.model, cnn.tensors, changed, cache_dir, size=False, work_dir=work_dir)
    assert not bad.check.passed and bad.check.first_difference == label
    assert [r[-1] for r in bad.rows] == [r[0] != label for r in bad.rows] and bad.rows[0][6] is None


# ---------------------------------------------------------------------------
# FIFO sizing where FIFOs matter


@pytest.fixture(scope="module")
def parallel_window(tmp_path_factory):
    """FINN's folding of tests/test_rtlsim.py's padding -> 3x3 window -> thresholds at 2e7 fps: a parallel-window
    generator whose bursts a direct connection to the width converter cannot absorb."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from test_rtlsim import _window_graph

    from sdk.boards import get_board
    from targets.finn import specialize, steps
    from targets.finn.environment import prepare_finn

    board = get_board("pynq-z2")
    workdir = tmp_path_factory.mktemp("parallel_window")
    prepare_finn(workdir / "finn")
    cfg = steps.FinnConfig(board, workdir, fps=2e7, sources_dir=workdir / "sources")
    model = steps.run_steps(_window_graph(1, seed=1), cfg, start="specialize_layers", stop="estimate")
    model = specialize.specialize(model.transform(InsertDWC()), board.part)
    return steps.run_steps(model, cfg, start="generate_sources"), cfg.sources_dir


@pytest.mark.slow  # about ten builds of a four-layer top: 30-40 s
def test_fifo_sizing_finds_depths_keeping_the_deep_fifo_throughput(parallel_window, cache_dir, work_dir):
    from targets.finn.simulator import simulate_dataflow

    model, sources = parallel_window
    (chain,) = rtl_stitch.segments(model)
    assert [n.op_type for n in chain] == [
        "FMPadding_rtl",
        "ConvolutionInputGenerator_rtl",
        "StreamingDataWidthConverter_rtl",
        "Thresholding_rtl",
    ]
    x = np.random.default_rng(5).integers(-8, 8, size=(SAMPLES, 5, 5, 4))
    expected = simulate_dataflow(model, x.astype(np.float32)).output
    direct = rtl_stitch.simulate_segment(model, chain, sources, x, cache_dir, 0, work_dir)
    np.testing.assert_array_equal(direct.output, expected)

    sizing = rtl_stitch.size_fifos(model, chain, sources, cache_dir, work_dir=work_dir)
    assert sizing.seconds < 120, sizing
    assert direct.ii > sizing.deep_ii * 1.1  # FIFOs matter here: else this test would prove nothing
    assert sizing.ii == sizing.deep_ii and len(sizing.depths) == 3
    assert all(d <= deep for d, deep in zip(sizing.depths, sizing.deep_depths)) and any(sizing.depths)
    assert sum(sizing.depths) < sum(sizing.deep_depths)
    # each depth is the smallest candidate that keeps the pace: the next one down (others deep) was slower
    measured = dict(sizing.trials)
    for k, depth in enumerate(sizing.depths):
        if depth:
            options = rtl_stitch._candidates(sizing.deep_depths[k])
            smaller = tuple(
                options[options.index(depth) - 1] if j == k else d for j, d in enumerate(sizing.deep_depths)
            )
            assert measured[smaller] > sizing.deep_ii, (smaller, sizing.trials)
    # the sized segment, run again on other data: the deep FIFOs' pace and the simulator's values
    sized = rtl_stitch.simulate_segment(model, chain, sources, x, cache_dir, sizing.depths, work_dir)
    assert sized.cached and sized.ii == sizing.deep_ii and sized.ii <= sized.exp_ii
    np.testing.assert_array_equal(sized.output, expected)
