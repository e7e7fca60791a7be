"""targets.finn.op_view: a node read without FINN's op package answers every question exactly as FINN's op does."""

from __future__ import annotations

import itertools
import re

import hw_graphs
import pytest
from qonnx.custom_op.registry import getCustomOp

from targets.finn.op_view import DECLARED, OpView, hw_op

METHODS = (
    "get_input_datatype",
    "get_output_datatype",
    "get_instream_width",
    "get_outstream_width",
    "get_folded_input_shape",
    "get_folded_output_shape",
    "get_normal_input_shape",
    "get_normal_output_shape",
)


def _mvau(op_type: str, vectors=(1, 2), three_inputs: bool = False, **attributes):
    inputs = ["x", "w", "t"] if three_inputs else ["x", "w"]
    return hw_graphs.mvau(inputs, "y", 16, 8, "UINT4", "INT3", vectors, op_type, **attributes)


def _thresholding(op_type: str, vectors=(1, 2), three_inputs: bool = False, **attributes):
    named = {"NumChannels": 16, "numSteps": 3, "inputDataType": "INT4", "weightDataType": "INT5"}
    named |= {"outputDataType": "UINT2", "PE": 1, "numInputVectors": list(vectors)}
    return hw_graphs.hw_node(op_type, ["x", "t"], ["y"], **(named | attributes))


BUILDERS = {"MVAU": _mvau, "Thresholding": _thresholding}  # op type without its style -> a node of it


def node_of(op_type: str, **kwargs):
    return BUILDERS[op_type.split("_")[0]](op_type, **kwargs)


def answer(call, *args):
    """What a call returns, or the type and text of what it raises: a view must refuse where FINN refuses. A set in
    the text is compared as a set (its printed order is the order of a hash table)."""
    try:
        value = call(*args)
    except Exception as exc:
        text = re.sub(r"\{[^{}]*\}", lambda found: str(sorted(found.group(0)[1:-1].split(", "))), str(exc))
        return ("raises", type(exc).__name__, text)
    return ("returns", tuple(value) if isinstance(value, list | tuple) else value)


def assert_same(node) -> None:
    finn, view = getCustomOp(node), hw_op(node)
    assert isinstance(view, OpView)
    assert view.get_nodeattr_types() == finn.get_nodeattr_types()
    for name in finn.get_nodeattr_types():
        assert answer(view.get_nodeattr, name) == answer(finn.get_nodeattr, name), name
    for method, ind in itertools.product(METHODS, range(3)):
        assert answer(getattr(view, method), ind) == answer(getattr(finn, method), ind), (method, ind)


@pytest.mark.parametrize("op_type", sorted(DECLARED))
def test_the_declared_attributes_are_finns(op_type):
    assert DECLARED[op_type][1] == getCustomOp(node_of(op_type)).get_nodeattr_types()


@pytest.mark.parametrize("op_type", sorted(DECLARED))
@pytest.mark.parametrize(
    "mem_mode", [None, "internal_embedded", "internal_decoupled", "external", "external_mem", "dynamic"]
)
def test_every_answer_is_finns(op_type, mem_mode):
    extra = {} if mem_mode is None else {"mem_mode": mem_mode}
    for vectors, three_inputs, folding in (
        ((1,), False, {"PE": 2, "SIMD": 4}),
        ((1, 3, 3), True, {"PE": 4, "SIMD": 8, "TH": 2}),
        ((2, 1), False, {"PE": 1, "SIMD": 1, "binaryXnorMode": 1}),
    ):
        if op_type.startswith("Thresholding"):
            folding = {"PE": folding["PE"], "ActVal": -folding["SIMD"]}
        assert_same(node_of(op_type, vectors=vectors, three_inputs=three_inputs, **folding, **extra))


def with_attributes(node, **values):
    """A copy of the node with these attributes set (None: removed)."""
    from onnx import helper

    changed = type(node)()
    changed.CopyFrom(node)
    kept = [a for a in changed.attribute if a.name not in values]
    del changed.attribute[:]
    changed.attribute.extend(kept)
    changed.attribute.extend(helper.make_attribute(k, v) for k, v in values.items() if v is not None)
    return changed


@pytest.mark.parametrize(
    "broken",
    [
        {"PE": 0},  # a division by zero in the folded shapes
        {"SIMD": 3},  # does not divide MW
        {"mem_mode": "nowhere"},  # not an allowed value
        {"inputDataType": "UINT99"},  # not a datatype
        {"outputDataType": ""},
        {"noActivation": 2},
        {"TH": 0},
        {"resType": "fpga"},
        {"MW": None},  # a required attribute missing
        {"PE": None},
        {"weightDataType": None},
        {"numInputVectors": None},  # an optional one: its default
        {"NumChannels": 5},  # Thresholding's: PE 2 does not divide it
        {"NumChannels": None, "numSteps": None},
    ],
)
def test_a_broken_node_is_refused_as_finn_refuses_it(broken):
    for op_type in DECLARED:
        node = node_of(op_type, mem_mode="external" if op_type.startswith("MVAU") else "internal_decoupled", PE=2)
        assert_same(with_attributes(node, **broken))


def test_other_ops_and_other_domains_stay_finns():
    padding = hw_graphs.fm_padding("x", "y", 4, 2, 1, "UINT2")
    assert not isinstance(hw_op(padding), OpView)
    misplaced = hw_graphs.mvau(["x", "w"], "y", 8, 4, "UINT2", "INT2", op_type="MVAU_hls")
    misplaced.domain = "finn.custom_op.fpgadataflow"  # the abstract layer's domain: FINN's registry refuses it
    with pytest.raises(KeyError, match="not found in domain"):
        hw_op(misplaced)
