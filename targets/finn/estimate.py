"""Stage 8: estimates - per-layer cycles and resources, network throughput, latency, utilisation.

All numbers are FINN's own analytical estimates (pure Python); synthesis
results replace them only where Vivado ran. An estimate over the board's
capacity in any resource is refused here, whatever chose the folding: no
over-full design is packaged as hardware-ready.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sdk.boards import Board
from sdk.errors import ModelTooLargeError
from targets.finn.folding import CAPACITY_KEYS, RESOURCES, node_cost, over_limit_rows


@dataclass
class LayerEstimate:
    name: str
    op_type: str
    pe: int | None
    simd: int | None
    cycles: int
    lut: float
    bram18: float
    uram: float
    dsp: float


@dataclass
class NetworkEstimate:
    layers: list[LayerEstimate]
    clock_mhz: float
    bottleneck: str
    max_cycles: int
    fps: float
    latency_cycles: int
    latency_us: float
    totals: dict[str, float]
    capacity: dict[str, int]
    utilisation: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_network(model: ModelWrapper, board: Board, clock_mhz: float | None = None) -> NetworkEstimate:
    clock_mhz = clock_mhz or board.clock_mhz
    layers = []
    for node in model.graph.node:
        cycles, res = node_cost(node, board.part)
        op = getCustomOp(node)
        types = op.get_nodeattr_types()
        layers.append(
            LayerEstimate(
                node.name,
                node.op_type,
                op.get_nodeattr("PE") if "PE" in types else None,
                op.get_nodeattr("SIMD") if "SIMD" in types else None,
                cycles,
                res["LUT"],
                res["BRAM_18K"],
                res["URAM"],
                res["DSP"],
            )
        )
    bottleneck = max(layers, key=lambda layer: layer.cycles)
    # Latency: a frame passes every layer; FINN's critical path estimate is the sum of layer cycles.
    latency = sum(layer.cycles for layer in layers)
    totals = {
        "lut": sum(layer.lut for layer in layers),
        "bram18": sum(layer.bram18 for layer in layers),
        "uram": sum(layer.uram for layer in layers),
        "dsp": sum(layer.dsp for layer in layers),
    }
    capacity = {CAPACITY_KEYS[r]: board.capacity[CAPACITY_KEYS[r]] for r in RESOURCES}
    capacity["ff"] = board.capacity["ff"]
    utilisation = {k: (totals[k] / capacity[k] if capacity[k] else 0.0) for k in totals}
    hz = clock_mhz * 1e6
    return NetworkEstimate(
        layers,
        clock_mhz,
        bottleneck.name,
        bottleneck.cycles,
        hz / max(bottleneck.cycles, 1),
        latency,
        latency / hz * 1e6,
        totals,
        capacity,
        utilisation,
    )


def refuse_over_capacity(net: NetworkEstimate, board: Board, folding_mode: str, fps: float | None = None) -> None:
    """Raise ModelTooLargeError, with the table of what exceeds it, when the estimate needs more of any resource
    than the board has. --fps is held to 100 % of the board (--max-util is the fit search's own cap); the fit
    search stays under its cap already, so there this only catches what changed after it."""
    needs = {k: v for k, v in net.totals.items() if k in net.capacity}
    rows = over_limit_rows(needs, {k: float(net.capacity[k]) for k in needs}, "board")
    if not rows:
        return
    if fps:
        where = f"--fps {fps:g} on board {board.name} ({board.part})"
        fix = (
            f"lower --fps (this folding would run {net.fps:,.0f} frames/s); or leave --fps out: the fit search "
            "finds the fastest folding under --max-util; or choose a larger board (sdk boards --kind fpga)"
        )
    else:
        where = f"board {board.name} ({board.part})"
        fix = "lower --max-util, or choose a larger board (sdk boards --kind fpga)"
    chosen = f"FINN's SetFolding for --fps {fps:g}" if fps else f"The folding ({folding_mode})"
    raise ModelTooLargeError(
        f"{chosen} needs more than {board.display_name} has, by FINN's estimates of the accelerator alone; "
        "it is not packaged:\n  " + "\n  ".join(rows),
        where=where,
        fix=fix,
    )
