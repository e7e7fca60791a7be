"""Data sets that need no download at run time.

Every data set is handed to the rest of the SDK as uint8 images (N, C, H, W)
with integer labels; the model sees x / 255. Splits are fixed by a seed.

Sources:
  digits                 scikit-learn's bundled 8x8 digits (the embedded default)
  fashion-mnist          Debian's dataset-fashion-mnist package (idx files)
  a folder               MNIST-format idx files: *-images-idx3-ubyte(.gz), *-labels-idx1-ubyte(.gz)
  a .npz file            x: uint8 (N,H,W), (N,C,H,W) or (N,F), or floats in [0, 1];
                         y: integer labels (N,); labels: optional class names
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = [
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
]
INPUT_SCALE = 1.0 / 255.0  # the model's input is uint8 * INPUT_SCALE


@dataclass
class Dataset:
    """A data set split into train, validation and test parts (uint8 NCHW)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()[:16]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 NCHW images to size x size (for upscaled digits)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(images.astype(np.float32))
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return np.clip(np.rint(out.numpy()), 0, 255).astype(np.uint8)


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split fixed by seed: returns (x_rest, y_rest, x_part, y_part)."""
    from sklearn.model_selection import train_test_split

    x_rest, x_part, y_rest, y_part = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    return x_rest, y_rest, x_part, y_part


def load_digits_dataset(seed: int = 0, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 8x8 digits (values 0..16) as uint8 0..255, NCHW."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    if image_size and image_size != 8:
        x = _resize(x, image_size)
    return x, bunch.target.astype(np.int64), [str(d) for d in range(10)]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(
            f"Cannot read idx file: {exc}",
            where=str(path),
            fix="check that the file is a complete MNIST-format idx file",
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(
            "Not an unsigned-byte idx file (bad magic number).",
            where=str(path),
            fix="use MNIST-format idx files (idx3 images, idx1 labels)",
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(
            f"idx file holds {data.size} bytes of data, its header says {dims}.",
            where=str(path),
            fix="the file is truncated; copy it again",
        )
    return data.reshape(dims)


def _find_idx(folder: Path, prefix: str, kind: str) -> Path:
    for pattern in (f"{prefix}-{kind}-idx*-ubyte.gz", f"{prefix}-{kind}-idx*-ubyte", f"{prefix}-{kind}.idx*-ubyte*"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise DatasetError(
        f"No {prefix} {kind} idx file in {folder}.",
        where=str(folder),
        fix=f"the folder needs {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz (MNIST format)",
    )


def load_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-format folder: (x_train, y_train, x_test, y_test), uint8 NCHW."""
    parts = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_find_idx(folder, prefix, "images"))
        labels = _read_idx(_find_idx(folder, prefix, "labels"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{prefix} images {images.shape} and labels {labels.shape} do not match.",
                where=str(folder),
                fix="images must be idx3 (N,H,W) and labels idx1 (N,) of the same N",
            )
        parts += [images[:, None, :, :].copy(), labels.astype(np.int64)]
    return tuple(parts)  # type: ignore[return-value]


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The user's own data: x, y and optional labels (see module docstring)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(
            f"Data file {path} does not exist.",
            where=str(path),
            fix="give the path of an .npz file with arrays x and y",
        ) from None
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"Cannot read {path} as .npz: {exc}", where=str(path), fix="save it with numpy.savez(path, x=..., y=...)"
        ) from None
    missing = [k for k in ("x", "y") if k not in archive.files]
    if missing:
        raise DatasetError(
            f"The .npz file has no array {' or '.join(repr(m) for m in missing)} "
            f"(it has: {', '.join(archive.files) or 'nothing'}).",
            where=str(path),
            fix="save it with numpy.savez(path, x=images, y=labels, labels=class_names)",
        )
    x, y = archive["x"], archive["y"]
    if x.ndim not in (2, 3, 4) or len(x) != len(y) or y.ndim != 1:
        raise DatasetError(
            f"Array shapes do not fit: x {x.shape}, y {y.shape}.",
            where=f"{path}, arrays x/y",
            fix="x must be (N,F), (N,H,W) or (N,C,H,W); y must be (N,) integer labels",
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"Labels y must be integers, got {y.dtype}.", where=f"{path}, array y", fix="store class indices 0..K-1"
        )
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating) or x.min() < 0 or x.max() > 1:
            raise DatasetError(
                f"x must be uint8, or floats in [0, 1]; got {x.dtype} in [{x.min()}, {x.max()}].",
                where=f"{path}, array x",
                fix="scale the data to [0, 1] or store uint8 pixels",
            )
        x = np.rint(x * 255.0).astype(np.uint8)
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None, :, :]
    labels = [str(v) for v in archive["labels"].tolist()] if "labels" in archive.files else None
    return x, y.astype(np.int64), labels


def load_dataset(
    spec: str, seed: int = 0, image_size: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Dataset:
    """Resolve a data set name or path and split it, deterministically by seed."""
    labels: list[str] | None
    if spec == "digits":
        x, y, labels = load_digits_dataset(seed, image_size)
        x_rest, y_rest, x_test, y_test = _split(x, y, test_fraction, seed)
    elif spec == "fashion-mnist" or Path(spec).is_dir():
        folder = FASHION_MNIST_DIR if spec == "fashion-mnist" else Path(spec)
        if not folder.is_dir():
            raise DatasetError(
                "Fashion-MNIST is not installed on this machine.",
                where=str(folder),
                fix="apt-get update && apt-get install -y dataset-fashion-mnist (Debian package, 31 MB)",
            )
        x_rest, y_rest, x_test, y_test = load_idx_folder(folder)
        labels = FASHION_LABELS if spec == "fashion-mnist" else None
        if image_size and image_size != x_rest.shape[-1]:
            x_rest, x_test = _resize(x_rest, image_size), _resize(x_test, image_size)
    elif spec.endswith(".npz"):
        x, y, labels = load_npz(Path(spec))
        if image_size and x.shape[-1] != image_size:
            x = _resize(x, image_size)
        x_rest, y_rest, x_test, y_test = _split(x, y, test_fraction, seed)
    else:
        raise DatasetError(
            f"Unknown data set '{spec}'.",
            where="--dataset",
            fix="use digits, fashion-mnist, a folder of MNIST idx files, or an .npz file with x and y",
        )
    num_classes = int(max(y_rest.max(), y_test.max())) + 1
    labels = labels or [str(i) for i in range(num_classes)]
    if len(labels) < num_classes:
        raise DatasetError(
            f"{len(labels)} label names for {num_classes} classes.",
            where=f"{spec}, labels",
            fix="give one name per class",
        )
    x_train, y_train, x_val, y_val = _split(x_rest, y_rest, val_fraction, seed)
    return Dataset(spec, x_train, y_train, x_val, y_val, x_test, y_test, list(labels))
