"""`sdk deploy`: one trained model to one board, as a verified deployment package.

The orchestration only: resolve the model and the board, take verification
samples and the QAT model's outputs on them, hand everything to the board's
target adapter, then commit the package atomically. The adapter does the flow.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk import __version__
from sdk.boards import Board, get_board
from sdk.data import load_dataset
from sdk.errors import CheckpointError, ConfigError, SDKError
from sdk.package import PackageBuilder, sha256_file, tool_versions

TOOL_PACKAGES = ["torch", "brevitas", "onnx", "onnxruntime", "qonnx", "finn-plus", "ai-edge-litert", "tflite-micro", "ethos-u-vela", "numpy"]


@dataclass
class DeployConfig:
    """Everything that determines a deployment. Serialised into the package manifest."""

    target: str                        # board name (see `sdk boards`)
    model: str                         # a training run folder (exported on the fly), or a QONNX file with its model card beside it
    out: str | None = None             # package folder; default: deploy/<board>
    fps: float | None = None           # throughput target in frames/s (FPGA: FINN's SetFolding); None: fit the board
    max_util: float = 0.8              # FPGA fit: cap on LUT, BRAM18, URAM and DSP utilisation (0..1]
    clock_mhz: float | None = None     # override the board's clock
    samples: int = 100                 # verification samples from the model's test split
    require_bitfile: bool = False      # FPGA: fail when no bitfile can be built (no Vivado)
    io: str | None = None              # TFLite family: "int8" or "float" model input/output; None: the flow's default
                                       # (float on tflite, int8 on microcontrollers and NPUs)
    int4_weights: bool = False         # TFLite family: pack weights as int4 where the runtime runs them, else refuse (exit 2)

    def validate(self) -> None:
        if self.io not in (None, "int8", "float"):
            raise ConfigError(f"--io must be int8 or float, got {self.io!r}.", where="--io", fix="e.g. --io int8")
        if not 0 < self.max_util <= 1:
            raise ConfigError(f"--max-util must be in (0, 1], got {self.max_util}.", where="--max-util", fix="e.g. --max-util 0.8")
        if self.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.samples}.", where="--samples", fix="e.g. --samples 100")
        if self.clock_mhz is not None and self.clock_mhz <= 0:
            raise ConfigError(f"--clock-mhz must be positive, got {self.clock_mhz}.", where="--clock-mhz", fix="e.g. --clock-mhz 100")

    def check_flow(self, board: Board) -> None:
        """Options of another flow are refused rather than silently ignored."""
        fpga_only = {"--fps": self.fps is not None, "--require-bitfile": self.require_bitfile}
        tflite_only = {"--io": self.io is not None, "--int4-weights": self.int4_weights}
        given = [flag for flag, on in (tflite_only if board.flow == "finn" else fpga_only).items() if on]
        if given:
            raise ConfigError(f"{', '.join(given)} does not apply to {board.name} (flow {board.flow}).", where=", ".join(given),
                              fix="drop the option for this board, or deploy those boards separately")

    def package_dir(self, board: Board) -> Path:
        return Path(self.out) if self.out else Path("deploy") / board.name

    def boards(self) -> list[str]:
        """--target a,b,c: one deployment per board."""
        names = [name.strip() for name in self.target.split(",") if name.strip()]
        if not names:
            raise ConfigError("--target names no board.", where="--target", fix="e.g. --target pynq-z2 (see `sdk boards`)")
        if len(set(names)) != len(names):
            raise ConfigError(f"--target names a board twice: {self.target}.", where="--target", fix="name each board once")
        return names


@dataclass
class DeployResult:
    board: str
    flow: str
    package: Path
    verified: bool
    summary: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    error: str | None = None           # a user error that stopped this board (in a multi-target deploy)

    @property
    def exit_code(self) -> int:
        return 2 if self.error else 0 if self.verified else 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "package": str(self.package), "exit_code": self.exit_code}


@dataclass
class ResolvedModel:
    onnx_path: Path
    card: dict[str, Any]
    brevitas: Any | None  # the QAT model, where its checkpoint is at hand


def resolve_model(model: str, workdir: Path) -> ResolvedModel:
    """A run folder is exported (and checked) on the fly; a QONNX file needs its model card beside it."""
    from sdk.export import card_path_for, export_run, read_card
    from sdk.qat import CHECKPOINT_NAME, load_checkpoint

    path = Path(model)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"{path} is not a training run (no {CHECKPOINT_NAME}).", where="--model",
                                  fix="pass a folder written by `sdk train`, or a QONNX file from `sdk export`")
        exported = export_run(path, workdir / "model.qonnx.onnx")
        return ResolvedModel(exported.onnx_path, exported.card, load_checkpoint(path)[0])
    if not path.is_file():
        raise CheckpointError(f"Model {path} does not exist.", where="--model", fix="pass a training run folder or a .onnx file from `sdk export`")
    card = read_card(path)
    source = Path(card.get("source_checkpoint", {}).get("path", ""))
    brevitas = None
    if source.is_file() and sha256_file(source) == card["source_checkpoint"]["sha256"]:
        brevitas = load_checkpoint(source)[0]
    local = workdir / "model.qonnx.onnx"
    local.write_bytes(path.read_bytes())
    card_path_for(local).write_text(json.dumps(card, indent=2))
    return ResolvedModel(local, card, brevitas)


def verification_samples(card: dict[str, Any], count: int) -> tuple[np.ndarray, np.ndarray]:
    spec = card["dataset"]
    data = load_dataset(spec["name"], seed=spec["seed"], image_size=spec["image_size"])
    if spec.get("fingerprint") and data.fingerprint() != spec["fingerprint"]:
        raise CheckpointError(f"The data set '{spec['name']}' differs from the one the model was trained on.", where="model card, dataset",
                              fix="deploy where the training data is available")
    return data.x_test[:count], data.y_test[:count]


def qat_outputs(resolved: ResolvedModel, x: np.ndarray) -> np.ndarray:
    """The QAT model's float outputs: Brevitas itself where its checkpoint is at hand, else the QONNX export
    (checked equal to Brevitas when it was exported)."""
    import torch

    from sdk.export import run_qonnx
    from sdk.qat import model_input

    flat = resolved.card["input"]["flatten"]
    if resolved.brevitas is not None:
        with torch.no_grad():
            return resolved.brevitas(model_input(x, flat)).numpy()
    return run_qonnx(resolved.onnx_path, x, flat)


def _adapter(board: Board):
    from targets.base import FLOWS

    info = FLOWS[board.flow]
    if info.adapter is None:
        raise SDKError(f"The {board.flow} flow ({info.description}) is not available in this SDK version.", where=f"--target {board.name}",
                       fix="pick a board of an available flow (`sdk targets`)")
    return info.load()


@dataclass
class PreparedModel:
    """What every board of one deploy shares: the exported model, the verification samples and the QAT outputs on them."""

    resolved: ResolvedModel
    x: np.ndarray
    y: np.ndarray
    reference: np.ndarray


def prepare_model(config: DeployConfig, workdir: Path) -> PreparedModel:
    """Export (or copy) the model into workdir, take the samples and run the QAT model on them: once per deploy."""
    resolved = resolve_model(config.model, workdir)
    x, y = verification_samples(resolved.card, config.samples)
    return PreparedModel(resolved, x, y, qat_outputs(resolved, x))


def _request(config: DeployConfig, board: Board, workdir: Path, prepared: PreparedModel):
    from targets.base import BuildRequest

    options = {"fps": config.fps, "max_util": config.max_util, "clock_mhz": config.clock_mhz, "require_bitfile": config.require_bitfile,
               "io": config.io, "int4_weights": config.int4_weights}
    resolved = prepared.resolved
    return BuildRequest(resolved.onnx_path, resolved.card, board, options, workdir, prepared.x, prepared.y, prepared.reference,
                        resolved.brevitas)


def check(config: DeployConfig) -> None:
    """Only the mapping check of the target: raises an SDKError naming every unsupported layer."""
    config.validate()
    board = get_board(config.target)
    target = _adapter(board)
    with tempfile.TemporaryDirectory(prefix="sdk-check-") as tmp:
        # no samples, no QAT outputs: the check only needs the graph (and the QAT model, for the TFLite writer)
        resolved = resolve_model(config.model, Path(tmp))
        target.check(resolved.onnx_path, board, Path(tmp), resolved.brevitas)


def deploy(config: DeployConfig, progress: bool = True, prepared: PreparedModel | None = None) -> DeployResult:
    """Build, verify and package one deployment; the package appears only when complete.

    prepared: the model and samples from prepare_model(), shared by the boards of a multi-target deploy."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sdk.report import write_report

    config.validate()
    board = get_board(config.target)
    config.check_flow(board)
    target = _adapter(board)
    final_dir = config.package_dir(board)
    with tempfile.TemporaryDirectory(prefix="sdk-deploy-") as tmp, \
            Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                     console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task(f"{board.name}: load model and samples")
        request = _request(config, board, Path(tmp), prepared or prepare_model(config, Path(tmp)))

        def step(message: str) -> None:
            bar.update(task, description=f"{board.name}: {message}")

        with PackageBuilder(final_dir) as pkg:
            outcome = target.build(request, pkg, step)
            pkg.add_file("model.qonnx.onnx", request.model_path)
            pkg.write_json("model.qonnx.json", request.card)
            write_report(pkg, outcome.report)
            step("commit package")
            pkg.commit({
                "sdk_version": __version__,
                "board": board.to_dict() | {"path": board.path.name},
                "flow": board.flow,
                "clock_mhz": config.clock_mhz or board.clock_mhz,
                "deploy_config": {k: v for k, v in asdict(config).items() if k not in ("model", "out")},
                "inputs": {"model_sha256": sha256_file(request.model_path), "card_sha256": _card_hash(request.card)},
                "tool_versions": tool_versions(TOOL_PACKAGES),
                "verified": outcome.verification.passed,
            })
    return DeployResult(board.name, board.flow, final_dir, outcome.verification.passed, outcome.summary, outcome.messages)


def _card_hash(card: dict[str, Any]) -> str:
    import hashlib

    stable = {k: v for k, v in card.items() if k != "source_checkpoint"} | {"source_sha256": card.get("source_checkpoint", {}).get("sha256")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def _artifact_bytes(package: Path) -> int | None:
    from targets.finn.deploy import DATAFLOW_NAME
    from targets.tflite.deploy import MODEL_NAME

    for name in ("model_vela.tflite", MODEL_NAME, DATAFLOW_NAME):
        if (package / name).is_file():
            return (package / name).stat().st_size
    return None


def deploy_many(config: DeployConfig, progress: bool = True, per_board_folders: bool | None = None) -> list[DeployResult]:
    """--target a,b,c: deploy the one model to each board, into <out>/<board> (default deploy/<board>).

    One board without per_board_folders keeps `sdk deploy`'s meaning of --out (the
    package folder itself). A user error on one of several boards (too large,
    unsupported layer) is recorded in its result and the other boards still
    deploy; each package is still all or nothing.
    """
    from dataclasses import replace

    config.validate()
    names = config.boards()
    nested = len(names) > 1 if per_board_folders is None else per_board_folders
    if not nested:
        return [deploy(config, progress)]
    boards = [get_board(name) for name in names]  # every name is checked before the first long build
    for board in boards:
        config.check_flow(board)
    base = Path(config.out) if config.out else Path("deploy")
    results = []
    with tempfile.TemporaryDirectory(prefix="sdk-deploy-model-") as tmp:
        prepared = prepare_model(config, Path(tmp))  # exported, sampled and run once for all boards
        for board in boards:
            single = replace(config, target=board.name, out=str(base / board.name))
            try:
                results.append(deploy(single, progress, prepared))
            except SDKError as exc:
                if len(boards) == 1:
                    raise
                results.append(DeployResult(board.name, board.flow, base / board.name, False, {}, [], error=str(exc)))
    return results


COMPARISON_COLUMNS = ["board", "flow", "accuracy (QAT)", "exactness rule", "result", "speed", "resources / memory", "artifact"]
RULE_NAMES = {"finn": "bit-exact vs QAT", "tflite": "=golden, QAT±1 LSB", "tflm": "=golden, QAT±1 LSB", "ethosu": "=golden, QAT±1 LSB"}


def _speed(flow: str, s: dict[str, Any]) -> str:
    if flow == "finn" and s.get("fps") is not None:
        return f"{s['fps']:,.0f}/s, {s.get('latency_us', 0):.2f} us"
    if flow == "ethosu" and s.get("inferences_per_second"):
        return f"{s['inferences_per_second']:,.0f}/s (Vela)"
    if flow == "tflite" and s.get("latency_us") is not None:
        return f"{s['latency_us']:.1f} us (host)"
    return "needs the board" if flow == "tflm" else "-"


def _resources(flow: str, s: dict[str, Any]) -> str:
    if flow == "finn":
        return " ".join(f"{k.upper()} {v:.0%}" for k, v in s.get("utilisation", {}).items() if v) or "-"
    if flow in ("tflm", "ethosu"):
        arena = s["arena_bytes"] if "arena_bytes" in s else s.get("sram_bytes")
        flash = s["off_chip_bytes"] if "off_chip_bytes" in s else s.get("model_bytes")
        return f"SRAM {_kb(arena)} ({_percent(s.get('sram_used'))}) flash {_kb(flash)} ({_percent(s.get('flash_used'))})"
    return f"file {_kb(s.get('model_bytes'))}"


def _kb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1024:,.1f} KiB"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.1%}"


def comparison_rows(results: list[DeployResult]) -> list[list[str]]:
    """One row per board for the comparison table (COMPARISON_COLUMNS)."""
    rows = []
    for r in results:
        flow = r.flow
        if r.error:
            rows.append([r.board, flow, "-", RULE_NAMES[flow], "ERROR", "-", r.error.splitlines()[0][:80], "-"])
            continue
        s = r.summary
        size = _artifact_bytes(r.package)
        rows.append([r.board, flow, f"{_percent(s.get('accuracy'))} ({_percent(s.get('qat_accuracy'))})", RULE_NAMES[flow],
                     "PASSED" if r.verified else "FAILED", _speed(flow, s), _resources(flow, s),
                     _kb(size) if size is not None else "-"])
    return rows
