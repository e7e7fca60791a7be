"""The FINN op records (targets/finn/ops.py): every table other modules read about an op is derived from them."""

from __future__ import annotations

from targets.finn import ops


def _names(flag: str) -> set[str]:
    return {name for name, op in ops.HW_OPS.items() if getattr(op, flag)}


def test_rtl_tables_are_derived_from_the_records_in_the_order_messages_name_them():
    """rtlsim.SUPPORTED_RTL_OPS / KNOWN_FAILURES and rtl_verify.RTL_PREFERRED are these, as they were written out."""
    simulated = ("Thresholding", "FMPadding", "ConvolutionInputGenerator", "StreamingDataWidthConverter", "MVAU")
    assert ops.rtl_simulated() == tuple(f"{name}_rtl" for name in simulated)
    assert ops.rtl_preferred() == simulated
    assert ops.rtl_known_failures() == {}
    assert ops.rtl_of("ConvolutionInputGenerator_rtl") is ops.HW_OPS["ConvolutionInputGenerator"].rtl
    assert ops.rtl_of("ConvolutionInputGenerator_hls") is None and ops.rtl_of("VVAU_rtl") is None


def test_window_and_folding_rules_are_carried_by_the_records():
    assert _names("takes_windows") == {"MVAU", "VVAU", "Pool"}
    assert _names("takes_linked_window") == {"VVAU", "Pool"}
    assert _names("simd_reads_window") == {"VVAU"}
    assert _names("follows_consumer") == {"ConvolutionInputGenerator"}
    follows = ops.HW_OPS["ConvolutionInputGenerator"].follows_consumer
    assert follows({"depthwise": 1}.get) and not follows({"depthwise": 0}.get)
    writable = {name for name, op in ops.HW_OPS.items() if op.rtl and op.rtl.writable and op.rtl.make_writable}
    assert writable == {"ConvolutionInputGenerator"}


def test_every_op_has_a_static_range_rule():
    # elementwise ops too: the Thresholding after a residual Add knows its input's range
    assert [name for name, op in ops.HW_OPS.items() if not callable(op.ranges)] == []
    assert all(callable(op.kernel) and callable(op.knobs) for op in ops.HW_OPS.values())


def test_the_vvau_record_checks_a_packaged_layers_weights():
    import hw_graphs
    import numpy as np
    from qonnx.custom_op.registry import getCustomOp

    node = hw_graphs.vvau(["x", "w"], "y", 5, 3, 2, "UINT4", "INT4")
    model = hw_graphs.hw_graph([node], {"x": (1, 2, 2, 45), "y": (1, 2, 2, 5)}, {"w": np.ones((5, 1, 3, 3))}, "UINT4")
    check = ops.HW_OPS["VVAU"].graph_check
    assert check(model, node, getCustomOp(node)) is None
    model.set_initializer("w", np.ones((5, 1, 3, 2), np.float32))
    assert check(model, node, getCustomOp(node)) == "has 30 weights; Channels and Kernel make 45"
