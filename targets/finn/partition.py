"""Stage 4: cut the HW layers out into FINN's dataflow partition (the accelerator)."""

from __future__ import annotations

from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp


def create_partition(model: ModelWrapper, workdir: Path) -> tuple[ModelWrapper, ModelWrapper]:
    """Returns (parent model with a StreamingDataflowPartition node, the dataflow model)."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition

    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(workdir / "dataflow_partition")))
    partitions = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(partitions) != 1:
        raise RuntimeError(f"expected one dataflow partition, FINN made {len(partitions)}")
    from sdk.onnx_guard import load_onnx_safely

    partition_file = getCustomOp(partitions[0]).get_nodeattr("model")
    dataflow = ModelWrapper(load_onnx_safely(partition_file, "the dataflow partition FINN wrote", finn_ops=True))
    return parent, dataflow


def relocatable_parent(parent: ModelWrapper, dataflow_name: str) -> ModelWrapper:
    """The parent graph with the partition pointing at the packaged dataflow model, not a build path."""
    import copy

    relocated = ModelWrapper(copy.deepcopy(parent.model))
    for node in relocated.get_nodes_by_op_type("StreamingDataflowPartition"):
        getCustomOp(node).set_nodeattr("model", dataflow_name)
    return relocated
