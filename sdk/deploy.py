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

    def validate(self) -> None:
        if not 0 < self.max_util <= 1:
            raise ConfigError(f"--max-util must be in (0, 1], got {self.max_util}.", where="--max-util", fix="e.g. --max-util 0.8")
        if self.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.samples}.", where="--samples", fix="e.g. --samples 100")
        if self.clock_mhz is not None and self.clock_mhz <= 0:
            raise ConfigError(f"--clock-mhz must be positive, got {self.clock_mhz}.", where="--clock-mhz", fix="e.g. --clock-mhz 100")

    def package_dir(self, board: Board) -> Path:
        return Path(self.out) if self.out else Path("deploy") / board.name


@dataclass
class DeployResult:
    board: str
    package: Path
    verified: bool
    summary: dict[str, Any]
    messages: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.verified else 1

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
                       fix="deploy to an FPGA board for now (sdk boards --kind fpga)")
    return info.load()


def _request(config: DeployConfig, board: Board, workdir: Path):
    from targets.base import BuildRequest

    resolved = resolve_model(config.model, workdir)
    x, y = verification_samples(resolved.card, config.samples)
    options = {"fps": config.fps, "max_util": config.max_util, "clock_mhz": config.clock_mhz, "require_bitfile": config.require_bitfile}
    return BuildRequest(resolved.onnx_path, resolved.card, board, options, workdir, x, y, qat_outputs(resolved, x))


def check(config: DeployConfig) -> None:
    """Only the mapping check of the target: raises an SDKError naming every unsupported layer."""
    config.validate()
    board = get_board(config.target)
    target = _adapter(board)
    with tempfile.TemporaryDirectory(prefix="sdk-check-") as tmp:
        # no samples, no QAT outputs: the check only needs the graph
        target.check(resolve_model(config.model, Path(tmp)).onnx_path, board, Path(tmp))


def deploy(config: DeployConfig, progress: bool = True) -> DeployResult:
    """Build, verify and package one deployment; the package appears only when complete."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sdk.report import write_report

    config.validate()
    board = get_board(config.target)
    target = _adapter(board)
    final_dir = config.package_dir(board)
    with tempfile.TemporaryDirectory(prefix="sdk-deploy-") as tmp, \
            Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                     console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task(f"{board.name}: load model and samples")
        request = _request(config, board, Path(tmp))

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
    return DeployResult(board.name, final_dir, outcome.verification.passed, outcome.summary, outcome.messages)


def _card_hash(card: dict[str, Any]) -> str:
    import hashlib

    stable = {k: v for k, v in card.items() if k != "source_checkpoint"} | {"source_sha256": card.get("source_checkpoint", {}).get("sha256")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
