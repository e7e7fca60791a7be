"""Quantization-aware training of a zoo model: deterministic, its progress reported as events (sdk.progress).

A run folder holds everything `sdk export` needs:
  checkpoint.pt   best weights (by validation accuracy) + the plain-data config
  metrics.json    test accuracy of the best checkpoint, per-epoch history, timing
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdk.atomic_write import write_atomic
from sdk.data import INPUT_SCALE, MAX_CLASSES, Dataset, is_int, load_dataset
from sdk.errors import CheckpointError, ConfigError, SDKError
from sdk.progress import JobProgress, ProgressCallback, progress_callback
from sdk.train_config import TrainConfig
from sdk.zoo import build_model

CHECKPOINT_FORMAT = "sdk-checkpoint/1"
from sdk.runs import CHECKPOINT_NAME, METRICS_NAME  # noqa: E402 (re-exported: callers import them from here)

MAX_CHECKPOINT_BYTES = 2 << 30
MAX_METRICS_BYTES = 64 << 20
MAX_INPUT_ELEMENTS = 1 << 24  # C * H * W of a checkpoint's input


def check_out_dir(out_dir: Path, where: str = "--out") -> None:
    """The run folder can be made and written: an existing file, a file on the way, a read-only or missing-permission
    folder, or a name too long fails now, before training, and nothing is left behind by the check."""

    def fail(what: str, fix: str) -> ConfigError:
        return ConfigError(what, where=f"{where} {out_dir}", fix=fix)

    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise fail(f"{out_dir} exists and is not a folder.", "give a new or existing folder for the run")
        existing, missing = out_dir, []
        while not existing.exists():
            missing.append(existing.name)
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            raise fail(f"{existing} is a file, so {out_dir} cannot be made.", "give a folder path for the run")
        longest = os.pathconf(existing, "PC_NAME_MAX")
        too_long = [name for name in missing if len(os.fsencode(name)) > longest]
        if too_long:
            raise fail(f"The folder name {too_long[0][:40]}... is longer than {longest} bytes.", "use a shorter name")
        probe = tempfile.mkdtemp(prefix=".sdk-write-check-", dir=existing)
        os.rmdir(probe)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise fail(
            f"The run folder cannot be written: {getattr(exc, 'strerror', None) or exc}.",
            "choose a folder you can write to (check its permissions, and that its disk is not read-only or full)",
        ) from None


@dataclass
class TrainResult:
    run_dir: Path
    test_accuracy: float
    val_accuracy: float
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


def model_input(x_uint8: np.ndarray, flat: bool, scale: float = INPUT_SCALE) -> torch.Tensor:
    """uint8 NCHW images -> the float tensor the model sees (x * scale, x / 255 by default; flattened for MLPs)."""
    x = torch.from_numpy(x_uint8.astype(np.float32) * np.float32(scale))
    return x.reshape(len(x), -1) if flat else x


def module_input(x_uint8: np.ndarray, card: dict[str, Any], scale: float = INPUT_SCALE) -> torch.Tensor:
    """Samples (N, C, H, W) as the source module takes them: model_input in the shape of the graph's input,
    (N, F), (N, C, T) for a sequence model (a Conv1d's input) or (N, C, H, W)."""
    from sdk.model_card import graph_input_shape

    x = model_input(x_uint8, card["input"]["flatten"], scale)
    return x.reshape(len(x), *graph_input_shape(card)[1:])


def _shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
    return torch.roll(batch, shifts=(dy, dx), dims=(2, 3))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        correct += int((model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size]).sum())
    return correct / max(len(x), 1)


def _save_checkpoint(
    path: Path, model: nn.Module, config: TrainConfig, data: Dataset, epoch: int, val_acc: float
) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "input_shape": list(data.input_shape),
        "labels": data.labels,
        "dataset_fingerprint": data.fingerprint(),
        "epoch": epoch,
        "val_accuracy": val_acc,
        "state_dict": model.state_dict(),
    }
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def train(
    config: TrainConfig, out_dir: Path | str, data: Dataset | None = None, progress: ProgressCallback | None = None
) -> TrainResult:
    """Train `config.model` on `config.dataset`; write the best checkpoint and metrics to out_dir.

    progress: called with a ProgressEvent per epoch (sdk.progress); nothing is drawn or printed here."""
    config.validate()
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    callback = progress_callback(progress)
    data = data or load_dataset(config.dataset, seed=config.seed, image_size=config.image_size)
    generator = _seeded(config)
    model = build_model(config.model, data.input_shape, data.num_classes, config.bits_config())
    _dry_run(model, data, config)
    splits = _Splits.of(data, model.flat_input)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT_NAME
    loop = _Loop.of(model, config, splits, generator)
    events = JobProgress(callback, "train", f"{config.model} {config.bits}", total=config.epochs)
    started = time.perf_counter()
    try:
        best = loop.run(events, lambda epoch, val: _save_checkpoint(checkpoint, model, config, data, epoch, val))
    finally:
        events.finish()
    seconds = time.perf_counter() - started
    best_model, _ = load_checkpoint(checkpoint, check_metrics=False)  # metrics.json is (re)written below
    test_acc = accuracy(best_model, splits.x_test, splits.y_test)
    result = TrainResult(out_dir, test_acc, best.val_accuracy, best.epoch, seconds, loop.history)
    _write_metrics(result, config, data, splits)
    return result


def _seeded(config: TrainConfig) -> torch.Generator:
    """torch's and numpy's seeds and thread count set; the generator of the batch order and shifts."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    return torch.Generator().manual_seed(config.seed)


@dataclass
class _Splits:
    """A data set's parts as the model takes them: float inputs, integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def of(cls, data: Dataset, flat: bool) -> _Splits:
        return cls(
            model_input(data.x_train, flat),
            torch.from_numpy(data.y_train),
            model_input(data.x_val, flat),
            torch.from_numpy(data.y_val),
            model_input(data.x_test, flat),
            torch.from_numpy(data.y_test),
        )


@dataclass
class _Best:
    val_accuracy: float = -1.0
    epoch: int = 0


@dataclass
class _Loop:
    """The training loop: Adam, cosine-annealed per batch, cross-entropy; the best epoch by validation accuracy."""

    model: nn.Module
    config: TrainConfig
    splits: _Splits
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: Any
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def of(cls, model: nn.Module, config: TrainConfig, splits: _Splits, generator: torch.Generator) -> _Loop:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = (len(splits.x_train) + config.batch_size - 1) // config.batch_size
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        return cls(model, config, splits, generator, optimizer, scheduler)

    def run(self, events: JobProgress, save: Callable[[int, float], None]) -> _Best:
        """Every epoch; `save(epoch, val_accuracy)` at each new best. One event per epoch."""
        best = _Best()
        events.start("epoch", {"loss": 0.0, "val": 0.0, "best": 0.0})
        for epoch in range(1, self.config.epochs + 1):
            loss = self.epoch()
            val_acc = accuracy(self.model, self.splits.x_val, self.splits.y_val)
            self.history.append({"epoch": epoch, "loss": loss, "val_accuracy": val_acc})
            if val_acc > best.val_accuracy:
                best = _Best(val_acc, epoch)
                save(epoch, val_acc)
            events.step("epoch", {"loss": loss, "val": val_acc, "best": best.val_accuracy})
        return best

    def epoch(self) -> float:
        """One pass over the training split in the generator's order; the mean loss per sample."""
        self.model.train()
        x, y, size = self.splits.x_train, self.splits.y_train, self.config.batch_size
        shift = self.config.augment and not self.model.flat_input
        loss_fn = nn.CrossEntropyLoss()
        order = torch.randperm(len(x), generator=self.generator)
        total_loss = 0.0
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            batch = _shift(x[idx], self.generator) if shift else x[idx]
            loss = loss_fn(self.model(batch), y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.item() * len(idx)
        return total_loss / len(x)


def _write_metrics(result: TrainResult, config: TrainConfig, data: Dataset, splits: _Splits) -> None:
    """metrics.json: the best checkpoint's accuracies, the history, the data set and the config."""
    metrics = {
        "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint(),
        "num_train": len(splits.x_train),
        "num_test": len(splits.x_test),
        "config": asdict(config),
        "history": result.history,
    }
    write_atomic(result.run_dir / METRICS_NAME, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))


def _dry_run(model: nn.Module, data: Dataset, config: TrainConfig) -> None:
    """One forward pass of a copy on two samples: a model that cannot take this input fails before the first epoch
    (the copy, so that no quantizer of the model to train sees data outside training)."""
    try:
        with torch.no_grad():
            copy.deepcopy(model).eval()(model_input(data.x_train[:2], model.flat_input))
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"Model '{config.model}' cannot take inputs of shape {data.input_shape}: {reason}",
            where="--image-size" if config.image_size else "--dataset",
            fix="choose an image size the model supports (see `sdk models`), or another model",
        ) from exc


def _payload_error(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {what}.", where=str(path), fix="the file was edited or is not from `sdk train`; train again"
    )


def _checked_payload(payload: Any, path: Path) -> TrainConfig:
    """The checkpoint's own fields, each of the type and range `sdk train` writes; the config they describe."""
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            "File is not an SDK checkpoint (format tag missing).",
            where=str(path),
            fix="pass the run folder written by `sdk train`",
        )
    raw = payload.get("config")
    if not isinstance(raw, dict):
        raise _payload_error(path, "has no training config")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise _payload_error(path, f"config has unknown field(s) {', '.join(unknown)[:200]}")
    if "model" not in raw or "bits" not in raw:
        raise _payload_error(path, "config does not name its model and bits")
    config = TrainConfig(**raw)
    try:
        config.validate()
    except SDKError as exc:
        raise _payload_error(path, f"config is invalid: {exc.what.rstrip('.')}") from exc
    shape = payload.get("input_shape")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(is_int(d) and d >= 1 for d in shape)
        or math.prod(shape) > MAX_INPUT_ELEMENTS
    ):
        raise _payload_error(path, f"input_shape {str(shape)[:100]} is not (C, H, W) of positive sizes")
    labels = payload.get("labels")
    if (
        not isinstance(labels, list | tuple)
        or not 1 <= len(labels) <= MAX_CLASSES
        or not all(isinstance(v, str) for v in labels)
    ):
        raise _payload_error(path, "labels are not a list of class names")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise _payload_error(path, "weights (state_dict) are not a mapping of names to tensors")
    return config


def read_metrics(path: Path | str) -> dict[str, Any]:
    """metrics.json of a run folder (or beside a checkpoint): {} when absent, a CheckpointError when unreadable."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    metrics_path = run_dir / METRICS_NAME
    if not metrics_path.exists():
        return {}
    fix = "the run's metrics.json is damaged; train again (or delete metrics.json to export without its accuracy)"
    try:
        if not metrics_path.is_file() or metrics_path.stat().st_size > MAX_METRICS_BYTES:
            raise CheckpointError(f"{METRICS_NAME} is not a metrics file.", where=str(metrics_path), fix=fix)
        metrics = json.loads(metrics_path.read_bytes().decode("utf-8"))
    except CheckpointError:
        raise
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(
            f"{METRICS_NAME} cannot be read: {type(exc).__name__}: {str(exc)[:200]}", where=str(metrics_path), fix=fix
        ) from None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{METRICS_NAME} does not hold a JSON object.", where=str(metrics_path), fix=fix)
    accuracy = metrics.get("test_accuracy")
    if accuracy is not None and (
        not isinstance(accuracy, int | float) or isinstance(accuracy, bool) or not 0 <= accuracy <= 1
    ):
        raise CheckpointError(
            f"{METRICS_NAME} has test_accuracy {str(accuracy)[:50]}, not a fraction in [0, 1].",
            where=str(metrics_path),
            fix=fix,
        )
    return metrics


def load_checkpoint(path: Path | str, check_metrics: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (weights_only load: checkpoints may be untrusted)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at {path}.", where=str(path), fix="train first: sdk train MODEL --out RUN_DIR"
        )
    size = path.stat().st_size
    if size == 0 or size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"Checkpoint is {'empty (0 bytes)' if size == 0 else f'larger than {MAX_CHECKPOINT_BYTES >> 30} GiB'}.",
            where=str(path),
            fix="the file is corrupt or not an SDK checkpoint; train again",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        text = str(exc).strip()
        raise CheckpointError(
            f"Checkpoint cannot be read: {type(exc).__name__}" + (f": {text.splitlines()[0][:200]}" if text else ""),
            where=str(path),
            fix="the file is corrupt or not an SDK checkpoint; train again",
        ) from None
    config = _checked_payload(payload, path)
    if check_metrics:
        read_metrics(path)
    try:
        model = build_model(config.model, tuple(payload["input_shape"]), len(payload["labels"]), config.bits_config())
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # a shape or a layer the weights do not fit, in torch's or Brevitas's words
        text = exc.what if isinstance(exc, SDKError) else str(exc)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raise CheckpointError(
            f"Checkpoint weights do not fit model '{config.model}': "
            + (" ".join(lines[:2])[:300] if lines else type(exc).__name__),
            where=str(path),
            fix="the checkpoint was made by another SDK version or edited; train again",
        ) from None
    model.eval()
    return model, payload
