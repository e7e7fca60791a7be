"""What a board file serving the FINN flow must agree with beyond its `finn:` section's schema (board_section.yaml).

FPGA names are checked against what the tools know: a part file's name must be a part of the SDK's own part files
or of FINN's board -> part maps (finn.util.basic, read from its source, not imported: this runs for every board
listing), a board's `finn.board` must be one of FINN's board names for its shell, and its chip must be the part
FINN builds that board for. sdk/boards.py calls `board_checks` for a board serving the flow and `known_names` for
the registries a schema field's `known:` names.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

from sdk.boards import KnownNames, builtin_part_names, close_names

FINN_SHELL_MAPS = {"zynq": "pynq_part_map", "alveo": "alveo_part_map"}  # finn.shell -> FINN's board -> part map


@functools.cache
def finn_part_maps() -> dict[str, dict[str, str]]:
    """FINN's board -> part maps (pynq_part_map, alveo_part_map, part_map, ...) as finn/util/basic.py writes them:
    its module-level literal assignments, read with ast (importing it loads qonnx and onnx, a second or more, and
    nothing of FINN's needs to run for this). Empty when FINN is not installed or its file holds no such maps."""
    try:
        spec = importlib.util.find_spec("finn")
        locations = list(spec.submodule_search_locations or []) if spec else []
        tree = ast.parse((Path(locations[0]) / "util" / "basic.py").read_text(encoding="utf-8"))
    except (ImportError, IndexError, OSError, SyntaxError, ValueError):
        return {}
    maps: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id.endswith("part_map") and isinstance(value, ast.Dict):
            merged: dict[str, str] = {}
            for key, item in zip(value.keys, value.values):
                if key is None and isinstance(item, ast.Name):  # {**pynq_part_map, ...}
                    merged.update(maps.get(item.id, {}))
                elif isinstance(key, ast.Constant) and isinstance(item, ast.Constant):
                    merged[str(key.value)] = str(item.value)
            maps[target.id] = merged
        elif (
            isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name)
            and target.value.id in maps
            and isinstance(target.slice, ast.Constant)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            maps[target.value.id][str(target.slice.value)] = value.value
    return {name: entries for name, entries in maps.items() if entries}


@functools.cache
def known_fpga_parts() -> frozenset[str]:
    """The FPGA parts a part file may describe: the SDK's own FPGA part files and the parts of FINN's maps."""
    return builtin_part_names("fpga") | {part for entries in finn_part_maps().values() for part in entries.values()}


def _finn_boards() -> frozenset[str] | None:
    maps = finn_part_maps()
    boards = frozenset(name for m in FINN_SHELL_MAPS.values() for name in maps.get(m, {}))
    return boards or None  # without FINN there is no FINN flow to check against


def known_names() -> dict[str, KnownNames]:
    """The registries a schema field's `known:` may name, for part files (fpga_parts) and the finn: section."""
    return {
        "fpga_parts": KnownNames("FPGA part", "the SDK or FINN", known_fpga_parts),
        "finn_boards": KnownNames("FINN board name", "the SDK or FINN", _finn_boards),
    }


def board_checks(data: dict, fail: Callable[[str, str, str], Exception]) -> None:
    """FINN finds a board by its name in the map of its shell, and builds that board for the part the map gives:
    the board's chip must be that part (a Zynq-7000 chip on an UltraScale+ board's shell does not build).
    `data` is the board file, valid against the schema; `fail(field, what, fix)` is the error to raise."""
    maps = finn_part_maps()
    board, shell, chip = data["finn"]["board"], data["finn"]["shell"], data.get("chip")
    entries = maps.get(FINN_SHELL_MAPS[shell], {})
    if not entries:  # FINN not installed: nothing to check against
        return
    if board not in entries:
        other = next((s for s, m in FINN_SHELL_MAPS.items() if board in maps.get(m, {})), None)
        raise fail(
            "finn.board",
            f"FINN board {board!r} is not a board of FINN's {shell} shell ({FINN_SHELL_MAPS[shell]}).",
            f"set finn.shell: {other}" if other else close_names(board, entries),
        )
    if chip != entries[board]:
        same_chip = sorted(name for name, part in entries.items() if part == chip)
        raise fail(
            "chip",
            f"FINN builds its board {board!r} for part {entries[board]}, but chip is {chip!r}.",
            f"set chip: {entries[board]}"
            + (f", or finn.board: {' or '.join(same_chip)} (FINN's board of {chip})" if same_chip else ""),
        )
