"""The registry of flows: the only way the core reaches a target.

A flow is a folder plus one registration: `targets/<flow>/flow.py` defines
`FLOW = FlowInfo(...)` (importing nothing heavy), and its `adapter.py` holds
the class implementing `targets.base.Target`. A flow outside this repository
registers its FlowInfo through the Python entry-point group `sdk.flows`
(`name = "package.module:ATTR"`, the name being the flow's). Flows are found on
first use and adapters imported on first use, so listing flows stays cheap.
"""

from __future__ import annotations

import importlib
import re
import typing
from dataclasses import MISSING, dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError, SDKError

ENTRY_POINT_GROUP = "sdk.flows"
FLOW_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a word: board files, --target board:flow and folders use it
BUILTIN_DIR = Path(__file__).resolve().parent


@dataclass
class NoOptions:
    """The options of a flow that declares none (of a kind: deploy or simulate)."""


@dataclass(frozen=True)
class Alternative:
    """How another flow's fix names this flow, once this flow's check accepts the model (sdk/advice.py)."""

    board: str  # the board whose check stands for the flow
    targets: str  # how a fix names the flow's targets, e.g. "an FPGA board"
    refused_by: str  # e.g. "the FPGA boards refuse"


@dataclass(frozen=True)
class FlowInfo:
    """What a flow is, what it needs, and where its adapter lives."""

    flow: str
    kinds: tuple[str, ...]  # the board kinds it serves (fpga | cpu | mcu | npu); the first is its main one
    description: str
    python_package: str  # the toolchain package (its version is shown by `sdk targets` and `sdk doctor`)
    vendor_tools: str
    adapter: str  # "module:Class"
    tool_checks: str = ""  # "module:function" -> the flow's own tools for `sdk doctor` (Check fields as dicts)
    # The flow's section of a board file, as a YAML file beside its code ("package:file", the schema syntax of
    # boards/schema.yaml: section required|optional, fields, rules); "" = an optional section without fields.
    board_section: str = ""
    # "module:function"s, cheap (no toolchain import): checks of a board serving the flow beyond its section's
    # schema, and the name registries a schema field's `known:` may name (sdk/boards.py says how they are called).
    board_checks: str = ""
    known_names: str = ""
    graph_guard: str = ""  # module declaring the flow's own ONNX op domains and what sdk/onnx_guard refuses for it
    loggers: tuple[str, ...] = ()  # roots of the toolchain's logger trees, quiet unless --verbose
    # dataclasses of the flow's own `sdk deploy` and `sdk simulate` options: each field is a flag (--max-util for
    # max_util) with its type and default; field metadata "help" (required), "choices" (a value's choices) and, for a
    # simulate option, "purpose" (what it does, said when a package of another flow is given it)
    options: type = NoOptions
    simulate_options: type = NoOptions
    listing_order: int = 100  # where the flow is listed (`sdk targets`, `sdk doctor`, the flags); then by name
    family: str = ""  # flows sharing one model writer (default: the flow alone); advice never points within one
    alternative: Alternative | None = None  # how another flow's fix may name this one (None: never)
    needs_part: bool = False  # its packages need the board's part in the manifest (`sdk simulate` reads it)

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str) or not self.kinds:  # ("fpga",), not "fpga": a string is a tuple of letters
            raise TypeError(f"FlowInfo {self.flow!r}: kinds must be a non-empty tuple of kinds, got {self.kinds!r}")

    def package_version(self) -> str | None:
        from importlib import metadata  # imported here: listing boards reads the registry, and this costs 20 ms

        try:
            return metadata.version(self.python_package)
        except metadata.PackageNotFoundError:
            return None

    @property
    def family_name(self) -> str:
        return self.family or self.flow


@dataclass(frozen=True)
class OptionSpec:
    """One flow option as the CLI and the Python API take it (one per name, whichever flows declare it)."""

    name: str  # the field's name: max_util
    type: type  # bool (a switch), int, float or str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    purpose: str = ""  # a simulate option: what it does, for the refusal on another flow's package
    flows: tuple[str, ...] = ()  # the flows declaring it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def same_declaration(self, other: OptionSpec) -> bool:
        return (self.type, self.default, self.help, self.choices, self.purpose) == (
            other.type,
            other.default,
            other.help,
            other.choices,
            other.purpose,
        )


def _load(value: str, where: str) -> Any:
    module, _, name = value.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"The flow registration {where} cannot be loaded: {type(exc).__name__}: {exc}",
            where=where,
            fix="reinstall the package that provides it, or uninstall it",
        ) from exc


def _registrations() -> list[tuple[str, FlowInfo]]:
    """(where it comes from, FlowInfo) for the built-in folders' flow.py, then the entry points' flows."""
    from importlib import metadata  # imported here: listing boards reads the registry, and this costs 20 ms

    found = []
    for path in sorted(BUILTIN_DIR.glob("*/flow.py")):
        where = f"targets/{path.parent.name}/flow.py"
        found.append((where, _load(f"targets.{path.parent.name}.flow:FLOW", where)))
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = f" (package {entry.dist.name})" if entry.dist is not None else ""
        where = f"entry point '{entry.name} = {entry.value}' in group {ENTRY_POINT_GROUP}{source}"
        info = _load(entry.value, where)
        if isinstance(info, FlowInfo) and info.flow != entry.name:
            raise ConfigError(
                f"The {where} registers a flow named '{info.flow}', not '{entry.name}'.",
                where=where,
                fix="name the entry point after its flow",
            )
        found.append((where, info))
    return found


@cache
def flows() -> dict[str, FlowInfo]:
    """Every registered flow by name, in listing order. Two flows of one name are refused, naming both."""
    seen: dict[str, tuple[str, FlowInfo]] = {}
    for where, info in _registrations():
        if not isinstance(info, FlowInfo):
            raise ConfigError(
                f"The flow registration {where} is a {type(info).__name__}, not a FlowInfo.",
                where=where,
                fix="point the registration at a targets.registry.FlowInfo",
            )
        if not FLOW_NAME.fullmatch(info.flow):
            raise ConfigError(
                f"The flow registration {where} names its flow {info.flow!r}; a flow's name is lower-case letters, "
                "digits and '_', starting with a letter.",
                where=where,
                fix="rename the flow",
            )
        if info.flow in seen:
            raise ConfigError(
                f"Two flows are named '{info.flow}': {seen[info.flow][0]} and {where}.",
                where=f"flow {info.flow}",
                fix="uninstall one of them, or rename one flow",
            )
        seen[info.flow] = (where, info)
    ordered = sorted(seen.values(), key=lambda item: (item[1].listing_order, item[1].flow))
    return {info.flow: info for _, info in ordered}


def __getattr__(name: str) -> Any:
    """FLOWS: the registered flows (found on first use)."""
    if name == "FLOWS":
        return flows()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flow_info(flow: str) -> FlowInfo:
    registered = flows()
    if flow not in registered:
        raise SDKError(
            f"Unknown flow '{flow}'.", where="flow", fix=f"one of {', '.join(registered)} (see `sdk targets`)"
        )
    return registered[flow]


@cache
def get_target(flow: str):
    """The adapter instance of a flow (imported on first use)."""
    info = flow_info(flow)
    return _load(info.adapter, f"adapter {info.adapter} of the flow {flow}")()


def tool_checks(flow: str) -> list[dict]:
    """What `sdk doctor` shows of a flow's own tools: dicts of name, present, version, detail, needed_for."""
    info = flow_info(flow)
    if not info.tool_checks:
        return []
    return _load(info.tool_checks, f"tool checks {info.tool_checks} of the flow {flow}")()


# ---------------------------------------------------------------------------------------------------------------------
# Options


def _option_type(annotation: Any, where: str) -> type:
    """bool, int, float or str, from a field's annotation (`float | None` is a float that may be left unset)."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
        raise ConfigError(
            f"The option {where} has the type {annotation!r}; an option is a bool, int, float or str (or None).",
            where=where,
            fix="declare the option with one of those types",
        )
    return kinds[0]


def declared_options(options: type, flow: str) -> list[OptionSpec]:
    """One flow's options dataclass as OptionSpecs."""
    hints = typing.get_type_hints(options)
    specs = []
    for f in fields(options):
        where = f"{options.__qualname__}.{f.name} of the flow {flow}"
        if "help" not in f.metadata or f.default is MISSING:
            raise ConfigError(
                f"The option {where} needs a default and metadata={{'help': ...}}.",
                where=where,
                fix="declare it as field(default=..., metadata={'help': '...'})",
            )
        choices = f.metadata.get("choices")
        specs.append(
            OptionSpec(
                f.name,
                _option_type(hints[f.name], where),
                f.default,
                f.metadata["help"],
                tuple(choices) if choices is not None else None,
                f.metadata.get("purpose", ""),
                (flow,),
            )
        )
    return specs


def _merged(kind: str) -> dict[str, OptionSpec]:
    merged: dict[str, OptionSpec] = {}
    for info in flows().values():
        for spec in declared_options(getattr(info, kind), info.flow):
            known = merged.get(spec.name)
            if known is None:
                merged[spec.name] = spec
            elif known.same_declaration(spec):
                merged[spec.name] = replace(known, flows=(*known.flows, info.flow))
            else:
                raise ConfigError(
                    f"The flows {', '.join(known.flows)} and {info.flow} declare the option {spec.flag} differently "
                    "(type, default, help or choices).",
                    where=spec.flag,
                    fix="declare a shared option once (one dataclass both flows use), or give it another name",
                )
    return merged


@cache
def deploy_options() -> dict[str, OptionSpec]:
    """The deploy options of every registered flow (`sdk deploy`'s flow flags, sdk.deploy's keywords)."""
    return _merged("options")


@cache
def simulate_options() -> dict[str, OptionSpec]:
    """The simulate options of every registered flow (`sdk simulate`'s flow flags, sdk.simulate's keywords)."""
    return _merged("simulate_options")


def set_options(given: dict[str, Any], specs: dict[str, OptionSpec]) -> dict[str, Any]:
    """The options the user set: those of `given` that differ from their declared defaults (unknown names kept, to be
    refused by whoever checks them)."""
    return {name: value for name, value in given.items() if name not in specs or value != specs[name].default}
