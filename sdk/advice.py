"""Fix advice that names another target only when that target deploys the model.

A flow that refuses a model may know that another flow could take it (FINN cannot map an op the TFLite writer
lowers, or the reverse): its error carries `alternative`, the flow to ask. Before the fix names that flow, the
core runs the flow's own check (what `sdk check` runs: no build, seconds) on the same graph. It accepts: the fix
says to deploy there. It refuses too: the fix keeps to changing the model and says what the other flow refused,
so the advice never goes in circles.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sdk.errors import ModelTooLargeError, SDKError
from sdk.time_limit import StepTimeout, time_limit

log = logging.getLogger(__name__)

ALTERNATIVE_SECONDS = 120.0  # the other flow's check of the SDK's models takes seconds; past this, no advice
# Which board's check stands for a flow, how a fix names its targets, and which flows share a model writer (advice
# never points from one to another of those): each flow's declaration (FlowInfo.alternative, FlowInfo.family).


def _first_line(error: SDKError) -> str:
    """The refusal in one line: its first, and the first item where the first introduces a list ("...:")."""
    lines = [line.strip() for line in error.what.strip().splitlines() if line.strip()] or [type(error).__name__]
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text if len(text) <= 300 else text[:297] + "..."


def advise(error: SDKError, flow: str, model_path: Path, workdir: Path, qat_model: Any = None) -> None:
    """Complete `error`'s fix with its alternative flow, asked first (see the module's docstring); the error of the
    flow `flow` was raised on the graph at `model_path`. Never raises: advice that cannot be checked is not given."""
    from targets.registry import FLOWS, get_target

    other = FLOWS.get(error.alternative) if error.alternative is not None else None
    if other is None or other.alternative is None:
        return
    if flow in FLOWS and FLOWS[flow].family_name == other.family_name:
        return
    from sdk.boards import get_board

    board_name = other.alternative.board
    base = (error.fix or "change the model").rstrip(". ")
    began = time.monotonic()
    try:
        board = get_board(board_name)
        (workdir / "alternative").mkdir(parents=True, exist_ok=True)
        with time_limit(ALTERNATIVE_SECONDS):
            get_target(other.flow).check(model_path, board, workdir / "alternative", qat_model)
    except StepTimeout:  # not answered in time: no advice rather than a guess
        return
    except SDKError as refused:
        if time.monotonic() - began >= ALTERNATIVE_SECONDS:  # a flow that turned the time limit into its own error
            return
        _refused(error, other, board_name, base, refused)
        return
    except Exception as exc:  # the other flow's own bug is no advice to give; the refusal stands as it is
        log.debug("the alternative check on %s failed: %s", board_name, exc)
        return
    error.alternative_check = {"target": board_name, "accepts": True, "reason": None}
    named = other.alternative.targets
    error.amend_fix(f"{base}, or deploy it to {named}: `sdk check --target {board_name}` accepts it")


def _refused(error: SDKError, other: Any, board_name: str, base: str, refused: SDKError) -> None:
    """The other flow refused too: the fix keeps to the model (or, if only the board is too small, says so)."""
    if isinstance(refused, ModelTooLargeError):  # every layer maps; only this board is too small
        error.alternative_check = {"target": board_name, "accepts": False, "reason": _first_line(refused)}
        error.amend_fix(
            f"{base}; or deploy it to {other.alternative.targets} with room for it: every layer maps there, but "
            f"{board_name} is too small (see `sdk boards`)"
        )
        return
    reason = _first_line(refused)
    error.alternative_check = {"target": board_name, "accepts": False, "reason": reason}
    error.amend_fix(f"{base} ({other.alternative.refused_by} this model too: {reason})")
