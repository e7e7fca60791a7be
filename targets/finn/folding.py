"""Stage 6: folding - how many processing elements (PE) and SIMD lanes each layer gets.

Two modes:
- target fps: FINN's own SetFolding for a cycles-per-frame target;
- fit: the SDK's search for the highest-throughput folding whose estimated
  resources stay under a utilisation cap of the board. It starts fully folded
  and repeatedly speeds up the layer that bounds throughput, taking the
  cheapest next step (next divisor of SIMD or PE) that keeps every resource
  under the cap. It stops when the bottleneck layer cannot be sped up any more
  within the cap: no other change can raise throughput then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sdk.boards import Board
from sdk.errors import ModelTooLargeError, SDKError
from targets.finn.kernels import base_op_type
from targets.finn.ops import hw_op

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
CAPACITY_KEYS = {"LUT": "lut", "BRAM_18K": "bram18", "URAM": "uram", "DSP": "dsp"}
FOLDING_ATTRS = ["PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode"]
MVAU_WWIDTH_MAX = 80  # FINN's default cap on SIMD * weight bits for SetFolding
MAX_AP_INT_WIDTH = 8191  # HLS ap_int limit: no stream of an HLS layer may be wider


def base_op(node) -> str:
    return base_op_type(node.op_type)


def knobs(node) -> list[tuple[str, int]]:
    """Folding attributes of a node and the dimension each must divide (from the op table)."""
    op = hw_op(node.op_type)
    return [] if op is None else op.knobs(getCustomOp(node).get_nodeattr)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def linked_producer(model: ModelWrapper, node):
    """FINN's rule: a depthwise window generator feeding a VVAU or Pool has SIMD equal to that layer's PE."""
    if base_op(node) not in ("VVAU", "Pool"):
        return None
    producer = model.find_producer(node.input[0])
    if (
        producer is not None
        and base_op(producer) == "ConvolutionInputGenerator"
        and getCustomOp(producer).get_nodeattr("depthwise")
    ):
        return producer
    return None


def next_steps(node) -> list[tuple[str, int, int]]:
    """(attribute, current, next value) for each way to speed this node up by one step."""
    op = getCustomOp(node)
    steps = []
    for attr, dim in knobs(node):
        current = op.get_nodeattr(attr)
        larger = [d for d in _divisors(dim) if d > current]
        if larger:
            steps.append((attr, current, larger[0]))
    types = op.get_nodeattr_types()
    # the RTL window generator doubles as a parallel-window unit once SIMD covers all channels
    if (
        "parallel_window" in types
        and not op.get_nodeattr("parallel_window")
        and op.get_nodeattr("SIMD") == op.get_nodeattr("IFMChannels")
    ):
        steps.append(("parallel_window", 0, 1))
    return steps


def within_hls_limits(node) -> bool:
    """HLS layers cannot be generated with streams wider than ap_int allows."""
    op = getCustomOp(node)
    if not node.op_type.endswith("_hls"):
        return True
    try:
        return op.get_ap_int_max_w() <= MAX_AP_INT_WIDTH
    except Exception:  # FINN raises when the width is over its limit
        return False


def node_cost(node, fpga_part: str) -> tuple[int, dict[str, float]]:
    """Expected cycles and estimated resources of one node at its current folding."""
    op = getCustomOp(node)
    estimate = op.node_res_estimation(fpga_part)
    return int(op.get_exp_cycles()), {r: float(estimate.get(r, 0)) for r in RESOURCES}


def capacity_limits(board: Board, max_util: float) -> dict[str, float]:
    return {r: board.capacity[CAPACITY_KEYS[r]] * max_util for r in RESOURCES}


def _fits(total: dict[str, float], limits: dict[str, float]) -> bool:
    return all(total[r] <= limits[r] + 1e-9 for r in RESOURCES)


@dataclass
class FitResult:
    steps: int
    stop_reason: str
    bottleneck: str
    history: list[dict] = field(default_factory=list)


def set_minimal_folding(model: ModelWrapper) -> None:
    for node in model.graph.node:
        op = getCustomOp(node)
        for attr, _ in knobs(node):
            op.set_nodeattr(attr, 1)
        if "parallel_window" in op.get_nodeattr_types():
            op.set_nodeattr("parallel_window", 0)
        if base_op(node) == "ConvolutionInputGenerator" and op.get_nodeattr("depthwise"):
            op.set_nodeattr("SIMD", 1)


def too_large_error(model: ModelWrapper, board: Board, max_util: float, totals: dict[str, float]) -> ModelTooLargeError:
    limits = capacity_limits(board, max_util)
    rows = [
        f"{r:9s} needs {totals[r]:>12,.0f}  cap {limits[r]:>12,.0f}  "
        f"({totals[r] / max(limits[r], 1e-9):.0%} of the cap)"
        for r in RESOURCES
        if totals[r] > limits[r]
    ]
    return ModelTooLargeError(
        f"The network does not fit {board.display_name} even fully folded (PE = SIMD = 1), "
        f"at {max_util:.0%} utilisation:\n  " + "\n  ".join(rows),
        where=f"board {board.name} ({board.part})",
        fix="choose a larger board (sdk boards --kind fpga), fewer or narrower layers, lower bit widths, "
        "or raise --max-util",
    )


def fit_folding(model: ModelWrapper, board: Board, max_util: float) -> FitResult:
    """Greedy, resource-aware: speed up the bottleneck with the cheapest step that stays under the cap."""
    set_minimal_folding(model)
    nodes = {node.name: node for node in model.graph.node}
    costs = {name: node_cost(node, board.part) for name, node in nodes.items()}
    limits = capacity_limits(board, max_util)

    def totals(table) -> dict[str, float]:
        return {r: sum(res[r] for _, res in table.values()) for r in RESOURCES}

    if not _fits(totals(costs), limits):
        raise too_large_error(model, board, max_util, totals(costs))
    steps, history, relaxed = 0, [], False
    while True:
        name = max(costs, key=lambda n: costs[n][0])
        candidates = [
            (node, linked, *step) for node, linked in _steppable(model, nodes[name]) for step in next_steps(node)
        ]
        best = None
        for node, linked, attr, current, value in candidates:
            changed = _try_step(node, linked, attr, value, board.part)
            legal = within_hls_limits(node) and (linked is None or within_hls_limits(linked))
            _apply(node, linked, attr, current)
            if not legal or changed[name][0] >= costs[name][0]:
                continue
            trial = {**costs, **changed}
            if not _fits(totals(trial), limits):
                continue
            # cheapest step: least added utilisation of the scarcest resource, then fewest cycles
            added = max(
                sum(changed[n][1][r] - costs[n][1][r] for n in changed) / max(limits[r], 1e-9) for r in RESOURCES
            )
            key = (added, changed[name][0])
            if best is None or key < best[0]:
                best = (key, node, linked, attr, value, changed)
        if best is None:
            relax(model, board, limits, costs[name][0])
            costs = {n: node_cost(node, board.part) for n, node in nodes.items()}
            if not relaxed:  # once: what relaxing freed may pay for more steps (again and again would cycle)
                relaxed = True
                continue
            reason = (
                "it is at full parallelism"
                if not candidates
                else "its next step would exceed the utilisation cap or HLS stream width limit"
            )
            return FitResult(steps, f"{name} bounds throughput and {reason}", name, history)
        _, node, linked, attr, value, changed = best
        _apply(node, linked, attr, value)
        costs.update(changed)
        steps += 1
        history.append(
            {"step": steps, "node": node.name, "attribute": attr, "value": value, "cycles": changed[name][0]}
        )


def _steppable(model: ModelWrapper, bottleneck) -> list[tuple]:
    """(node to change, its linked window generator) pairs that can speed up the bottleneck."""
    op = getCustomOp(bottleneck)
    if base_op(bottleneck) == "ConvolutionInputGenerator" and op.get_nodeattr("depthwise"):
        consumer = model.find_consumer(bottleneck.output[0])
        return [(consumer, bottleneck), (bottleneck, None)] if consumer is not None else [(bottleneck, None)]
    return [(bottleneck, linked_producer(model, bottleneck))]


MAX_RELAX_CONFIGS = 512


def relax(model: ModelWrapper, board: Board, limits: dict[str, float], target_cycles: int) -> None:
    """Second pass at fixed throughput: each layer takes its cheapest folding that still meets target_cycles.

    The greedy pass buys speed step by step and can overshoot on layers that
    were once the bottleneck; this gives back what the final throughput does not need.
    """
    import itertools

    for node in model.graph.node:
        op = getCustomOp(node)
        if "parallel_window" in op.get_nodeattr_types() and op.get_nodeattr("parallel_window"):
            continue  # only legal with SIMD = channels: keep
        dims = knobs(node)
        if not dims:
            continue
        linked = linked_producer(model, node)
        choices = list(itertools.product(*[_divisors(dim) for _, dim in dims]))[:MAX_RELAX_CONFIGS]
        current = tuple(op.get_nodeattr(attr) for attr, _ in dims)
        best = None
        for values in choices:
            for (attr, _), value in zip(dims, values):
                _apply(node, linked, attr, value)
            cycles, res = node_cost(node, board.part)
            if linked is not None:
                linked_cycles, linked_res = node_cost(linked, board.part)
                cycles = max(cycles, linked_cycles)
                res = {r: res[r] + linked_res[r] for r in RESOURCES}
            legal = within_hls_limits(node) and (linked is None or within_hls_limits(linked))
            score = sum(res[r] / max(limits[r], 1e-9) for r in RESOURCES)
            if legal and cycles <= target_cycles and (best is None or score < best[0]):
                best = (score, values)
        for (attr, _), value in zip(dims, best[1] if best else current):
            _apply(node, linked, attr, value)


def _apply(node, linked, attr: str, value: int) -> None:
    getCustomOp(node).set_nodeattr(attr, value)
    if linked is not None and attr == "PE":
        getCustomOp(linked).set_nodeattr("SIMD", value)


def _try_step(node, linked, attr: str, value: int, fpga_part: str) -> dict[str, tuple[int, dict[str, float]]]:
    """Costs of the node (and its linked window generator) with attr set to value."""
    _apply(node, linked, attr, value)
    changed = {node.name: node_cost(node, fpga_part)}
    if linked is not None:
        changed[linked.name] = node_cost(linked, fpga_part)
    return changed


def target_fps_folding(model: ModelWrapper, fps: float, clock_mhz: float) -> ModelWrapper:
    """FINN's SetFolding for a frames-per-second target at the board clock."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    if fps <= 0:
        raise SDKError(f"--fps must be positive, got {fps}.", where="--fps", fix="e.g. --fps 10000")
    target_cycles = max(1, int(clock_mhz * 1e6 / fps))
    return model.transform(
        SetFolding(target_cycles_per_frame=target_cycles, mvau_wwidth_max=MVAU_WWIDTH_MAX, two_pass_relaxation=True)
    )


def folding_config(model: ModelWrapper) -> dict:
    """The folding in FINN's own JSON format (folding_config_file of DataflowBuildConfig)."""
    config: dict = {"Defaults": {}}
    for node in model.graph.node:
        op = getCustomOp(node)
        types = op.get_nodeattr_types()
        config[node.name] = {attr: op.get_nodeattr(attr) for attr in FOLDING_ATTRS if attr in types}
    return config


def write_folding_config(model: ModelWrapper, path: Path) -> None:
    path.write_text(json.dumps(folding_config(model), indent=2, sort_keys=True) + "\n")
