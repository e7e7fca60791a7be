"""FINN's flow as named steps, each `(model, config) -> model`, the way FINN's own builder runs them.

FINN's `build_dataflow` cannot be imported without Vivado, so the SDK composes
the same transformations itself, one stage file each (frontend, streamline,
hw_layers, partition, specialize, folding, estimate, codegen). `sdk check`
runs the steps up to `check_mapping`; a deploy runs them all. What a step
produces besides the model (the parent graph, the fit result, the estimate)
is recorded in the `FinnConfig` it is handed, with the time each step took.

Each step runs under a time limit (sdk.time_limit: SDK_STEP_TIMEOUT seconds, default 600): FINN's
transformations repeat until nothing changes, and a graph that keeps changing (a NaN threshold is never equal to
itself) would loop forever. The limit turns that into an SDK error naming the step. The SDK's models take seconds
per step; the default is generous.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from sdk.boards import Board
from sdk.errors import SDKError, UnsupportedLayersError, UnsupportedModelError
from sdk.graph_names import inherit, mark_nodes, marks_by_tensor, marks_follow_transformations
from sdk.time_limit import STEP_TIMEOUT_VARIABLE, StepTimeout, step_timeout, time_limit
from targets.finn import (
    accumulators,
    codegen,
    estimate,
    folding,
    frontend,
    graph_cache,
    hw_layers,
    partition,
    shortcuts,
    specialize,
    streamline,
)
from targets.finn.environment import prepare_finn
from targets.finn.flow import DEFAULT_MAX_UTIL

FINN_REFERENCE_SAMPLES = 8  # FINN's python execution runs one sample at a time: a few suffice per layer


def _timed_out(name: str, seconds: float, cfg: FinnConfig) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"FINN's step '{name}' did not finish within {seconds:g} s and was stopped; FINN's transformations repeat "
        "until the graph stops changing, and on this model it did not.",
        where=f"--target {cfg.board.name}, FINN step {name}",
        fix="check the model for NaN or infinite values and layers FINN does not support (`sdk check --target "
        f"BOARD -v`); if the model is only large, allow more time: {STEP_TIMEOUT_VARIABLE}=SECONDS "
        f"(now {seconds:g})",
    )


@dataclass
class FinnConfig:
    """What the steps need, and what they record on the way (like FINN's DataflowBuildConfig plus its outputs)."""

    board: Board
    workdir: Path  # FINN's build folder for this run
    fps: float | None = None  # throughput target: FINN's SetFolding; None: the --fit search
    max_util: float = DEFAULT_MAX_UTIL  # utilisation cap of the fit search (LUT, BRAM18, URAM, DSP)
    clock_mhz: float | None = None  # None: the board's clock
    sources_dir: Path | None = None  # where generate_sources writes HLS C++ / RTL; None: skip code generation
    rtlsim: bool = False  # prefer the RTL variants the SDK can simulate in Verilator
    # recorded by the steps
    parent: ModelWrapper | None = None  # the network around the accelerator (host ops)
    dataflow_hw: ModelWrapper | None = None  # the accelerator before specialisation: what FINN executes in python
    fit: folding.FitResult | None = None
    folding_mode: str = ""
    network: estimate.NetworkEstimate | None = None
    sources: dict[str, list[str]] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    cached_steps: list[str] = field(default_factory=list)  # steps whose result came from the SDK's cache
    widened: list[accumulators.Widened] = field(default_factory=list)  # accumulators FINN sized too narrow
    shortcut_fifos: list[shortcuts.ShortcutFifo] = field(default_factory=list)  # residual shortcuts' FIFOs

    @property
    def clock(self) -> float:
        return self.clock_mhz or self.board.clock_mhz


def qonnx_to_finn(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    unsupported = frontend.unsupported_nodes(model)  # named before FINN's transformations trip over them
    if unsupported:
        raise UnsupportedLayersError(unsupported, cfg.board.name, alternative="tflite")
    return frontend.qonnx_to_finn(model)


def streamline_model(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    """FINN's streamlining, or its result for the same graph from an earlier deploy (targets/finn/graph_cache.py)."""
    code = [Path(streamline.__file__), Path(frontend.__file__)]
    model, hit = graph_cache.cached("streamlined", model, streamline.streamline, code)
    if hit:
        cfg.cached_steps.append("streamline")
    return model


def convert_to_hw(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    # --rtlsim: standalone thresholds (FINN's build option), so that matrix layers can be RTL and run in Verilator
    return hw_layers.convert_to_hw(model, standalone_thresholds=cfg.rtlsim)


def check_mapping(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    """Every layer FINN cannot map (or maps wrongly) is named here, before any long work."""
    unmapped = hw_layers.unmapped_layers(model)
    if unmapped:
        raise UnsupportedLayersError(unmapped, cfg.board.name, alternative="tflite")
    return model


def create_dataflow_partition(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    cfg.parent, cfg.dataflow_hw = partition.create_partition(model, cfg.workdir)
    return cfg.dataflow_hw


def specialize_layers(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    if cfg.rtlsim:
        from targets.finn.rtl_verify import prefer_rtl

        prefer_rtl(model)
    return specialize.specialize(model, cfg.board.part)


def minimize_bit_widths(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth

    model = model.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    model, cfg.widened = accumulators.widen_accumulators(model)  # where FINN's are too narrow
    return model


def set_folding(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    if cfg.fps:
        cfg.folding_mode = f"target {cfg.fps:,.0f} fps (FINN SetFolding)"
        return folding.target_fps_folding(model, cfg.fps, cfg.clock)
    cfg.fit = folding.fit_folding(model, cfg.board, cfg.max_util, clock_mhz=cfg.clock)
    cfg.folding_mode = f"fit: highest throughput under {cfg.max_util:.0%} utilisation"
    return model


def estimate_performance(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    cfg.network = estimate.estimate_network(model, cfg.board, cfg.clock)
    cfg.shortcut_fifos = shortcuts.shortcut_fifos(model)  # the folding is final: words per frame are known
    estimate.refuse_over_capacity(cfg.network, cfg.board, cfg.folding_mode, cfg.fps)
    return model


def generate_sources(model: ModelWrapper, cfg: FinnConfig) -> ModelWrapper:
    if cfg.sources_dir is not None:
        cfg.sources = codegen.generate_sources(model, cfg.board.part, cfg.clock, cfg.sources_dir)
    return model


Step = Callable[[ModelWrapper, FinnConfig], ModelWrapper]

# (name, what the progress bar says, step): the order FINN's builder runs its steps in.
STEPS: list[tuple[str, str, Step]] = [
    ("qonnx_to_finn", "QONNX -> FINN", qonnx_to_finn),
    ("streamline", "streamline", streamline_model),
    ("convert_to_hw", "convert to HW layers", convert_to_hw),
    ("check_mapping", "check every layer is mapped", check_mapping),
    ("create_dataflow_partition", "dataflow partition", create_dataflow_partition),
    ("specialize_layers", "specialise layers for the part", specialize_layers),
    ("minimize_bit_widths", "minimise bit widths", minimize_bit_widths),
    ("set_folding", "folding", set_folding),
    ("minimize_bit_widths_after_folding", "minimise bit widths", minimize_bit_widths),
    ("estimate", "estimates", estimate_performance),
    ("generate_sources", "generate HLS C++ / RTL", generate_sources),
]
STEP_NAMES = [name for name, _, _ in STEPS]
CHECK_STEP = "check_mapping"  # `sdk check` runs up to and including this step


def run_steps(
    model: ModelWrapper,
    cfg: FinnConfig,
    start: str | None = None,
    stop: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelWrapper:
    """Run the steps from `start` to `stop` (both included, names from STEP_NAMES), timing each and stopping one
    that takes longer than SDK_STEP_TIMEOUT (an UnsupportedModelError naming it)."""
    first = STEP_NAMES.index(start) if start else 0
    last = STEP_NAMES.index(stop) if stop else len(STEPS) - 1
    limit = step_timeout()
    prepare_finn(cfg.workdir / "finn")
    caller_random = random.getstate()
    try:
        for name, label, step in STEPS[first : last + 1]:
            if progress is not None:
                progress(label)
            began = time.perf_counter()
            # qonnx names the tensors it adds with Python's random: seeded per step, the names are the same on
            # every deploy of the model, whatever ran before in the process and whether a step came from the cache
            random.seed(f"sdk-finn-step-{name}")
            try:
                marks = marks_by_tensor(model.graph)
                with time_limit(limit), marks_follow_transformations():  # FINN's nodes keep the user's node names
                    model = step(model, cfg)
                inherit(marks, model)  # and those a step made without a transformation
            except StepTimeout:
                raise _timed_out(name, limit, cfg) from None
            except SDKError:
                raise
            except Exception as exc:  # FINN / qonnx met a pattern they do not handle: the model's limit, not a crash
                raise _may_take_tflite(
                    UnsupportedModelError(
                        f"FINN's step '{name}' cannot process this model: {type(exc).__name__}: {exc}".rstrip(": "),
                        where=f"--target {cfg.board.name}, FINN step {name}",
                        fix="change the layer this step stopped at (rerun with -v for FINN's own message and "
                        "traceback); `sdk check --target BOARD` runs the same steps up to the mapping check",
                    )
                ) from exc
            cfg.step_seconds[name] = round(time.perf_counter() - began, 3)
    finally:
        random.setstate(caller_random)  # a build script's own random numbers are not ours to change
    return model


def _may_take_tflite(error: UnsupportedModelError) -> UnsupportedModelError:
    error.alternative = "tflite"  # named in the fix only if the TFLite check takes the model (sdk/advice.py)
    return error


def load_qonnx(model_path: Path) -> ModelWrapper:
    """The graph, once sdk.onnx_guard has checked it: no library imports a module a node's domain names. Its nodes
    are marked with their names (sdk.graph_names), which FINN's renaming steps keep for every message."""
    from sdk.onnx_guard import load_onnx_safely

    model = ModelWrapper(load_onnx_safely(model_path, str(model_path)))
    mark_nodes(model.graph)
    return model


def check(model_path: Path, board: Board, workdir: Path) -> ModelWrapper:
    """The steps up to the mapping check, which raises UnsupportedLayersError naming every layer FINN cannot map;
    then, to the bit widths, whether any folding fits the board at all (ModelTooLargeError, as every deploy
    would refuse; a second or less, no search)."""
    cfg = FinnConfig(board, workdir)
    model = run_steps(load_qonnx(model_path), cfg, stop=CHECK_STEP)
    model = run_steps(model, cfg, start=STEP_NAMES[STEP_NAMES.index(CHECK_STEP) + 1], stop="minimize_bit_widths")
    try:
        folding.check_fits_board(model, board)
    except SDKError:
        raise
    except Exception as exc:  # FINN's estimators on a layer they do not handle
        raise UnsupportedModelError(
            f"FINN cannot estimate this model's resources: {type(exc).__name__}: {exc}".rstrip(": "),
            where=f"--target {board.name}, FINN's resource estimates",
            fix="rerun with -v for FINN's own message and traceback",
        ) from exc
    return model


def finn_layer_outputs(dataflow_hw: ModelWrapper, x: np.ndarray) -> list[np.ndarray]:
    """FINN's own python execution of the abstract HW layers, one sample at a time: the reference per layer."""
    from finn.core.onnx_exec import execute_onnx

    name = dataflow_hw.graph.input[0].name
    outputs = [node.output[0] for node in dataflow_hw.graph.node]
    per_sample = [
        execute_onnx(dataflow_hw, {name: x[i : i + 1].astype(np.float32)}, return_full_exec_context=True)
        for i in range(len(x))
    ]
    return [np.concatenate([ctx[t] for ctx in per_sample]).astype(np.int64) for t in outputs]
