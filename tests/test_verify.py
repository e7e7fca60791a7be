"""Unit tests of the exactness rules' building blocks (sdk/verify.py)."""

from __future__ import annotations

import numpy as np

from sdk.verify import (
    FLOAT_RTOL,
    Check,
    Verification,
    compare_float_outputs,
    compare_integer_outputs,
    compare_layers,
    same_class,
)


def _layers(rng, count=3, batch=4):
    return [(f"L{i}", rng.integers(-8, 8, size=(batch, 5))) for i in range(count)]


def test_identical_layers_pass():
    rng = np.random.default_rng(0)
    ours = _layers(rng)
    check = compare_layers("layers", ours, [t.copy() for _, t in ours], "detail")
    assert check.passed and check.first_difference is None and check.samples == 4


def test_the_first_differing_layer_is_named_with_its_mismatch_rate():
    rng = np.random.default_rng(1)
    ours = _layers(rng)
    theirs = [t.copy() for _, t in ours]
    theirs[1][2, 0] += 1  # one element of one sample of the second layer
    theirs[2][:, :] += 1  # the third differs everywhere, but the second comes first
    check = compare_layers("layers", ours, theirs, "detail")
    assert not check.passed and check.first_difference == "L1" and check.mismatch_rate == 0.25


def test_a_shape_difference_or_a_missing_layer_fails():
    rng = np.random.default_rng(2)
    ours = _layers(rng)
    theirs = [t.copy() for _, t in ours]
    theirs[0] = theirs[0][:, :4]
    assert compare_layers("layers", ours, theirs, "").first_difference == "L0"
    short = compare_layers("layers", ours, [t.copy() for _, t in ours[:2]], "")
    assert not short.passed and short.first_difference == "L1"
    assert not compare_layers("layers", [], [np.zeros((1, 1))], "").passed


def test_integer_outputs_must_be_identical():
    ours = np.array([[1, 2], [3, 4], [5, 6]])
    assert compare_integer_outputs("out", ours, ours.copy(), "").passed
    off = ours.copy()
    off[1, 1] += 1
    check = compare_integer_outputs("out", ours, off, "")
    assert not check.passed and check.first_difference == "network output" and abs(check.mismatch_rate - 1 / 3) < 1e-12


def test_float_outputs_allow_float32_rounding_and_nothing_more():
    reference = np.array([[1.0, -2.0], [0.5, 4.0]], dtype=np.float32)
    rounding = reference * (1 + 1e-7)
    assert compare_float_outputs("float", rounding, reference, "").passed
    one_lsb = reference.copy()
    one_lsb[0, 0] += 4.0 * 10 * FLOAT_RTOL  # ten times the tolerance of the output range
    check = compare_float_outputs("float", one_lsb, reference, "")
    assert not check.passed and check.mismatch_rate == 0.5


def test_same_class_counts_exact_ties_as_agreement():
    reference = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    ours = np.array([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]])  # picks the tied class 1, then a wrong class 0
    assert same_class(ours, reference).tolist() == [True, False]


def test_a_verification_passes_only_when_every_check_passes():
    verification = Verification(
        "rule", [Check("a", True, 1, ""), Check("b", False, 1, "", "L3"), Check("c", False, 1, "")]
    )
    assert not verification.passed and verification.first_failure.name == "b"
    assert verification.to_dict()["passed"] is False and len(verification.to_dict()["checks"]) == 3
    assert Verification("rule", [Check("a", True, 1, "")]).passed
    assert not Verification("rule", []).passed  # no check run is no proof


def test_a_mismatch_on_a_rounding_tie_is_counted_not_failed():
    ours, reference = np.array([[1, 2], [3, 4], [5, 6]]), np.array([[1, 2], [3, 5], [5, 6]])
    ties = np.array([False, True, False])
    tied = compare_integer_outputs("out", ours, reference, "", ties)
    assert tied.passed and tied.ties == 1 and "rounding tie" in tied.detail
    reference[2, 0] += 1  # the same, and a difference on a sample without a tie
    failed = compare_integer_outputs("out", ours, reference, "", ties)
    assert not failed.passed and failed.ties == 1 and "first differing sample: 2" in failed.detail


def test_tie_samples_finds_activations_on_a_rounding_boundary(tmp_path):
    """A QONNX graph whose quantizer sees pixel / 2: odd pixels land exactly on k + 0.5."""
    from onnx import TensorProto, helper
    from qonnx.util.basic import qonnx_make_model

    from sdk.graph_run import tie_samples

    nodes = [
        helper.make_node("Mul", ["x", "half"], ["h"]),
        helper.make_node(
            "Quant",
            ["h", "scale", "zero", "bits"],
            ["y"],
            domain="qonnx.custom_op.general",
            signed=0,
            narrow=0,
            rounding_mode="ROUND",
        ),
    ]
    initializers = [
        helper.make_tensor(name, TensorProto.FLOAT, [], [value])
        for name, value in (("half", 0.5), ("scale", 1.0), ("zero", 0.0), ("bits", 8.0))
    ]
    graph = helper.make_graph(
        nodes,
        "ties",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializers,
    )
    path = tmp_path / "ties.onnx"
    import onnx

    onnx.save(qonnx_make_model(graph), path)
    x = np.array([[[[4, 6, 8]]], [[[4, 7, 8]]], [[[0, 2, 250]]]], dtype=np.uint8)
    assert tie_samples(path, x, flat=True).tolist() == [False, True, False]
