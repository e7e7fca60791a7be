"""Stage 1: QONNX -> FINN-ONNX, then FINN's tidy-up (shapes, constants, names, datatypes)."""
from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveStaticGraphInputs
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model


def tidy_up(model: ModelWrapper) -> ModelWrapper:
    for transformation in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(),
                           InferDataTypes(), RemoveStaticGraphInputs()):
        model = model.transform(transformation)
    return model


def qonnx_to_finn(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    model = cleanup_model(model)
    model = model.transform(ConvertQONNXtoFINN())
    return tidy_up(model)
