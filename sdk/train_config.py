"""A training run's configuration and its checks: plain data, no torch.

`sdk train` checks its options here before the training stack (torch, Brevitas) loads, so a typo in a model
name, a bit width or a layer name is answered at once; sdk.qat trains with it and stores it in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.data import check_image_size, check_seed, is_int
from sdk.datasets import DEFAULT as DEFAULT_DATASET
from sdk.datasets import names_text
from sdk.errors import ConfigError
from sdk.zoo.bits import BitsConfig, parse_bits
from sdk.zoo.catalog import get_spec

# Bounds past which a value is a typo, not a plan (and past which torch or scikit-learn fail in their own words).
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20
MAX_THREADS = 1024


@dataclass
class TrainConfig:
    """Everything that determines a training run. Serialised into the checkpoint."""

    model: str = "tfc"  # zoo model name (sdk.zoo.ZOO)
    bits: str = "w2a2"  # preset: w1a1, w1a2, w2a2, w4a4, w8a8 (or any wXaY, 1..8)
    layer_bits: str = ""  # per-layer overrides, e.g. "fc0=w8a8,fc_out=w4"
    dataset: str = DEFAULT_DATASET  # a built-in data set (sdk.datasets.BUILT_IN), an idx folder, or an .npz file
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
        """Every field, before anything is read or written: a bad value fails here, not an hour into training."""
        for name, where in (("model", "MODEL"), ("bits", "--bits"), ("layer_bits", "--layer-bits")):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(
                    f"{where} must be text, got {getattr(self, name)!r}.", where=where, fix="e.g. tfc --bits w2a2"
                )
        self.bits_config().check_layer_names(get_spec(self.model).layer_names(), self.model)
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ConfigError(
                f"--dataset must name a data set, got {self.dataset!r}.",
                where="--dataset",
                fix=f"{names_text()}, a folder of MNIST idx files, or an .npz file",
            )
        check_image_size(self.image_size)
        check_seed(self.seed)
        _check_int(self.epochs, "--epochs", 1, MAX_EPOCHS, "e.g. --epochs 60")
        # BatchNorm needs two samples per batch: a batch of one is skipped, so --batch-size 1 would train nothing.
        _check_int(self.batch_size, "--batch-size", 2, MAX_BATCH_SIZE, "e.g. --batch-size 64")
        if self.threads is not None:
            _check_int(self.threads, "threads", 1, MAX_THREADS, "leave it unset for torch's default")
        _check_float(self.lr, "--lr", "e.g. --lr 0.01", positive=True)
        _check_float(self.weight_decay, "weight_decay", "e.g. 0.0 or 1e-4", positive=False)
        if not isinstance(self.augment, bool):
            raise ConfigError(
                f"augment must be True or False, got {self.augment!r}.", where="augment", fix="--no-augment"
            )


def _check_int(value: Any, where: str, low: int, high: int, fix: str) -> None:
    if not is_int(value) or not low <= value <= high:
        raise ConfigError(f"{where} must be an integer from {low} to {high:,}, got {value!r}.", where=where, fix=fix)


def _check_float(value: Any, where: str, fix: str, positive: bool) -> None:
    number = is_int(value) or isinstance(value, float | np.floating)
    if not number or not math.isfinite(value) or (value <= 0 if positive else value < 0):
        what = "a finite number above 0" if positive else "a finite number of at least 0"
        raise ConfigError(f"{where} must be {what}, got {value!r}.", where=where, fix=fix)
