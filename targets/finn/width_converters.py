"""FINN's width converters inserted where a stream's width changes, as FINN's stitching does, with their RTL.

The package's graph has none: FINN's stitching inserts them (InsertDWC in step_set_fifo_depths). Inserted and
specialised here the same way, a chain of RTL layers stitches across a width change as FINN's IP would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.finn.rtl_layer import finn_rtllib_ready

CONVERTER_OP = "StreamingDataWidthConverter_rtl"


def with_width_converters(dataflow, fpga_part: str, work_dir: Path):
    """A copy of the dataflow graph with FINN's width converters where a stream's width changes, and the folder of
    each converter's generated RTL (name -> folder)."""
    import copy

    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    layer_of = {node.output[0]: node.name for node in dataflow.graph.node}  # names the transformations may change
    model = ModelWrapper(copy.deepcopy(dataflow.model)).transform(InsertDWC())
    for node in model.graph.node:
        if node.op_type == "StreamingDataWidthConverter":
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    model = model.transform(SpecializeLayers(fpga_part))
    for node in model.graph.node:
        node.name = layer_of.get(node.output[0], "")
    taken = set(layer_of.values())
    folders: dict[str, Path] = {}
    finn_rtllib_ready()
    for node in model.graph.node:
        if node.name:
            continue
        node.name = next(f"{node.op_type}_{k}" for k in range(len(taken) + 1) if f"{node.op_type}_{k}" not in taken)
        taken.add(node.name)
        if node.op_type != CONVERTER_OP:  # FINN kept an HLS converter: a segment ends there
            continue
        op = getCustomOp(node)
        widths = f"{op.get_instream_width(0)}to{op.get_outstream_width(0)}"
        folder = Path(work_dir) / "width_converters" / f"{node.name}-{widths}"
        folder.mkdir(parents=True, exist_ok=True)
        op.set_nodeattr("code_gen_dir_ipgen", str(folder))
        op.generate_hdl(model, fpga_part, 10.0)  # a template of the two widths: the part and clock are not used
        folders[node.name] = folder
    return model, folders


def converter_tensors(model, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`tensors` with each inserted width converter's output: its input, unchanged (only the beats differ)."""
    tensors = dict(tensors)
    for node in model.graph.node:
        if node.op_type == CONVERTER_OP and node.output[0] not in tensors and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    return tensors
