"""Board registry: one validated YAML file per board in `boards/`, one per chip in `boards/parts/`.

A board is data, never code. A board lists the flows it serves (the first is
its default) and carries one section per flow that needs settings, named after
the flow; it names its chip, whose capacities are written once in a part file
shared by every board using it. What each file may hold is declared in
`boards/schema.yaml` (the common fields, kinds, part files) and, for each flow's
section, by the flow itself (its registry entry's `board_section`, a YAML file
beside its code in the same syntax), all checked by the small generic validator
below: a new field is a schema edit, a new flow brings its own section, and no
flow is named here. Unknown and missing fields are errors naming the file and
the field. Extra board folders (with their parts in `<folder>/parts/`) come from
SDK_BOARDS_PATH (os.pathsep-separated), so users describe their own boards.

A flow may check more than its schema says (`board_checks`, e.g. that a name is
one its toolchain knows) and may provide the name registries a field's `known:`
names (`known_names`); flows are read through targets.registry only.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.util
import math
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from sdk.errors import BoardError

BUILTIN_BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"
SCHEMA_PATH = BUILTIN_BOARDS_DIR / "schema.yaml"
PARTS_DIRNAME = "parts"
README_PATH = BUILTIN_BOARDS_DIR.parent / "README.md"
README_BEGIN = "<!-- boards:begin -->"
README_END = "<!-- boards:end -->"
MAX_FILE_BYTES = 1 << 20  # a board file is a few hundred bytes; anything this large is not one


# ---------------------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Part:
    """One chip's facts (capacities, core), shared by every board that names it."""

    name: str
    kind: str
    vendor: str
    description: str
    source: str
    path: Path
    capacity: dict[str, int] = field(default_factory=dict)
    core: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class Board:
    """One target board, as described by its YAML file and its chip's part file.

    A flow reads its own settings with `section(flow)`; flow, part, core and capacity are properties over flows,
    chip, chip_spec and board_core.
    """

    name: str
    display_name: str
    vendor: str
    kind: str  # fpga | npu | mcu | cpu
    flows: tuple[str, ...]  # the flows it serves; the first is its default
    lifecycle: str  # active | legacy | retired
    clock_mhz: float
    description: str
    source: str
    path: Path
    chip: str | None = None  # name of its part file; None for a generic target
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # flow -> that flow's settings
    notes: str | None = None
    chip_spec: Part | None = None  # the resolved part file
    board_core: str | None = None  # the processor of a board without a chip

    def section(self, flow: str) -> dict[str, Any]:
        """The board's settings for one flow (a copy; empty when the flow needs none or is not served)."""
        return dict(self.sections.get(flow) or {})

    @property
    def flow(self) -> str:
        """The default flow."""
        return self.flows[0]

    @property
    def part(self) -> str | None:
        """The part string the tools take: the chip's name, where the schema's kind says so (`chip_is_part`)."""
        return self.chip if load_schema()["kinds"].get(self.kind, {}).get("chip_is_part") else None

    @property
    def core(self) -> str | None:
        return self.chip_spec.core if self.chip_spec is not None else self.board_core

    @property
    def capacity(self) -> dict[str, int]:
        """The chip's capacities (a copy, so a caller cannot change the shared part)."""
        return dict(self.chip_spec.capacity) if self.chip_spec is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the board's own fields, its resolved chip facts, and its flow sections."""
        data: dict[str, Any] = {
            "name": self.name,
            "display_name": self.display_name,
            "vendor": self.vendor,
            "kind": self.kind,
            "flows": list(self.flows),
            "lifecycle": self.lifecycle,
            "clock_mhz": self.clock_mhz,
            "chip": self.chip,
            "part": self.part,
            "core": self.core,
            "capacity": self.capacity,
            "sections": copy.deepcopy(self.sections),
            "description": self.description,
            "source": self.source,
            "capacity_source": self.chip_spec.source if self.chip_spec is not None else None,
            "notes": self.notes,
            "path": str(self.path),
        }
        return {k: v for k, v in data.items() if v is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Reading YAML safely


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML the registry will not read (an alias, a duplicate key)."""


class _Loader(yaml.SafeLoader):
    """safe_load without aliases (an alias bomb expands without bound) and without silent duplicate keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                None,
                None,
                f"uses the YAML alias *{event.anchor}; aliases are not allowed (they can expand without bound)",
                event.start_mark,
                "write the value out in full",
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise _Refused(
                        None, None, f"sets the field '{key_node.value}' twice", key_node.start_mark, "keep one of them"
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, label: str) -> Any:
    """One YAML file as plain data; every way it can be unreadable is a BoardError naming it."""
    where = str(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "is not a regular file"
        raise BoardError(f"{label} {path.name} {what}.", where=where, fix=f"remove or rename {path}")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BoardError(
                f"{label} is larger than {MAX_FILE_BYTES // 1024} KiB.", where=where, fix="a board file is a few lines"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise BoardError(f"{label} cannot be read: {exc.strerror or exc}.", where=where, fix="check the file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BoardError(
            f"{label} is not UTF-8 text (byte {exc.start}).", where=where, fix="save the file as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except _Refused as exc:
        mark = exc.problem_mark
        raise BoardError(
            f"{label} {exc.problem}.",
            where=f"{where}, line {mark.line + 1}",
            fix=exc.note,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise BoardError(
            f"{label} is not valid YAML: {getattr(exc, 'problem', None) or exc}",
            where=where + (f", line {mark.line + 1}" if mark else ""),
            fix="fix the YAML syntax (indentation, colons, quotes)",
        ) from None
    except RecursionError:
        raise BoardError(f"{label} is nested too deeply.", where=where, fix="a board file is a flat mapping") from None


# ---------------------------------------------------------------------------------------------------------------------
# The schema and its generic validator

_TYPES = {"text", "name", "number", "integer", "choice", "kind", "flows", "part", "mapping"}
_SPEC_KEYS = {"type", "required", "doc", "values", "min", "lower_case", "fields", "rules", "known"}
_RULE_KEYS = {"when", "when_present", "when_absent", "require", "forbid", "why", "fix"}
_SECTION_KEYS = {"section", "fields", "rules", "renamed"}  # what a flow's board_section file may hold
_SECTIONS = ("required", "optional")  # whether a board serving the flow must carry its section
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# ---------------------------------------------------------------------------------------------------------------------
# What the flows declare (through targets.registry): the kinds they serve, their sections, checks and names


class KnownNames(NamedTuple):
    """A registry a schema field's `known:` names, as a flow's `known_names` function provides it."""

    what: str  # what a name is, for the message: "FPGA part"
    known_by: str  # who knows them, for the message: "the SDK or <the toolchain>"
    names: Callable[[], Collection[str] | None]  # the names; None when they cannot be known (the tool is missing)


def _entry(spec: str) -> Callable:
    """The function a flow's "module:function" entry names (imported on first use)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _flows() -> dict[str, Any]:
    from targets.registry import FLOWS  # the registry is the core's one way to reach a flow

    return FLOWS


def known_flows() -> tuple[str, ...]:
    """The flows a board may serve: the registered ones."""
    return tuple(_flows())


def flow_kinds(flow: str) -> tuple[str, ...]:
    """The board kinds a registered flow serves."""
    return tuple(_flows()[flow].kinds)


def _section_path(spec: str) -> Path:
    """A flow's "package:file" section declaration as a path (the package is found, not imported)."""
    package, _, name = spec.partition(":")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations or not name:
        raise BoardError(f"Board section {spec!r} names no file of a package.", where=spec, fix="package:file.yaml")
    return Path(locations[0]) / name


def flow_section(flow: str) -> dict[str, Any]:
    """The board-file section a registered flow declares: section (required | optional), fields, rules, renamed;
    a flow declaring none takes an optional section without fields."""
    return _flow_sections()[flow]


@functools.cache
def _flow_sections_cached(declarations: tuple[tuple[str, tuple[str, ...], str], ...]) -> dict[str, dict[str, Any]]:
    """(flow, kinds, board_section) of each registered flow -> its section, checked like the schema."""
    kinds = list(load_schema()["kinds"])
    sections: dict[str, dict[str, Any]] = {}
    for flow, flow_kinds_, spec in declarations:
        if not flow_kinds_ or set(flow_kinds_) - set(kinds):
            raise BoardError(
                f"Flow '{flow}' serves the board kinds {list(flow_kinds_)}; the kinds are {', '.join(kinds)}.",
                where=f"flow {flow}",
                fix="name kinds of boards/schema.yaml in the flow's registration",
            )
        if not spec:
            sections[flow] = {"section": "optional", "fields": {}, "rules": [], "renamed": {}}
            continue
        path = _section_path(spec)
        data = _read_yaml(path, "Board section")
        if not isinstance(data, dict) or set(data) - _SECTION_KEYS or data.get("section") not in _SECTIONS:
            raise BoardError(f"Board section of flow '{flow}' is malformed.", where=str(path), fix="fix the file")
        _check_schema_fields(data.get("fields") or {}, flow, path)
        _check_rules(data.get("rules") or [], flow, path)
        sections[flow] = {
            "section": data["section"],
            "fields": data.get("fields") or {},
            "rules": data.get("rules") or [],
            "renamed": data.get("renamed") or {},
        }
    return sections


def _flow_sections() -> dict[str, dict[str, Any]]:
    """Every registered flow's section; read once per set of registrations (a test may register a flow)."""
    return _flow_sections_cached(tuple((f, tuple(i.kinds), i.board_section) for f, i in _flows().items()))


def _known_registries() -> dict[str, KnownNames]:
    """The name registries the flows provide for `known:`, by name."""
    return _known_registries_cached(tuple(i.known_names for i in _flows().values() if i.known_names))


@functools.cache
def _known_registries_cached(entries: tuple[str, ...]) -> dict[str, KnownNames]:
    registries: dict[str, KnownNames] = {}
    for entry in entries:
        registries.update(_entry(entry)())
    return registries


def builtin_part_names(kind: str) -> frozenset[str]:
    """The names of the SDK's own part files of one kind (a flow's registry of the chips its tools know adds its
    own)."""
    return _builtin_part_names()[kind] if kind in _builtin_part_names() else frozenset()


@functools.cache
def _builtin_part_names() -> dict[str, frozenset[str]]:
    names: dict[str, set[str]] = {}
    for path in _yaml_files(BUILTIN_BOARDS_DIR / PARTS_DIRNAME):
        data = _read_yaml(path, "Part file")
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            names.setdefault(data["kind"], set()).add(path.stem)
    return {kind: frozenset(found) for kind, found in names.items()}


def _known_names(registry: str) -> tuple[str, Collection[str] | None, str]:
    """(what a name is, the names a field marked `known: <registry>` may take or None, who knows them)."""
    known = _known_registries()[registry]  # load_schema and the sections allow only provided registries
    return known.what, known.names(), known.known_by


def close_names(value: Any, known: Iterable[str]) -> str:
    """'did you mean ...?' with the known names closest to `value` (case-insensitively), else the list."""
    known = sorted(known)
    by_lower = {name.lower(): name for name in known}
    close = [by_lower[n] for n in difflib.get_close_matches(str(value).lower(), list(by_lower), n=3, cutoff=0.6)]
    if close:
        return f"did you mean {', '.join(close)}?"
    nearest = [by_lower[n] for n in difflib.get_close_matches(str(value).lower(), list(by_lower), n=3, cutoff=0)]
    return f"the closest known: {', '.join(nearest)} (of {len(known)}: {', '.join(known)})"


def _fail(path: Path, field_name: str | None, what: str, fix: str) -> BoardError:
    where = f"{path}" + (f", field '{field_name}'" if field_name else "")
    return BoardError(what, where=where, fix=fix)


def _check_rules(rules: Any, where: str, path: Path) -> None:
    if not isinstance(rules, list) or any(not isinstance(rule, dict) or set(rule) - _RULE_KEYS for rule in rules):
        raise BoardError(f"Schema rule in {where} is malformed.", where=str(path), fix="")


def _check_schema_fields(fields: Any, where: str, path: Path = SCHEMA_PATH) -> None:
    """The schema is ours, but a typo in it should fail loudly, not validate nothing."""
    if not isinstance(fields, dict):
        raise BoardError(f"Schema {where} must be a mapping of fields.", where=str(path), fix="fix the schema")
    for name, spec in fields.items():
        bad = not isinstance(spec, dict) or spec.get("type") not in _TYPES or set(spec) - _SPEC_KEYS
        if (
            bad
            or (spec.get("type") == "choice" and not spec.get("values"))
            or ("known" in spec and spec["known"] not in _known_registries())
        ):
            raise BoardError(f"Schema field {where}.{name} is malformed: {spec!r}.", where=str(path), fix="")
        if spec["type"] == "mapping":
            _check_schema_fields(spec.get("fields") or {}, f"{where}.{name}", path)
        _check_rules(spec.get("rules") or [], f"{where}.{name}", path)


@functools.cache
def load_schema() -> dict[str, Any]:
    """boards/schema.yaml, checked for the structure this module relies on."""
    schema = _read_yaml(SCHEMA_PATH, "Board schema")
    if not isinstance(schema, dict) or not {"kinds", "board", "part"} <= set(schema):
        raise BoardError("Board schema lacks kinds, board or part.", where=str(SCHEMA_PATH), fix="restore it")
    for kind, spec in schema["kinds"].items():
        if not isinstance(spec, dict) or spec.get("chip") not in ("required", "optional"):
            raise BoardError(f"Schema kind '{kind}' is malformed.", where=str(SCHEMA_PATH), fix="fix the schema")
    _check_schema_fields(schema["board"]["fields"], "board")
    _check_schema_fields(schema["part"]["fields"], "part")
    for kind in schema["kinds"]:
        _check_schema_fields(schema["part"]["kinds"].get(kind) or {}, f"part.kinds.{kind}")
    return schema


def known_kinds() -> tuple[str, ...]:
    """The board kinds, in listing order."""
    return tuple(load_schema()["kinds"])


@dataclass
class _Check:
    """Validation of one file: where errors point, and the parts a `part` field may name."""

    path: Path
    label: str  # "board file" / "part file"
    parts: dict[str, Part]
    kind: str | None = None  # the record's kind, once known (a chip must be of the board's kind)

    def fail(self, field_name: str | None, what: str, fix: str) -> BoardError:
        return _fail(self.path, field_name, what, fix)

    def unknown(self, data: dict, fields: dict[str, dict], prefix: str = "", renamed: dict | None = None) -> None:
        """A field the schema does not know: suggest the closest known one, or where an old field moved."""
        moved = [key for key in data if key not in fields and key in (renamed or {})]
        if moved:  # an old-layout file: name every moved field at once
            many = len(moved) > 1
            raise self.fail(
                f"{prefix}{moved[0]}",
                f"Field{'s' if many else ''} {', '.join(repr(k) for k in moved)} {'are' if many else 'is'} "
                "from the earlier board layout (see boards/schema.yaml).",
                "write " + "; ".join(f"{key} as {renamed[key]}" for key in moved),
            )
        for key in data:
            if key in fields:
                continue
            name = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), sorted(fields), n=1)
            fix = f"did you mean '{prefix}{close[0]}'?" if close else f"allowed fields: {', '.join(sorted(fields))}"
            raise self.fail(name, f"Unknown field '{name}' in {self.label}.", fix)

    def missing(self, data: dict, key: str, prefix: str = "") -> None:
        if data.get(key) is None:
            raise self.fail(
                f"{prefix}{key}", f"Missing required field '{prefix}{key}' in {self.label}.", f"add '{key}:'"
            )

    def fields(self, data: dict, fields: dict[str, dict], prefix: str = "", renamed: dict | None = None) -> None:
        """Unknown fields, then missing ones, then each value against its type."""
        self.unknown(data, fields, prefix, renamed)
        for key, spec in fields.items():
            if spec.get("required"):
                self.missing(data, key, prefix)
        for key, value in data.items():
            if value is not None or fields[key]["type"] == "mapping":
                self.value(f"{prefix}{key}", value, fields[key])

    def value(self, name: str, value: Any, spec: dict) -> None:
        self._typed(name, value, spec)
        if "known" in spec:
            what, known, known_by = _known_names(spec["known"])
            if known is not None and value not in known:
                raise self.fail(
                    name,
                    f"Unknown {what} {value!r} in '{name}': not one {known_by} knows "
                    f"({spec.get('doc') or 'see boards/schema.yaml'}).",
                    close_names(value, known),
                )

    def _typed(self, name: str, value: Any, spec: dict) -> None:
        kind = spec["type"]
        if kind == "text":
            if not isinstance(value, str) or not value.strip():
                raise self.fail(name, f"Field '{name}' must be a non-empty text, got {value!r}.", 'quote it: "..."')
        elif kind == "name":
            self._name(name, value, spec)
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise self.fail(
                    name,
                    f"Field '{name}' must be a finite number above 0, got {value!r}.",
                    "write a plain number, e.g. 100",
                )
        elif kind == "integer":
            low = spec.get("min", 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                want = "a positive integer" if low == 1 else f"an integer >= {low}"
                raise self.fail(
                    name,
                    f"Field '{name}' must be {want}, got {value!r}.",
                    "write a plain integer, e.g. 53200 (no units)",
                )
        elif kind in ("choice", "kind"):
            allowed = list(spec["values"]) if kind == "choice" else list(known_kinds())
            if not isinstance(value, str) or value not in allowed:
                raise self.fail(
                    name,
                    f"Field '{name}' must be one of {', '.join(allowed)}, got {value!r}.",
                    _closest(value, allowed),
                )
        elif kind == "flows":
            self._flows(name, value)
        elif kind == "part":
            self._part(name, value)
        elif kind == "mapping":
            value = {} if value is None else value
            if not isinstance(value, dict):
                raise self.fail(name, f"Field '{name}' must be a mapping of fields, got {value!r}.", f"{name}: {{...}}")
            self.fields(value, spec.get("fields") or {}, prefix=f"{name}.")
            self.rules(value, spec.get("rules") or [], prefix=f"{name}.")

    def _name(self, name: str, value: Any, spec: dict) -> None:
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise self.fail(
                name,
                f"Field '{name}' must be a name of letters, digits, '.', '_' and '-', got {value!r}.",
                "e.g. my-board",
            )
        if spec.get("lower_case") and value != value.lower():
            raise self.fail(
                name,
                f"Board names are lower case (--target matches them case-insensitively); got {value!r}.",
                f"set name: {value.lower()} and rename the file to {value.lower()}.yaml",
            )
        if value != self.path.stem:
            raise self.fail(
                name,
                f"Field '{name}' is {value!r} but the file is {self.path.name}.",
                f"name the file {value}.yaml or set name: {self.path.stem}",
            )

    def _flows(self, name: str, value: Any) -> None:
        flows = known_flows()
        if isinstance(value, str):
            raise self.fail(name, f"Field '{name}' must be a list of flows, got {value!r}.", f"write {name}: [{value}]")
        if not isinstance(value, list) or not value:
            raise self.fail(name, f"Field '{name}' must be a non-empty list of flows.", f"e.g. {name}: [{flows[0]}]")
        for flow in value:
            if flow not in flows:
                raise self.fail(
                    name,
                    f"Unknown flow {flow!r} in '{name}'; the flows are {', '.join(flows)}.",
                    _closest(flow, list(flows)),
                )
        if len(set(value)) != len(value):
            raise self.fail(name, f"Field '{name}' lists a flow twice: {value}.", "list each flow once")

    def _part(self, name: str, value: Any) -> None:
        if not isinstance(value, str) or value not in self.parts:
            known = sorted(p for p in self.parts if self.kind is None or self.parts[p].kind == self.kind)
            close = difflib.get_close_matches(str(value), known, n=3, cutoff=0.6)
            lowered = [p for p in known if p.lower() == str(value).lower()]
            hint = lowered or close
            fix = f"did you mean {', '.join(hint)}?" if hint else "add a part file parts/<chip>.yaml beside the boards"
            raise self.fail(name, f"Unknown chip {value!r}: no part file parts/{value}.yaml.", fix)
        part = self.parts[value]
        if self.kind is not None and part.kind != self.kind:
            raise self.fail(
                name,
                f"Chip {value!r} is a {part.kind} part ({part.path}), but this board is of kind '{self.kind}'.",
                f"name a {self.kind} part, or fix the board's kind",
            )

    def rules(self, data: dict, rules: list[dict], prefix: str = "") -> None:
        """Declarative cross-field rules: when <condition>, require / forbid fields."""
        for rule in rules:
            if "when" in rule:
                active = all(data.get(k) == v for k, v in rule["when"].items())
                cond = " and ".join(f"{prefix}{k} is {v!r}" for k, v in rule["when"].items())
            elif "when_present" in rule:
                active = data.get(rule["when_present"]) is not None
                cond = f"'{prefix}{rule['when_present']}' is given"
            else:
                active = data.get(rule["when_absent"]) is None
                cond = f"'{prefix}{rule['when_absent']}' is not given"
            if not active:
                continue
            for key in rule.get("require", []):
                if data.get(key) is None:
                    why = rule.get("why") or f"Field '{prefix}{key}' is required"
                    raise self.fail(f"{prefix}{key}", f"{why} (when {cond}).", rule.get("fix") or f"add '{key}:'")
            for key in rule.get("forbid", []):
                if data.get(key) is not None:
                    why = rule.get("why") or f"Field '{prefix}{key}' is not allowed"
                    raise self.fail(f"{prefix}{key}", f"{why} (when {cond}).", rule.get("fix") or f"remove '{key}'")


def _closest(value: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(value), allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(allowed)}"


def _mapping(data: Any, check: _Check, example: str) -> dict:
    if not isinstance(data, dict):
        raise check.fail(None, f"{check.label.capitalize()} must be a YAML mapping of fields.", f"see {example}")
    return data


# ---------------------------------------------------------------------------------------------------------------------
# Parts


def parse_part(path: Path) -> Part:
    """Read and validate one part file."""
    schema = load_schema()["part"]
    check = _Check(path, "part file", parts={})
    data = _mapping(_read_yaml(path, "Part file"), check, "boards/parts/xc7z020clg400-1.yaml")
    check.missing(data, "kind")
    check.value("kind", data["kind"], {"type": "kind"})
    fields = schema["fields"] | (schema["kinds"].get(data["kind"]) or {})
    check.fields(data, fields)
    check.rules(data, schema.get("rules") or [])
    return Part(
        path=path, capacity=dict(data.get("capacity") or {}), **{k: v for k, v in data.items() if k != "capacity"}
    )


def load_parts(dirs: Iterable[Path] | None = None) -> dict[str, Part]:
    """Every part file in <folder>/parts/ of each board folder; a name defined twice is an error."""
    parts: dict[str, Part] = {}
    lowered: dict[str, Part] = {}
    for folder in _existing(dirs):
        for path in _yaml_files(folder / PARTS_DIRNAME):
            part = parse_part(path)
            other = lowered.get(part.name.lower())
            if other is not None:
                raise _fail(
                    path, "name", f"Part '{part.name}' is already defined in {other.path}.", "keep one of the two files"
                )
            parts[part.name] = lowered[part.name.lower()] = part
    return parts


# ---------------------------------------------------------------------------------------------------------------------
# Boards


def _board_fields(schema: dict, kind: str, flows: list[str]) -> dict[str, dict]:
    """The fields a board of this kind serving these flows may hold: the common ones, its chip, a section per flow."""
    fields = {k: dict(v) for k, v in schema["board"]["fields"].items()}
    fields["chip"]["required"] = schema["kinds"][kind]["chip"] == "required"
    for flow, spec in _flow_sections().items():
        fields[flow] = {
            "type": "mapping",
            "required": flow in flows and spec["section"] == "required",
            "fields": spec["fields"],
            "rules": spec["rules"],
        }
    return fields


def _served(flows: list[str]) -> str:
    return f"the {flows[0]} flow" if len(flows) == 1 else f"one of the {', '.join(flows)} flows"


def _check_flows_serve_kind(check: _Check, kind: str, flows: list[str]) -> None:
    """Each flow a board lists serves boards of its kind (a board of a kind need not serve any particular flow)."""
    serving = [flow for flow in known_flows() if kind in flow_kinds(flow)]
    if not serving:
        raise check.fail("kind", f"No flow serves boards of kind '{kind}'.", "register a flow for this kind")
    if not set(serving) & set(flows):
        raise check.fail(
            "flows",
            f"A board of kind '{kind}' serves {_served(serving)}; flows is {flows}.",
            f"add {serving[0]}" if len(serving) == 1 else f"add one of {', '.join(serving)}",
        )
    for flow in flows:
        if kind not in flow_kinds(flow):
            allowed = ", ".join(flow_kinds(flow))
            raise check.fail(
                "flows", f"The {flow} flow is for boards of kind {allowed}, not '{kind}'.", f"remove {flow}"
            )


def parse_board(path: Path, parts: dict[str, Part] | None = None) -> Board:
    """Read and validate one board file; its chip is looked up in `parts` (default: every board folder's parts)."""
    schema = load_schema()
    if parts is None:
        dirs = board_dirs()
        parts = load_parts([*dirs, path.parent] if path.parent.resolve() not in {d.resolve() for d in dirs} else dirs)
    check = _Check(path, "board file", parts)
    data = _mapping(_read_yaml(path, "Board file"), check, "boards/pynq-z2.yaml")
    sections = _flow_sections()
    renamed = dict(schema["board"].get("renamed") or {})
    for spec in sections.values():
        renamed.update(spec["renamed"])
    # Unknown fields first (any section of any flow is a known field here): an old-layout or misspelt
    # file gets the most precise message. Then kind and flows, which decide what else is required.
    check.unknown(data, _board_fields(schema, next(iter(schema["kinds"])), []), renamed=renamed)
    check.missing(data, "kind")
    check.value("kind", data["kind"], {"type": "kind"})
    check.kind = kind = data["kind"]
    check.missing(data, "flows")
    check.value("flows", data["flows"], {"type": "flows"})
    flows: list[str] = data["flows"]
    _check_flows_serve_kind(check, kind, flows)
    for flow in sections:
        if flow not in flows and flow in data:
            raise check.fail(
                flow,
                f"Section '{flow}' is for the {flow} flow, which this board does not serve.",
                f"add {flow} to flows",
            )
    fields = _board_fields(schema, kind, flows)
    for flow in flows:
        if data.get(flow) is None and fields[flow]["required"]:
            example = ", ".join(f"{k}: ..." for k, s in fields[flow]["fields"].items() if s.get("required"))
            raise check.fail(
                flow, f"The board serves the {flow} flow but has no '{flow}' section.", f"add {flow}: {{{example}}}"
            )
    check.fields(data, fields, renamed=renamed)
    check.rules(data, schema["board"].get("rules") or [])
    for flow in flows:  # what a flow checks beyond its section's schema (names its toolchain knows)
        entry = _flows()[flow].board_checks
        if entry:
            _entry(entry)(data, check.fail)
    chip = data.get("chip")
    return Board(
        name=data["name"],
        display_name=data["display_name"],
        vendor=data["vendor"],
        kind=kind,
        flows=tuple(flows),
        lifecycle=data["lifecycle"],
        clock_mhz=data["clock_mhz"],
        description=data["description"],
        source=data["source"],
        path=path,
        chip=chip,
        sections={flow: dict(data.get(flow) or {}) for flow in flows if flow in data},
        notes=data.get("notes"),
        chip_spec=parts[chip] if chip is not None else None,
        board_core=data.get("core"),
    )


def board_dirs() -> list[Path]:
    """Built-in boards first, then folders named in SDK_BOARDS_PATH."""
    extra = [Path(p) for p in os.environ.get("SDK_BOARDS_PATH", "").split(os.pathsep) if p]
    return [BUILTIN_BOARDS_DIR, *extra]


def _existing(dirs: Iterable[Path] | None) -> list[Path]:
    folders = list(dirs) if dirs is not None else board_dirs()
    for folder in folders:
        if not folder.is_dir():
            raise BoardError(
                f"Board folder {folder} does not exist.",
                where="SDK_BOARDS_PATH",
                fix="point SDK_BOARDS_PATH at a folder of board YAML files",
            )
    return folders


def _yaml_files(folder: Path) -> list[Path]:
    """The *.yaml entries of a folder (a folder named *.yaml too: it is refused when read), but not the schema."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.yaml")) if p.resolve() != SCHEMA_PATH]


_LOADED: dict[tuple, dict[str, Board]] = {}  # load_boards' results by _files_read (a few at most)


def _files_read(folders: list[Path]) -> tuple | None:
    """Each file load_boards reads, with its identity, size and change times: an edited file is read again.
    None when one cannot be looked at (reading it reports why)."""
    paths = [SCHEMA_PATH]
    for folder in folders:
        paths += [*_yaml_files(folder), *_yaml_files(folder / PARTS_DIRNAME)]
    try:
        stats = [(str(p), p.stat()) for p in paths]
    except OSError:
        return None
    return tuple((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for name, st in stats)


def load_boards(dirs: list[Path] | None = None) -> dict[str, Board]:
    """All boards by name; a later folder may not redefine a board silently.

    Parsed once per process while the files stay as they are: a deploy to several targets, or a script
    calling get_board in a loop, reads the folders once (about 0.1 s each time)."""
    folders = _existing(dirs)
    files = _files_read(folders)
    if files is not None and files in _LOADED:
        return dict(_LOADED[files])
    boards = _read_boards(folders)
    if files is not None:
        if len(_LOADED) >= 4:
            _LOADED.clear()
        _LOADED[files] = boards
    return dict(boards)


def _read_boards(folders: list[Path]) -> dict[str, Board]:
    parts = load_parts(folders)
    boards: dict[str, Board] = {}
    for folder in folders:
        for path in _yaml_files(folder):
            board = parse_board(path, parts)
            if board.name in boards:
                raise _fail(
                    path,
                    "name",
                    f"Board '{board.name}' is already defined in {boards[board.name].path}.",
                    "rename one of the two boards",
                )
            boards[board.name] = board
    return boards


def get_board(name: str, boards: dict[str, Board] | None = None, where: str = "--target") -> Board:
    """One board by name, case-insensitively; a misspelt name suggests the closest ones."""
    if not isinstance(name, str) or not name.strip():
        raise BoardError(
            f"A board name must be a non-empty string, got {name!r}.",
            where=where,
            fix="e.g. pynq-z2; run `sdk boards` to list the known boards",
        )
    boards = load_boards() if boards is None else boards
    key = name.strip().lower()
    if key in boards:
        return boards[key]
    close = difflib.get_close_matches(key, list(boards), n=3, cutoff=0.5)
    fix = f"did you mean {', '.join(close)}?" if close else "run `sdk boards` to list the known boards"
    raise BoardError(f"Unknown board '{name}'.", where=where, fix=fix)


# ---------------------------------------------------------------------------------------------------------------------
# Tables (CLI and README)

TABLE_COLUMNS = ("board", "kind", "flows", "chip / core", "MHz", "capacity", "lifecycle")


def sorted_boards(boards: Iterable[Board]) -> list[Board]:
    """FPGAs, NPUs, MCUs, CPUs; by name within a kind."""
    order = {kind: i for i, kind in enumerate(known_kinds())}
    return sorted(boards, key=lambda b: (order.get(b.kind, len(order)), b.name))


def capacity_text(board: Board, compact: bool = False) -> str:
    """The capacities in one line: FPGA resources, or memories in KiB (compact: for a terminal table)."""
    cap = board.capacity
    if not cap:
        return "-"
    if board.kind == "fpga":
        lut = f"{cap['lut'] / 1000:g}k" if compact else f"{cap['lut']:,}"
        ff = "" if compact else f"{cap['ff']:,} FF, "
        return f"{lut} LUT, {ff}{cap['bram18']} BRAM18, {cap['uram']} URAM, {cap['dsp']} DSP"
    if compact:
        return ", ".join(f"{_size(v)} {k.split('_')[0]}" for k, v in cap.items())
    return ", ".join(f"{v // 1024:,} KiB {k.split('_')[0].upper()}" for k, v in cap.items())


def _size(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n % (1 << 20) == 0 else f"{n / 1024:g} KiB"


def table_row(board: Board, compact: bool = False) -> tuple[str, ...]:
    """One board as the cells of TABLE_COLUMNS (compact: the core alone for a board whose chip is not an FPGA)."""
    if board.kind == "fpga" or not board.chip:
        chip = board.chip or board.core
    else:
        chip = board.core if compact else f"{board.chip} ({board.core})"
    return (
        board.name,
        board.kind,
        ", ".join(board.flows),
        chip or "",
        f"{board.clock_mhz:g}",
        capacity_text(board, compact),
        board.lifecycle,
    )


def markdown_table(boards: dict[str, Board] | None = None) -> str:
    """The README board table, generated so it cannot drift from the registry (built-in boards by default)."""
    boards = load_boards([BUILTIN_BOARDS_DIR]) if boards is None else boards
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for board in sorted_boards(boards.values()):
        cells = list(table_row(board))
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def readme_section(text: str) -> str | None:
    """The text between the README's board markers, or None without markers."""
    if README_BEGIN not in text or README_END not in text:
        return None
    return text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n")


def update_readme(readme: Path = README_PATH) -> bool:
    """Rewrite the README's board table from the registry; True when it changed."""
    text = readme.read_text(encoding="utf-8")
    if readme_section(text) is None:
        raise BoardError(
            "README has no board table markers.", where=str(readme), fix=f"add {README_BEGIN} and {README_END}"
        )
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    new = f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text
