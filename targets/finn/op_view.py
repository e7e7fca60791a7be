"""A packaged graph's MVAU and Thresholding nodes read without FINN's op package, whose __init__ imports torch.

finn.custom_op.fpgadataflow/__init__.py imports every op module, layernorm.py among them, and layernorm.py imports
torch at module level; importing any one FINN op runs that __init__ first. So the first FINN op object a process
makes (qonnx's getCustomOp) costs torch's import: most of `sdk simulate`'s time on an MLP. The simulator and the
package check read only a node's declared attributes and the shapes, datatypes and stream widths they make. For
the ops in VIEWS (in every style: MVAU, MVAU_hls, MVAU_rtl, and so Thresholding: every layer of an MLP's
accelerator, with or without standalone thresholds) a view gives exactly those, with qonnx's own attribute reader
(qonnx.custom_op.base.CustomOp.get_nodeattr: the same values, defaults and refusals) over FINN's declarations,
written out in DECLARED. Every other op is FINN's own object, and brings torch.
tests/test_op_view.py holds each view to FINN: DECLARED equals FINN's declarations, and every method equals FINN's
on nodes of every style, broken ones included. A FINN upgrade that changes either fails there. Adding an op: its
declarations in DECLARED (one entry per style), a view with the eight methods, one line in VIEWS, and its node
builder in the test's BUILDERS.
"""

from __future__ import annotations

import math

from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp

HW_DOMAIN = "finn.custom_op.fpgadataflow"
_MEM_MODES = {"internal_embedded", "internal_decoupled", "external", "external_mem", "dynamic"}
_STREAMED = ("external", "external_mem", "internal_decoupled")  # weights on a stream of PE * SIMD / TH lanes
_ON_OFF = {0, 1}

# HWCustomOp's attributes, every HW op's: as finn-plus 1.6.1 declares them, as are those below.
_HW = {
    "address_offset": ("i", False, 0),
    "backend": ("s", True, "fpgadataflow"),
    "bodies": ("i", False, 0),
    "code_gen_dir_ipgen": ("s", False, ""),
    "cycles_estimate": ("i", False, 0),
    "cycles_rtlsim": ("i", False, 0),
    "device_id": ("i", False, 0),
    "exec_mode": ("s", False, "", {"", "cppsim", "rtlsim"}),
    "inFIFODepths": ("ints", False, [2]),
    "ip_path": ("s", False, ""),
    "ip_vlnv": ("s", False, ""),
    "ipgen_path": ("s", False, ""),
    "mem_port": ("s", False, ""),
    "mlo_max_iter": ("i", False, 0),
    "outFIFODepths": ("ints", False, [2]),
    "output_hook": ("s", False, ""),
    "partition_id": ("i", False, 0),
    "preferred_impl_style": ("s", False, "", {"", "rtl", "hls"}),
    "res_estimate": ("s", False, ""),
    "res_synth": ("s", False, ""),
    "rtlsim_so": ("s", False, ""),
    "rtlsim_trace": ("s", False, ""),
    "slr": ("i", False, -1),
}
_HLS = {  # HLSBackend's
    "code_gen_dir_cppsim": ("s", False, ""),
    "cpp_interface": ("s", False, "packed", {"hls_vector", "packed"}),
    "executable_path": ("s", False, ""),
    "hls_style": ("s", False, "ifm_aware", {"freerunning", "ifm_aware"}),
    "res_hls": ("s", False, ""),
}
_RTL = {"gen_top_module": ("s", False, "")}  # RTLBackend's
_MVAU = {
    **_HW,
    "ActVal": ("i", False, 0),
    "MH": ("i", True, 0),
    "MW": ("i", True, 0),
    "PE": ("i", True, 0),
    "SIMD": ("i", True, 0),
    "TH": ("i", False, 1),
    "accDataType": ("s", False, "INT32"),
    "binaryXnorMode": ("i", False, 0, _ON_OFF),
    "inputDataType": ("s", True, ""),
    "mem_mode": ("s", False, "internal_decoupled", _MEM_MODES),
    "noActivation": ("i", False, 0, _ON_OFF),
    "numInputVectors": ("ints", False, [1]),
    "outputDataType": ("s", True, ""),
    "pumpedMemory": ("i", False, 0, _ON_OFF),
    "ram_style": ("s", False, "auto", {"auto", "distributed", "ultra", "block"}),
    "ram_style_thresholds": ("s", False, "auto", {"auto", "distributed", "block"}),
    "resType": ("s", False, "auto", {"dsp", "auto", "lut"}),
    "runtime_writeable_weights": ("i", False, 0, _ON_OFF),
    "weightDataType": ("s", True, ""),
}
_THRESHOLDING = {
    **_HW,
    "ActVal": ("i", False, 0),
    "NumChannels": ("i", True, 0),
    "PE": ("i", True, 0),
    "inputDataType": ("s", True, ""),
    "numInputVectors": ("ints", False, [1]),
    "numSteps": ("i", True, 1),
    "outputDataType": ("s", True, ""),
    "runtime_writeable_weights": ("i", False, 0, _ON_OFF),
    "weightDataType": ("s", True, ""),
}

# op type -> (its domain, its declared attributes)
DECLARED: dict[str, tuple[str, dict[str, tuple]]] = {
    "MVAU": (HW_DOMAIN, _MVAU),
    "MVAU_hls": (HW_DOMAIN + ".hls", {**_MVAU, **_HLS, "resType": ("s", False, "lut", {"auto", "lut", "dsp"})}),
    "MVAU_rtl": (HW_DOMAIN + ".rtl", {**_MVAU, **_RTL, "pumpedCompute": ("i", False, 0, _ON_OFF)}),
    "Thresholding": (HW_DOMAIN, _THRESHOLDING),
    "Thresholding_hls": (
        HW_DOMAIN + ".hls",
        {
            **_THRESHOLDING,
            **_HLS,
            "mem_mode": ("s", False, "internal_decoupled", {"internal_embedded", "internal_decoupled"}),
            "ram_style": ("s", False, "distributed", {"ultra", "block", "distributed"}),
        },
    ),
    "Thresholding_rtl": (
        HW_DOMAIN + ".rtl",
        {
            **_THRESHOLDING,
            **_RTL,
            "deep_pipeline": ("i", False, 1, _ON_OFF),
            "depth_trigger_bram": ("i", False, 0),
            "depth_trigger_uram": ("i", False, 0),
            "uniform_thres": ("i", False, 0, _ON_OFF),
        },
    ),
}


def hw_op(node) -> CustomOp:
    """The node's op object: its view for an op of DECLARED in FINN's domain, else FINN's own (getCustomOp)."""
    declared = DECLARED.get(node.op_type)
    if declared is not None and node.domain == declared[0]:
        return VIEWS[node.op_type.split("_")[0]](node)
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(node)


class OpView(CustomOp):
    """A FINN HW node as FINN's op classes read it: its declared attributes (qonnx's reader), and in each subclass
    its shapes (normal and folded), datatypes and stream widths, computed from them as FINN computes them. Nothing
    else: a view neither executes nor builds."""

    def __init__(self, onnx_node) -> None:
        super().__init__(onnx_node, onnx_opset_version=1)  # the version getCustomOp gives FINN's unversioned ops

    def get_nodeattr_types(self) -> dict[str, tuple]:
        return dict(DECLARED[self.onnx_node.op_type][1])

    def _not_here(self, *args, **kwargs):
        raise NotImplementedError(f"{self.onnx_node.op_type}: only FINN's own op object does this")

    make_shape_compatible_op = infer_node_datatype = execute_node = verify_node = _not_here


class MvauView(OpView):
    """FINN's MVAU, MVAU_hls and MVAU_rtl."""

    def get_input_datatype(self, ind: int = 0):
        if ind == 0:
            return DataType[self.get_nodeattr("inputDataType")]
        if ind == 1:
            return DataType[self.get_nodeattr("weightDataType")]
        raise Exception("Undefined input ind for this layer type")

    def get_output_datatype(self, ind: int = 0):
        return DataType[self.get_nodeattr("outputDataType")]

    def get_instream_width(self, ind: int = 0) -> int:
        if ind == 0:
            return self.get_input_datatype(0).bitwidth() * self.get_nodeattr("SIMD")
        if ind == 1:
            pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
            bits = self.get_input_datatype(1).bitwidth()
            mem_mode, th = self.get_nodeattr("mem_mode"), self.get_nodeattr("TH")
            if mem_mode == "dynamic":
                return pe * bits
            return pe * simd * bits // th if mem_mode in _STREAMED else 0
        if ind == 2 and not self.get_nodeattr("noActivation"):
            return 0  # thresholds are embedded
        raise Exception("Index out of range")

    def get_outstream_width(self, ind: int = 0) -> int:
        return self.get_output_datatype().bitwidth() * self.get_nodeattr("PE")

    def get_folded_input_shape(self, ind: int = 0) -> tuple:
        mw, mh = self.get_nodeattr("MW"), self.get_nodeattr("MH")
        simd, pe = self.get_nodeattr("SIMD"), self.get_nodeattr("PE")
        mem_mode = self.get_nodeattr("mem_mode")
        synapse_folds, neuron_folds = mw // simd, mh // pe
        vectors = list(self.get_nodeattr("numInputVectors"))
        th = self.get_nodeattr("TH")
        if ind == 0:
            return tuple([*vectors, synapse_folds, simd])
        if ind == 1 and mem_mode == "dynamic":
            return tuple([*vectors[:2], mw, neuron_folds, pe])
        if ind == 1 and mem_mode in _STREAMED:
            return (int(math.prod(vectors)), synapse_folds * neuron_folds, (simd * pe) // th)
        raise Exception("Undefined input shape for requested input")

    def get_folded_output_shape(self, ind: int = 0) -> tuple:
        mh, pe = self.get_nodeattr("MH"), self.get_nodeattr("PE")
        neuron_folds = mh // pe
        return tuple([*self.get_nodeattr("numInputVectors"), neuron_folds, pe])

    def get_normal_input_shape(self, ind: int = 0) -> tuple:
        mw = self.get_nodeattr("MW")
        if ind == 0:
            return tuple([*self.get_nodeattr("numInputVectors"), mw])
        if ind == 1:
            return (mw, self.get_nodeattr("MH"))
        raise Exception("Undefined input shape for requested input")

    def get_normal_output_shape(self, ind: int = 0) -> tuple:
        mh = self.get_nodeattr("MH")
        return tuple([*self.get_nodeattr("numInputVectors"), mh])


class ThresholdingView(OpView):
    """FINN's Thresholding, Thresholding_hls and Thresholding_rtl."""

    def get_input_datatype(self, ind: int = 0):
        if ind == 0:
            return DataType[self.get_nodeattr("inputDataType")]
        if ind == 1:
            return DataType[self.get_nodeattr("weightDataType")]
        raise Exception("Index out of range")

    def get_output_datatype(self, ind: int = 0):
        return DataType[self.get_nodeattr("outputDataType")]

    def get_instream_width(self, ind: int = 0) -> int:
        if ind == 0:
            return self.get_input_datatype(0).bitwidth() * self.get_nodeattr("PE")
        if ind == 1:
            try:
                mem_mode = self.get_nodeattr("mem_mode")
            except AttributeError:  # the RTL layer declares no mem_mode
                mem_mode = 0
            if mem_mode != "internal_decoupled":
                return 0
            pe, bits = self.get_nodeattr("PE"), self.get_input_datatype(1).bitwidth()
            return pe * bits * self.get_nodeattr("numSteps")
        raise Exception("Index out of range")

    def get_outstream_width(self, ind: int = 0) -> int:
        return self.get_output_datatype().bitwidth() * self.get_nodeattr("PE")

    def get_folded_input_shape(self, ind: int = 0) -> tuple:
        pe = self.get_nodeattr("PE")
        folds = self.get_nodeattr("NumChannels") // self.get_nodeattr("PE")
        return tuple([*self.get_nodeattr("numInputVectors"), folds, pe])

    def get_folded_output_shape(self, ind: int = 0) -> tuple:
        return self.get_folded_input_shape()

    def get_normal_input_shape(self, ind: int = 0) -> tuple:
        channels = self.get_nodeattr("NumChannels")
        return tuple([*self.get_nodeattr("numInputVectors"), channels])

    def get_normal_output_shape(self, ind: int = 0) -> tuple:
        return self.get_normal_input_shape()


VIEWS: dict[str, type[OpView]] = {"MVAU": MvauView, "Thresholding": ThresholdingView}  # by op type without its style
