"""Small graphs of real FINN hardware nodes, written by hand the way the simulator and RTL tests need them."""

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
