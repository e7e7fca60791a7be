"""A 1-bit MLP 784 inputs wide: FINN sizes its XNOR accumulators from the +-1 dot product, the hardware counts.

An MVAU in XNOR mode accumulates the popcount (inputs that match their weight), in [0, MW]. FINN's
MinimizeAccumulatorWidth sizes it by the +-1 dot product instead: INT10 for 784 inputs with balanced weights,
where 520 or more matching inputs wrap. The SDK widens such accumulators (targets/finn/accumulators.py); the
layer's values stay FINN's python execution's. The deploys feed samples that match the first layer's weights,
so the popcount reaches all 784 inputs; random pixels never pass 450.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantLinear
from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from hw_graphs import HW, hw_graph
from qonnx.core.datatype import DataType
from torch import nn

INPUTS, HIDDEN = 784, 64


@pytest.fixture(scope="module", autouse=True)
def finn_ready(tmp_path_factory) -> None:
    from targets.finn.environment import prepare_finn

    prepare_finn(tmp_path_factory.mktemp("finn_build"))


def _xnor_mvau(op_type: str, weights: np.ndarray, thresholds: np.ndarray | None):
    """One XNOR-mode MVAU (BINARY inputs and weights standing for -1 / +1), as FINN's conversion writes it."""
    from onnx import helper

    mw, mh = weights.shape
    inputs, initializers = ["x", "w"], {"w": weights}
    if thresholds is not None:
        inputs.append("t")
        initializers["t"] = thresholds
    node = helper.make_node(
        op_type,
        inputs,
        ["y"],
        name=f"{op_type}_0",
        domain=HW if op_type == "MVAU" else f"{HW}.hls",
        backend="fpgadataflow",
        MW=mw,
        MH=mh,
        PE=1,
        SIMD=1,
        inputDataType="BINARY",
        weightDataType="BINARY",
        outputDataType="INT32" if thresholds is None else "BINARY",
        ActVal=0,
        noActivation=int(thresholds is None),
        binaryXnorMode=1,
        numInputVectors=[1],
        mem_mode="internal_decoupled",
    )
    model = hw_graph([node], {"x": (1, mw), "y": (1, mh)}, initializers, "BINARY")
    if thresholds is not None:
        model.set_tensor_datatype("t", DataType["INT32"])
    return model


def _balanced(mw: int, mh: int, seed: int) -> np.ndarray:
    """Each column half 1s, half 0s (+1 / -1): FINN's +-1 range is about [-mw/2, mw/2], the popcount [0, mw]."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(mw) % 2) for _ in range(mh)], axis=1)


@pytest.mark.parametrize(
    ("mw", "with_thresholds", "finn_type", "sdk_type"),
    [(INPUTS, True, "INT10", "UINT10"), (HIDDEN, True, "INT7", "UINT7"), (200, False, "INT8", "UINT8")],
)
def test_popcount_accumulators_widened_and_exact(tmp_path, mw, with_thresholds, finn_type, sdk_type):
    from finn.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    from sdk.boards import get_board
    from targets.finn import steps
    from targets.finn.simulator import simulate_dataflow

    weights = _balanced(mw, 4, seed=mw)
    # thresholds around the middle and near the top: crossed only by popcounts FINN's type cannot hold
    thresholds = np.array([[mw // 2], [mw // 2 + 3], [mw - 2], [mw]]) if with_thresholds else None
    x = np.concatenate([weights.T, 1 - weights.T, np.random.default_rng(0).integers(0, 2, (8, mw))])  # 784, 0, ~392

    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth

    finn_only = _xnor_mvau("MVAU_hls", weights, thresholds)
    finn_only = finn_only.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    assert getCustomOp(finn_only.graph.node[0]).get_nodeattr("accDataType") == finn_type
    assert any("accumulator" in o for o in simulate_dataflow(finn_only, x).overflows)  # the hardware would wrap

    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path)
    model = steps.minimize_bit_widths(_xnor_mvau("MVAU_hls", weights, thresholds), cfg)
    model = steps.minimize_bit_widths(model, cfg)  # it runs again after folding: the widening holds
    op = getCustomOp(model.graph.node[0])
    assert op.get_nodeattr("accDataType") == sdk_type
    accumulators = [w for w in cfg.widened if w.what == "accumulator"]
    assert [(w.node, w.finn, w.sdk, w.why) for w in accumulators] == [
        ("MVAU_hls_0", finn_type, sdk_type, f"popcount up to {mw}")
    ]
    if with_thresholds:  # the HLS accumulator is the thresholds' type: it holds every popcount and threshold
        tdt = model.get_tensor_datatype("t")
        assert tdt.allowed(0) and tdt.allowed(mw) and tdt.bitwidth() >= DataType[sdk_type].bitwidth()
    else:  # the output is the accumulator, a whole number of bytes at the graph's output
        assert op.get_nodeattr("outputDataType") == sdk_type == str(model.get_tensor_datatype("y").name)

    result = simulate_dataflow(model, x)
    assert result.overflows == []
    reference = _xnor_mvau("MVAU", weights, thresholds)  # FINN's python execution of the layer
    expected = np.concatenate([execute_onnx(reference, {"x": row[None].astype(np.float32)})["y"] for row in x])
    np.testing.assert_array_equal(result.output, expected)
    assert result.output[3, 3] == 1 if with_thresholds else result.output.max() == mw  # the top popcount reached


def test_wide_enough_accumulators_stay_finn_s(tmp_path):
    """Unbalanced weights: FINN's INT11 for [-184, 600] already holds the popcount; nothing is widened."""
    from qonnx.custom_op.registry import getCustomOp

    from sdk.boards import get_board
    from targets.finn import steps

    weights = np.zeros((INPUTS, 2), dtype=np.int64)
    weights[:600] = 1
    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path)
    model = steps.minimize_bit_widths(_xnor_mvau("MVAU_hls", weights, np.array([[400], [700]])), cfg)
    assert getCustomOp(model.graph.node[0]).get_nodeattr("accDataType") == "INT11"
    assert cfg.widened == []


def test_thresholds_type_holds_the_accumulator(tmp_path):
    """FINN's HLS MVAU accumulates in its thresholds' type. Non-negative weights give an unsigned accumulator
    (UINT11: up to 1500 here); a negative threshold makes FINN pick INT11 (up to 1023), where 1500 wraps."""
    from finn.core.onnx_exec import execute_onnx
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    from sdk.boards import get_board
    from targets.finn import steps
    from targets.finn.simulator import simulate_dataflow

    def mvau(op_type: str):
        node = helper.make_node(
            op_type,
            ["x", "w", "t"],
            ["y"],
            name=f"{op_type}_0",
            domain=HW if op_type == "MVAU" else f"{HW}.hls",
            backend="fpgadataflow",
            MW=100,
            MH=2,
            PE=1,
            SIMD=1,
            inputDataType="UINT4",
            weightDataType="INT2",
            outputDataType="UINT2",
            ActVal=0,
            noActivation=0,
            binaryXnorMode=0,
            numInputVectors=[1],
            mem_mode="internal_decoupled",
        )
        thresholds = np.array([[-3, 700, 800], [-2, 3, 900]])
        model = hw_graph([node], {"x": (1, 100), "y": (1, 2)}, {"w": np.ones((100, 2)), "t": thresholds}, "UINT4")
        model.set_tensor_datatype("w", DataType["INT2"])
        model.set_tensor_datatype("t", DataType["INT32"])
        return model

    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path)
    model = steps.minimize_bit_widths(steps.minimize_bit_widths(mvau("MVAU_hls"), cfg), cfg)
    assert getCustomOp(model.graph.node[0]).get_nodeattr("accDataType") == "UINT11"
    assert [str(w) for w in cfg.widened] == [
        "MVAU_hls_0 thresholds INT11 -> INT12 (UINT11 values and the thresholds span [-3, 2047])"
    ]
    assert model.get_tensor_datatype("t").name == "INT12"
    x = np.array([[15] * 100, [0] * 100, [7] * 100])  # accumulators 1500, 0, 700
    expected = np.concatenate([execute_onnx(mvau("MVAU"), {"x": row[None].astype(np.float32)})["y"] for row in x])
    np.testing.assert_array_equal(simulate_dataflow(model, x).output, expected)


class BinaryMLP(nn.Module):
    """BNN-PYNQ's LFC/TFC w1a1 the way users write it: pixels mapped to +-1, 1-bit weights and activations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.binarize = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.fc1 = QuantLinear(
            INPUTS, HIDDEN, bias=False, weight_bit_width=1, weight_quant=SignedBinaryWeightPerTensorConst
        )
        self.bn1 = nn.BatchNorm1d(HIDDEN)
        self.act1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.fc2 = QuantLinear(
            HIDDEN, HIDDEN, bias=False, weight_bit_width=1, weight_quant=SignedBinaryWeightPerTensorConst
        )
        self.bn2 = nn.BatchNorm1d(HIDDEN)
        self.act2 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.head = QuantLinear(
            HIDDEN, 10, bias=False, weight_bit_width=1, weight_quant=SignedBinaryWeightPerTensorConst
        )

    def forward(self, x):
        x = self.binarize(2 * x.reshape(x.shape[0], -1) - 1)
        x = self.act1(self.bn1(self.fc1(x)))
        return self.head(self.act2(self.bn2(self.fc2(x))))


def _binary_mlp() -> nn.Module:
    model = BinaryMLP()
    with torch.no_grad():  # BatchNorm statistics that put fc1's thresholds near the middle of its popcount
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-3, 3)
            bn.running_var.uniform_(0.5, 2)
    return model.eval()


def _matching_samples(model: nn.Module, path) -> np.ndarray:
    """Images whose +-1 pixels match fc1's weights of each unit (popcount 784 there) or their negation (0)."""
    signs = (model.fc1.weight.detach().numpy() > 0).astype(np.uint8)  # (HIDDEN, INPUTS)
    x = np.concatenate([signs, 1 - signs]).reshape(-1, 1, 28, 28) * np.uint8(255)
    np.savez(path, x=x)
    return x


@pytest.mark.slow
def test_binary_mlp_784_wide_deploys_bit_exact_on_fpgas(tmp_path):
    from sdk import check, deploy, simulate

    model = _binary_mlp()
    weights = model.fc1.weight.detach().numpy()
    assert max(int((weights > 0).sum(1).max()), int((weights <= 0).sum(1).max())) < 512  # FINN: INT10
    x = _matching_samples(model, tmp_path / "matching.npz")
    example = torch.zeros(1, 1, 28, 28)
    for board in ("pynq-z2", "zcu104"):
        check(model, board, example_input=example)  # supported: and deploy agrees
        result = deploy(
            model, board, example_input=example, data=str(tmp_path / "matching.npz"), out=str(tmp_path / board)
        )
        assert result.verified and result.exit_code == 0, board
        report = (result.package / "report.md").read_text()
        assert "MVAU_hls_0 accumulator INT10 -> UINT10 (popcount up to 784)" in report
        with torch.no_grad():
            expected = model(torch.from_numpy(x.astype(np.float32) / 255)).numpy()
        np.testing.assert_allclose(
            simulate(result.package, x), expected, rtol=0, atol=1e-5 * float(np.abs(expected).max())
        )


def test_package_reshape_with_inferred_dimension_is_accepted():
    """BNN-PYNQ's `x.view(x.shape[0], -1)` exports Reshape [1, -1]: the package check resolves it as numpy does."""
    from targets.finn.graph_check import _reshaped

    assert _reshaped((1, 28, 28), [-1]) == (784,)
    assert _reshaped((1, 28, 28), [28, -1]) == (28, 28)
    assert _reshaped((1, 28, 28), [-1, -1]) is None
    assert _reshaped((1, 28, 28), [5, -1]) is None
    assert _reshaped((1, 28, 28), [0, 784]) is None
    assert _reshaped((1, 28, 28), [785]) is None
