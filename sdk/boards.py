"""Board registry: one validated YAML file per board in `boards/`.

A board is data, never code. Each file is checked against the schema below;
unknown and missing fields are errors naming the file and the field. Extra
board folders can be added with the SDK_BOARDS_PATH environment variable
(os.pathsep-separated), so users can describe their own boards.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sdk.errors import BoardError

BUILTIN_BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"

KINDS = {"fpga": "finn", "npu": "ethosu", "mcu": "tflm", "cpu": "tflite"}
LIFECYCLES = ("active", "legacy", "retired")
SHELLS = ("zynq", "alveo")

COMMON_REQUIRED = ("name", "display_name", "vendor", "kind", "flow", "lifecycle", "clock_mhz", "description", "source")
COMMON_OPTIONAL = ("notes",)
# Extra fields per kind: (required, optional).
KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fpga": (("finn_board", "part", "shell", "capacity"), ("platform",)),
    "npu": (("core", "capacity", "vela"), ()),
    "mcu": (("core", "capacity"), ()),
    "cpu": (("core",), ("capacity",)),
}
CAPACITY_FIELDS = {
    "fpga": ("lut", "ff", "bram18", "uram", "dsp"),
    "npu": ("sram_bytes", "flash_bytes"),
    "mcu": ("sram_bytes", "flash_bytes"),
    "cpu": ("ram_bytes",),
}
VELA_FIELDS = ("accelerator_config", "system_config", "memory_mode")


@dataclass(frozen=True)
class Board:
    """One target board, as described by its YAML file."""

    name: str
    display_name: str
    vendor: str
    kind: str  # fpga | npu | mcu | cpu
    flow: str  # finn | ethosu | tflm | tflite
    lifecycle: str  # active | legacy | retired
    clock_mhz: float
    description: str
    source: str
    path: Path
    capacity: dict[str, int] = field(default_factory=dict)
    notes: str | None = None
    core: str | None = None
    finn_board: str | None = None
    part: str | None = None
    shell: str | None = None
    platform: str | None = None
    vela: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return {k: v for k, v in data.items() if v is not None}


def _fail(path: Path, field_name: str | None, what: str, fix: str) -> BoardError:
    where = f"{path}" + (f", field '{field_name}'" if field_name else "")
    return BoardError(what, where=where, fix=fix)


def _check_keys(path: Path, data: dict, required: tuple[str, ...], optional: tuple[str, ...], prefix: str = "") -> None:
    allowed = set(required) | set(optional)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"allowed fields: {', '.join(sorted(allowed))}"
            raise _fail(path, prefix + str(key), f"Unknown field '{prefix}{key}' in board file.", hint)
    for key in required:
        if key not in data or data[key] is None:
            raise _fail(path, prefix + key, f"Missing required field '{prefix}{key}' in board file.", f"add '{prefix}{key}:' to the file")


def _check_number(path: Path, name: str, value: Any, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        want = "a non-negative integer" if integer else "a positive number"
        raise _fail(path, name, f"Field '{name}' must be {want}, got {value!r}.", "write a plain number, e.g. 53200 (no units)")


def parse_board(path: Path) -> Board:
    """Read and validate one board file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}" + (f", line {mark.line + 1}" if mark else "")
        raise BoardError(f"Board file is not valid YAML: {getattr(exc, 'problem', exc)}", where=where,
                         fix="fix the YAML syntax (indentation, colons, quotes)") from None
    if not isinstance(data, dict):
        raise _fail(path, None, "Board file must be a YAML mapping of fields.", "see boards/pynq-z2.yaml for an example")
    kind = data.get("kind")
    if kind not in KINDS:
        raise _fail(path, "kind", f"Field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}.", "set kind to the board's class")
    required, optional = KIND_FIELDS[kind]
    _check_keys(path, data, COMMON_REQUIRED + required, COMMON_OPTIONAL + optional)
    if data["name"] != path.stem:
        raise _fail(path, "name", f"Field 'name' is {data['name']!r} but the file is {path.name}.", f"name the file {data['name']}.yaml or set name: {path.stem}")
    if data["flow"] != KINDS[kind]:
        raise _fail(path, "flow", f"A board of kind '{kind}' uses flow '{KINDS[kind]}', not {data['flow']!r}.", f"set flow: {KINDS[kind]}")
    if data["lifecycle"] not in LIFECYCLES:
        raise _fail(path, "lifecycle", f"Field 'lifecycle' must be one of {', '.join(LIFECYCLES)}, got {data['lifecycle']!r}.", "set lifecycle: active")
    _check_number(path, "clock_mhz", data["clock_mhz"], integer=False)
    capacity = data.get("capacity") or {}
    if not isinstance(capacity, dict):
        raise _fail(path, "capacity", "Field 'capacity' must be a mapping.", "e.g. capacity: {lut: 53200, ...}")
    cap_fields = CAPACITY_FIELDS[kind]
    _check_keys(path, capacity, cap_fields if "capacity" in required else (), cap_fields, prefix="capacity.")
    for key, value in capacity.items():
        _check_number(path, f"capacity.{key}", value, integer=True)
    if kind == "fpga":
        if data["shell"] not in SHELLS:
            raise _fail(path, "shell", f"Field 'shell' must be one of {', '.join(SHELLS)}, got {data['shell']!r}.", "zynq for Zynq/ZynqMP boards, alveo for Alveo cards")
        if data["shell"] == "alveo" and not data.get("platform"):
            raise _fail(path, "platform", "An Alveo board needs its Vitis platform.", "add platform: e.g. xilinx_u250_gen3x16_xdma_2_1_202010_1")
        if data["shell"] == "zynq" and data.get("platform"):
            raise _fail(path, "platform", "Field 'platform' is only for Alveo boards.", "remove it")
    if kind == "npu":
        vela = data["vela"]
        if not isinstance(vela, dict):
            raise _fail(path, "vela", "Field 'vela' must be a mapping.", "vela: {accelerator_config: ..., system_config: ..., memory_mode: ...}")
        _check_keys(path, vela, VELA_FIELDS, (), prefix="vela.")
    return Board(path=path, capacity=dict(capacity), **{k: v for k, v in data.items() if k != "capacity"})


def board_dirs() -> list[Path]:
    """Built-in boards first, then folders named in SDK_BOARDS_PATH."""
    extra = [Path(p) for p in os.environ.get("SDK_BOARDS_PATH", "").split(os.pathsep) if p]
    return [BUILTIN_BOARDS_DIR, *extra]


def load_boards(dirs: list[Path] | None = None) -> dict[str, Board]:
    """All boards by name; a later folder may not redefine a board silently."""
    boards: dict[str, Board] = {}
    for folder in dirs if dirs is not None else board_dirs():
        if not folder.is_dir():
            raise BoardError(f"Board folder {folder} does not exist.", where="SDK_BOARDS_PATH", fix="point SDK_BOARDS_PATH at a folder of board YAML files")
        for path in sorted(folder.glob("*.yaml")):
            board = parse_board(path)
            if board.name in boards:
                raise _fail(path, "name", f"Board '{board.name}' is already defined in {boards[board.name].path}.", "rename one of the two boards")
            boards[board.name] = board
    return boards


def get_board(name: str, boards: dict[str, Board] | None = None, where: str = "--target") -> Board:
    """One board by name; a misspelt name suggests the closest ones."""
    boards = load_boards() if boards is None else boards
    key = name.strip().lower()
    if key in boards:
        return boards[key]
    close = difflib.get_close_matches(key, list(boards), n=3, cutoff=0.5)
    fix = f"did you mean {', '.join(close)}?" if close else "run `sdk boards` to list the known boards"
    raise BoardError(f"Unknown board '{name}'.", where=where, fix=fix)
