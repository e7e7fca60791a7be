"""int8 LOGISTIC, TANH and SOFTMAX: the writer's output, the numpy golden model and the real runtimes agree bit for bit.

Each graph is an identity FULLY_CONNECTED (weight 1, bias -128 - zp, requantized by exactly 1) whose int8 output
equals the int8 input, at the input scale and zero point under test, followed by the activation. Feeding all 256
int8 values sweeps the activation's whole input range. LiteRT's reference kernels build a table of the float
function (LUTPopulate); TFLite Micro computes gemmlowp's fixed point: the cases include inputs where the two differ.
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from targets.tflite.errors import TfliteConversionError
from targets.tflite.golden import FIXED_OUTPUT_QUANT, run_golden
from targets.tflite.lowering import Layer, LoweredModel
from targets.tflite.ops import OP_SPECS
from targets.tflite.runtime import run_litert
from targets.tflite.schema import OP_NAMES, builtin_code
from targets.tflite.writer import write_lowered
from targets.tflm.runtime import run_tflm

IN_SCALE, IN_ZP = float(np.float32(1 / 255)), -128  # the graph input's quantization
SWEEP = np.arange(-128, 128, dtype=np.int8)[:, None]  # every int8 value, one per sample
CLASSES = 10


def _identity_fc(scale: float, zero_point: int, features: int) -> Layer:
    """FULLY_CONNECTED whose int8 output equals its int8 input, quantized at (scale, zero_point)."""
    return Layer(
        "pre",
        "fc",
        ["input"],
        [features],
        scale,
        zero_point,
        weights=np.eye(features, dtype=np.int8),
        weight_scales=np.full(features, np.float32(scale) / np.float32(IN_SCALE), np.float32),
        bias=np.full(features, -128 - zero_point, np.int32),
        input_scale=IN_SCALE,
        input_zero_point=IN_ZP,
    )


def _graph(op: str, scale: float, zero_point: int, features: int = 1) -> LoweredModel:
    out_scale, out_zp = FIXED_OUTPUT_QUANT[op]
    act = Layer("y", op, ["pre"], [features], out_scale, out_zp, input_scale=scale, input_zero_point=zero_point)
    return LoweredModel(
        input_shape=[features], layers=[_identity_fc(scale, zero_point, features), act], input_scale=IN_SCALE
    )


def _float(op: str, x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The float function of the dequantized input, in output LSBs (clamped to int8, as the kernels clamp)."""
    real = np.float64(np.float32(scale)) * (x.astype(np.float64) - zero_point)
    if op == "logistic":
        y = 1 / (1 + np.exp(-real))
    elif op == "tanh":
        y = np.tanh(real)
    else:
        e = np.exp(real - real.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
    out_scale, out_zp = FIXED_OUTPUT_QUANT[op]
    return np.clip(y / out_scale + out_zp, -128, 127)


# (op, input scale, input zero point)
POINTWISE = [
    ("logistic", 0.02, -128),
    ("logistic", 0.1, 0),
    ("logistic", 0.5, 37),
    ("tanh", 0.01, 0),
    ("tanh", 0.05, -128),
    ("tanh", 0.3, -20),
    ("tanh", 0.0015551868127658963, -128),  # glibc's tanhf is one ulp low here: LiteRT's table rounds down with it
]
# Quantizations at which LiteRT's table and TFLM's fixed point differ on one input (a rounding tie, or the input at
# TFLM's saturation radius).
DIFFERING = [
    ("logistic", 0.03535842522978783, 0),
    ("logistic", 0.6422154903411865, -128),
    ("logistic", 2.0, 17),
    ("tanh", 0.0016449897084385157, -128),
]


def _case_id(case: tuple[str, float, int]) -> str:
    return f"{case[0]}-{case[1]:.4g}-zp{case[2]}"


@pytest.fixture(scope="module", params=POINTWISE + DIFFERING, ids=_case_id)
def pointwise(request, tmp_path_factory):
    op, scale, zero_point = request.param
    path = tmp_path_factory.mktemp(op) / f"{op}.tflite"
    info = write_lowered(_graph(op, scale, zero_point), path, {}, float_output=False)
    return request.param, path, info


def test_writer_emits_the_op_at_its_int8_version(pointwise):
    (op, _, _), path, info = pointwise
    assert [o.op for o in info.ops] == ["FULLY_CONNECTED", op.upper()]
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    versions = {OP_NAMES[builtin_code(code)]: code.version for code in model.operatorCodes}
    assert versions[op.upper()] == OP_SPECS[getattr(schema.BuiltinOperator, op.upper())].version == 2
    y = next(t for t in model.subgraphs[0].tensors if t.name == b"y")
    assert (y.quantization.scale[0], y.quantization.zeroPoint[0]) == FIXED_OUTPUT_QUANT[op]


def test_litert_equals_golden_on_every_input(pointwise):
    _, path, _ = pointwise
    lite = run_litert(path, SWEEP, kernels="reference", all_tensors=True)
    np.testing.assert_array_equal(lite["pre"], SWEEP)  # the activation sees every int8 value
    np.testing.assert_array_equal(lite["y"], run_golden(path, SWEEP, rounding="litert")["y"])


def test_tflm_equals_golden_on_every_input(pointwise):
    _, path, _ = pointwise
    tflm = run_tflm(path, SWEEP, measure_arena=False).outputs["y"]
    np.testing.assert_array_equal(tflm, run_golden(path, SWEEP, rounding="tflm")["y"])


def test_golden_is_within_one_lsb_of_the_float_function(pointwise):
    (op, scale, zero_point), path, _ = pointwise
    expected = _float(op, SWEEP, scale, zero_point)
    for runtime in ("litert", "tflm"):
        golden = run_golden(path, SWEEP, rounding=runtime)["y"].astype(np.float64)
        assert np.abs(golden - expected).max() <= 1.0, runtime


@pytest.mark.parametrize("case", DIFFERING, ids=_case_id)
def test_the_table_and_the_fixed_point_are_told_apart(case, tmp_path):
    """Where LiteRT's table and TFLM's fixed point differ, the golden model follows each: the tests above can fail."""
    path = tmp_path / "op.tflite"
    write_lowered(_graph(*case), path, {}, float_output=False)
    table, fixed = (run_golden(path, SWEEP, rounding=r)["y"] for r in ("litert", "tflm"))
    assert (table != fixed).sum() == 1
    np.testing.assert_array_equal(run_litert(path, SWEEP)["y"], table)
    np.testing.assert_array_equal(run_tflm(path, SWEEP, measure_arena=False).outputs["y"], fixed)


# ---------------------------------------------------------------------------------------------------------------------
# SOFTMAX over 10 classes


def _softmax_inputs(rng: np.random.Generator) -> np.ndarray:
    x = rng.integers(-128, 128, (192, CLASSES))
    x[:32] = rng.integers(110, 128, (32, CLASSES))  # near-equal logits: most classes count
    x[32:48] = -128  # all equal
    x[48:64, 0] = 127  # one clear winner
    return x.astype(np.int8)


@pytest.mark.parametrize(("scale", "zero_point"), [(0.05, -128), (0.25, 3), (1.0, 0), (0.0078125, -10)])
def test_softmax_equals_golden_on_both_runtimes(scale, zero_point, tmp_path):
    path = tmp_path / "softmax.tflite"
    info = write_lowered(_graph("softmax", scale, zero_point, CLASSES), path, {}, float_output=False)
    assert [o.op for o in info.ops] == ["FULLY_CONNECTED", "SOFTMAX"]
    x = _softmax_inputs(np.random.default_rng(int(scale * 1000)))
    lite = run_litert(path, x, kernels="reference", all_tensors=True)
    np.testing.assert_array_equal(lite["pre"], x)
    golden = run_golden(path, x, rounding="litert")["y"]
    np.testing.assert_array_equal(lite["y"], golden)
    tflm = run_tflm(path, x, measure_arena=False).outputs["y"].reshape(x.shape)
    np.testing.assert_array_equal(tflm, run_golden(path, x, rounding="tflm")["y"])
    assert np.abs(golden.astype(np.float64) - _float("softmax", x, scale, zero_point)).max() <= 1.0
    assert len(np.unique(golden)) > 50  # the inputs exercise the output range, not just its ends


def test_writer_refuses_another_output_quantization(tmp_path):
    lowered = _graph("tanh", 0.05, 0)
    lowered.layers[-1].scale = 1 / 256
    with pytest.raises(TfliteConversionError, match="tanh output at scale"):
        write_lowered(lowered, tmp_path / "bad.tflite", {})
