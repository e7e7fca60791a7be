"""The built-in data sets, by name: one entry each, with its loader.

`--dataset NAME` (sdk train), `sdk simulate --data NAME`, a model card's data set, the CLI's help, the split cache
(sdk/dataset_cache.py) and `sdk doctor` all read this table; nothing else names a data set. Adding one is an
entry in BUILT_IN and its loader here. Everything else a user may pass (an .npz file, a folder of MNIST idx files)
is read by sdk/data.py.

This module imports only the standard library (the CLI reads the names for its help); a loader imports what it
needs when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (x_rest, y_rest, x_test, y_test): uint8 (N, C, H, W) images and int64 labels; the rest is split into train and
# validation by sdk.data.load_dataset.
Parts = tuple[Any, Any, Any, Any]


@dataclass(frozen=True)
class BuiltInDataset:
    """One built-in data set."""

    name: str  # what --dataset takes
    description: str  # what it is and where it comes from
    input_shape: tuple[int, int, int]  # (C, H, W) at its native size (--image-size resizes H and W)
    labels: tuple[str, ...]  # the class names, by label
    load: Callable[[int, int | None, float], Parts]  # (seed, image_size, test_fraction) -> its parts
    source_files: Callable[[], list[Path]]  # the files it is read from: its cache entry is keyed by their size and time
    check: Callable[[], dict[str, Any]] | None = None  # `sdk doctor`'s row for one that must be installed

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _no_files() -> list[Path]:
    return []


# ---------------------------------------------------------------------------------------------------------------------
# digits


def load_digits_dataset(seed: int = 0, image_size: int | None = None) -> tuple[Any, Any, list[str]]:
    """scikit-learn's 8x8 digits (values 0..16) as uint8 0..255, NCHW."""
    import numpy as np
    from sklearn.datasets import load_digits

    from sdk.data import resize

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    if image_size and image_size != 8:
        x = resize(x, image_size)
    return x, bunch.target.astype(np.int64), [str(d) for d in range(10)]


def _digits(seed: int, image_size: int | None, test_fraction: float) -> Parts:
    """The 1,797 digits, split for testing by seed (stratified)."""
    from sdk.data import split

    x, y, _ = load_digits_dataset(seed, image_size)
    return split(x, y, test_fraction, seed)


# ---------------------------------------------------------------------------------------------------------------------
# fashion-mnist

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _fashion_files() -> list[Path]:
    return sorted(FASHION_MNIST_DIR.glob("*"))


def _fashion_mnist(seed: int, image_size: int | None, test_fraction: float) -> Parts:
    """Its own 60,000 / 10,000 split, from Debian's package (seed and test_fraction do not apply)."""
    from sdk.data import load_idx_folder, resize
    from sdk.errors import DatasetError

    folder = FASHION_MNIST_DIR
    if not folder.is_dir():
        raise DatasetError(
            "Fashion-MNIST is not installed on this machine.",
            where=str(folder),
            fix="apt-get update && apt-get install -y dataset-fashion-mnist (Debian package, 31 MB)",
        )
    x_rest, y_rest, x_test, y_test = load_idx_folder(folder)
    if image_size and image_size != x_rest.shape[-1]:
        x_rest, x_test = resize(x_rest, image_size), resize(x_test, image_size)
    return x_rest, y_rest, x_test, y_test


def _fashion_check() -> dict[str, Any]:
    present = FASHION_MNIST_DIR.is_dir()
    return {
        "name": "fashion-mnist",
        "present": present,
        "version": None,
        "detail": str(FASHION_MNIST_DIR) if present else "apt-get install dataset-fashion-mnist",
        "needed_for": "the Fashion-MNIST benchmark (optional)",
    }


# ---------------------------------------------------------------------------------------------------------------------
# The registry

BUILT_IN: dict[str, BuiltInDataset] = {
    entry.name: entry
    for entry in (
        BuiltInDataset(
            "digits",
            "scikit-learn's bundled 8x8 digits (1,797 images), the embedded default: nothing to install",
            (1, 8, 8),
            tuple(str(d) for d in range(10)),
            _digits,
            _no_files,
        ),
        BuiltInDataset(
            "fashion-mnist",
            "Zalando's Fashion-MNIST (60,000 / 10,000 28x28 images) from Debian's dataset-fashion-mnist package",
            (1, 28, 28),
            FASHION_LABELS,
            _fashion_mnist,
            _fashion_files,
            _fashion_check,
        ),
    )
}


DEFAULT = "digits"  # `sdk train`'s and TrainConfig's data set: the embedded one


def names_text() -> str:
    """The built-in names for a help text or a fix: 'digits, fashion-mnist'."""
    return ", ".join(BUILT_IN)


def dataset_checks() -> list[dict[str, Any]]:
    """`sdk doctor`'s rows for the data sets that must be installed (fields of sdk.doctor.Check)."""
    return [entry.check() for entry in BUILT_IN.values() if entry.check is not None]
