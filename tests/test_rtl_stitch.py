"""Consecutive RTL layers stitched through finn-rtllib FIFOs and run in Verilator as one accelerator segment.

The segments come from a real deploy (a user's conv net through `sdk.deploy`) and from FINN's own folding of a
convolution's streaming layers; outputs are compared with the numpy simulator, pace with FINN's estimates.
Everything that compiles (seconds per top, cached by its source) is marked slow.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from sdk.errors import SimulationError
from targets.finn import fifo_sizing, rtl_layer, rtl_stitch, rtl_verify, streams, width_converters

CNN_SEGMENT = ["Thresholding_rtl_0", "FMPadding_rtl_0", "ConvolutionInputGenerator_rtl_0"]  # the net's first layers
# the deploy's first chain of RTL layers: the first conv (standalone thresholds) up to the max pool (HLS)
FIRST_SEGMENT = [*CNN_SEGMENT, "MVAU_rtl_0", "Thresholding_rtl_1", "ConvolutionInputGenerator_rtl_1"]
SAMPLES = 8


@pytest.fixture(scope="module")
def cache_dir(export_cache) -> Path:
    """The deploys' own build cache (the test run's SDK cache): a layer the deploy built compiles no more."""
    return export_cache / "verilator"


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
    result = deploy(model, "pynq-z2", example_input=example, out=str(out), samples=8, rtlsim=True, input_scale=1 / 255)
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
        stream = streams.Stream("in0_V", DataType["UINT8"], 1, beats)
        return rtl_layer.RtlLayer("l", "t", "t", (), (), stream, replace(stream, port="out0_V"), (beats,), (beats,), 1)

    layers = [layer(64), layer(100), layer(3)]
    assert rtl_stitch.deep_depths(layers) == (128, 256)
    assert rtl_stitch._depths(None, layers) == (128, 256)
    assert rtl_stitch._depths(0, layers) == (0, 0)
    # a FIFO one beat deeper than its peak never fills; a peak of FINN's default depth or less is a wire
    assert [fifo_sizing.depth_for_occupancy(peak, 128) for peak in (0, 1, 2, 3, 40, 127, 128)] == [
        0,
        0,
        0,
        4,
        41,
        128,
        128,
    ]
    for bad in (1, (2,), (2, 2, 2), (4, -1)):
        with pytest.raises(SimulationError, match="DEPTH >= 2"):
            rtl_stitch._depths(bad, layers)
    narrow = replace(layers[1], inp=replace(layers[1].inp, datatype=DataType["UINT4"]))
    with pytest.raises(SimulationError, match="streams 8-bit beats; l reads 4") as error:
        rtl_stitch.stitch([layers[0], narrow])
    assert "StreamingDataWidthConverter" in error.value.fix


def test_patched_fifo_differs_from_finn_rtllib_only_by_its_geometry_as_constant_expressions():
    """The stitched top compiles rtl_patches/fifo.sv for finn-rtllib's fifo.sv (rtl_layer.RTL_PATCHES): FINN's licence
    header and every other line kept; the function INIT_ABITS() replaced by localparams of the same values."""
    import difflib
    import hashlib
    import math

    from test_rtlsim import _finn_rtllib_file

    original_path = _finn_rtllib_file("fifo/hdl/fifo.sv")
    expected_sha, patched_path = rtl_layer.RTL_PATCHES["fifo.sv"]
    original, patched = original_path.read_text(), patched_path.read_text()
    assert hashlib.sha256(original.encode()).hexdigest() == expected_sha, "FINN's fifo.sv changed: redo the patch"
    assert rtl_stitch._fifo_sources() == [patched_path]
    header = original[: original.index("*/") + 2]
    assert "Advanced Micro Devices" in header and patched.startswith(header)

    old, new = original.splitlines(), patched.splitlines()
    changes = [
        (tag, old[i1:i2], new[j1:j2])
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
        if tag != "equal"
    ]
    (note_tag, _, note), (tag, removed, added) = changes  # a provenance note, then the one replaced block
    assert note_tag == "insert" and all(line.startswith("//") or not line for line in note)
    assert "finn-rtllib/fifo/hdl/fifo.sv" in "".join(note)
    assert tag == "replace" and removed[0] == "\tfunction abits_t INIT_ABITS();"
    assert removed[-2:] == ["\tendfunction : INIT_ABITS", "\tlocalparam abits_t       ABITS      = INIT_ABITS();"]
    assert "INIT_ABITS()" not in "".join(line for line in added if not line.lstrip().startswith("//"))

    # the replaced block and the function compute one geometry: both evaluated for every depth up to 2**17
    def function(depth_req: int, min_abits: int) -> tuple[int, int]:  # INIT_ABITS() as FINN writes it
        lo, hi = math.ceil(math.log2(depth_req)), 0
        if lo > min_abits:
            hi_abits = math.ceil(math.log2(depth_req - 2 ** (lo - 1)))
            if hi_abits < lo - 1:
                lo, hi = lo - 1, max(hi_abits, 1)
        return lo, hi

    def expressions(depth_req: int, min_abits: int) -> tuple[int, int]:  # the localparams of the copy
        lo0 = math.ceil(math.log2(depth_req))
        hi0 = math.ceil(math.log2(depth_req - 2 ** (lo0 - 1))) if lo0 > min_abits else 0
        split = lo0 > min_abits and hi0 < lo0 - 1
        return (lo0 - 1 if split else lo0), (0 if not split else 1 if hi0 < 1 else hi0)

    lines = "\n".join(added)
    for text in ("$clog2(DEPTH_REQ)", "ABITS_LO0 > MIN_ABITS? $clog2(DEPTH_REQ - 2**(ABITS_LO0-1)) : 0",
                 "ABITS_LO0 > MIN_ABITS && ABITS_HI0 < ABITS_LO0 - 1", "lo: ABITS_SPLIT? ABITS_LO0 - 1 : ABITS_LO0",
                 "hi: !ABITS_SPLIT? 0 : ABITS_HI0 < 1? 1 : ABITS_HI0"):  # fmt: skip
        assert text in lines, text
    for min_abits in (9, 12):
        for depth in range(3, 2**17):
            assert function(depth, min_abits) == expressions(depth, min_abits), (depth, min_abits)


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


def _add_image_layer(folder: Path, top: str, value: int, path: str = '"./memblock.dat"') -> rtl_layer.RtlLayer:
    """A pass-through adding the byte its memory image holds: the output says which image it read."""
    from qonnx.core.datatype import DataType

    folder.mkdir(parents=True)
    (folder / f"{top}.v").write_text(_ADD_IMAGE.format(top=top, path=path))
    (folder / "memblock.dat").write_text(f"{value:02x}\n")
    stream = streams.Stream("in0_V", DataType["UINT8"], 1, 4)
    return rtl_layer.RtlLayer(
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
    assert names(cnn.model)[0] == FIRST_SEGMENT  # the pool's window generator feeds Pool_hls_0: the segment ends
    for chain in found:
        assert len(chain) >= 2 and all(n.op_type in rtl_layer.SUPPORTED_RTL_OPS for n in chain)
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
    assert pair not in names(model) and FIRST_SEGMENT in names(model)  # FINN puts a width converter there


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
    with pytest.raises(SimulationError) as error:  # a build and a run stopped by the guard, not a hang
        rtl_stitch.simulate_stitched(replace(top, hdl=(*top.hdl[:-1], stalled)), layers, x, cache_dir, idle_limit=300)
    message = error.value.render()
    assert (
        "Deadlock in the stitched segment Thresholding_rtl_0 -> FMPadding_rtl_0 -> ConvolutionInputGenerator" in message
    )
    assert "no output beat for 300 cycles" in message and "FIFO depths [0, 0]" in message
    assert "where:" in message and "fix:" in message


@pytest.mark.slow  # the segment, and the segment again with changed thresholds (the same build)
def test_verify_segments_reports_pace_and_fails_naming_a_changed_segment(cnn, cache_dir, work_dir, tmp_path):
    label = " -> ".join(FIRST_SEGMENT)
    report = rtl_verify.verify_segments(cnn.model, cnn.tensors, cnn.sources, cache_dir, size=True, work_dir=work_dir)
    assert report.check.passed and report.check.samples == SAMPLES, report.check
    assert not report.not_stitched
    assert len(report.rows) == len(rtl_stitch.segments(cnn.model)) == len(report.results)
    row = next(r for r in report.rows if r[0] == label)
    assert row[3] == 102 and row[-1] is True
    entry = next(e for e in report.to_dict()["segments"] if e["layers"] == FIRST_SEGMENT)
    assert entry["ii_cycles"] == row[2] and entry["ii_cycles_finn_estimate"] == 102
    links = len(FIRST_SEGMENT) - 1
    assert entry["sized_fifo_depths"] == [0] * links  # these layers keep their pace wired directly
    assert entry["fifo_depths"] == [0] * links  # verified wired directly: FINN builds no FIFO of its default depth
    sizing = report.sizings[tuple(FIRST_SEGMENT)]
    # direct wires reach FINN's estimate (the slowest layer's cycles): no deeper FIFO could pace it faster, so the
    # deep-FIFO top is never built
    assert sizing.ii <= 102 and sizing.trials == [((0,) * links, sizing.ii)] and sizing.deep_ii is None
    assert sizing.builds == 0  # the verification run had built the wired top
    expected: dict = {}
    for producer, consumer in zip(FIRST_SEGMENT, FIRST_SEGMENT[1:]):  # FINN's default depth 2 on every link
        expected.setdefault(producer, {})["outFIFODepths"] = [2]
        expected.setdefault(consumer, {})["inFIFODepths"] = [2]
    attributes = report.fifo_depth_attributes()
    assert {name: attributes[name] for name in FIRST_SEGMENT} == expected
    assert report.table().rows == report.rows

    changed = tmp_path / "sources"
    shutil.copytree(cnn.sources, changed)
    for dat in (changed / "Thresholding_rtl_0").glob("*.dat"):
        dat.write_text("40\n" * len(dat.read_text().split()))  # every threshold 64: other outputs
    bad = rtl_verify.verify_segments(cnn.model, cnn.tensors, changed, cache_dir, size=False, work_dir=work_dir)
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


@pytest.mark.slow  # three builds of a four-layer top
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

    sizing = fifo_sizing.size_fifos(model, chain, sources, cache_dir, work_dir=work_dir)
    assert direct.ii > sizing.deep_ii * 1.1  # FIFOs matter here: else this test would prove nothing
    assert sizing.ii == sizing.deep_ii and len(sizing.depths) == 3 and sizing.complete
    assert all(d <= deep for d, deep in zip(sizing.depths, sizing.deep_depths)) and any(sizing.depths)
    assert sum(sizing.depths) < sum(sizing.deep_depths)
    # the depths come from the deep run's peak occupancy (fifo.sv's maxcount), confirmed by one more run
    assert sizing.depths == tuple(
        fifo_sizing.depth_for_occupancy(peak, deep) for peak, deep in zip(sizing.deep_occupancy, sizing.deep_depths)
    )
    assert [depths for depths, _ in sizing.trials] == [sizing.deep_depths, sizing.depths]
    assert all(0 < peak <= deep for peak, deep in zip(sizing.deep_occupancy, sizing.deep_depths))
    # the sized segment, run again on other data: the deep FIFOs' pace and the simulator's values; each FIFO
    # reports its peak (a wire none)
    sized = rtl_stitch.simulate_segment(model, chain, sources, x, cache_dir, sizing.depths, work_dir)
    assert sized.cached and sized.ii == sizing.deep_ii and sized.ii <= sized.exp_ii
    np.testing.assert_array_equal(sized.output, expected)
    for depth, peak in zip(sizing.depths, sized.max_occupancy):
        assert (peak == 0) if depth == 0 else 0 < peak <= depth, (sizing, sized.max_occupancy)


# ---------------------------------------------------------------------------
# width converters inserted where FINN's stitching inserts them


@pytest.fixture(scope="module")
def parallel_window_as_packaged(tmp_path_factory):
    """The parallel_window graph as a deploy packages it: no width converter between the window generator and the
    thresholds (FINN's stitching inserts it), each layer's sources generated."""
    from test_rtlsim import _window_graph

    from sdk.boards import get_board
    from targets.finn import steps
    from targets.finn.environment import prepare_finn

    board = get_board("pynq-z2")
    workdir = tmp_path_factory.mktemp("parallel_window_as_packaged")
    prepare_finn(workdir / "finn")
    cfg = steps.FinnConfig(board, workdir, fps=2e7, sources_dir=workdir / "sources")
    model = steps.run_steps(_window_graph(1, seed=1), cfg, start="specialize_layers")
    return model, cfg.sources_dir, board.part


@pytest.mark.slow  # the four-layer top, wired and sized (builds shared with the sizing test above through the cache)
def test_a_width_change_is_stitched_through_the_converter_finn_would_insert(
    parallel_window_as_packaged, cache_dir, work_dir, tmp_path
):
    from targets.finn.simulator import simulate_dataflow

    model, sources, part = parallel_window_as_packaged
    assert rtl_stitch.segments(model) == [[model.graph.node[0], model.graph.node[1]]]  # the width change splits it
    with_converter, folders = width_converters.with_width_converters(model, part, tmp_path)
    assert [n.op_type for n in with_converter.graph.node] == [
        "FMPadding_rtl",
        "ConvolutionInputGenerator_rtl",
        "StreamingDataWidthConverter_rtl",
        "Thresholding_rtl",
    ]
    converter = with_converter.graph.node[2].name
    assert list(folders) == [converter] and (folders[converter] / f"{converter}.v").is_file()
    assert len(model.graph.node) == 3  # the package's graph is left as it was

    x = np.random.default_rng(5).integers(-8, 8, size=(SAMPLES, 5, 5, 4))
    reference = simulate_dataflow(model, x.astype(np.float32))
    tensors = width_converters.converter_tensors(
        with_converter, {model.graph.input[0].name: x, **reference.intermediates}
    )
    report = rtl_verify.verify_segments(
        with_converter, tensors, sources, cache_dir, work_dir=work_dir, converter_sources=folders
    )
    assert report.check.passed, report.check
    assert "the whole accelerator (4 layers) stitched" in report.check.detail
    (result,) = report.results
    assert result.names[2] == converter and result.fifo_depths == (0, 0, 0)
    sizing = report.sizings[result.names]
    # wired directly the window generator's bursts stall it: the sizing searched, and found FIFOs that pay off
    assert sizing.deep_ii is not None and sizing.ii == sizing.deep_ii < result.ii and any(sizing.depths)
    attributes = report.fifo_depth_attributes()
    assert converter not in attributes and report.stitched_layers() == [n for n in result.names if n != converter]
    padder, window, thresholds = (n.name for n in model.graph.node)
    depths = [max(2, d) for d in sizing.depths]
    assert attributes == {
        padder: {"outFIFODepths": [depths[0]]},
        window: {"inFIFODepths": [depths[0]], "outFIFODepths": [depths[1]]},  # the FIFO before the converter
        thresholds: {"inFIFODepths": [depths[2]]},  # the FIFO after it
    }


@pytest.mark.slow  # the tops of the test above, from the cache
def test_sized_fifos_whose_hardware_computes_otherwise_fail_and_are_not_packaged(
    parallel_window_as_packaged, cache_dir, work_dir, tmp_path, monkeypatch
):
    """The package gets the sized FIFO depths, so their stitched run's values are checked too, not only its pace:
    here every top with a FIFO gives a changed first value (the wired top stays right)."""
    from dataclasses import replace

    from targets.finn.simulator import simulate_dataflow

    model, sources, part = parallel_window_as_packaged
    with_converter, folders = width_converters.with_width_converters(model, part, tmp_path)
    x = np.random.default_rng(5).integers(-8, 8, size=(SAMPLES, 5, 5, 4))
    reference = simulate_dataflow(model, x.astype(np.float32))
    tensors = width_converters.converter_tensors(
        with_converter, {model.graph.input[0].name: x, **reference.intermediates}
    )
    original = rtl_stitch.simulate_stitched

    def tops_with_fifos_compute_otherwise(top, layers, batch, cache, idle_limit=None):
        result = original(top, layers, batch, cache, idle_limit)
        if not any(result.fifo_depths):
            return result
        output = result.output.copy()
        output.flat[0] += 1
        return replace(result, output=output)

    monkeypatch.setattr(rtl_stitch, "simulate_stitched", tops_with_fifos_compute_otherwise)
    report = rtl_verify.verify_segments(
        with_converter, tensors, sources, cache_dir, work_dir=work_dir, converter_sources=folders
    )
    (result,) = report.results
    label = " -> ".join(result.names)
    assert result.fifo_depths == (0, 0, 0)  # the wired top computed the right values; the sized one did not
    assert not report.check.passed and report.check.first_difference == label
    assert "with its sized FIFO depths [" in report.check.detail and "sample 0, element 0" in report.check.detail
    assert report.rows[0][-1] is False and report.rows[0][6]  # the sized depths shown, the segment failed
    assert report.fifo_depth_attributes() == {} and report.stitched_layers() == []  # nothing sized is packaged


@pytest.mark.slow  # builds the changed padder alone and in its segment
def test_a_changed_wrapper_parameter_fails_the_layer_and_its_segment_by_name(cnn, cache_dir, tmp_path):
    """FMPadding_rtl_0's generated wrapper told its image ends a column early: the padder takes 7 of each row's
    8 pixels. Run as `--rtlsim` runs it (rtl_verify.verify_rtl): both checks fail, each naming where."""
    import re

    from targets.finn.rtl_verify import verify_rtl

    changed = tmp_path / "sources"
    shutil.copytree(cnn.sources, changed)
    wrapper = changed / "FMPadding_rtl_0" / "FMPadding_rtl_0.v"
    text = wrapper.read_text()
    xoff = int(re.search(r"\.INIT_XOFF\((\d+)\)", text)[1])
    wrapper.write_text(text.replace(f".INIT_XOFF({xoff})", f".INIT_XOFF({xoff - 1})"))

    rtl = verify_rtl(cnn.model, cnn.tensors, changed, cache_dir, "xc7z020clg400-1")
    layer, stitched = rtl.checks
    assert not layer.passed and layer.first_difference == "FMPadding_rtl_0", layer
    assert "FMPadding_rtl_0" in layer.detail and str(tmp_path) not in layer.detail
    assert "FMPadding_rtl_0" not in rtl.verified and "Thresholding_rtl_0" in rtl.verified  # its neighbour is fine
    assert not stitched.passed and stitched.first_difference.startswith("Thresholding_rtl_0 -> FMPadding_rtl_0 -> ")
    assert "FMPadding_rtl_0" not in rtl.stitched.stitched_layers()
    assert "FMPadding_rtl_0" not in rtl.fifo_depth_attributes()  # no FIFO sized for a segment that is wrong


@pytest.mark.slow  # the parallel window's tops again (cached when the sizing test above ran first)
def test_fifo_sizing_out_of_build_budget_answers_the_deep_depths(parallel_window, cache_dir, tmp_path):
    """A large segment compiles for minutes per trial: `--rtlsim` caps the compiles (SIZING_BUILDS); past the cap
    the search answers the deep depths, which keep the pace, and says it stopped."""
    model, sources = parallel_window
    (chain,) = rtl_stitch.segments(model)
    layers = rtl_stitch.segment_layers(model, chain, sources)
    x = np.random.default_rng(5).integers(-8, 8, size=(fifo_sizing.SIZING_SAMPLES, 5, 5, 4))
    fresh_cache = tmp_path / "cache"  # every trial compiles; Verilator's runtime and header come from the run's
    for shared in (*cache_dir.glob("verilator-runtime-*"), *cache_dir.glob("verilator-pch-*")):
        shutil.copytree(shared, fresh_cache / shared.name)
    sizing = fifo_sizing.size_segment_fifos(layers, x, fresh_cache, tmp_path / "tops", max_builds=1)
    assert not sizing.complete and sizing.builds == 1 and len(sizing.trials) == 1  # deep; its confirmation not run
    assert sizing.depths == sizing.deep_depths and sizing.ii == sizing.deep_ii
