"""1-D models on FINN: a graph over sequences (N, C, T), as a Conv1d takes them, made FINN's images (N, C, T, 1).

FINN convolves 1-D as 2-D with a second spatial axis of 1: its sliding window (ConvolutionInputGenerator,
`is1D`) takes a (T, 1) or (1, T) map, and FINN's own 1-D flow turns every 3-D tensor (N, C, T) into (N, C, T, 1)
with qonnx's Change3DTo4DTensors right after its frontend. That transformation leaves a graph unchanged (with a
warning) when the graph holds an op outside its list, such as the global average pool or ReduceMean that ends a
keyword spotter; `to_images` does the same conversion for the ops listed in SEQUENCE_OPS, after FINN's frontend,
and `unsupported` names, in the user's own graph and before any FINN step runs, every node it cannot convert.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper

from sdk.errors import UnsupportedModelError

# The ops a graph may apply to a (N, C, T) tensor, before FINN's frontend (Quant, Relu, ...) and after it
# (MultiThreshold): each is converted below, or needs nothing but the tensor's new shape.
QUANTIZER_OPS = frozenset({"Quant", "BipolarQuant"})  # FINN's frontend makes them thresholds and scales
ELEMENTWISE_OPS = frozenset({"MultiThreshold", "Relu", "Sigmoid", "Tanh", "Identity", "BatchNormalization"})
BROADCAST_OPS = frozenset({"Mul", "Add", "Sub", "Div"})  # a constant operand broadcasts over (N, C, T)
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool"})  # kernel_shape, strides, pads, dilations along T
GLOBAL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool"})
REDUCE_OPS = frozenset({"ReduceMean", "ReduceMax", "ReduceSum"})
LAYOUT_OPS = frozenset({"Flatten", "Reshape", "Transpose", "Concat"})
SEQUENCE_OPS = ELEMENTWISE_OPS | BROADCAST_OPS | WINDOW_OPS | GLOBAL_OPS | REDUCE_OPS | LAYOUT_OPS
QONNX_SEQUENCE_OPS = (SEQUENCE_OPS - {"MultiThreshold"}) | QUANTIZER_OPS  # what the user's graph may hold


def _rank(model: ModelWrapper, name: str) -> int | None:
    shape = model.get_tensor_shape(name) if name else None
    return None if shape is None else len(shape)


def _on_sequences(model: ModelWrapper, node) -> bool:
    """Whether the node reads or writes a (N, C, T) tensor (a dynamic one: weights of a Conv1d are 3-D too)."""
    names = [n for n in node.input if n and model.get_initializer(n) is None] + list(node.output)
    return any(_rank(model, name) == 3 for name in names)


def is_one_dimensional(model: ModelWrapper) -> bool:
    """A 1-D model: it convolves or pools over sequences (a kernel of one dimension). Only such a graph is converted
    (and its ops on sequences checked): a graph whose 3-D tensors are something else (tokens x features) is left to
    FINN's own steps, as before."""
    return any(node.op_type in WINDOW_OPS and _kernel_rank(model, node) == 1 for node in model.graph.node)


def _kernel_rank(model: ModelWrapper, node) -> int | None:
    """Spatial dimensions of a Conv's or pool's kernel (a Conv may leave kernel_shape to its weights' shape)."""
    kernel = _ints(node, "kernel_shape")
    if kernel is not None:
        return len(kernel)
    weights = _rank(model, node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
    return None if weights is None else weights - 2


def _attribute(node, name: str):
    return next((a for a in node.attribute if a.name == name), None)


def _ints(node, name: str) -> list[int] | None:
    found = _attribute(node, name)
    return None if found is None else list(found.ints)


def unsupported(model: ModelWrapper, named_elsewhere: tuple[str, ...] = ()) -> list[tuple[object, str, str]]:
    """(node, why, fix) for every node of a QONNX graph over sequences that FINN cannot take, named as the graph
    names it: an op on (N, C, T) tensors outside QONNX_SEQUENCE_OPS, but for those of `named_elsewhere`.

    FINN's sliding window computes 1-D convolutions and pools of any kernel, stride, dilation and zero padding,
    depthwise too (each checked in Verilator against the simulator); a window FINN cannot write is named by the
    mapping check (ops.py), a grouped convolution by the frontend's."""
    found = []
    for node in model.graph.node if is_one_dimensional(model) else []:
        if not _on_sequences(model, node):
            continue
        if node.op_type in QONNX_SEQUENCE_OPS or node.op_type in named_elsewhere:
            continue
        if node.op_type == "Pad":
            mode = _attribute(node, "mode")
            found.append(
                (
                    node,
                    f"a separate Pad ({mode.s.decode('utf-8', 'replace') if mode else 'constant'}) of a (N, C, T) "
                    "sequence; FINN pads a map only with zeros, as part of the convolution that reads it",
                    "give the convolution its padding (QuantConv1d(..., padding=p), padding_mode='zeros') instead",
                )
            )
            continue
        found.append(
            (
                node,
                f"a {node.op_type} on a (N, C, T) sequence; the FPGA flow runs 1-D models as FINN's (T, 1) "
                f"maps, which it converts for {', '.join(sorted(QONNX_SEQUENCE_OPS))}",
                "write this step with one of those ops (e.g. a flatten, a global average or a max pool over T)",
            )
        )
    return found


def _padded_constant(value: np.ndarray) -> np.ndarray:
    """A constant that broadcasts over (N, C, T), made to broadcast the same way over (N, C, T, 1)."""
    if value.ndim == 0 or value.size == 1:
        return value
    return value.reshape((1,) * (3 - value.ndim) + value.shape + (1,))


def _set_ints(node, name: str, values: list[int]) -> None:
    found = _attribute(node, name)
    if found is not None:
        node.attribute.remove(found)
    node.attribute.append(helper.make_attribute(name, values))


def _refuse(node, why: str) -> UnsupportedModelError:
    from sdk.graph_names import node_phrase

    phrase = node_phrase(node)  # as the user's file names the node (sdk.graph_names)
    error = UnsupportedModelError(
        f"The FPGA flow cannot run {phrase} of this 1-D model as FINN's (T, 1) maps: {why}.",
        where=phrase,
        fix="write this step with a flatten, a global average or a max pool over T",
    )
    error.alternative = "tflite"  # named in the fix only if the TFLite check takes the model (sdk/advice.py)
    return error


def _convert_window(model: ModelWrapper, node) -> None:
    """kernel_shape, strides, dilations and pads along T, with 1 (and no padding) along the new axis; a Conv's
    weights (O, I, k) as (O, I, k, 1)."""
    kernel = _ints(node, "kernel_shape")
    if node.op_type == "Conv":
        weights = model.get_initializer(node.input[1])
        if weights is None or weights.ndim != 3:
            raise _refuse(node, "its weights are not a constant (O, I, k)")
        model.set_initializer(node.input[1], weights[..., None])
        kernel = kernel or [int(weights.shape[2])]  # FINN's lowering reads the kernel from the attribute
    if kernel is not None and len(kernel) == 1:
        _set_ints(node, "kernel_shape", [kernel[0], 1])
    for name in ("strides", "dilations"):
        values = _ints(node, name)
        if values is not None and len(values) == 1:
            _set_ints(node, name, [values[0], 1])
    pads = _ints(node, "pads")
    if pads is not None and len(pads) == 2:
        _set_ints(node, "pads", [pads[0], 0, pads[1], 0])


def _convert_reduce(model: ModelWrapper, node) -> None:
    """Axes of (N, C, T) as axes of (N, C, T, 1): the size-1 axis 3 is reduced too, so that the result keeps the
    rank it had (keepdims=0 drops it, keepdims=1 keeps it at 1)."""
    from_input = len(node.input) > 1 and node.input[1]
    axes = model.get_initializer(node.input[1]) if from_input else _ints(node, "axes")
    if axes is None:
        if from_input:
            raise _refuse(node, "its axes are not a constant")
        return  # no axes: every axis is reduced, in 3-D as in 4-D
    axes = sorted({int(a) % 3 for a in np.asarray(axes).reshape(-1)} | {3})
    if from_input:
        model.set_initializer(node.input[1], np.array(axes, dtype=np.int64))
    else:
        _set_ints(node, "axes", axes)


def _convert_layout(model: ModelWrapper, node) -> None:
    if node.op_type == "Transpose":
        perm = _ints(node, "perm")
        if perm is not None and len(perm) == 3:
            _set_ints(node, "perm", [*perm, 3])
    elif node.op_type in ("Flatten", "Concat"):
        axis = _attribute(node, "axis")
        if axis is not None and axis.i < 0 and _rank(model, node.input[0]) == 3:
            axis.i += 3  # counted from the front, where (N, C, T) and (N, C, T, 1) agree
    elif node.op_type == "Reshape" and _rank(model, node.output[0]) == 3:
        shape = model.get_initializer(node.input[1])
        if shape is None:
            raise _refuse(node, "its target shape is not a constant")
        model.set_initializer(node.input[1], np.append(shape, 1).astype(np.int64))
    # a Reshape to (N, F) reads (N, C, T, 1) in the order it read (N, C, T): nothing to change


def to_images(model: ModelWrapper) -> ModelWrapper:
    """Every (N, C, T) tensor as (N, C, T, 1), every node on one converted with it (after FINN's frontend: weights
    are constants). A graph that is not a 1-D model is returned as it is."""
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_shapes import InferShapes

    if not is_one_dimensional(model):
        return model
    for node in model.graph.node:
        if not _on_sequences(model, node):
            continue
        if node.op_type not in SEQUENCE_OPS:
            raise _refuse(node, "the conversion has no rule for this op")
        if node.op_type in WINDOW_OPS:
            _convert_window(model, node)
        elif node.op_type in REDUCE_OPS:
            _convert_reduce(model, node)
        elif node.op_type in LAYOUT_OPS:
            _convert_layout(model, node)
        elif node.op_type in BROADCAST_OPS:
            for name in node.input:
                value = model.get_initializer(name)
                if value is not None:
                    model.set_initializer(name, _padded_constant(value))
        elif node.op_type == "MultiThreshold":
            _convert_thresholds(model, node)
    for tensor in (*model.graph.input, *model.graph.output):
        shape = model.get_tensor_shape(tensor.name)
        if shape is not None and len(shape) == 3:
            model.set_tensor_shape(tensor.name, [*shape, 1])
    layouts = [a for a in model.graph.quantization_annotation]
    for annotation in layouts:  # layouts were guessed for 3-D tensors ("NWC"): inferred again for 4-D ones
        for entry in list(annotation.quant_parameter_tensor_names):
            if entry.key == "tensor_layout":
                annotation.quant_parameter_tensor_names.remove(entry)
    del model.graph.value_info[:]
    return model.transform(InferShapes()).transform(InferDataLayouts())


def _convert_thresholds(model: ModelWrapper, node) -> None:
    """A MultiThreshold on (N, C, T): channels first (NCHW) once 4-D. Its data_layout came from the quantizer's
    scale (NCW for a per-channel one) or, for a per-tensor one, from a layout qonnx guessed for a 3-D tensor (NWC),
    which is wrong but harmless there: one threshold row serves every channel."""
    from qonnx.custom_op.registry import getCustomOp

    op = getCustomOp(node)
    layout = op.get_nodeattr("data_layout")
    thresholds = model.get_initializer(node.input[1])
    per_tensor = thresholds is not None and thresholds.shape[0] == 1
    if layout in ("", "NCW") or per_tensor:
        op.set_nodeattr("data_layout", "NCHW")
    else:
        raise _refuse(node, f"it thresholds channels last ({layout}) per channel; a Conv1d's sequences are (N, C, T)")
