"""Simulation backends: run compiled artifacts on sample inputs without boards or vendor tools."""
from __future__ import annotations

from sdk.sim.finn_dataflow import (
    SUPPORTED_OPS,
    DataflowResult,
    ParentResult,
    SimulationError,
    simulate_dataflow,
    simulate_parent,
)

__all__ = ["SUPPORTED_OPS", "DataflowResult", "ParentResult", "SimulationError", "simulate_dataflow", "simulate_parent"]
