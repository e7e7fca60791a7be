"""Stage 5: choose HLS or RTL implementations of each HW layer for the board's FPGA part."""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames


def specialize(model: ModelWrapper, fpga_part: str) -> ModelWrapper:
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    return model.transform(SpecializeLayers(fpga_part)).transform(GiveUniqueNodeNames())
