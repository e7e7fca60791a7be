"""The fit search (targets/finn/folding.py) against FINN's own SetFolding and estimators, nothing mocked.

The fast tests build FINN's specialised MVAU_hls nodes directly (the layer shapes of TFC and CNV, random
weights): folding depends on the layers' sizes and types only, so no training or export is needed. The
slow tests take the zoo's TFC (MNIST size) and CNV through the deploy's own steps.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from folding_models import CNV, KEYS, SMALL_MLP, TFC, every_option, exhaustive_optimum, mvau_chain
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sdk.boards import get_board
from sdk.errors import ModelTooLargeError
from targets.finn import folding
from targets.finn.estimate import estimate_network


@pytest.fixture(scope="module", autouse=True)
def finn_ready(tmp_path_factory):
    from targets.finn.environment import prepare_finn

    prepare_finn(tmp_path_factory.mktemp("finn_build"))


def within(model: ModelWrapper, board, cap: float) -> bool:
    totals = estimate_network(model, board).totals
    return all(totals[k] <= cap * board.capacity[k] + 1e-6 for k in KEYS)


def finn_best_fps(base: ModelWrapper, board, cap: float, widths, fps_targets) -> float:
    """The fastest SetFolding point under the cap over a (target fps x mvau_wwidth_max) sweep."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    best = 0.0
    for wwidth, fps in itertools.product(widths, fps_targets):
        cycles = max(1, int(board.clock_mhz * 1e6 / fps))
        model = ModelWrapper(copy.deepcopy(base.model)).transform(
            SetFolding(target_cycles_per_frame=cycles, mvau_wwidth_max=wwidth, two_pass_relaxation=True)
        )
        if within(model, board, cap):
            best = max(best, estimate_network(model, board).fps)
    return best


def attrs(model: ModelWrapper, attr: str) -> list:
    return [getCustomOp(n).get_nodeattr(attr) for n in model.graph.node]


# ---------------------------------------------------------------------------------------------------------------
# fast: FINN's nodes, built directly


def test_fit_is_never_below_a_finn_sweep_on_tfc_shapes():
    board = get_board("pynq-z2")
    base = mvau_chain(TFC)
    finn = finn_best_fps(base, board, 0.8, [16, 56, 98, 196, 784], np.logspace(5, np.log10(2e7), 10))
    model = ModelWrapper(copy.deepcopy(base.model))
    fit = folding.fit_folding(model, board, 0.8)
    assert finn > 0 and fit.fps >= finn
    assert estimate_network(model, board).fps == pytest.approx(fit.fps)


@pytest.mark.parametrize("board_name, cap", [("pynq-z2", 0.8), ("pynq-z2", 0.5), ("zcu104", 0.8), ("kv260", 0.7)])
@pytest.mark.parametrize("layers", [TFC, CNV], ids=["tfc", "cnv"])
def test_fit_never_exceeds_the_cap(board_name, cap, layers):
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth

    board = get_board(board_name)
    model = mvau_chain(layers)
    fit = folding.fit_folding(model, board, cap)
    assert within(model, board, cap)
    assert all(share <= cap + 1e-9 for share in fit.utilisation.values())
    # the deploy minimises bit widths again after folding (URAM weights widen accumulators): still under the cap
    model = model.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    assert within(model, board, cap)
    assert fit.fps <= fit.fps_at_full_board <= fit.fps_unfolded <= fit.fps_without_width_limit


def test_too_large_even_fully_folded_is_refused():
    with pytest.raises(ModelTooLargeError, match="even fully folded"):
        folding.fit_folding(mvau_chain(CNV), get_board("pynq-z2"), 0.01)


def test_stop_reason_names_the_layer_and_the_resource():
    board = get_board("pynq-z2")
    model = mvau_chain(TFC)
    fit = folding.fit_folding(model, board, 0.8)
    assert fit.limit == "resource" and fit.limit_resources and fit.next_cycles < fit.cycles
    assert fit.limit_layer in fit.stop_reason and all(r in fit.stop_reason for r in fit.limit_resources)
    assert fit.limit_layer == fit.bottleneck == "MVAU_hls_0"  # the 784-wide layer bounds TFC
    assert fit.fps_at_full_board > fit.fps  # a higher cap would buy speed
    assert any(fit.next_utilisation[r] > 0.8 for r in fit.limit_resources)
    assert fit.steps == len(fit.history) and fit.seconds > 0


def test_stop_reason_stream_width_and_full_parallelism():
    board = get_board("alveo-u250")  # resources never bind here
    wide = folding.fit_folding(mvau_chain([(4096, 128, [1], "UINT2", True)]), board, 1.0)
    assert wide.limit == "stream_width" and "MAX_AP_INT_WIDTH" in wide.stop_reason
    assert wide.cycles == 4096 * 128 // 2048  # PE * SIMD * 2 bits must stay within 8191: PE * SIMD = 2048
    assert wide.fps_without_width_limit > wide.fps_unfolded == wide.fps
    small = folding.fit_folding(mvau_chain([(12, 10, [1], "UINT2", True)]), board, 1.0)
    assert small.limit == "unfolded" and small.cycles == 1 and "full parallelism" in small.stop_reason


@pytest.mark.parametrize("mw", [784, 576, 288])
def test_non_power_of_two_widths_reach_the_best_pair(mw):
    """Every (SIMD, PE) pair is a candidate, not only the next divisor: at least as fast as the best pair that
    fits alone with FINN's default memory styles (found here by brute force)."""
    board, cap = get_board("pynq-z2"), 0.3
    model = mvau_chain([(mw, 64, [1, 4, 4], "UINT2", True)])
    op = getCustomOp(model.graph.node[0])
    best = None
    for simd, pe in itertools.product(folding._divisors(mw), folding._divisors(64)):
        op.set_nodeattr("SIMD", simd)
        op.set_nodeattr("PE", pe)
        cycles, res = folding.node_cost(model.graph.node[0], board.part)
        if folding.within_hls_limits(model.graph.node[0]) and within(model, board, cap):
            best = cycles if best is None else min(best, cycles)
    fit = folding.fit_folding(model, board, cap)
    simd, pe = attrs(model, "SIMD")[0], attrs(model, "PE")[0]
    assert fit.cycles <= best and simd * pe > 2 and mw % simd == 0 and 64 % pe == 0


def test_style_search_moves_the_binding_resource(monkeypatch):
    """CNV's layer shapes on PYNQ-Z2. With FINN's default styles LUTs bind and the DSPs stay idle; with the
    style search multipliers move to DSPs and weights to LUTRAM, memory binds too, and the fit is faster."""
    board = get_board("pynq-z2")
    styled_model = mvau_chain(CNV)
    styled = folding.fit_folding(styled_model, board, 0.8)
    monkeypatch.setattr(folding, "STYLE_ATTRS", ())
    plain_model = mvau_chain(CNV)
    plain = folding.fit_folding(plain_model, board, 0.8)
    assert plain.limit_resources == ["LUT"] and plain.utilisation["DSP"] == 0
    assert "BRAM_18K" in styled.limit_resources and styled.utilisation["DSP"] > 0
    assert "dsp" in attrs(styled_model, "resType") and "distributed" in attrs(styled_model, "ram_style")
    assert "distributed" not in attrs(plain_model, "ram_style")
    assert styled.fps >= 1.2 * plain.fps


def test_uram_weights_are_runtime_writeable_on_ultrascale():
    board = get_board("kv260")
    model = mvau_chain(CNV)
    folding.fit_folding(model, board, 0.8)
    styles, writeable = attrs(model, "ram_style"), attrs(model, "runtime_writeable_weights")
    assert "ultra" in styles
    assert all(w == 1 for s, w in zip(styles, writeable) if s == "ultra")
    assert all(w == 0 for s, w in zip(styles, writeable) if s != "ultra")
    config = folding.folding_config(model)  # FINN's folding_config.json records the styles
    assert [config[n.name]["runtime_writeable_weights"] for n in model.graph.node] == writeable


# ---------------------------------------------------------------------------------------------------------------
# slow: the zoo's models through the deploy's own steps


@pytest.fixture(scope="module")
def zoo_graphs(tmp_path_factory):
    """TFC (784-64-64-64-10) and CNV (3x32x32), w2a2, random weights, prepared up to folding per board."""
    import torch

    from sdk.export import export_module
    from sdk.zoo import build_model, parse_bits
    from targets.finn import steps

    tmp = tmp_path_factory.mktemp("zoo")
    graphs = {}
    for name, shape, example in [("tfc", (1, 28, 28), (1, 784)), ("cnv", (3, 32, 32), (1, 3, 32, 32))]:
        torch.manual_seed(0)
        path = export_module(build_model(name, shape, 10, parse_bits("w2a2")), example, tmp / f"{name}.onnx").onnx_path
        board = get_board("pynq-z2")
        cfg = steps.FinnConfig(board, tmp / name)
        graphs[name] = steps.run_steps(steps.load_qonnx(path), cfg, stop="minimize_bit_widths")
    return graphs


@pytest.mark.slow
def test_zoo_tfc_fit_is_never_below_a_finn_sweep(zoo_graphs):
    board = get_board("pynq-z2")
    base = zoo_graphs["tfc"]
    finn = finn_best_fps(base, board, 0.8, [16, 56, 98, 196, 784], np.logspace(5, np.log10(2e7), 10))
    model = ModelWrapper(copy.deepcopy(base.model))
    fit = folding.fit_folding(model, board, 0.8)
    assert finn > 0 and fit.fps >= finn and within(model, board, 0.8)


@pytest.mark.slow
def test_zoo_cnv_fit_beats_finn_by_a_fifth_where_memory_binds(zoo_graphs):
    board = get_board("pynq-z2")
    base = zoo_graphs["cnv"]
    finn = finn_best_fps(base, board, 0.8, [24, 36, 48, 72], [board.clock_mhz * 1e6 / c for c in (8192, 12288)])
    model = ModelWrapper(copy.deepcopy(base.model))
    fit = folding.fit_folding(model, board, 0.8)
    assert within(model, board, 0.8) and fit.fps >= 1.2 * finn
    assert fit.limit == "resource" and fit.limit_layer in fit.stop_reason


@pytest.fixture(scope="module")
def small_mlp_options():
    return every_option(mvau_chain(SMALL_MLP), get_board("pynq-z2"))


@pytest.mark.parametrize("cap", [0.025, 0.04, 0.06, 0.1])
def test_fit_finds_the_exact_optimum_of_a_small_mlp(cap, small_mlp_options):
    """Every combination of every layer's foldings and styles tried: the fit reaches the fastest one."""
    board = get_board("pynq-z2")
    model = mvau_chain(SMALL_MLP)
    fit = folding.fit_folding(model, board, cap)
    assert fit.cycles == exhaustive_optimum(small_mlp_options, board, cap) and within(model, board, cap)


# --------------------------------------------------------------------------------------------------
# An over-full design is never packaged: --fps is held to the whole board, and `sdk check` says what every
# deploy would


def _shrunk(board, share: float):
    """The board with every capacity of its chip scaled by `share` (at least 1): a smaller board of the family."""
    from dataclasses import replace

    capacity = {k: max(1, int(v * share)) if v else 0 for k, v in board.capacity.items()}
    return replace(board, chip_spec=replace(board.chip_spec, capacity=capacity))


@pytest.mark.parametrize("share", [0.004, 0.2, 0.5, 1.0])
def test_the_check_refuses_exactly_where_the_fit_search_at_the_full_board_does(share):
    """check_fits_board (what `sdk check` runs) and the fit search at 100 % give the same verdict and table."""
    board = _shrunk(get_board("pynq-z2"), share)
    try:
        folding.fit_folding(mvau_chain(CNV), board, 1.0)
        fit_refusal = None
    except ModelTooLargeError as exc:
        fit_refusal = exc.what
    try:
        folding.check_fits_board(mvau_chain(CNV), board)
        check_refusal = None
    except ModelTooLargeError as exc:
        check_refusal = exc.what
    assert check_refusal == fit_refusal
    if share <= 0.004:
        assert check_refusal is not None and "needs" in check_refusal and "% of the board" in check_refusal
    if share >= 1:
        assert check_refusal is None


def test_an_estimate_over_the_board_is_refused_with_the_table():
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    from targets.finn.estimate import refuse_over_capacity

    board = get_board("pynq-z2")
    fast = mvau_chain(TFC).transform(SetFolding(target_cycles_per_frame=1, two_pass_relaxation=True))
    net = estimate_network(fast, board)
    assert net.totals["lut"] > board.capacity["lut"]
    with pytest.raises(ModelTooLargeError) as info:
        refuse_over_capacity(net, board, "target fps", fps=1e30)
    lines = info.value.what.splitlines()
    assert any(line.split()[0] == "LUT" and "% of the board" in line for line in lines[1:])
    assert all(line.split()[0] in ("LUT", "BRAM18", "URAM", "DSP") for line in lines[1:])
    assert info.value.where.startswith("--fps 1e+30") and "lower --fps" in info.value.fix
    refuse_over_capacity(estimate_network(mvau_chain(TFC), board), board, "target fps", fps=1.0)  # fully folded: fits


@pytest.mark.parametrize("fps", ["2e7", "1e30"])
def test_deploy_with_an_fps_over_the_board_is_exit_2_with_the_table_and_no_package(tfc_run, tmp_path, fps):
    import json
    import subprocess
    import sys

    out = tmp_path / "pkg"
    command = ["deploy", "--target", "pynq-z2", "--model", str(tfc_run), "--fps", fps, "--samples", "4"]
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", *command, "--out", str(out), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)
    assert error["error"] == "ModelTooLargeError" and error["where"].startswith(f"--fps {float(fps):g}")
    rows = error["what"].splitlines()[1:]
    assert rows and rows[0].split()[0] == "LUT" and "% of the board" in rows[0]
    assert int(rows[0].split("(")[1].split("%")[0]) > 100
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow  # 25 s: streamlining a million 8-bit weights; the test below is the fast set's
def test_check_and_deploy_agree_on_a_network_no_folding_fits(tmp_path):
    """8-bit weights of a 1024 x 1024 layer (8 Mbit) fit neither a PYNQ-Z2's BRAM (5 Mbit) nor its LUTs: `sdk
    check` refuses it, as the deploy does with the fit search and with --fps."""
    import torch
    from brevitas.nn import QuantLinear, QuantReLU
    from brevitas.quant import Int8WeightPerTensorFloat
    from torch import nn

    import sdk

    torch.manual_seed(0)
    model = nn.Sequential(
        QuantLinear(64, 1024, bias=False, weight_bit_width=8, weight_quant=Int8WeightPerTensorFloat),
        QuantReLU(bit_width=2),
        QuantLinear(1024, 1024, bias=False, weight_bit_width=8, weight_quant=Int8WeightPerTensorFloat),
        QuantReLU(bit_width=2),
        QuantLinear(1024, 10, bias=False, weight_bit_width=8, weight_quant=Int8WeightPerTensorFloat),
    ).eval()
    example = torch.zeros(1, 64)
    with pytest.raises(ModelTooLargeError, match="even fully folded") as checked:
        sdk.check(model, "pynq-z2", example_input=example)
    assert "at 100% utilisation" in checked.value.what
    for options in ({}, {"max_util": 1.0}, {"fps": 1.0}):
        with pytest.raises(ModelTooLargeError):
            sdk.deploy(model, "pynq-z2", example_input=example, out=str(tmp_path / "p"), samples=4, **options)
        assert not (tmp_path / "p").exists()


def test_the_finn_check_and_the_deploy_steps_agree_on_a_smaller_board(tfc_export, tmp_path):
    """The TFC export on PYNQ-Z2-like boards of a fraction of its size: the target's check and the deploy's steps
    (fit search, or --fps, to the estimate) refuse on the same boards, with the same table for check and fit."""
    from targets.finn import steps
    from targets.finn.adapter import FinnTarget

    verdicts = {}
    for share in (0.01, 0.03, 1.0):
        board = _shrunk(get_board("pynq-z2"), share)
        outcomes = []
        for how in ("check", {}, {"max_util": 1.0}, {"fps": 1.0}):
            work = tmp_path / f"{share}-{len(outcomes)}"
            try:
                if how == "check":
                    FinnTarget().check(tfc_export, board, work)
                else:
                    cfg = steps.FinnConfig(board, work, **how)
                    steps.run_steps(steps.load_qonnx(tfc_export), cfg, stop="estimate")
                outcomes.append(None)
            except ModelTooLargeError as exc:
                outcomes.append(exc.what.splitlines()[1:])
        verdicts[share] = outcomes
    assert all(rows is not None for rows in verdicts[0.01])  # too small for any folding: every path refuses
    assert verdicts[0.01][0] == verdicts[0.01][2]  # check = the fit search at 100 %, row for row
    assert all((rows[0] is None) == (rows[2] is None) for rows in verdicts.values())
    assert verdicts[1.0] == [None] * 4
