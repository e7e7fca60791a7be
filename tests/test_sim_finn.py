"""The SDK's FINN dataflow simulator against real FINN, nothing mocked.

FINN's python execution stops at the abstract HW layers (MVAU, Thresholding, ...);
after SpecializeLayers + SetFolding + MinimizeAccumulatorWidth it needs Vitis HLS
or Vivado. So the specialised graph, simulated by the SDK, must equal FINN's own
python execution of the same graph before specialisation, tensor for tensor, and
the whole deployed network must equal the QONNX model the SDK exported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import hw_graphs
import numpy as np
import pytest
from hw_graphs import hw_graph

from targets.finn.simulator import SUPPORTED_OPS, SimulationError, simulate_dataflow, simulate_parent

FPGA_PART = "xc7z020clg400-1"
SAMPLES = 50


@dataclass
class Graphs:
    """One zoo model through the real flow, in every form the tests compare."""

    name: str
    qonnx_path: Path
    parent: object  # ModelWrapper with the StreamingDataflowPartition
    hw: object  # the dataflow partition, abstract HW layers (FINN executes these in python)
    specialized: object  # the same after SpecializeLayers, SetFolding, Minimize*Width (FINN cannot execute these here)
    flat: bool


@pytest.fixture(scope="module")
def finn_ready(tmp_path_factory) -> None:
    from targets.finn.environment import prepare_finn

    prepare_finn(tmp_path_factory.mktemp("finn_build"))


def _build(model: str, bits: str, workdir: Path) -> Graphs:
    """The deploy's own FINN steps, with FINN's SetFolding at 200 cycles per frame (100 MHz / 500k fps)."""
    from sdk.boards import get_board
    from sdk.export import export_run
    from sdk.qat import TrainConfig, train
    from targets.finn import steps

    train(TrainConfig(model=model, bits=bits, epochs=1), workdir / "run", progress=False)
    onnx_path = workdir / f"{model}_{bits}.qonnx.onnx"
    export_run(workdir / "run", onnx_path)
    board = get_board("pynq-z2")
    assert board.part == FPGA_PART
    cfg = steps.FinnConfig(board, workdir, fps=board.clock_mhz * 1e6 / 200)
    specialized = steps.run_steps(steps.load_qonnx(onnx_path), cfg, stop="minimize_bit_widths_after_folding")
    parent, hw = cfg.parent, cfg.dataflow_hw
    return Graphs(f"{model}_{bits}", onnx_path, parent, hw, specialized, flat=model == "tfc")


@pytest.fixture(scope="module", params=[("tfc", "w2a2"), ("tfc", "w1a1"), ("cnv", "w2a2")], ids=lambda p: "_".join(p))
def graphs(request, finn_ready, tmp_path_factory) -> Graphs:
    model, bits = request.param
    return _build(model, bits, tmp_path_factory.mktemp(f"{model}_{bits}"))


@pytest.fixture(scope="module")
def digits():
    from sdk.data import load_dataset

    return load_dataset("digits").x_test[:SAMPLES]  # uint8 NCHW (N, 1, 8, 8)


def _dataflow_input(g: Graphs, x_uint8: np.ndarray) -> np.ndarray:
    """The accelerator's input: flat for MLPs, NHWC for CNNs (the parent's Transpose)."""
    x = x_uint8.reshape(len(x_uint8), -1) if g.flat else x_uint8.transpose(0, 2, 3, 1)
    assert list(x.shape[1:]) == g.hw.get_tensor_shape(g.hw.graph.input[0].name)[1:]
    return x.astype(np.float32)


def _finn_python(model, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    from finn.core.onnx_exec import execute_onnx

    name = model.graph.input[0].name
    return [execute_onnx(model, {name: x[i : i + 1]}, return_full_exec_context=True) for i in range(len(x))]


def _node_outputs(model) -> list[str]:
    return [name for node in model.graph.node for name in node.output]


def _assert_equal_to_finn(hw, specialized, x: np.ndarray) -> None:
    result = simulate_dataflow(specialized, x)
    names = _node_outputs(specialized)
    # SpecializeLayers renames nodes (MVAU_0 -> MVAU_hls_0) but keeps every tensor name
    assert names == _node_outputs(hw)
    assert set(result.intermediates) == set(names)
    for i, context in enumerate(_finn_python(hw, x)):
        for name in names:
            np.testing.assert_array_equal(
                result.intermediates[name][i : i + 1], context[name], err_msg=f"sample {i}, tensor {name}"
            )
    np.testing.assert_array_equal(result.output, result.intermediates[hw.graph.output[0].name])
    assert result.output.dtype == np.int64
    assert result.overflows == []


# ---------------------------------------------------------------------------
# the zoo models through the real flow


@pytest.mark.slow  # the graphs fixture trains each model for an epoch
def test_specialized_graph_equals_finn_python_execution(graphs, digits):
    specialised_ops = [n.op_type for n in graphs.specialized.graph.node]
    assert all(op.endswith(("_hls", "_rtl")) for op in specialised_ops), specialised_ops
    _assert_equal_to_finn(graphs.hw, graphs.specialized, _dataflow_input(graphs, digits))


@pytest.mark.slow  # the graphs fixture trains each model for an epoch
def test_deployed_network_equals_qonnx_model(graphs, digits):
    from sdk.graph_run import run_qonnx

    reference = run_qonnx(graphs.qonnx_path, digits, graphs.flat)
    x = digits.reshape(len(digits), -1) if graphs.flat else digits
    result = simulate_parent(graphs.parent, graphs.specialized, x.astype(np.float32))
    atol = 1e-5 * float(np.abs(reference).max())
    assert result.output.dtype == np.float32 and result.integer_output.dtype == np.int64
    np.testing.assert_allclose(result.output, reference, rtol=0, atol=atol)
    np.testing.assert_array_equal(result.integer_output, result.dataflow.output)
    top2 = np.sort(reference, axis=1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > atol  # exactly tied logits only differ by float rounding
    assert untied.sum() > len(reference) // 2
    np.testing.assert_array_equal(result.output.argmax(1)[untied], reference.argmax(1)[untied])


@pytest.mark.slow  # the graphs fixture trains each model for an epoch
def test_batch_equals_one_sample_at_a_time(graphs, digits):
    x = _dataflow_input(graphs, digits[:20])
    batch = simulate_dataflow(graphs.specialized, x)
    for i in range(len(x)):
        single = simulate_dataflow(graphs.specialized, x[i : i + 1])
        np.testing.assert_array_equal(single.output, batch.output[i : i + 1])
        for name, value in single.intermediates.items():
            np.testing.assert_array_equal(value, batch.intermediates[name][i : i + 1])
    lean = simulate_dataflow(graphs.specialized, x, keep_intermediates=False)
    assert lean.intermediates == {}
    np.testing.assert_array_equal(lean.output, batch.output)


@pytest.mark.slow  # the graphs fixture trains each model for an epoch
def test_fifos_and_width_converters_change_nothing(graphs, digits):
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveUniqueNodeNames

    streamed = graphs.specialized.transform(InsertDWC()).transform(InsertFIFO(create_shallow_fifos=True))
    streamed = streamed.transform(SpecializeLayers(FPGA_PART)).transform(GiveUniqueNodeNames())
    assert any(n.op_type.startswith("StreamingFIFO") for n in streamed.graph.node)
    x = _dataflow_input(graphs, digits[:10])
    np.testing.assert_array_equal(
        simulate_dataflow(streamed, x).output, simulate_dataflow(graphs.specialized, x).output
    )


# ---------------------------------------------------------------------------
# layers the zoo models above do not use, in small graphs of real FINN nodes


def _stream_ops_graph(rng):
    """Thresholding (per-channel, shared, BIPOLAR), DuplicateStreams, ElementwiseAdd, Pool, GlobalAccPool,
    LabelSelect."""
    c = 8
    nodes = [
        hw_graphs.thresholding(["x", "thr0"], "t0", c, 3, "INT4", "INT2", [1, 4, 4], weightDataType="INT5", ActVal=-2),
        hw_graphs.duplicate_streams("t0", ["d0", "d1"], c, "INT2", [1, 4, 4]),
        hw_graphs.thresholding(["d1", "thr1"], "t1", c, 1, "INT2", "BIPOLAR", [1, 4, 4], weightDataType="INT3"),
        hw_graphs.elementwise("ElementwiseAdd", ["d0", "t1"], "a", ("INT2", "BIPOLAR", "INT4"), [1, 4, 4, c]),
        hw_graphs.window_generator("a", "w", 4, c, 2, 2, "INT4", depthwise=1, SIMD=c),
        hw_graphs.pool("w", "p", c, 2, 2, "AccPool", ("INT4", "INT6"), AccumBits=6, BatchSize=1, Size=1),
        hw_graphs.global_acc_pool("p", "g", c, "INT6", [1, 2, 2]),
        hw_graphs.label_select("g", "y", c, 3, ("INT8", "UINT8"), [1, 1, 1]),
    ]
    image = (1, 4, 4, c)
    shapes = {
        "x": image,
        "t0": image,
        "d0": image,
        "d1": image,
        "t1": image,
        "a": image,
        "w": (1, 2, 2, 4 * c),
        "p": (1, 2, 2, c),
        "g": (1, 1, 1, c),
        "y": (1, 1, 1, 3),
    }
    thresholds = {"thr0": np.sort(rng.integers(-8, 9, size=(c, 3)), axis=1), "thr1": [[0.5]]}
    model = hw_graph(nodes, shapes, thresholds, "INT4")
    return model, rng.integers(-8, 8, size=(40, *image[1:]))


def _vector_units_graph(rng):
    """Depthwise convolutions (VVAU with and without thresholds), MVAUs with signed, BIPOLAR and
    bipolar x bipolar math."""
    c, mh = 6, 5
    nodes = [
        hw_graphs.fm_padding("x", "xp", 5, c, 1, "UINT2"),
        hw_graphs.window_generator("xp", "w0", 7, c, 3, 1, "UINT2", depthwise=1),
        hw_graphs.vvau(["w0", "vw0", "vt0"], "v0", c, 3, 5, "UINT2", "INT3", outputDataType="INT2", ActVal=-2),
        hw_graphs.window_generator("v0", "w1", 5, c, 3, 2, "INT2", depthwise=1),
        hw_graphs.vvau(["w1", "vw1"], "v1", c, 3, 2, "INT2", "INT3"),
        hw_graphs.mvau(
            ["v1", "mw0", "mt0"], "m0", c, mh, "INT32", "INT3", [1, 2, 2], outputDataType="BIPOLAR", ActVal=0
        ),
        hw_graphs.mvau(["m0", "mw1"], "y", mh, 3, "BIPOLAR", "BIPOLAR", [1, 2, 2]),
    ]
    shapes = {
        "x": (1, 5, 5, c),
        "xp": (1, 7, 7, c),
        "w0": (1, 5, 5, 9 * c),
        "v0": (1, 5, 5, c),
        "w1": (1, 2, 2, 9 * c),
        "v1": (1, 2, 2, c),
        "m0": (1, 2, 2, mh),
        "y": (1, 2, 2, 3),
    }
    initializers = {
        "vw0": rng.integers(-4, 4, size=(c, 1, 3, 3)),
        "vt0": np.sort(rng.integers(-6, 7, size=(c, 3)), axis=1),
        "vw1": rng.integers(-4, 4, size=(c, 1, 3, 3)),
        "mw0": rng.integers(-4, 4, size=(c, mh)),
        "mt0": rng.integers(-20, 21, size=(1, 1)) + 0.25,
        "mw1": rng.choice([-1, 1], size=(mh, 3)),
    }
    model = hw_graph(nodes, shapes, initializers, "UINT2")
    return model, rng.integers(0, 4, size=(30, 5, 5, c))


@pytest.mark.parametrize("build", [_stream_ops_graph, _vector_units_graph], ids=["stream_ops", "vector_units"])
def test_small_graphs_equal_finn_python_execution(finn_ready, build):
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    model, x = build(np.random.default_rng(7))
    specialized = model.transform(SpecializeLayers(FPGA_PART))
    assert all(n.op_type.endswith(("_hls", "_rtl")) for n in specialized.graph.node)
    _assert_equal_to_finn(model, specialized, x.astype(np.float32))


def _signed_conv_graph(rng, out_type: str):
    """Thresholds to signed activations (BIPOLAR or INTb), zero padding, 3x3 windows and a thresholded MVAU
    reading them: the signed input the integer GEMM takes as codes x - low."""
    c, mh, side = 4, 6, 5
    bipolar = out_type == "BIPOLAR"
    bits = 1 if bipolar else int(out_type[3:])
    steps, low = 2**bits - 1, 0 if bipolar else -(2 ** (bits - 1))
    padded = side if bipolar else side + 2  # FINN pads with 0, which is no BIPOLAR value
    nodes = [
        hw_graphs.thresholding(["x", "thr"], "a", c, steps, "UINT4", out_type, [1, side, side], ActVal=low),
        hw_graphs.window_generator("ap", "w", padded, c, 3, 1, out_type),
        hw_graphs.mvau(
            ["w", "mw", "mt"], "y", 9 * c, mh, out_type, "INT3", [1, padded - 2, padded - 2], outputDataType="UINT2"
        ),
    ]
    if not bipolar:
        nodes.insert(1, hw_graphs.fm_padding("a", "ap", side, c, 1, out_type))
    else:
        nodes[1].input[0] = "a"
    reach = 9 * c * 4 * max(1, -low)
    shapes = {
        "x": (1, side, side, c),
        "a": (1, side, side, c),
        "ap": (1, padded, padded, c),
        "w": (1, padded - 2, padded - 2, 9 * c),
        "y": (1, padded - 2, padded - 2, mh),
    }
    initializers = {
        "thr": np.sort(rng.integers(-1, 17, size=(c, steps)), axis=1),
        "mw": rng.integers(-4, 4, size=(9 * c, mh)),
        "mt": np.sort(rng.integers(-reach // 4, reach // 4 + 1, size=(mh, 3)), axis=1) + 0.5,
    }
    model = hw_graph(nodes, shapes, initializers, "UINT4")
    return model, rng.integers(0, 16, size=(12, side, side, c))


@pytest.mark.parametrize("out_type", ["BIPOLAR"] + [f"INT{bits}" for bits in range(2, 9)])
def test_signed_activations_take_the_integer_gemm_and_equal_finn(finn_ready, out_type):
    """Signed activations of 1 to 8 bits: the MVAU reading them runs in the integer GEMM (the chosen path, checked)
    and every tensor equals FINN's python execution."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from targets.finn import kernels
    from targets.finn.simulator import prepare_dataflow

    model, x = _signed_conv_graph(np.random.default_rng(len(out_type)), out_type)
    specialized = model.transform(SpecializeLayers(FPGA_PART))
    step = next(s for s in prepare_dataflow(specialized).steps if s.node.onnx.op_type.startswith("MVAU"))
    gemm = step.node.memo[kernels._prepare_mvau].product.gemm
    assert gemm is not None and gemm.offset == (-1 if out_type == "BIPOLAR" else -(2 ** (int(out_type[3:]) - 1)))
    _assert_equal_to_finn(model, specialized, x.astype(np.float32))


# ---------------------------------------------------------------------------
# what the hardware would do differently, and what cannot be simulated


def _mvau_nodes(model):
    from qonnx.custom_op.registry import getCustomOp

    return [(node, getCustomOp(node)) for node in model.graph.node if node.op_type.startswith("MVAU")]


def test_accumulator_and_output_overflows_are_reported(finn_ready):
    model, x = _vector_units_graph(np.random.default_rng(3))
    exact = simulate_dataflow(model, x)
    narrow = copy.deepcopy(model)
    (first, op), (last, last_op) = _mvau_nodes(narrow)
    op.set_nodeattr("accDataType", "INT2")  # too narrow for the accumulator
    last_op.set_nodeattr("outputDataType", "UINT2")  # output of noActivation MVAU can be negative
    result = simulate_dataflow(narrow, x)
    np.testing.assert_array_equal(result.output, exact.output)  # the exact values, with the differences reported
    assert len(result.overflows) == 2
    assert first.name in result.overflows[0] and "accumulator" in result.overflows[0] and "INT2" in result.overflows[0]
    assert last.name in result.overflows[1] and "output" in result.overflows[1] and "UINT2" in result.overflows[1]


def test_unsupported_node_is_named(finn_ready):
    from onnx import helper

    model, x = _vector_units_graph(np.random.default_rng(3))
    broken = copy.deepcopy(model)
    node = broken.graph.node[1]
    node.op_type, node.name = "UpsampleNearestNeighbour_hls", "Upsample_7"
    with pytest.raises(SimulationError) as info:
        simulate_dataflow(broken, x)
    message = str(info.value)
    assert "Upsample_7" in message and "UpsampleNearestNeighbour_hls" in message
    assert (
        all(op in message for op in ("MVAU", "Thresholding", "ConvolutionInputGenerator")) and len(SUPPORTED_OPS) > 10
    )

    foreign = copy.deepcopy(model)
    foreign.graph.node.insert(0, helper.make_node("Relu", ["x"], ["x_relu"], name="Relu_0"))
    with pytest.raises(SimulationError, match="Relu_0.*Relu"):
        simulate_dataflow(foreign, x)


def test_inputs_outside_the_input_datatype_are_refused(finn_ready):
    model, x = _vector_units_graph(np.random.default_rng(3))
    with pytest.raises(SimulationError, match="UINT2"):
        simulate_dataflow(model, x + 4)
    with pytest.raises(SimulationError, match="non-integer"):
        simulate_dataflow(model, x + 0.5)
    with pytest.raises(SimulationError, match="shape"):
        simulate_dataflow(model, x[:, :4])


def test_threshold_counts_match_brute_force():
    from targets.finn.simulator import count_thresholds

    rng = np.random.default_rng(0)
    acc = rng.integers(-50, 50, size=(7, 3, 5))
    per_channel = rng.normal(0, 30, size=(5, 6))
    per_channel[0, 0], per_channel[1, 1], per_channel[2, 2] = np.inf, -np.inf, 1e30
    per_channel[3] = np.round(per_channel[3])  # integer thresholds: equality counts
    for thresholds in (per_channel, per_channel[:1], np.zeros((5, 0))):
        expected = (acc[..., None] >= np.broadcast_to(thresholds, (5, thresholds.shape[1]))).sum(-1)
        np.testing.assert_array_equal(count_thresholds(acc, thresholds, "test"), expected)
