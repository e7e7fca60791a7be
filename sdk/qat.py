"""Quantization-aware training of a zoo model: deterministic, with a progress bar.

A run folder holds everything `sdk export` needs:
  checkpoint.pt   best weights (by validation accuracy) + the plain-data config
  metrics.json    test accuracy of the best checkpoint, per-epoch history, timing
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdk.data import INPUT_SCALE, Dataset, load_dataset
from sdk.errors import CheckpointError, ConfigError
from sdk.zoo import BitsConfig, build_model, get_spec, parse_bits

CHECKPOINT_FORMAT = "sdk-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"


@dataclass
class TrainConfig:
    """Everything that determines a training run. Serialised into the checkpoint."""

    model: str = "tfc"  # zoo model name (sdk.zoo.ZOO)
    bits: str = "w2a2"  # preset: w1a1, w1a2, w2a2, w4a4, w8a8 (or any wXaY, 1..8)
    layer_bits: str = ""  # per-layer overrides, e.g. "fc0=w8a8,fc_out=w4"
    dataset: str = "digits"  # digits, fashion-mnist, an idx folder, or an .npz file
    image_size: int | None = None  # resize images to this side (None: native size)
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.01  # Adam, cosine-annealed to zero
    weight_decay: float = 0.0
    seed: int = 0
    augment: bool = True  # random +-1 pixel shifts (image models only)
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def bits_config(self) -> BitsConfig:
        return parse_bits(self.bits, self.layer_bits)

    def validate(self) -> None:
        get_spec(self.model)
        self.bits_config()
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be at least 1, got {getattr(self, name)}.",
                    where=f"--{name.replace('_', '-')}",
                    fix="give a positive number",
                )
        if not self.lr > 0:
            raise ConfigError(f"Learning rate must be positive, got {self.lr}.", where="--lr", fix="e.g. --lr 0.01")


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


def model_input(x_uint8: np.ndarray, flat: bool) -> torch.Tensor:
    """uint8 NCHW images -> the float tensor the model sees (x / 255, flattened for MLPs)."""
    x = torch.from_numpy(x_uint8.astype(np.float32) * np.float32(INPUT_SCALE))
    return x.reshape(len(x), -1) if flat else x


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


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))


def train(config: TrainConfig, out_dir: Path | str, data: Dataset | None = None, progress: bool = True) -> TrainResult:
    """Train `config.model` on `config.dataset`; write the best checkpoint and metrics to out_dir."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    config.validate()
    out_dir = Path(out_dir)
    data = data or load_dataset(config.dataset, seed=config.seed, image_size=config.image_size)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes, config.bits_config())
    flat = model.flat_input
    x_train, y_train = model_input(data.x_train, flat), torch.from_numpy(data.y_train)
    x_val, y_val = model_input(data.x_val, flat), torch.from_numpy(data.y_val)
    x_test, y_test = model_input(data.x_test, flat), torch.from_numpy(data.y_test)

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT_NAME
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(x_train) + config.batch_size - 1) // config.batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    best_val, best_epoch = -1.0, 0
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]train {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]:.2%}  best {task.fields[best]:.2%}"),
        TimeElapsedColumn(),
    )
    # Progress goes to stderr: stdout stays clean for --json.
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task(
            "train", total=config.epochs, name=f"{config.model} {config.bits}", loss=0.0, val=0.0, best=0.0
        )
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total_loss = 0.0
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                batch = x_train[idx]
                if config.augment and not flat:
                    batch = _shift(batch, generator)
                loss = loss_fn(model(batch), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * len(idx)
            val_acc = accuracy(model, x_val, y_val)
            history.append({"epoch": epoch, "loss": total_loss / len(x_train), "val_accuracy": val_acc})
            if val_acc > best_val:
                best_val, best_epoch = val_acc, epoch
                _save_checkpoint(checkpoint, model, config, data, epoch, val_acc)
            bar.update(task, advance=1, loss=history[-1]["loss"], val=val_acc, best=best_val)
    seconds = time.perf_counter() - started
    best_model, _ = load_checkpoint(checkpoint)
    test_acc = accuracy(best_model, x_test, y_test)
    result = TrainResult(out_dir, test_acc, best_val, best_epoch, seconds, history)
    metrics = {
        "test_accuracy": test_acc,
        "val_accuracy": best_val,
        "best_epoch": best_epoch,
        "seconds": seconds,
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint(),
        "num_train": len(x_train),
        "num_test": len(x_test),
        "config": asdict(config),
        "history": history,
    }
    _atomic_write(out_dir / METRICS_NAME, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
    return result


def load_checkpoint(path: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (weights_only load: checkpoints may be untrusted)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at {path}.", where=str(path), fix="train first: sdk train MODEL --out RUN_DIR"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(
            f"Checkpoint cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            where=str(path),
            fix="the file is corrupt or not an SDK checkpoint; train again",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            "File is not an SDK checkpoint (format tag missing).",
            where=str(path),
            fix="pass the run folder written by `sdk train`",
        )
    config = TrainConfig(**payload["config"])
    model = build_model(config.model, tuple(payload["input_shape"]), len(payload["labels"]), config.bits_config())
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"Checkpoint weights do not fit model '{config.model}': {str(exc).splitlines()[0]}",
            where=str(path),
            fix="the checkpoint was made by another SDK version or edited; train again",
        ) from None
    model.eval()
    return model, payload
