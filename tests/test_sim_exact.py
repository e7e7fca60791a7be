"""The simulator's fast paths against a straightforward int64 reference, on random data and at the edges.

The kernels compute in onnxruntime's integer GEMM (uint8 x int8 in int32) where the input spans at most
256 values (a signed one as its codes x - low) and the weights fit 8 bits, in float32 BLAS where the static
range of a layer's input and its weights bound every partial sum below 2**24, in float64 or int64 beyond, and
count thresholds with one compare per step in the values' own dtype (a searchsorted for many steps). Each case
here is built so that a wrong choice would show: accumulators at exactly 2**24 - 1, 2**24 and 2**24 + 1 and at
the int16 pair and int32 bounds of the integer GEMM, thresholds equal to accumulator values, negative,
fractional and infinite thresholds, BINARY (XNOR), BIPOLAR and signed inputs of 1 to 8 bits, inputs of every
dtype.
"""

from __future__ import annotations

import hw_graphs
import numpy as np
import pytest
from hw_graphs import hw_graph

from targets.finn import kernels
from targets.finn.simulator import SimulationError, count_thresholds, prepare_dataflow, simulate_dataflow


@pytest.fixture(scope="module", autouse=True)
def finn_ready(tmp_path_factory) -> None:
    from targets.finn.environment import prepare_finn

    prepare_finn(tmp_path_factory.mktemp("finn_build"))


def _mvau(x_type: str, w_type: str, weights: np.ndarray, thresholds=None, out_type="INT32", act_val=0, xnor=0):
    mw, mh = weights.shape
    inputs, initializers = ["x", "w"], {"w": weights}
    if thresholds is not None:
        inputs.append("t")
        initializers["t"] = thresholds
    attributes = {"outputDataType": out_type, "accDataType": "INT64", "ActVal": act_val, "binaryXnorMode": xnor}
    node = hw_graphs.mvau(inputs, "y", mw, mh, x_type, w_type, **attributes)
    return hw_graph([node], {"x": (1, mw), "y": (1, mh)}, initializers, x_type, infer=False)


def _reference_mvau(x, weights, thresholds=None, act_val=0, xnor=False, bipolar=False, bipolar_out=False):
    """The MVAU in int64, as written: product, bipolar popcount, then the count of thresholds crossed."""
    x, weights = x.astype(np.int64), weights.astype(np.int64)
    if xnor:
        x, weights = 2 * x - 1, 2 * weights - 1
    acc = np.einsum("nk,km->nm", x, weights)
    if xnor or bipolar:
        acc = (acc + weights.shape[0]) // 2
    if thresholds is None:
        return acc
    count = _reference_count(acc, thresholds)
    return 2 * count - 1 if bipolar_out else count + act_val


def _reference_count(acc: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """sum over the steps of (acc >= t), in float64: exact for the |acc| < 2**53 used here."""
    assert np.abs(acc).max(initial=0) < 2**53
    table = np.broadcast_to(thresholds, (acc.shape[-1], thresholds.shape[1]))
    return (acc[..., None] >= table).sum(-1)


def _stored(model) -> np.ndarray:
    """The thresholds as the graph holds them (float32 initializers: 2**24 + 1 is stored as 2**24)."""
    return model.get_initializer("t").astype(np.float64)


def _unit(model) -> kernels._VectorUnit:
    """The first node's prepared MVAU / VVAU: which product path the plan chose."""
    node = prepare_dataflow(model).steps[0].node
    return node.memo[kernels._prepare_mvau if node.onnx.op_type == "MVAU" else kernels._prepare_vvau]


def _thresholds_from(acc: np.ndarray, steps: int, rng) -> np.ndarray:
    """Per-channel thresholds taken from the accumulator values themselves (equality must count), some off by
    half a step, some negative beyond reach."""
    picks = np.stack([rng.choice(acc[:, c], size=steps) for c in range(acc.shape[1])]).astype(np.float64)
    picks[:, ::3] += 0.5
    picks[0, 0] = -(2.0**40)
    return np.sort(picks, axis=1)


# ---------------------------------------------------------------------------
# the float32 decision at 2**24


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("bound", [2**24 - 1, 2**24, 2**24 + 1])
def test_accumulator_at_the_float32_limit(bound, sign):
    # one output column, |w| summing to `bound`; an all-ones BINARY input reaches it exactly
    weights = sign * np.array([[bound - 1], [1]])
    rng = np.random.default_rng(bound)
    x = np.vstack([np.ones((1, 2)), rng.integers(0, 2, size=(20, 2))])
    expected = _reference_mvau(x, weights)
    assert expected[0, 0] == sign * bound
    model = _mvau("BINARY", "INT32", weights)
    assert _unit(model).product.static32 == (bound < 2**24)  # float32 only below 2**24: 2**24 + 1 would round
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, expected)
    # thresholds right at the accumulator: equal counts, one above does not
    thresholds = np.sort(sign * (bound + np.array([[-2, -1, 0, 1, 2]])), axis=1)
    model = _mvau("BINARY", "INT32", weights, thresholds, out_type="UINT3")
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_mvau(x, weights, _stored(model)))


def test_float32_limit_from_input_width_and_weights():
    # UINT8 x 37 weights of at most 3: 255 * 111 < 2**24 -> float32; INT16 x 600 x 127 >= 2**24 -> not
    assert _unit(_mvau("UINT8", "INT3", np.full((37, 4), 3))).product.static32
    assert not _unit(_mvau("INT16", "INT8", np.full((600, 4), 127))).product.static32
    assert _unit(_mvau("INT16", "INT8", np.full((4, 4), 127))).product.static32


# ---------------------------------------------------------------------------
# MVAU, VVAU and Thresholding on random data, every path


MVAU_CASES = {
    # name: (input type, its range, weight type, weight range, MW, MH, threshold steps or None)
    "uint8_int2_3steps": ("UINT8", (0, 255), "INT2", (-2, 1), 64, 16, 3),
    "uint2_int2_1step": ("UINT2", (0, 3), "INT2", (-2, 1), 40, 8, 1),
    "int4_int4_15steps": ("INT4", (-8, 7), "INT4", (-8, 7), 50, 12, 15),
    "int8_int8_31steps_searchsorted": ("INT8", (-128, 127), "INT8", (-128, 127), 30, 10, 31),
    "int16_int8_float64": ("INT16", (-(2**15), 2**15 - 1), "INT8", (-128, 127), 600, 6, 7),
    "int32_int8_noact_float64": ("INT32", (-(2**31), 2**31 - 1), "INT8", (-128, 127), 40, 6, None),
    "int32_int22_noact_int64": ("INT32", (-(2**31), 2**31 - 1), "INT22", (-(2**21), 2**21 - 1), 9, 5, None),
}


@pytest.mark.parametrize("case", MVAU_CASES)
def test_mvau_matches_int64_reference(case):
    x_type, x_range, w_type, w_range, mw, mh, steps = MVAU_CASES[case]
    rng = np.random.default_rng(len(case))
    weights = rng.integers(w_range[0], w_range[1] + 1, size=(mw, mh))
    x = rng.integers(x_range[0], x_range[1] + 1, size=(60, mw))
    x[:2] = [[x_range[0]], [x_range[1]]]  # the extremes of the input range
    if steps is None:
        model = _mvau(x_type, w_type, weights)
        np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_mvau(x, weights))
        return
    thresholds = _thresholds_from(_reference_mvau(x, weights), steps, rng)
    model = _mvau(x_type, w_type, weights, thresholds, out_type="INT8", act_val=-2)
    result = simulate_dataflow(model, x)
    np.testing.assert_array_equal(result.output, _reference_mvau(x, weights, _stored(model), act_val=-2))
    assert result.overflows == []


def test_mvau_shared_and_infinite_thresholds():
    rng = np.random.default_rng(1)
    weights = rng.integers(-2, 2, size=(20, 6))
    x = rng.integers(0, 16, size=(50, 20))
    for thresholds in (
        np.array([[-np.inf, -3, 0, 0.5, 7, np.inf]]),  # shared by every channel
        np.sort(rng.normal(0, 20, size=(6, 4)), axis=1),
        np.array([[1e30, 1e30]] * 6),  # never crossed
        np.array([[-1e30, 2]] * 6),  # always crossed, then from 2 on
    ):
        model = _mvau("UINT4", "INT2", weights, thresholds, out_type="INT8")
        np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_mvau(x, weights, _stored(model)))


def test_mvau_binary_xnor_and_bipolar():
    rng = np.random.default_rng(2)
    bits, weight_bits = rng.integers(0, 2, size=(40, 33)), rng.integers(0, 2, size=(33, 7))
    thresholds = np.sort(rng.integers(0, 34, size=(7, 1)), axis=1) + 0.0
    xnor = _mvau("BINARY", "BINARY", weight_bits, thresholds, out_type="BIPOLAR", xnor=1)
    np.testing.assert_array_equal(
        simulate_dataflow(xnor, bits).output,
        _reference_mvau(bits, weight_bits, thresholds, xnor=True, bipolar_out=True),
    )
    signs, weight_signs = 2 * bits - 1, 2 * weight_bits - 1
    bipolar = _mvau("BIPOLAR", "BIPOLAR", weight_signs)
    np.testing.assert_array_equal(
        simulate_dataflow(bipolar, signs).output, _reference_mvau(signs, weight_signs, bipolar=True)
    )


def _vvau_model(x_type: str, weights: np.ndarray, thresholds=None, w_type="INT4"):
    channels, k = weights.shape[0], weights.shape[-1]
    inputs, initializers = ["x", "w"], {"w": weights}
    if thresholds is not None:
        inputs.append("t")
        initializers["t"] = thresholds
    out_type = "INT32" if thresholds is None else "UINT4"
    attributes = {"outputDataType": out_type, "accDataType": "INT64", "ActVal": 0}
    node = hw_graphs.vvau(inputs, "y", channels, k, 2, x_type, w_type, **attributes)
    shapes = {"x": (1, 2, 2, k * k * channels), "y": (1, 2, 2, channels)}
    return hw_graph([node], shapes, initializers, x_type, infer=False)


@pytest.mark.parametrize(
    "x_type, high, w_type, w_high",
    [
        ("UINT4", 15, "INT4", 7),  # int16 sums, position by position
        ("UINT8", 255, "INT8", 128),  # 255 * 128 * 9 > 2**15 - 1: int32 sums
        ("INT32", 2**30, "INT20", 2**19),  # beyond int32: float64 / int64 (einsum)
    ],
)
def test_vvau_matches_int64_reference(x_type, high, w_type, w_high):
    rng = np.random.default_rng(high)
    channels, k = 5, 3
    weights = rng.integers(-w_high, w_high, size=(channels, 1, k, k))
    x = rng.integers(0, high + 1, size=(30, 2, 2, k * k * channels))
    x[0], weights[0] = high, -w_high  # one channel's sum at its largest magnitude
    patches = x.reshape(30, 2, 2, k * k, channels).astype(np.int64)
    acc = np.einsum("...kc,kc->...c", patches, weights.reshape(channels, k * k).T.astype(np.int64))
    narrow = {"UINT4": np.int16, "UINT8": np.int32}.get(x_type)
    assert _unit(_vvau_model(x_type, weights, w_type=w_type)).product.narrow == narrow
    np.testing.assert_array_equal(simulate_dataflow(_vvau_model(x_type, weights, w_type=w_type), x).output, acc)
    if high < 2**20:
        thresholds = _thresholds_from(acc.reshape(-1, channels), 15, rng)
        model = _vvau_model(x_type, weights, thresholds, w_type)
        np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_count(acc, _stored(model)))


def _thresholding_model(
    x_type: str, thresholds: np.ndarray, channels: int, out_type: str, act_val: int, rows: tuple[int, ...] = (1, 3)
):
    """A Thresholding layer on inputs of shape (*rows, channels)."""
    node = hw_graphs.thresholding(
        ["x", "t"], "y", channels, thresholds.shape[1], x_type, out_type, rows, ActVal=act_val
    )
    shape = (*rows, channels)
    return hw_graph([node], {"x": shape, "y": shape}, {"t": thresholds}, x_type, infer=False)


@pytest.mark.parametrize("steps", [1, 3, 16, 17, 40])
@pytest.mark.parametrize("x_type, low, high", [("INT12", -2048, 2047), ("INT32", -(2**30), 2**30)])
def test_thresholding_matches_reference(steps, x_type, low, high):
    rng = np.random.default_rng(steps)
    channels = 6
    x = rng.integers(low, high + 1, size=(40, 3, channels))
    thresholds = _thresholds_from(x.reshape(-1, channels), steps, rng)
    out_type = "INT8" if steps < 100 else "INT16"
    model = _thresholding_model(x_type, thresholds, channels, out_type, -3)
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_count(x, _stored(model)) - 3)
    model = _thresholding_model(x_type, thresholds[:1], channels, out_type, 0)  # shared by every channel
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_count(x, _stored(model)))
    if steps == 1:  # BIPOLAR: 2 * (count + ActVal) - 1
        model = _thresholding_model(x_type, thresholds, channels, "BIPOLAR", 0)
        np.testing.assert_array_equal(simulate_dataflow(model, x).output, 2 * _reference_count(x, _stored(model)) - 1)


def test_blocks_of_rows_and_narrow_activations_change_nothing(monkeypatch):
    """Thresholding (uint8 counts) into an MVAU run in blocks of rows: the same as one block, and as the reference."""
    rng = np.random.default_rng(8)
    weights = rng.integers(-2, 2, size=(12, 5))
    x = rng.integers(-100, 100, size=(300, 12))
    first = _thresholds_from(x, 3, rng)
    counts = _reference_count(x, first)
    thresholds = _thresholds_from(_reference_mvau(counts, weights), 3, rng)
    activation = hw_graphs.thresholding(["x", "t"], "a", 12, first.shape[1], "INT8", "UINT2", [1])
    mvau = _mvau("UINT2", "INT2", weights, thresholds, out_type="UINT2").graph.node[0]
    mvau.input[0], mvau.input[2] = "a", "t2"
    shapes = {"x": (1, 12), "a": (1, 12), "y": (1, 5)}
    model = hw_graph([activation, mvau], shapes, {"t": first, "w": weights, "t2": thresholds}, "INT8", infer=False)
    expected = _reference_mvau(counts, weights, model.get_initializer("t2").astype(np.float64))
    whole = simulate_dataflow(model, x)
    assert _unit_of(model, 1).blocked and whole.intermediates["a"].dtype == np.int64
    monkeypatch.setattr(kernels, "_BLOCK", 12 * 7)  # 7 rows per block, the last one short
    blocks = simulate_dataflow(model, x)
    for result in (whole, blocks):
        np.testing.assert_array_equal(result.intermediates["a"], counts)
        np.testing.assert_array_equal(result.output, expected)


def test_count_thresholds_near_2_to_the_24():
    # float32 values hold magnitudes below 2**24; thresholds beyond are clipped to +-2**24, which changes no count
    edge = 2**24 - 1
    acc = np.array([[-edge, -edge + 1, -1, 0, 1, edge - 1, edge]])
    thresholds = np.array([[-(2.0**24) - 3, -edge - 0.5, -edge, 0, edge, edge + 0.5, 2.0**24, 2.0**24 + 1]])
    expected = _reference_count(acc, thresholds)
    for values in (acc, acc.astype(np.float32), acc.astype(np.int32)):
        np.testing.assert_array_equal(count_thresholds(values, thresholds, "edge"), expected)
    many = np.sort(np.concatenate([thresholds, thresholds + 1, thresholds - 1], axis=1))  # > COMPARE_STEPS
    assert many.shape[1] > kernels.COMPARE_STEPS
    np.testing.assert_array_equal(count_thresholds(acc.astype(np.float32), many, "edge"), _reference_count(acc, many))


# ---------------------------------------------------------------------------
# ranges decided at run time, static ranges, inputs, plans


def test_unknown_ranges_are_decided_per_call():
    """An ElementwiseAdd before the MVAU: no static range, so the product path follows the batch's max |x|."""
    weights = np.full((8, 3), 127)
    add = hw_graphs.elementwise("ElementwiseAdd", ["x", "x"], "s", ("INT32", "INT32", "INT32"), [1, 8])
    mvau = _mvau("INT32", "INT8", weights).graph.node[0]
    mvau.input[0] = "s"
    model = hw_graph([add, mvau], {"x": (1, 8), "s": (1, 8), "y": (1, 3)}, {"w": weights}, "INT32", infer=False)
    assert not _unit_of(model, 1).product.static32
    rng = np.random.default_rng(4)
    for high in (100, 2**14, 2**30):  # float32, float64 (sum of |w| * 2 * high crosses 2**24 at 2**14)
        x = rng.integers(-high, high, size=(20, 8))
        x[0] = high - 1
        result = simulate_dataflow(model, x)
        np.testing.assert_array_equal(result.output, _reference_mvau(2 * x, weights))


def _unit_of(model, index: int) -> kernels._VectorUnit:
    return prepare_dataflow(model).steps[index].node.memo[kernels._prepare_mvau]


@pytest.mark.parametrize("case", ["uint8_int2_3steps", "int4_int4_15steps", "int32_int8_noact_float64"])
def test_static_ranges_contain_every_value(case):
    x_type, x_range, w_type, w_range, mw, mh, steps = MVAU_CASES[case]
    rng = np.random.default_rng(9)
    weights = rng.integers(w_range[0], w_range[1] + 1, size=(mw, mh))
    x = rng.integers(x_range[0], x_range[1] + 1, size=(200, mw))
    thresholds = None if steps is None else _thresholds_from(_reference_mvau(x, weights), steps, rng)
    plan = prepare_dataflow(_mvau(x_type, w_type, weights, thresholds, out_type="INT32"))
    unit = plan.steps[0].node.memo[kernels._prepare_mvau]
    acc = _reference_mvau(x, weights)
    assert unit.acc_range[0] <= acc.min() and acc.max() <= unit.acc_range[1]
    output = plan.run(x).output
    assert unit.out_range[0] <= output.min() and output.max() <= unit.out_range[1]


def test_every_input_dtype_gives_the_same_result():
    rng = np.random.default_rng(5)
    weights = rng.integers(-2, 2, size=(30, 4))
    x = rng.integers(0, 256, size=(25, 30))
    model = _mvau("UINT8", "INT2", weights, _thresholds_from(_reference_mvau(x, weights), 3, rng), out_type="UINT2")
    plan = prepare_dataflow(model)
    expected = plan.run(x).output
    for values in (x.astype(np.uint8), x.astype(np.float32), x.astype(np.float64), x.astype(np.int16)):
        np.testing.assert_array_equal(plan.run(values).output, expected)
    for bad, match in ((x + 0.5, "non-integer"), (x - 1.0, "UINT8"), (np.where(x > 9, np.nan, x), "non-integer")):
        with pytest.raises(SimulationError, match=match):
            plan.run(bad)
    bipolar = _mvau("BIPOLAR", "BIPOLAR", 2 * rng.integers(0, 2, size=(5, 2)) - 1)
    with pytest.raises(SimulationError, match="BIPOLAR"):
        simulate_dataflow(bipolar, np.array([[1, -1, 0, 1, 1]]))


def test_a_plan_runs_many_batches_and_leaves_the_input_alone():
    rng = np.random.default_rng(6)
    weights = rng.integers(-2, 2, size=(16, 5))
    model = _mvau("UINT4", "INT2", weights, np.sort(rng.normal(0, 5, size=(5, 3)), axis=1), out_type="UINT2")
    plan = prepare_dataflow(model)
    for n in (1, 7, 40):
        x = rng.integers(0, 16, size=(n, 16)).astype(np.float32)
        before = x.copy()
        result = plan.run(x)
        np.testing.assert_array_equal(x, before)
        np.testing.assert_array_equal(result.output, simulate_dataflow(model, x).output)
        assert result.output.dtype == np.int64 and result.intermediates["y"].dtype == np.int64


# ---------------------------------------------------------------------------
# the integer GEMM (onnxruntime MatMulInteger): its bounds and its results at the edges


def _gemm_model(x_type: str, weights: np.ndarray, thresholds=None):
    return _mvau(x_type, "INT8", weights, thresholds, out_type="INT32" if thresholds is None else "UINT4")


@pytest.mark.parametrize(
    "x_type, high, w_low, w_high, zero_point",
    [
        ("UINT8", 255, -64, 64, 0),  # 2 * 255 * 64 = 32640: a pair of products fits int16
        ("UINT8", 255, -65, 3, 128),  # 2 * 255 * 65 = 33150 would saturate: weights as uint8, zero point 128
        ("UINT8", 255, -3, 65, 128),
        ("UINT8", 255, -128, 127, 128),
        ("UINT2", 3, -128, 127, 0),  # 2 * 3 * 128 fits int16
        ("UINT4", 15, -2, 1, 0),
    ],
)
def test_integer_gemm_matches_int64_reference_at_the_edges(x_type, high, w_low, w_high, zero_point):
    rng = np.random.default_rng(high + w_high)
    weights = rng.integers(w_low, w_high + 1, size=(70, 9))
    weights[:, 0], weights[:, 1] = w_low, w_high  # columns at the extremes: the largest sums of either sign
    weights[0, 2], weights[1, 2] = w_low, w_low  # one adjacent pair at the widest weight
    x = rng.integers(0, high + 1, size=(50, 70))
    x[0], x[1] = high, 0
    model = _gemm_model(x_type, weights)
    unit = _unit(model)
    assert unit.product.gemm is not None and unit.product.gemm.zero_point == zero_point
    expected = _reference_mvau(x, weights)
    assert expected[0, 0] == 70 * high * w_low and expected[0, 1] == 70 * high * w_high
    result = simulate_dataflow(model, x)
    np.testing.assert_array_equal(result.output, expected)
    thresholds = _thresholds_from(expected, 15, rng)
    model = _gemm_model(x_type, weights, thresholds)
    assert _unit(model).blocked and _unit(model).product.gemm is not None
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_mvau(x, weights, _stored(model)))


def test_integer_gemm_only_where_it_is_exact():
    """Signed or wide inputs, 9-bit weights and a possible int32 overflow take the float or int64 paths."""
    small = np.full((8, 3), 2)
    assert _unit(_gemm_model("UINT8", small)).product.gemm is not None
    assert _unit(_gemm_model("INT9", small)).product.gemm is None  # a signed input spanning more than 256 values
    assert _unit(_gemm_model("UINT9", small)).product.gemm is None  # beyond uint8
    assert _unit(_mvau("UINT8", "INT9", np.full((8, 3), -129))).product.gemm is None  # beyond int8
    assert _unit(_mvau("UINT8", "UINT8", np.full((8, 3), 128))).product.gemm is None
    # 255 * (sum |w| + 256 * K) must stay below 2**31 - 1 (x * (w + 128) summed); with one -1 and 127 else, K <= 21,988
    assert 255 * (127 * 21_987 + 1 + 256 * 21_988) < 2**31 - 1 <= 255 * (127 * 21_988 + 1 + 256 * 21_989)
    # a signed input goes as its codes x + 128 in [0, 255]: the same bound (its largest code is 255 too)
    for x_type, low in (("UINT8", 0), ("INT8", -128)):
        for terms, fits in ((21_988, True), (21_989, False)):
            weights = np.full((terms, 1), 127)
            weights[0] = -1
            unit = _unit(_gemm_model(x_type, weights))
            assert (unit.product.gemm is not None) == fits
            rng = np.random.default_rng(terms)
            x = np.vstack([np.full((2, terms), low), np.full((1, terms), low + 255)])
            x = np.vstack([x, rng.integers(low, low + 256, size=(3, terms))])
            x[1, 0] = low + 255  # the -1 weight at its largest code, the rest at the lowest
            np.testing.assert_array_equal(
                simulate_dataflow(_gemm_model(x_type, weights), x).output, _reference_mvau(x, weights)
            )


SIGNED_TYPES = ["BIPOLAR"] + [f"INT{bits}" for bits in range(2, 9)]


def _signed_values(x_type: str, rng, shape) -> np.ndarray:
    if x_type == "BIPOLAR":
        return rng.choice([-1, 1], size=shape)
    bits = int(x_type[3:])
    x = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape)
    x[0], x[1] = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1  # the ends of the range, on every term
    return x


@pytest.mark.parametrize("x_type", SIGNED_TYPES)
@pytest.mark.parametrize("w_type, w_low, w_high, zero_point", [("INT2", -2, 1, 0), ("INT8", -128, 127, None)])
def test_signed_inputs_take_the_integer_gemm(x_type, w_type, w_low, w_high, zero_point):
    """Signed activations of 1 to 8 bits go through the integer GEMM as codes x - low (uint8), shifted back by
    the column sums (no thresholds) or by moving the thresholds (blocked), and equal the int64 reference."""
    rng = np.random.default_rng(len(x_type) + w_high)
    weights = rng.integers(w_low, w_high + 1, size=(70, 9))
    weights[:, 0], weights[:, 1] = w_low, w_high
    x = _signed_values(x_type, rng, (60, 70))
    low = -1 if x_type == "BIPOLAR" else -(2 ** (int(x_type[3:]) - 1))
    model = _mvau(x_type, w_type, weights)
    unit = _unit(model)
    assert unit.product.gemm is not None and unit.product.gemm.offset == low
    if zero_point is not None:
        assert unit.product.gemm.zero_point == zero_point
    else:  # int8 weights: a pair of products fits int16 up to INT7 (codes to 127), not for INT8 (to 255)
        top = 2 if x_type == "BIPOLAR" else -2 * low - 1
        assert unit.product.gemm.zero_point == (0 if 2 * top * 128 <= 2**15 - 1 else 128)
        assert unit.product.gemm.zero_point == (128 if x_type == "INT8" else 0)
    expected = _reference_mvau(x, weights)
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, expected)
    thresholds = _thresholds_from(expected, 7, rng)
    thresholds[1] = np.linspace(-(2.0**30), 2.0**30, 7)  # beyond the accumulators on both sides
    model = _mvau(x_type, w_type, weights, thresholds, out_type="INT4", act_val=-4)
    unit = _unit(model)
    assert unit.blocked and unit.product.gemm is not None and unit.code_activation is not unit.activation
    np.testing.assert_array_equal(
        simulate_dataflow(model, x).output, _reference_mvau(x, weights, _stored(model), act_val=-4)
    )


def test_signed_inputs_refused_where_the_gemm_is_not_exact():
    """INT9 spans 512 values; int16 weights are beyond int8: the float path, still exact."""
    rng = np.random.default_rng(9)
    for x_type, w_type, weights, x in (
        ("INT9", "INT2", rng.integers(-2, 2, size=(30, 4)), rng.integers(-256, 256, size=(20, 30))),
        ("INT4", "INT9", rng.integers(-256, 256, size=(30, 4)), rng.integers(-8, 8, size=(20, 30))),
    ):
        model = _mvau(x_type, w_type, weights)
        assert _unit(model).product.gemm is None
        np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_mvau(x, weights))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float32, np.int64])
def test_signed_codes_from_every_dtype(dtype):
    """The codes x - low from int8 (a wrapping uint8 add), wider integers and float32 are the same."""
    rng = np.random.default_rng(3)
    weights = rng.integers(-3, 3, size=(20, 6))
    x = _signed_values("INT8", rng, (40, 20))
    model = _mvau("INT8", "INT3", weights, _thresholds_from(_reference_mvau(x, weights), 5, rng), out_type="UINT3")
    expected = _reference_mvau(x, weights, _stored(model))
    plan = prepare_dataflow(model)
    np.testing.assert_array_equal(plan.steps[0].kernel(_node_of(plan, x.astype(dtype)))[0].reshape(40, 6), expected)
    np.testing.assert_array_equal(plan.run(x.astype(dtype)).output, expected)


def _node_of(plan, x: np.ndarray):
    from dataclasses import replace

    return replace(plan.steps[0].node, inputs=[x], overflows=[])


def test_integer_gemm_in_blocks_of_rows(monkeypatch):
    """Blocks of 7 rows, the last one short, and batches of 0 and 1 rows: the same as the reference."""
    rng = np.random.default_rng(12)
    weights = rng.integers(-8, 8, size=(24, 5))
    x = rng.integers(0, 256, size=(300, 24))
    thresholds = _thresholds_from(_reference_mvau(x, weights), 4, rng)
    model = _gemm_model("UINT8", weights, thresholds)
    expected = _reference_mvau(x, weights, _stored(model))
    monkeypatch.setattr(kernels, "_ACC_BLOCK", 5 * 7)
    plan = prepare_dataflow(model)
    assert plan.steps[0].node.memo[kernels._prepare_mvau].blocked
    np.testing.assert_array_equal(plan.run(x).output, expected)
    for rows in (0, 1):
        assert plan.run(x[:rows]).output.shape == (rows, 5)
        np.testing.assert_array_equal(plan.run(x[:rows]).output, expected[:rows])


# ---------------------------------------------------------------------------
# threshold counts in each dtype, rows of tiled thresholds


@pytest.mark.parametrize("channels", [1, 3, 64, 5000])
@pytest.mark.parametrize("rows", [1, 7, 4096])
def test_threshold_rows_of_any_length(channels, rows):
    """Values in rows of whole repeats of the channels (4096 // C of them) and a short rest: every length."""
    rng = np.random.default_rng(channels + rows)
    values = rng.integers(-50, 50, size=(rows, channels))
    thresholds = np.sort(rng.integers(-60, 60, size=(channels, 3)), axis=1).astype(np.float64)
    expected = _reference_count(values, thresholds)
    for dtype in (np.int8, np.int32, np.int64, np.float32):
        np.testing.assert_array_equal(count_thresholds(values.astype(dtype), thresholds, "rows"), expected)
    shared = thresholds[:1]
    np.testing.assert_array_equal(count_thresholds(values, shared, "rows"), _reference_count(values, shared))


@pytest.mark.parametrize(
    "dtype, low, edge",
    [
        (np.uint8, 0, 255),
        (np.int8, -128, 127),
        (np.int16, -(2**15), 2**15 - 1),
        (np.int32, -(2**31), 2**31 - 1),
        (np.int64, -(2**52), 2**52),  # int64 accumulators stay far from its ends; float64 references stay exact
    ],
)
def test_thresholds_beyond_the_values_dtype(dtype, low, edge):
    """Thresholds at and just past the dtype's ends: compared in the dtype only where all of them fit in it."""
    values = np.array([[low, low + 1, 0, 1, edge - 1, edge]] * 2, dtype=dtype).reshape(-1, 1)
    for thresholds in (
        np.array([[low, 0, edge]]),  # all in the dtype
        np.array([[low - 1.0, 0, edge + 1.0]]),  # just past both ends
        np.array([[edge + 0.5, 2.0 * edge + 2]]),  # never crossed
    ):
        expected = (values.astype(np.float64) >= thresholds).sum(-1, keepdims=True)
        np.testing.assert_array_equal(count_thresholds(values, thresholds, "edge"), expected)


# ---------------------------------------------------------------------------
# the input batch, checked while it is cast to its narrow type


@pytest.mark.parametrize(
    "x_type, dtype, low, high",
    [
        ("UINT8", np.uint8, 0, 255),
        ("UINT4", np.uint8, 0, 15),
        ("INT8", np.int8, -128, 127),
        ("INT16", np.int16, -(2**15), 2**15 - 1),
    ],
)
def test_input_cast_to_its_narrow_type_and_checked(x_type, dtype, low, high):
    model = _thresholding_model(x_type, np.array([[1.0]] * 4), 4, "UINT1", 0, rows=(1,))
    plan = prepare_dataflow(model)
    x = np.array([[low, low + 1, high - 1, high], [0, 1, 2, 3]])
    expected = (x >= 1).astype(np.int64)
    for values in (x, x.astype(np.float32), x.astype(np.float64), x.astype(dtype), x.astype(np.int64)):
        assert plan._input(values).dtype == dtype
        np.testing.assert_array_equal(plan.run(values).output, expected)
    np.testing.assert_array_equal(plan.run(np.array([[-0.0, 1, 2, 3]], dtype=np.float32)).output, [[0, 1, 1, 1]])
    wrong = [low - 1, high + 1, low + 0.5, np.nan, np.inf, -np.inf, high + 256, low - 256, 2.0**40]
    for bad in wrong:
        values = x.astype(np.float64)
        values[1, 2] = bad
        with pytest.raises(SimulationError):
            plan.run(values)
        if float(bad).is_integer():  # the same from an integer array: a cast would wrap around
            with pytest.raises(SimulationError):
                plan.run(values.astype(np.int64))
    if dtype == np.uint8 and high < 255:  # a uint8 array is of the type, yet out of the datatype's range
        with pytest.raises(SimulationError):
            plan.run(np.array([[high + 1, 0, 0, 0]], dtype=np.uint8))


# ---------------------------------------------------------------------------
# windows: a ConvolutionInputGenerator's output copied block by block by the MVAU or Pool reading it


def _window_generator(x_type: str, side: int, channels: int, kernel: int, stride: int, dilation: int = 1):
    node = hw_graphs.window_generator("x", "p", side, channels, kernel, stride, x_type, dilation)
    return node, hw_graphs.window_side(side, kernel, stride, dilation)


def _reference_windows(x: np.ndarray, kernel: int, stride: int, dilation: int = 1) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kH * kW * C), patches ordered (kernel row, kernel column, channel), by loops."""
    n, side, _, channels = x.shape
    out_side = (side - dilation * (kernel - 1) - 1) // stride + 1
    out = np.zeros((n, out_side, out_side, kernel, kernel, channels), dtype=np.int64)
    for oy in range(out_side):
        for ox in range(out_side):
            for ky in range(kernel):
                for kx in range(kernel):
                    out[:, oy, ox, ky, kx] = x[:, oy * stride + ky * dilation, ox * stride + kx * dilation]
    return out.reshape(n, out_side, out_side, -1)


@pytest.mark.parametrize("stride", [1, 2])
def test_windows_into_a_vvau_block_by_block(monkeypatch, stride):
    """A depthwise window generator into a VVAU: the windows summed as they are, a few samples per block."""
    rng = np.random.default_rng(stride)
    side, channels, kernel = 7, 4, 3
    node = hw_graphs.window_generator("x", "p", side, channels, kernel, stride, "INT3", depthwise=1)
    out_side = hw_graphs.window_side(side, kernel, stride)
    weights = rng.integers(-4, 4, size=(channels, 1, kernel, kernel))
    x = rng.integers(-4, 4, size=(23, side, side, channels))
    patches = _reference_windows(x, kernel, stride).reshape(23, out_side, out_side, kernel * kernel, channels)
    acc = np.einsum("...kc,kc->...c", patches, weights.reshape(channels, -1).T.astype(np.int64))
    thresholds = _thresholds_from(acc.reshape(-1, channels), 3, rng)
    vvau = hw_graphs.vvau(["p", "w", "t"], "y", channels, kernel, out_side, "INT3", "INT3", outputDataType="UINT2")
    shapes = {
        "x": (1, side, side, channels),
        "p": (1, out_side, out_side, kernel * kernel * channels),
        "y": (1, out_side, out_side, channels),
    }
    model = hw_graph([node, vvau], shapes, {"w": weights, "t": thresholds}, "INT3", infer=False)
    expected = _reference_count(acc, _stored(model))
    monkeypatch.setattr(kernels, "_ACC_BLOCK", 5 * out_side * out_side * channels)  # 5 samples a block
    plan = prepare_dataflow(model)
    assert plan.steps[1].takes_windows and plan.steps[1].node.memo[kernels._prepare_vvau].product.narrow == np.int16
    np.testing.assert_array_equal(plan.run(x).output, expected)
    np.testing.assert_array_equal(_without_windows(prepare_dataflow(model)).run(x).output, expected)
    assert plan.run(x[:0]).output.shape == (0, out_side, out_side, channels)


def _without_windows(plan):
    """The same plan with every Windows made dense before a kernel reads it (the path before the copy per block)."""
    for step in plan.steps:
        step.takes_windows = False
    return plan


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_windows_into_an_mvau_block_by_block(monkeypatch, stride, dilation):
    rng = np.random.default_rng(stride * 10 + dilation)
    side, channels, kernel, outputs = 9, 3, 3, 4
    swg, out_side = _window_generator("UINT8", side, channels, kernel, stride, dilation)
    weights = rng.integers(-4, 4, size=(kernel * kernel * channels, outputs))
    x = rng.integers(0, 256, size=(23, side, side, channels))
    patches = _reference_windows(x, kernel, stride, dilation)
    acc = _reference_mvau(patches.reshape(-1, weights.shape[0]), weights)
    thresholds = _thresholds_from(acc, 3, rng)
    mvau = _mvau("UINT8", "INT4", weights, thresholds, out_type="UINT2").graph.node[0]
    mvau.input[0] = "p"
    for attribute in mvau.attribute:
        if attribute.name == "numInputVectors":
            attribute.ints[:] = [1, out_side, out_side]
    shapes = {
        "x": (1, side, side, channels),
        "p": (1, out_side, out_side, patches.shape[-1]),
        "y": (1, out_side, out_side, outputs),
    }
    model = hw_graph([swg, mvau], shapes, {"w": weights, "t": thresholds}, "UINT8", infer=False)
    expected = _reference_count(acc, _stored(model)).reshape(len(x), out_side, out_side, outputs)
    monkeypatch.setattr(kernels, "_ACC_BLOCK", outputs * out_side * out_side * 4)  # 4 samples a block, 3 at the end
    plan = prepare_dataflow(model)
    assert plan.steps[1].takes_windows and _unit_of(model, 1).blocked
    result = plan.run(x)
    np.testing.assert_array_equal(result.output, expected)
    np.testing.assert_array_equal(result.intermediates["p"], patches)  # made dense when read
    np.testing.assert_array_equal(_without_windows(prepare_dataflow(model)).run(x).output, expected)


@pytest.mark.parametrize("function", ["MaxPool", "AccPool", "AvgPool", "QuantAvgPool"])
def test_windows_into_a_pool(function):
    rng = np.random.default_rng(len(function))
    side, channels, kernel = 6, 5, 2
    swg, out_side = _window_generator("INT4", side, channels, kernel, kernel)
    dtypes = ("INT4", "INT4" if function == "MaxPool" else "INT8")
    pool = hw_graphs.pool("p", "y", channels, kernel, out_side, function, dtypes, Size=2)
    shapes = {
        "x": (1, side, side, channels),
        "p": (1, out_side, out_side, kernel * kernel * channels),
        "y": (1, out_side, out_side, channels),
    }
    model = hw_graph([swg, pool], shapes, {}, "INT4", infer=False)
    x = rng.integers(-8, 8, size=(17, side, side, channels))
    x[0] = -8  # negative sums: AvgPool divides towards zero, QuantAvgPool shifts towards minus infinity
    windows = _reference_windows(x, kernel, kernel).reshape(len(x), out_side, out_side, kernel * kernel, channels)
    total = windows.sum(axis=3)
    expected = {
        "MaxPool": windows.max(axis=3),
        "AccPool": total,
        "AvgPool": np.trunc(total / (kernel * kernel)).astype(np.int64),
        "QuantAvgPool": total >> 2,
    }[function]
    plan = prepare_dataflow(model)
    assert plan.steps[1].takes_windows
    np.testing.assert_array_equal(plan.run(x).output, expected)
    np.testing.assert_array_equal(_without_windows(prepare_dataflow(model)).run(x).output, expected)


# ---------------------------------------------------------------------------
# many thresholds over a known range: a table of counts; elementwise ops in their narrowest type


@pytest.mark.parametrize("steps", [7, 15, 255, 300])
@pytest.mark.parametrize("channels", [1, 5])
def test_thresholds_by_lookup_table(steps, channels):
    """Beyond LOOKUP_STEPS thresholds over a known range, the count is read from a table of every value's count:
    thresholds at, below and beyond the ends of the range, values at both ends, counts beyond 255."""
    rng = np.random.default_rng(steps + channels)
    x = rng.integers(-100, 101, size=(50, 4, channels))
    x[0], x[1] = -100, 100
    thresholds = np.sort(rng.uniform(-100, 100, size=(channels, steps)).round(1), axis=1)
    thresholds[:, 0], thresholds[:, -1] = -100, 101  # the lowest value counts; nothing reaches 101
    thresholds[:, 1] = -1e30
    thresholds = np.sort(thresholds, axis=1)
    out_type = "INT16" if steps > 100 else "INT8"
    model = _thresholding_model("INT8", thresholds, channels, out_type, 0, rows=(1, 4))
    node = prepare_dataflow(model).steps[0].node
    activation = node.memo[kernels._prepare_thresholding]
    assert activation.thresholds.known == (-128, 127) and activation.thresholds.lookup() is not None
    expected = _reference_count(x, _stored(model))
    assert expected.max() == steps - 1 and expected.min() >= 1
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, expected)


def test_a_table_too_large_falls_back_to_compares(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.integers(-2048, 2048, size=(30, 3, 6))
    thresholds = _thresholds_from(x.reshape(-1, 6), 12, rng)
    model = _thresholding_model("INT12", thresholds, 6, "INT8", 0)
    monkeypatch.setattr(kernels, "_LOOKUP_ENTRIES", 6 * 4096 - 1)
    node = prepare_dataflow(model).steps[0].node
    assert node.memo[kernels._prepare_thresholding].thresholds.lookup() is None
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, _reference_count(x, _stored(model)))


@pytest.mark.parametrize("op", ["ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseAbsDiff"])
def test_elementwise_ops_in_their_narrowest_type(op):
    """INT8 operands at their ends: the result range is static (no output check needed where the output type
    holds it), computed in int16 (int32 for a product), equal to int64 arithmetic."""
    rng = np.random.default_rng(len(op))
    shape = (1, 3, 4)
    a, b = rng.integers(-128, 128, size=(2, 40, *shape[1:]))
    a[0], b[0], a[1], b[1] = -128, 127, -128, -128
    b_const = b[2:3]  # the second operand a constant (it broadcasts over the batch)
    node = hw_graphs.elementwise(op, ["a", "b"], "y", ("INT8", "INT8", "INT32"), shape)
    model = hw_graph([node], {"a": shape, "b": shape, "y": shape}, {"b": b_const}, "INT8", infer=False)
    reference = {
        "ElementwiseAdd": np.add,
        "ElementwiseSub": np.subtract,
        "ElementwiseMul": np.multiply,
        "ElementwiseAbsDiff": lambda p, q: np.abs(p - q),
    }[op](a.astype(np.int64), b_const.astype(np.int64))
    plan = prepare_dataflow(model)
    assert plan.steps[0].checks == [None]
    expected_range = kernels.elementwise_range(plan.steps[0].node)[0]
    assert expected_range[0] <= reference.min() and reference.max() <= expected_range[1]
    result = plan.run(a)
    np.testing.assert_array_equal(result.output, reference)
    assert result.overflows == []


def _small_batch_layers() -> dict:
    """A model of every zoo-like layer type and a batch of 40 for it."""
    rng = np.random.default_rng(24)
    layers = {}
    for case, (x_type, x_range, w_type, w_range, mw, mh, steps) in MVAU_CASES.items():
        weights = rng.integers(w_range[0], w_range[1] + 1, size=(mw, mh))
        x = rng.integers(x_range[0], x_range[1] + 1, size=(40, mw))
        x[:2] = [[x_range[0]], [x_range[1]]]
        if steps is None:
            layers[case] = (_mvau(x_type, w_type, weights), x)
        else:
            thresholds = _thresholds_from(_reference_mvau(x, weights), steps, rng)
            layers[case] = (_mvau(x_type, w_type, weights, thresholds, out_type="INT8", act_val=-2), x)
    bits, weight_bits = rng.integers(0, 2, size=(40, 33)), rng.integers(0, 2, size=(33, 7))
    thresholds = np.sort(rng.integers(0, 34, size=(7, 1)), axis=1) + 0.0
    layers["xnor"] = (_mvau("BINARY", "BINARY", weight_bits, thresholds, out_type="BIPOLAR", xnor=1), bits)
    layers["bipolar"] = (_mvau("BIPOLAR", "BIPOLAR", 2 * weight_bits - 1), 2 * bits - 1)
    weights, x = rng.integers(-2, 2, size=(70, 9)), _signed_values("INT3", rng, (40, 70))
    thresholds = _thresholds_from(_reference_mvau(x, weights), 3, rng)
    layers["signed_gemm"] = (_mvau("INT3", "INT2", weights, thresholds, out_type="INT4", act_val=-4), x)
    weights = rng.integers(-8, 8, size=(5, 1, 3, 3))
    x = rng.integers(0, 16, size=(40, 2, 2, 45))
    acc = np.einsum("...kc,kc->...c", x.reshape(40, 2, 2, 9, 5), weights.reshape(5, 9).T)
    layers["vvau"] = (_vvau_model("UINT4", weights, _thresholds_from(acc.reshape(-1, 5), 15, rng)), x)
    thresholds = np.sort(rng.integers(-2048, 2048, size=(4, 3)), axis=1) + 0.0
    layers["thresholding"] = (
        _thresholding_model("INT12", thresholds, 4, "UINT2", 0),
        rng.integers(-2048, 2048, (40, 3, 4)),
    )
    return layers


@pytest.mark.parametrize("layer", list(_small_batch_layers()))
def test_small_batches_equal_the_large_batch_path(monkeypatch, layer):
    """Batches of 1 and 5 (float32 products of small layers, all threshold steps compared at once) give the same
    outputs, overflows included, as the large-batch path (the integer GEMM, compares step by step)."""
    model, x = _small_batch_layers()[layer]
    plan = prepare_dataflow(model)
    with monkeypatch.context() as patch:  # every batch on the large-batch paths
        patch.setattr(kernels, "_SMALL_VALUES", -1)
        patch.setattr(kernels, "_SMALL_ROWS", -1)
        large, large_one = plan.run(x), plan.run(x[:1])
    if layer == "uint8_int2_3steps":
        assert _unit(model).product.small and _unit(model).product.gemm is not None
        assert plan._chain  # a chain of small MVAUs: without intermediates, the layers are called directly
    for size in (1, 5):
        for start in range(0, len(x), size):
            for keep in (True, False):
                small = plan.run(x[start : start + size], keep_intermediates=keep)
                np.testing.assert_array_equal(small.output, large.output[start : start + size])
                assert small.output.dtype == large.output.dtype
    for keep in (True, False):
        assert plan.run(x[:1], keep_intermediates=keep).overflows == large_one.overflows
