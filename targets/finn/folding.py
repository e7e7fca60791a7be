"""Stage 6: folding - how many processing elements (PE) and SIMD lanes each layer gets, and its memory styles.

Two modes:
- target fps: FINN's own SetFolding for a cycles-per-frame target;
- fit: the SDK's search for the highest-throughput folding whose estimated
  resources (FINN's own estimators) stay under a utilisation cap of the board.

The fit search, in three parts:
1. Per layer (a depthwise window generator joins the VVAU / Pool it feeds,
   whose PE it must follow), every legal folding: each SIMD x PE pair of
   divisors (any size, 784 or 576 as well as 64), parallel_window, and each
   memory style (weights in BRAM, LUTRAM or URAM, thresholds in BRAM or
   LUTRAM, multipliers in LUTs or DSPs). Each is estimated once, with FINN's
   estimator on that layer alone, and only the Pareto front of (cycles, LUT,
   BRAM18, URAM, DSP) is kept. Foldings over FINN's limits (HLS streams wider
   than MAX_AP_INT_WIDTH, depthwise rules) are never candidates.
2. The throughput is set by the slowest layer, so the search bisects on the
   cycles per frame T over every cycle count some layer can take. For one T,
   each layer may take any of its foldings with at most T cycles; a choice that
   keeps all four resources under the cap is found by Lagrangian pricing (each
   layer takes its cheapest folding at prices that rise on the resources over
   the cap) and, where pricing finds none, decided exactly by a small integer
   program (the layers' Pareto fronts keep it to a few hundred variables).
3. Where it stops, the next faster T is probed to name what stopped it: the
   layer, and the resource(s) over the cap, or the stream width limit, or full
   parallelism. The same search with the cap at 100 % and the fully unfolded
   bound tell the user what a bigger cap or a bigger board would give.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sdk.boards import Board
from sdk.errors import ModelTooLargeError, SDKError
from targets.finn.kernels import base_op_type
from targets.finn.ops import hw_op, rtl_of

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
CAPACITY_KEYS = {"LUT": "lut", "BRAM_18K": "bram18", "URAM": "uram", "DSP": "dsp"}
FOLDING_ATTRS = [
    "PE",
    "SIMD",
    "parallel_window",
    "ram_style",
    "ram_style_thresholds",
    "resType",
    "mem_mode",
    "runtime_writeable_weights",
]
STYLE_ATTRS = ("ram_style", "ram_style_thresholds", "resType")  # memory / multiplier styles the fit search tries
MVAU_WWIDTH_MAX = 80  # FINN's default cap on SIMD * weight bits for SetFolding
MAX_AP_INT_WIDTH = 8191  # HLS ap_int limit: no stream of an HLS layer may be wider
PRICE_ROUNDS = 60  # Lagrangian pricing rounds per probed cycle target
MILP_SECONDS = 10.0  # time limit of the exact check of one cycle target (it takes milliseconds)


def base_op(node) -> str:
    return base_op_type(node.op_type)


def knobs(node) -> list[tuple[str, int]]:
    """Folding attributes of a node and the dimension each must divide (from the op table)."""
    op = hw_op(node.op_type)
    return [] if op is None else op.knobs(getCustomOp(node).get_nodeattr)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def linked_producer(model: ModelWrapper, node):
    """FINN's rule: a depthwise window generator feeding a VVAU or Pool has SIMD equal to that layer's PE (the ops'
    `takes_linked_window` and `follows_consumer`)."""
    op = hw_op(node.op_type)
    if op is None or not op.takes_linked_window:
        return None
    producer = model.find_producer(node.input[0])
    follows = None if producer is None else hw_op(producer.op_type)
    if (
        follows is not None
        and follows.follows_consumer
        and follows.follows_consumer(getCustomOp(producer).get_nodeattr)
    ):
        return producer
    return None


def within_hls_limits(node, op=None) -> bool:
    """HLS layers cannot be generated with streams wider than ap_int allows."""
    if not node.op_type.endswith("_hls"):
        return True
    op = op or getCustomOp(node)
    try:
        return op.get_ap_int_max_w() <= MAX_AP_INT_WIDTH
    except Exception:  # FINN raises when the width is over its limit
        return False


def node_cost(node, fpga_part: str, op=None) -> tuple[int, dict[str, float]]:
    """Expected cycles and estimated resources of one node at its current folding."""
    op = op or getCustomOp(node)
    estimate = op.node_res_estimation(fpga_part)
    return int(op.get_exp_cycles()), {r: float(estimate.get(r, 0)) for r in RESOURCES}


def capacity_limits(board: Board, max_util: float) -> dict[str, float]:
    return {r: board.capacity[CAPACITY_KEYS[r]] * max_util for r in RESOURCES}


@dataclass
class FitResult:
    """What the fit search chose and why it stopped (adapter.py reports steps and stop_reason)."""

    steps: int  # cycle targets probed
    stop_reason: str  # reads after "stopped because"
    bottleneck: str  # the layer with the most cycles per frame
    history: list[dict] = field(default_factory=list)  # every probe: cycles, fits, utilisation of its best choice
    limit: str = ""  # what stopped it: "resource", "stream_width" or "unfolded"
    limit_layer: str = ""  # the layer that would have to get faster
    limit_resources: list[str] = field(default_factory=list)  # over the cap at the next faster point
    cycles: int = 0  # cycles per frame of the bottleneck
    fps: float = 0.0
    clock_mhz: float = 0.0
    binding: str = ""  # the resource closest to its cap
    utilisation: dict[str, float] = field(default_factory=dict)  # of the board, per resource (FINN's names)
    next_cycles: int | None = None  # the next faster cycle count that did not fit
    next_utilisation: dict[str, float] = field(default_factory=dict)  # its best choice, of the board
    fps_at_full_board: float = 0.0  # the same search with the cap at 100 %
    fps_unfolded: float = 0.0  # every layer at its fastest legal folding, resources ignored
    fps_without_width_limit: float = 0.0  # the same if HLS streams had no width limit
    foldings: int = 0  # (layer, folding) pairs estimated
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "history"} | {"probes": self.history}


def over_limit_rows(needs: dict[str, float], limits: dict[str, float], of: str) -> list[str]:
    """The table of an over-full design: one row per resource whose need exceeds its limit ("cap" or "board")."""
    rows = []
    for name, need in needs.items():
        limit = limits[name]
        if need <= limit:
            continue
        share = f"{need / limit:.0%} of the {of}" if limit > 0 else f"the {of} has none"
        rows.append(f"{name.upper():9s} needs {need:>12,.0f}  {of} {limit:>12,.0f}  ({share})")
    return rows


def too_large_error(model: ModelWrapper, board: Board, max_util: float, totals: dict[str, float]) -> ModelTooLargeError:
    of = "board" if max_util >= 1 else "cap"
    rows = over_limit_rows(totals, capacity_limits(board, max_util), of)
    return ModelTooLargeError(
        f"The network does not fit {board.display_name} even fully folded (PE = SIMD = 1, "
        f"cheapest memory styles), at {max_util:.0%} utilisation:\n  " + "\n  ".join(rows),
        where=f"board {board.name} ({board.part})",
        fix="choose a larger board (sdk boards --kind fpga), fewer or narrower layers, lower bit widths"
        + (", or raise --max-util" if max_util < 1 else ""),
    )


# --------------------------------------------------------------------------------------------------
# part 1: every legal folding of each layer, estimated once


def _memoised(node):
    """FINN's op for node, its attributes held in a dict: FINN's estimators re-read them dozens of times per
    call, and the search sets thousands of trial values; neither touches the graph (fit_folding writes the
    chosen ones). The input data types do not change during the search: read once."""
    op = getCustomOp(node)
    read, input_type, memo, types = op.get_nodeattr, op.get_input_datatype, {}, {}

    def get(name):
        if name not in memo:
            memo[name] = read(name)
        return memo[name]

    def put(name, value):
        memo[name] = value

    def get_input_datatype(ind=0):
        if ind not in types:
            types[ind] = input_type(ind)
        return types[ind]

    op.get_nodeattr, op.set_nodeattr, op.get_input_datatype = get, put, get_input_datatype
    return op


@dataclass
class _Unit:
    """One layer (with its linked window generator): its candidate foldings as arrays."""

    nodes: list
    settings: list[dict[str, dict]]  # per folding: node name -> {attribute: value}
    cycles: np.ndarray  # (n,) cycles per frame (the slower node of the unit)
    res: np.ndarray  # (n, 4) LUT, BRAM18, URAM, DSP
    width_limited: int | None  # fewest cycles of a folding refused for the HLS stream width

    @property
    def name(self) -> str:
        return self.nodes[0].name


def _units(model: ModelWrapper) -> list[list]:
    """Layers in graph order; a depthwise window generator is part of the layer whose PE it follows."""
    linked = {}
    for node in model.graph.node:
        producer = linked_producer(model, node)
        if producer is not None:
            linked[producer.name] = node
    groups = []
    for node in model.graph.node:
        if node.name in linked:
            continue
        producer = linked_producer(model, node)
        groups.append([node] if producer is None else [node, producer])
    return groups


def _parallel_settings(group, ops) -> list[dict[str, dict]]:
    """Every (SIMD, PE, parallel_window) assignment FINN allows for the layer (divisors; depthwise rules)."""
    main, op = group[0], ops[0]
    dims = knobs(main)
    types = op.get_nodeattr_types()
    settings = []
    spec = hw_op(main.op_type)
    for values in itertools.product(*[_divisors(dim) for _, dim in dims]):
        own = dict(zip([attr for attr, _ in dims], values))
        window_simd = spec is not None and spec.simd_reads_window and own.get("SIMD", 1) > 1
        if window_simd and own["PE"] != dict(dims)["PE"]:
            continue  # FINN: the window generator needs the layer's PE fully unfolded before its SIMD grows
        setting = {main.name: own}
        if len(group) > 1:  # the depthwise window generator follows the consumer's PE
            swg, swg_types = group[1], ops[1].get_nodeattr_types()
            linked = {"SIMD": own["PE"]}
            if "parallel_window" in swg_types:
                linked["parallel_window"] = int(window_simd)
            elif window_simd:
                continue  # only the RTL window generator has the parallel window the layer's SIMD needs
            setting[swg.name] = linked
        if "parallel_window" in types and not op.get_nodeattr("depthwise"):
            own["parallel_window"] = 0
            if own.get("SIMD") == op.get_nodeattr("IFMChannels"):  # parallel output needs SIMD = channels
                settings.append({main.name: {**own, "parallel_window": 1}})
        settings.append(setting)
    return settings


def _style_options(model: ModelWrapper, node, op, board: Board) -> list[tuple[str, list[dict]]]:
    """Memory and multiplier styles to try, FINN's own choice first (kept on a tie): per attribute, the
    attribute assignments of each value (URAM weights bring the attributes they need along)."""
    types = op.get_nodeattr_types()
    options = []
    for attr in STYLE_ATTRS:
        if attr not in types or len(types[attr]) < 4:
            continue
        if attr == "resType" and not node.op_type.endswith("_hls"):
            continue  # RTL compute units fix their own multipliers
        current = op.get_nodeattr(attr)
        values = [current] + sorted(v for v in types[attr][3] if v not in ("auto", current))
        writeable = _writeable_weights(model, op, board) if attr == "ram_style" and "ultra" in values else {}
        if not board.capacity["uram"] or writeable is None:
            values = [v for v in values if v != "ultra" or v == current]
        assignments = []
        for value in values:
            extra = (
                {} if not writeable else writeable if value == "ultra" else {a: op.get_nodeattr(a) for a in writeable}
            )
            assignments.append({attr: value, **extra})
        if len(assignments) > 1:
            options.append((attr, assignments))
    return options


def _writeable_weights(model: ModelWrapper, op, board: Board) -> dict | None:
    """What URAM weights bring along: on UltraScale+ FINN needs them writeable at runtime, and then
    the deploy's second bit-width pass sizes the accumulator for any weights (more LUTs). None where
    that would change the layer's output type (its consumer would change too): no URAM there."""
    from finn.util.basic import is_versal

    types = op.get_nodeattr_types()
    if (
        "runtime_writeable_weights" not in types
        or is_versal(board.part)
        or op.get_nodeattr("runtime_writeable_weights")
    ):
        return {}
    if "accDataType" not in types or not hasattr(op, "minimize_accumulator_width"):
        return {"runtime_writeable_weights": 1}
    saved = {a: op.get_nodeattr(a) for a in ("runtime_writeable_weights", "accDataType", "outputDataType")}
    op.set_nodeattr("runtime_writeable_weights", 1)
    try:
        op.minimize_accumulator_width(model)
        widened = {a: op.get_nodeattr(a) for a in saved}
    except Exception:  # FINN cannot size it: no URAM for this layer
        widened = None
    for attr, value in saved.items():
        op.set_nodeattr(attr, value)
    if widened is None or widened["outputDataType"] != saved["outputDataType"]:
        return None
    return widened


def _pareto(cycles: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Indices of the foldings no other folding beats (fewer or equal cycles and resources); first kept on a tie."""
    points = np.column_stack([cycles, res])
    keep = np.ones(len(points), bool)
    for i in range(len(points)):
        if not keep[i]:
            continue
        le = (points <= points[i]).all(1)
        lt = (points < points[i]).any(1)
        equal = le & ~lt
        equal[: i + 1] = False
        keep &= ~equal  # later duplicates of i
        if (le & lt & keep).any():
            keep[i] = False
    return np.flatnonzero(keep)


def _enumerate(model: ModelWrapper, group, board: Board) -> tuple[_Unit, int]:
    """Every legal folding of one layer, estimated with FINN's estimators; the Pareto front kept."""
    ops = [_memoised(node) for node in group]
    styles = [_style_options(model, node, op, board) for node, op in zip(group, ops)]
    settings, cycles, res, width_limited, estimated = [], [], [], None, 0
    for parallel in _parallel_settings(group, ops):
        per_node, unit_cycles, legal, wide_any = [], 0, True, False
        for node, op, node_styles in zip(group, ops, styles):
            for attr, value in parallel.get(node.name, {}).items():
                op.set_nodeattr(attr, value)
            try:
                node_cycles = int(op.get_exp_cycles())
                wide = not within_hls_limits(node, op)
            except Exception:  # an assignment FINN's own checks refuse
                legal = False
                break
            rtl = rtl_of(node.op_type)
            if rtl is not None and rtl.writable is not None and not rtl.writable(op):
                legal = False  # FINN could not write this layer's RTL (a window generator's) at this folding
                break
            unit_cycles = max(unit_cycles, node_cycles)
            if wide:
                legal, wide_any = False, True
                continue
            variants = []  # (style attrs, resources) of this node at this parallelism
            for assignments in itertools.product(*[values for _, values in node_styles]):
                chosen = {attr: value for assignment in assignments for attr, value in assignment.items()}
                for attr, value in chosen.items():
                    op.set_nodeattr(attr, value)
                estimate = op.node_res_estimation(board.part)
                estimated += 1
                variants.append((chosen, np.array([float(estimate.get(r, 0)) for r in RESOURCES])))
            front = _pareto(np.zeros(len(variants)), np.array([v[1] for v in variants]))
            per_node.append(
                [(node.name, {**parallel.get(node.name, {}), **variants[i][0]}, variants[i][1]) for i in front]
            )
        if not legal:
            if wide_any:
                width_limited = unit_cycles if width_limited is None else min(width_limited, unit_cycles)
            continue
        for combo in itertools.product(*per_node):
            settings.append({name: attrs for name, attrs, _ in combo})
            cycles.append(unit_cycles)
            res.append(sum(r for _, _, r in combo))
    if not settings:  # no knobs, or nothing legal: the layer as it is
        cycles_now, res_now = node_cost(group[0], board.part)
        for node in group[1:]:
            c, r = node_cost(node, board.part)
            cycles_now, res_now = max(cycles_now, c), {k: res_now[k] + r[k] for k in RESOURCES}
        settings, cycles, res = [{}], [cycles_now], [np.array([res_now[r] for r in RESOURCES])]
    cycles_arr, res_arr = np.array(cycles, dtype=np.int64), np.array(res, dtype=float)
    order = np.argsort(cycles_arr, kind="stable")  # fastest first: on equal price the faster folding wins
    cycles_arr, res_arr, settings = cycles_arr[order], res_arr[order], [settings[i] for i in order]
    front = _pareto(cycles_arr, res_arr)
    return _Unit(group, [settings[i] for i in front], cycles_arr[front], res_arr[front], width_limited), estimated


# --------------------------------------------------------------------------------------------------
# part 2: the fastest cycle target under the cap


@dataclass
class _Probe:
    cycles: int
    pick: list[int] | None  # a folding index per unit that fits, or None
    usage: np.ndarray  # fraction of the cap per resource of the best choice found (fits or not)
    missing: str | None = None  # a layer that has no folding this fast under the cap on its own


def _probe(units: list[_Unit], target: int, limits: np.ndarray) -> _Probe:
    """Can every layer run in at most `target` cycles with all resources under `limits`?

    Lagrangian pricing answers most probes in microseconds; where it finds no
    choice, a small integer program (HiGHS, through scipy) decides exactly, so
    the bisection never stops early on a heuristic miss.
    """
    scale = np.where(limits > 0, limits, 1.0)
    candidates, normed = [], []
    for unit in units:
        idx = np.flatnonzero((unit.cycles <= target) & (unit.res <= limits + 1e-9).all(1))
        if not len(idx):  # report the layer's own least over-the-cap folding
            alone = unit.res[unit.cycles <= target] / np.where(limits > 0, limits, np.inf)
            return _Probe(target, None, alone[np.argmin(alone.max(1))], unit.name)
        candidates.append(idx)
        normed.append(unit.res[idx] / scale)
    prices = np.ones(len(RESOURCES))
    for _ in range(PRICE_ROUNDS):
        pick = [int(np.argmin(n @ prices)) for n in normed]
        usage = sum(n[p] for n, p in zip(normed, pick))
        if usage.max() <= 1 + 1e-9:
            return _Probe(target, [int(c[p]) for c, p in zip(candidates, pick)], usage)
        prices = prices * np.exp(np.clip(2.0 * (usage - 1.0), -4, 4))
        prices /= prices.max()
    pick, usage = _exact(normed)
    fits = pick is not None and usage.max() <= 1 + 1e-9
    return _Probe(target, [int(c[p]) for c, p in zip(candidates, pick)] if fits else None, usage)


def _exact(normed: list[np.ndarray]) -> tuple[list[int] | None, np.ndarray]:
    """The choice (one folding per layer) with the least highest share of the cap, by integer programming."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    sizes = [len(n) for n in normed]
    count = sum(sizes)
    one_each = np.zeros((len(normed), count + 1))
    offset = 0
    for u, size in enumerate(sizes):
        one_each[u, offset : offset + size] = 1
        offset += size
    usage_rows = np.hstack([np.vstack(normed).T, -np.ones((len(RESOURCES), 1))])  # usage_r - z <= 0
    cost = np.zeros(count + 1)
    cost[-1] = 1.0  # minimise z, the highest share
    solved = milp(
        cost,
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(usage_rows, -np.inf, 0)],
        integrality=np.r_[np.ones(count), 0],
        bounds=Bounds(np.zeros(count + 1), np.r_[np.ones(count), np.inf]),
        options={"time_limit": MILP_SECONDS},
    )
    if solved.x is None:
        return None, np.full(len(RESOURCES), np.inf)
    x, pick, offset = np.round(solved.x[:-1]), [], 0
    for size in sizes:
        pick.append(int(np.argmax(x[offset : offset + size])))
        offset += size
    return pick, sum(n[p] for n, p in zip(normed, pick))


@dataclass
class _Search:
    best: _Probe  # the fastest probe that fits
    faster: _Probe | None  # the next faster cycle count, which did not fit
    probes: list[_Probe]


def _search(units: list[_Unit], limits: np.ndarray) -> _Search | None:
    """Bisect on cycles per frame over every cycle count a layer can take; None if even the slowest does not fit."""
    floor = max(int(unit.cycles.min()) for unit in units)
    targets = np.unique(np.concatenate([unit.cycles for unit in units]))
    targets = targets[targets >= floor]
    probes: dict[int, _Probe] = {}

    def fits(i: int) -> bool:
        t = int(targets[i])
        if t not in probes:
            probes[t] = _probe(units, t, limits)
        return probes[t].pick is not None

    lo, hi = 0, len(targets) - 1
    if not fits(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    faster = None
    if hi > 0:
        fits(hi - 1)
        faster = probes[int(targets[hi - 1])]
    return _Search(probes[int(targets[hi])], faster, list(probes.values()))


# --------------------------------------------------------------------------------------------------
# part 3: apply, and say what stopped the search


def _apply(units: list[_Unit], pick: list[int]) -> None:
    for unit, i in zip(units, pick):
        for node in unit.nodes:
            op = getCustomOp(node)
            for attr, value in unit.settings[i].get(node.name, {}).items():
                op.set_nodeattr(attr, value)


def _shares(usage: np.ndarray, max_util: float) -> dict[str, float | None]:
    """Shares of the cap as shares of the board, per resource (None where the exact check gave up)."""
    return {r: round(float(u * max_util), 4) if np.isfinite(u) else None for r, u in zip(RESOURCES, usage)}


def _fps(clock_mhz: float, cycles: float) -> float:
    return clock_mhz * 1e6 / max(cycles, 1)


def _slowest_node(unit: _Unit) -> str:
    """The node of a layer (a VVAU or Pool, or its window generator) that takes the most cycles as folded."""
    return max(unit.nodes, key=lambda node: getCustomOp(node).get_exp_cycles()).name


def _stop(units: list[_Unit], search: _Search, board: Board, max_util: float) -> dict:
    """Which limit stopped the search: the layer, and the resource over the cap, the stream width or full speed."""
    best, faster = search.best, search.faster
    rate = f"{best.cycles:,} cycles per frame"
    if faster is None:  # a layer has no faster legal folding: name one the stream width holds back if any
        stuck = [u for u in units if int(u.cycles.min()) >= best.cycles]
        unit = min(stuck, key=lambda u: u.width_limited or math.inf)
        name = _slowest_node(unit)
        if unit.width_limited is not None and unit.width_limited < best.cycles:
            return {
                "limit": "stream_width",
                "limit_layer": name,
                "stop_reason": f"{name} bounds throughput at {rate}: a faster folding of it needs an HLS stream "
                f"wider than {MAX_AP_INT_WIDTH} bits (FINN's MAX_AP_INT_WIDTH)",
            }
        return {
            "limit": "unfolded",
            "limit_layer": name,
            "stop_reason": f"{name} bounds throughput at {rate} and is at full parallelism",
        }
    slower = [u for u, i in zip(units, best.pick) if u.cycles[i] > faster.cycles]
    layer = _slowest_node(next(u for u in units if u.name == faster.missing) if faster.missing else slower[0])
    over = [r for r, use in zip(RESOURCES, faster.usage) if use > 1 + 1e-9]
    needs = ", ".join(f"{r} {faster.usage[RESOURCES.index(r)] * max_util:.1%}" for r in over)
    who = f"{layer} alone needs" if faster.missing else "the least any choice of foldings needs is"
    return {
        "limit": "resource",
        "limit_layer": layer,
        "limit_resources": over,
        "next_cycles": faster.cycles,
        "stop_reason": f"{layer} bounds throughput at {rate}; at {faster.cycles:,} cycles {who} {needs} "
        f"of {board.display_name}, over the {max_util:.0%} cap",
    }


def _nothing_fits(model: ModelWrapper, board: Board, units: list[_Unit], max_util: float) -> ModelTooLargeError:
    """The refusal when no choice of foldings fits: each layer's folding least over the cap, summed."""
    limits = np.array([float(board.capacity[CAPACITY_KEYS[r]]) for r in RESOURCES]) * max_util
    cheapest = [int(np.argmin((u.res / np.where(limits > 0, limits, 1)).max(1))) for u in units]
    totals = sum(u.res[i] for u, i in zip(units, cheapest))
    return too_large_error(model, board, max_util, dict(zip(RESOURCES, totals)))


def check_fits_board(model: ModelWrapper, board: Board) -> None:
    """`sdk check`'s resource verdict: raise ModelTooLargeError when no folding at all fits 100 % of the board,
    exactly the probe that makes every deploy refuse (the fit search at any --max-util, or any --fps). It takes
    the layers' foldings and one probe at the slowest cycle count, not the search: a fraction of a second."""
    units = [_enumerate(model, group, board)[0] for group in _units(model)]
    capacity = np.array([float(board.capacity[CAPACITY_KEYS[r]]) for r in RESOURCES])
    slowest = max(int(unit.cycles.max()) for unit in units)
    if _probe(units, slowest, capacity).pick is None:
        raise _nothing_fits(model, board, units, 1.0)


def fit_folding(model: ModelWrapper, board: Board, max_util: float, clock_mhz: float | None = None) -> FitResult:
    """The fastest folding (and memory styles) whose FINN estimates stay under max_util of every board resource."""
    started = time.perf_counter()
    clock_mhz = clock_mhz or board.clock_mhz
    units, estimated = [], 0
    for group in _units(model):
        unit, count = _enumerate(model, group, board)
        units.append(unit)
        estimated += count
    capacity = np.array([float(board.capacity[CAPACITY_KEYS[r]]) for r in RESOURCES])
    limits = capacity * max_util
    search = _search(units, limits)
    if search is None:
        raise _nothing_fits(model, board, units, max_util)
    full = search if max_util >= 1 else _search(units, capacity)
    _apply(units, search.best.pick)
    used = sum(u.res[i] for u, i in zip(units, search.best.pick))
    share = {r: float(used[k] / capacity[k]) if capacity[k] else 0.0 for k, r in enumerate(RESOURCES)}
    unfolded = max(int(u.cycles.min()) for u in units)
    unlimited = max(min(int(u.cycles.min()), u.width_limited or math.inf) for u in units)
    costs = {node.name: node_cost(node, board.part)[0] for node in model.graph.node}
    result = FitResult(
        steps=len(search.probes),
        stop_reason="",
        bottleneck=max(costs, key=costs.get),
        history=[
            {"cycles": p.cycles, "fits": p.pick is not None, "utilisation": _shares(p.usage, max_util)}
            for p in sorted(search.probes, key=lambda p: -p.cycles)
        ],
        cycles=search.best.cycles,
        fps=_fps(clock_mhz, search.best.cycles),
        clock_mhz=clock_mhz,
        binding=max(share, key=share.get),
        utilisation=share,
        fps_at_full_board=_fps(clock_mhz, full.best.cycles) if full else 0.0,
        fps_unfolded=_fps(clock_mhz, unfolded),
        fps_without_width_limit=_fps(clock_mhz, unlimited),
        foldings=estimated,
    )
    for key, value in _stop(units, search, board, max_util).items():
        setattr(result, key, value)
    if search.faster is not None:
        result.next_utilisation = _shares(search.faster.usage, max_util)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def target_fps_folding(model: ModelWrapper, fps: float, clock_mhz: float) -> ModelWrapper:
    """FINN's SetFolding for a frames-per-second target at the board clock. SetFolding knows no board: the
    estimate step refuses a folding over the board's capacity (estimate.refuse_over_capacity)."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    if fps <= 0:
        raise SDKError(f"--fps must be positive, got {fps}.", where="--fps", fix="e.g. --fps 10000")
    target_cycles = max(1, int(clock_mhz * 1e6 / fps))
    model = model.transform(
        SetFolding(target_cycles_per_frame=target_cycles, mvau_wwidth_max=MVAU_WWIDTH_MAX, two_pass_relaxation=True)
    )
    for node in model.graph.node:  # e.g. a window generator's RTL FINN could not write at SetFolding's choice
        rtl = rtl_of(node.op_type)
        if rtl is not None and rtl.make_writable is not None:
            rtl.make_writable(getCustomOp(node))
    return model


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
