"""Small graphs of real FINN hardware nodes, the way the simulator, RTL and folding tests need them: one builder
per node type (MVAU, VVAU, Thresholding, ConvolutionInputGenerator, FMPadding, Pool, ...) with the attributes
those tests share as defaults, and `hw_graph` to make a model of the nodes."""

from __future__ import annotations

import numpy as np

HW = "finn.custom_op.fpgadataflow"


def hw_graph(nodes, shapes: dict[str, tuple], initializers: dict, input_dtype: str, infer: bool = True):
    """A ModelWrapper of `nodes`: the first of `shapes` is its input, the last its output, the others its
    intermediate tensors. `infer`: run qonnx's shape and datatype inference, as FINN's flow would."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    info = {name: helper.make_tensor_value_info(name, TensorProto.FLOAT, list(s)) for name, s in shapes.items()}
    names = list(shapes)
    hidden = [info[n] for n in names[1:-1]]
    graph = helper.make_graph(nodes, "sdk_test", [info[names[0]]], [info[names[-1]]], value_info=hidden)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="sdk-test"))
    for name, value in initializers.items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    model.set_tensor_datatype(names[0], DataType[input_dtype])
    return model.transform(InferShapes()).transform(InferDataTypes()) if infer else model


# ---------------------------------------------------------------------------
# one builder per FINN HW node: the attributes every test sets, named once; anything else as FINN's attribute


def hw_node(op_type: str, inputs, outputs, **attributes):
    """A FINN HW node: an abstract layer (domain HW, backend fpgadataflow), or with an `_hls` / `_rtl` op type the
    specialised layer (domain HW.hls / HW.rtl)."""
    from onnx import helper

    style = op_type.rsplit("_", 1)[-1] if op_type.endswith(("_hls", "_rtl")) else ""
    where = {"domain": f"{HW}.{style}"} if style else {"domain": HW, "backend": "fpgadataflow"}
    return helper.make_node(op_type, list(inputs), list(outputs), **where, **attributes)


def mvau(
    inputs, output: str, mw: int, mh: int, in_dtype: str, weight_dtype: str, vectors=(1,), op_type="MVAU", **attributes
):
    """A matrix-vector unit on (*vectors, mw) inputs, fully folded; thresholds (a third input) make it an
    activation (noActivation 0). op_type MVAU_hls / MVAU_rtl: the specialised layer."""
    defaults = {"PE": 1, "SIMD": 1, "outputDataType": "INT32", "noActivation": int(len(inputs) < 3)}
    named = {"MW": mw, "MH": mh, "inputDataType": in_dtype, "weightDataType": weight_dtype}
    named |= {"numInputVectors": list(vectors)}
    return hw_node(op_type, inputs, [output], **named, **(defaults | attributes))


def vvau(inputs, output: str, channels: int, kernel: int, dim: int, in_dtype: str, weight_dtype: str, **attributes):
    """A depthwise (vector-vector) unit over a dim x dim map, square kernel, fully folded."""
    defaults = {"PE": 1, "outputDataType": "INT32", "noActivation": int(len(inputs) < 3)}
    named = {"Channels": channels, "Kernel": [kernel, kernel], "Dim": [dim, dim]}
    named |= {"inputDataType": in_dtype, "weightDataType": weight_dtype}
    return hw_node("VVAU", inputs, [output], **named, **(defaults | attributes))


def thresholding(inputs, output: str, channels: int, steps: int, in_dtype: str, out_dtype: str, vectors, **attributes):
    """A Thresholding layer of `steps` thresholds per channel on (*vectors, channels) inputs, fully folded."""
    defaults = {"PE": 1, "weightDataType": "INT32", "ActVal": 0}
    named = {"NumChannels": channels, "numSteps": steps, "inputDataType": in_dtype, "outputDataType": out_dtype}
    named |= {"numInputVectors": list(vectors)}
    return hw_node("Thresholding", inputs, [output], **named, **(defaults | attributes))


def window_generator(
    source: str,
    output: str,
    side: int,
    channels: int,
    kernel: int,
    stride: int,
    dtype: str,
    dilation: int = 1,
    **attributes,
):
    """A ConvolutionInputGenerator (sliding window) over a side x side map, square kernel, one SIMD lane; its output
    side follows from kernel, stride and dilation as FINN computes it (`window_side`)."""
    out_side = window_side(side, kernel, stride, dilation)
    defaults = {"SIMD": 1}
    named = {"ConvKernelDim": [kernel, kernel], "IFMChannels": channels, "IFMDim": [side, side]}
    named |= {"OFMDim": [out_side, out_side], "Stride": [stride, stride], "Dilation": [dilation, dilation]}
    named |= {"inputDataType": dtype, "outputDataType": dtype}
    return hw_node("ConvolutionInputGenerator", [source], [output], **named, **(defaults | attributes))


def window_side(side: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Output positions along one axis of a sliding window without padding."""
    return (side - dilation * (kernel - 1) - 1) // stride + 1


def fm_padding(source: str, output: str, side: int, channels: int, padding: int, dtype: str, **attributes):
    """A feature-map padding of `padding` zeros on every side of a side x side map, one SIMD lane."""
    named = {"ImgDim": [side, side], "NumChannels": channels, "Padding": [padding] * 4, "inputDataType": dtype}
    return hw_node("FMPadding", [source], [output], **named, **({"SIMD": 1} | attributes))


def pool(
    source: str,
    output: str,
    channels: int,
    kernel: int,
    out_side: int,
    function: str,
    dtypes: tuple[str, str],
    **attributes,
):
    """A Pool over windows (from a window generator) of kernel x kernel positions, fully folded; dtypes: (in, out)."""
    named = {"Channels": channels, "KernelSize": [kernel, kernel], "OutImgDims": [out_side, out_side]}
    named |= {"Function": function, "InputDataType": dtypes[0], "OutputDataType": dtypes[1]}
    return hw_node("Pool", [source], [output], **named, **({"PE": 1} | attributes))


def elementwise(op_type: str, inputs, output: str, dtypes: tuple[str, str, str], shape, **attributes):
    """An elementwise binary op (ElementwiseAdd, ...) of two operands of one shape; dtypes: (lhs, rhs, out)."""
    lhs, rhs, out = dtypes
    named = {"lhs_dtype": lhs, "rhs_dtype": rhs, "out_dtype": out}
    named |= {"lhs_shape": list(shape), "rhs_shape": list(shape), "out_shape": list(shape)}
    return hw_node(op_type, inputs, [output], **named, **({"PE": 1} | attributes))


def duplicate_streams(source: str, outputs, channels: int, dtype: str, vectors, **attributes):
    """DuplicateStreams: one stream copied to each of `outputs`."""
    named = {"NumChannels": channels, "NumOutputStreams": len(outputs), "inputDataType": dtype}
    named |= {"numInputVectors": list(vectors)}
    return hw_node("DuplicateStreams", [source], outputs, **named, **({"PE": 1} | attributes))


def global_acc_pool(source: str, output: str, channels: int, dtype: str, vectors, **attributes):
    """GlobalAccPool: the sum over every position of (*vectors, channels)."""
    named = {"NumChannels": channels, "inputDataType": dtype, "numInputVectors": list(vectors)}
    return hw_node("GlobalAccPool", [source], [output], **named, **({"PE": 1} | attributes))


def label_select(source: str, output: str, labels: int, k: int, dtypes: tuple[str, str], vectors, **attributes):
    """LabelSelect: the indices of the k largest of `labels` values; dtypes: (in, out)."""
    named = {"Labels": labels, "K": k, "inputDataType": dtypes[0], "outputDataType": dtypes[1]}
    named |= {"numInputVectors": list(vectors)}
    return hw_node("LabelSelect", [source], [output], **named, **({"PE": 1} | attributes))
