"""The protocol every target adapter implements, and the plain data it exchanges with the core.

A target turns a QONNX model (with its model card) into an artifact for one
board: check -> build (compile, estimate, simulate, verify) -> package files,
and loads a finished package to run it on new inputs (`load`). Everything that
differs between flows lives behind this protocol: the core (`sdk/`) asks the
registry (`targets.registry`) for a target and never names a flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from sdk.boards import Board
from sdk.errors import ConfigError
from sdk.package import PackageBuilder
from sdk.report import Report
from sdk.verify import Verification
from targets.registry import flow_info, simulate_options


@dataclass
class BuildRequest:
    """Everything a target needs for one board."""

    model_path: Path  # QONNX file
    card: dict[str, Any]  # its model card
    board: Board
    options: Any  # the flow's own typed options (its FlowInfo.options dataclass)
    clock_mhz: float  # the board's clock, or the user's override
    workdir: Path  # scratch space, removed after the deploy
    x: np.ndarray  # verification samples, uint8 in the model card's input layout
    y: np.ndarray  # their labels
    reference: np.ndarray  # the QAT model's float outputs on x
    data_label: str = ""  # what x is, for every accuracy reported: e.g. "digits test split, 100 samples"
    qat_model: Any = None  # the Brevitas model, where its checkpoint is at hand (the TFLite writer needs it)


@dataclass
class BuildOutcome:
    report: Report
    verification: Verification
    summary: dict[str, Any]  # the headline numbers for the CLI and the comparison table
    messages: list[str] = field(default_factory=list)  # one-line notices (e.g. what needs Vivado)


@dataclass
class SimulatedOutputs:
    """A package's artifact run on a batch: the final outputs as the host receives them, and flow-specific figures."""

    outputs: np.ndarray  # float, batch first: what the deployed network returns
    bit_exact: bool  # the flow's rule asks these outputs to equal the QAT model's (up to float32 rounding)
    agreement: dict[str, float] = field(default_factory=dict)  # e.g. {"runtime = golden model": 1.0}
    failures: list[str] = field(default_factory=list)  # checks the run itself failed (e.g. an RTL layer differs)


class LoadedArtifact(Protocol):
    """A package's artifact made ready once (graphs read, plan prepared, interpreters made), for any number of runs.

    `run` reads no file, unless a simulate option asks for another tool's run (an FPGA package's RTL in Verilator
    builds in a scratch folder)."""

    def run(self, x: np.ndarray, agreement: bool = True) -> SimulatedOutputs:
        """x: the device's integer codes in the model card's input layout (sdk.deployment.model_batch).
        agreement=False: the outputs alone, without the flow's own checks no simulate option asked for (e.g. a
        TFLite package's runtime beside its golden model); the outputs are the same either way."""


@dataclass
class ComparisonCells:
    """A target's cells of the multi-target comparison table."""

    speed: str
    resources: str


class Target(Protocol):
    """One compilation flow. Implementations live in targets/<flow>/adapter.py."""

    flow: ClassVar[str]
    rule_name: ClassVar[str]  # short name of the exactness rule (comparison table)
    rule_text: ClassVar[str]  # the rule in one sentence (reports)
    artifact_name: ClassVar[str]  # the file in the package that goes to the device
    tool_packages: ClassVar[tuple[str, ...]]  # Python packages whose versions the manifest records

    def validate_board(self, board: Board) -> None: ...

    def check(self, model_path: Path, board: Board, workdir: Path, qat_model: Any = None) -> None: ...

    def build(self, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]) -> BuildOutcome: ...

    def load(self, package: Path, card: dict[str, Any], options: Any, threads: int | None = None) -> LoadedArtifact:
        """The verified package's artifact ready to run (sdk.load); options: the flow's own simulate options (its
        FlowInfo.simulate_options dataclass); threads: the most the runs may use (None: the runtime's default). A
        file the artifact needs that is missing or corrupt is a PackageError (or the flow's own SDKError) here,
        before any run."""

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells: ...


def parse_options(target: Target, given: dict[str, Any], board: Board) -> Any:
    """The user's flow options as the flow's typed options (FlowInfo.options); an option of another flow is refused,
    not ignored.

    given: option name -> value, only for the options the user set (e.g. {"fps": 5e4}).
    """
    declared = flow_info(target.flow).options
    own = {f.name for f in fields(declared)}
    foreign = sorted(name for name in given if name not in own)
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ConfigError(
            f"{flags} does not apply to {board.name} (flow {target.flow}).",
            where=flags,
            fix="drop the option for this board, or deploy those boards separately",
        )
    options = declared(**given)
    validate = getattr(options, "validate", None)
    if validate is not None:
        validate()
    return options


def parse_simulate_options(flow: str, given: dict[str, Any]) -> Any:
    """The simulate options the user set (e.g. {"rtlsim": True}) as the flow's typed FlowInfo.simulate_options; an
    option of another flow's packages is refused, saying what it does."""
    declared = flow_info(flow).simulate_options
    own = {f.name for f in fields(declared)}
    for name in sorted(given):
        if name in own:
            continue
        spec = simulate_options().get(name)
        flag = "--" + name.replace("_", "-")
        purpose = spec.purpose if spec is not None and spec.purpose else "does not apply to this package"
        raise ConfigError(
            f"{flag} {purpose}; this package is for {flow}.", where=flag, fix=f"drop {flag} for this package"
        )
    options = declared(**given)
    validate = getattr(options, "validate", None)
    if validate is not None:
        validate()
    return options


def finite_positive(value: float | None, flag: str, example: str) -> None:
    """Refuse NaN, infinities, zero and negative numbers for an option that must be a positive amount."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{flag} must be a finite positive number, got {value!r}.", where=flag, fix=f"e.g. {flag} {example}"
        )
