"""The FPGA target: FINN's transformations, composed stage by stage, into a hardware-ready package.

check    -> frontend, streamline, hw_layers (every unmapped layer named, before long work)
compile  -> partition, specialize, folding, bit-width minimisation, codegen
estimate -> estimate
simulate -> sdk.sim (bit-exact; FINN's python execution of the same layers as the reference)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sdk.boards import Board
from sdk.errors import SDKError
from targets.finn import estimate, folding, frontend, hw_layers, partition, specialize, streamline
from targets.finn.environment import prepare_finn

FINN_REFERENCE_SAMPLES = 8  # FINN's python execution runs one sample at a time: a few suffice per layer


class UnsupportedLayersError(SDKError):
    """Layers FINN cannot map to hardware; listed before any long work starts."""

    def __init__(self, layers: list[hw_layers.UnmappedLayer], board: Board, model_path: Path):
        self.layers = layers
        lines = [f"{u.name} ({u.op_type}): {u.why}; fix: {u.fix}" for u in layers]
        super().__init__(f"{len(layers)} layer(s) of the model cannot be mapped correctly to FINN hardware layers:\n  " + "\n  ".join(lines),
                         where=f"{model_path} -> {board.name}", fix="change the model as suggested, or deploy it to a TFLite target")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "layers": [u.to_dict() for u in self.layers]}


@dataclass
class FinnOptions:
    fps: float | None = None      # throughput target: FINN's SetFolding
    max_util: float = 0.8         # utilisation cap of the --fit search (LUT, BRAM18, URAM, DSP)
    clock_mhz: float | None = None


@dataclass
class FinnBuild:
    """What the stages produced, kept in memory and in the work folder."""

    board: Board
    clock_mhz: float
    parent: ModelWrapper
    dataflow: ModelWrapper          # specialised, folded: what is deployed
    dataflow_hw: ModelWrapper       # the same layers before specialisation: what FINN can execute in python
    estimate: estimate.NetworkEstimate
    folding_mode: str
    fit: folding.FitResult | None
    max_util: float | None          # the cap of the fit search (None with --fps)
    sources: dict[str, list[str]] = field(default_factory=dict)


def check(model_path: Path, board: Board, workdir: Path) -> ModelWrapper:
    """Stages 1-3; raises UnsupportedLayersError naming every layer FINN cannot map."""
    prepare_finn(workdir / "finn")
    model = frontend.qonnx_to_finn(ModelWrapper(str(model_path)))
    model = streamline.streamline(model)
    model = hw_layers.convert_to_hw(model)
    unmapped = hw_layers.unmapped_layers(model)
    if unmapped:
        raise UnsupportedLayersError(unmapped, board, model_path)
    return model


def _minimize_bit_widths(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth

    return model.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())


def compile_model(hw_model: ModelWrapper, board: Board, options: FinnOptions, workdir: Path, progress) -> FinnBuild:
    """Stages 4-8 (and 9, code generation, into workdir/sources)."""
    clock = options.clock_mhz or board.clock_mhz
    progress("dataflow partition")
    parent, dataflow_hw = partition.create_partition(hw_model, workdir)
    progress(f"specialise layers for {board.part}")
    dataflow = _minimize_bit_widths(specialize.specialize(dataflow_hw, board.part))
    fit = None
    if options.fps:
        progress(f"folding for {options.fps:,.0f} fps (FINN SetFolding)")
        dataflow = folding.target_fps_folding(dataflow, options.fps, clock)
        mode = f"target {options.fps:,.0f} fps (FINN SetFolding)"
    else:
        progress(f"folding: fit under {options.max_util:.0%} of {board.display_name}")
        fit = folding.fit_folding(dataflow, board, options.max_util)
        mode = f"fit: highest throughput under {options.max_util:.0%} utilisation"
    dataflow = _minimize_bit_widths(dataflow)
    progress("estimates")
    network = estimate.estimate_network(dataflow, board, clock)
    return FinnBuild(board, clock, parent, dataflow, dataflow_hw, network, mode, fit, None if options.fps else options.max_util)


def finn_layer_outputs(dataflow_hw: ModelWrapper, x: np.ndarray) -> list[np.ndarray]:
    """FINN's own python execution of the abstract HW layers, one sample at a time: the reference per layer."""
    from finn.core.onnx_exec import execute_onnx

    name = dataflow_hw.graph.input[0].name
    outputs = [node.output[0] for node in dataflow_hw.graph.node]
    per_sample = [execute_onnx(dataflow_hw, {name: x[i:i + 1].astype(np.float32)}, return_full_exec_context=True) for i in range(len(x))]
    return [np.concatenate([ctx[t] for ctx in per_sample]).astype(np.int64) for t in outputs]


def host_side_input(parent: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Apply the layout ops before the dataflow partition (the host's NCHW -> NHWC)."""
    for node in parent.graph.node:
        if node.op_type == "StreamingDataflowPartition":
            break
        if node.op_type != "Transpose":
            raise SDKError(f"Unexpected host-side op {node.op_type} before the accelerator.", where=node.name, fix="report this model")
        perm = next(a.ints for a in node.attribute if a.name == "perm")
        x = np.transpose(x, perm)
    return x


def invert_output_ops(parent: ModelWrapper, y: np.ndarray) -> np.ndarray:
    """Undo the float ops after the dataflow partition: the QAT output as the integer the accelerator emits."""
    nodes = list(parent.graph.node)
    index = next(i for i, n in enumerate(nodes) if n.op_type == "StreamingDataflowPartition")
    x = y.astype(np.float64)
    inverse = {"Mul": np.divide, "Div": np.multiply, "Add": np.subtract, "Sub": np.add}
    for node in reversed(nodes[index + 1:]):
        constant = next(parent.get_initializer(i) for i in node.input if parent.get_initializer(i) is not None)
        x = inverse[node.op_type](x, constant.astype(np.float64))
    return x


def relocatable_parent(parent: ModelWrapper, dataflow_name: str) -> ModelWrapper:
    """The parent graph with the partition pointing at the packaged dataflow model, not a build path."""
    relocated = ModelWrapper(copy.deepcopy(parent.model))
    for node in relocated.get_nodes_by_op_type("StreamingDataflowPartition"):
        getCustomOp(node).set_nodeattr("model", dataflow_name)
    return relocated
