"""Data sets that need no download at run time.

Every data set is handed to the rest of the SDK as uint8 images (N, C, H, W)
with integer labels; the model sees x / 255. Splits are fixed by a seed.

Sources:
  a built-in name        sdk/datasets.py's BUILT_IN (digits, the embedded default; fashion-mnist ...)
  a folder               MNIST-format idx files: *-images-idx3-ubyte(.gz), *-labels-idx1-ubyte(.gz)
  a .npz file            x: uint8 (N,H,W), (N,C,H,W) or (N,F), or floats in [0, 1];
                         y: integer labels (N,); labels: optional class names

Files are untrusted: an .npz is read member by member with allow_pickle=False
after its array headers were checked against the archive's sizes and the
memory budget (MEMORY_BUDGET), an idx file after its header was checked
against the budget, and every way either can be malformed is a DatasetError
naming the file as the user gave it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk import dataset_cache
from sdk.datasets import BUILT_IN, names_text
from sdk.errors import ConfigError, DatasetError

INPUT_SCALE = 1.0 / 255.0  # the model's input is uint8 * INPUT_SCALE

# Bounds that tell a data set from a mistake (or a file made to exhaust memory).
MAX_FILE_BYTES = 2 << 30  # an .npz or idx file, and the arrays it unpacks to
# The memory budget: the most one set of samples (an array of --data or --dataset, an idx file, the random
# verification inputs of a card's input shape) may take as the SDK works on it: its bytes as stored plus
# BYTES_PER_VALUE a value for the copies made of it (uint8 pixels, the float32 inputs the graphs and runtimes run
# on). Checked from the headers (an .npy header, an idx header, a card's input shape) before any array is read or
# made, so a small compressed file cannot ask for gigabytes.
MEMORY_BUDGET = 2 << 30
BYTES_PER_VALUE = 8
MAX_IMAGE_SIZE = 256  # --image-size: a side; 1,797 digits at 256 x 256 are already 118 MB of uint8
MAX_CLASSES = 10_000
MAX_LABEL_CHARS = 200
MAX_SEED = 2**32 - 1  # scikit-learn's random_state range
NPZ_ARRAYS = ("x", "y", "labels")
NPZ_FIX = "save it with numpy.savez(path, x=images, y=labels, labels=class_names)"


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


# ---------------------------------------------------------------------------------------------------------------------
# Options


def is_int(value: Any) -> bool:
    """An integer option value (a bool is not one, though Python says it is)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_seed(seed: Any, where: str = "--seed") -> int:
    """Seeds go to scikit-learn's splits, which take 0 .. 2**32 - 1."""
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"The seed must be an integer from 0 to {MAX_SEED}, got {seed!r}.", where=where, fix="e.g. --seed 0"
        )
    return int(seed)


def check_image_size(image_size: Any, where: str = "--image-size") -> int | None:
    """None keeps the native size; a side above MAX_IMAGE_SIZE would take more memory than a data set is worth."""
    if image_size is None:
        return None
    if not is_int(image_size) or not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"The image size must be an integer from 1 to {MAX_IMAGE_SIZE}, got {image_size!r}.",
            where=where,
            fix=f"give the side in pixels, e.g. {where} 16 (or leave it out for the native size)",
        )
    return int(image_size)


def _kind(path: Path, where: str) -> str:
    """'dir', 'file', 'missing' or 'other', without the OSErrors pathlib lets through (a name too long...)."""
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
        return "other" if path.exists() else "missing"
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"The data path cannot be accessed: {getattr(exc, 'strerror', None) or exc}.",
            where=where,
            fix="give the path of an .npz file or of a folder of MNIST idx files",
        ) from None


def check_values(shape: tuple[int, ...] | list[int], itemsize: int, what: str, where: str, fix: str) -> None:
    """Refuse (DatasetError) an array of `shape` (`itemsize` bytes a value as stored) that would take more than
    MEMORY_BUDGET as the SDK works on it: asked before the array is read or made."""
    dims = tuple(int(d) for d in shape)
    need = math.prod(dims) * (itemsize + BYTES_PER_VALUE)
    if need > MEMORY_BUDGET:
        raise DatasetError(
            f"{what} of shape {dims} would take {need / 2**30:,.1f} GiB as the SDK works on it ({itemsize} + "
            f"{BYTES_PER_VALUE} bytes a value), over its memory budget of {MEMORY_BUDGET >> 30} GiB.",
            where=where,
            fix=fix,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Splits


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 NCHW images to size x size (for upscaled digits), within the memory budget (its
    float32 copies: 70,000 images at 256 x 256 would take 34 GiB)."""
    check_values((len(images), images.shape[1], size, size), 4, "The resized images", "--image-size", "a smaller side")
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(images.astype(np.float32))
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return np.clip(np.rint(out.numpy()), 0, 255).astype(np.uint8)


def _check_splittable(y: np.ndarray, fraction: float, part: str, where: str) -> None:
    """What scikit-learn's stratified split needs, said in the data set's terms before it says it in its own."""
    classes, counts = np.unique(y, return_counts=True)
    n, k = len(y), len(classes)
    if k < 2:
        only = f"class {classes[0]}" if k else "no class"
        raise DatasetError(
            f"The data set has only one class ({only}, {n} samples); a classifier needs at least two.",
            where=where,
            fix="add samples of the other classes (y holds class indices 0..K-1)",
        )
    sparse = classes[counts < 2]
    if len(sparse):
        named = ", ".join(str(c) for c in sparse[:5]) + (" ..." if len(sparse) > 5 else "")
        raise DatasetError(
            f"Class(es) {named} have a single sample; the stratified {part} split needs at least 2 of each class.",
            where=where,
            fix="give every class at least 3 samples (10 or more for a meaningful test accuracy)",
        )
    n_part = math.ceil(fraction * n)
    if n_part < k or n - n_part < k:
        raise DatasetError(
            f"{n} samples of {k} classes cannot be split stratified: the {part} split takes {n_part} and leaves "
            f"{n - n_part}, and each part needs one sample of every class.",
            where=where,
            fix=f"give at least {math.ceil(k / min(fraction, 1 - fraction)) + 1} samples",
        )


def split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, part: str = "test", where: str = "--dataset"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split fixed by seed: returns (x_rest, y_rest, x_part, y_part)."""
    from sklearn.model_selection import train_test_split

    _check_splittable(y, fraction, part, where)
    try:
        x_rest, x_part, y_rest, y_part = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as exc:  # a case the check above does not foresee: still the data's doing
        raise DatasetError(
            f"The data set cannot be split for {part}: {exc}",
            where=where,
            fix="give more samples of every class",
        ) from exc
    return x_rest, y_rest, x_part, y_part


# ---------------------------------------------------------------------------------------------------------------------
# idx folders


def _read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """One MNIST-format idx file of unsigned bytes (gzip or not), checked against its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    if _kind(path, str(path)) != "file":  # a folder or a pipe named like an idx file: never opened
        raise DatasetError(
            "This idx entry is not a regular file.", where=str(path), fix="the folder must hold MNIST-format idx files"
        )
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(4)
            if len(raw) == 4 and raw[:3] == b"\x00\x00\x08":
                raw += fh.read(4 * raw[3])
                dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range((len(raw) - 4) // 4)]
                if raw[3] and len(dims) == raw[3]:  # the header's shape, against the budget before the data is read
                    _check_idx_budget(path, dims, len(raw))
                raw += fh.read(min(math.prod(dims), MAX_FILE_BYTES) + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"Cannot read idx file: {getattr(exc, 'strerror', None) or exc}",
            where=str(path),
            fix="check that the file is a complete MNIST-format idx file",
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise DatasetError(
            f"idx file unpacks to more than {MAX_FILE_BYTES >> 30} GiB.",
            where=str(path),
            fix="split the data set, or check that this is the file you meant",
        )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(
            "Not an unsigned-byte idx file (bad magic number).",
            where=str(path),
            fix="use MNIST-format idx files (idx3 images, idx1 labels)",
        )
    rank = raw[3]
    if ndim is not None and rank != ndim:
        raise DatasetError(
            f"idx header says {rank} dimension(s); this file must have {ndim}.",
            where=str(path),
            fix="images are idx3 (N, H, W), labels idx1 (N,)",
        )
    header = 4 + 4 * rank
    if rank == 0 or len(raw) < header:
        raise DatasetError(
            f"idx header is cut short ({len(raw)} bytes for {rank} dimension(s)).",
            where=str(path),
            fix="the file is truncated or not an idx file; copy it again",
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    if 0 in dims:
        raise DatasetError(
            f"idx file holds no samples (its header says {dims}).",
            where=str(path),
            fix="use an idx file with at least one sample",
        )
    if len(raw) - header != math.prod(dims):
        raise DatasetError(
            f"idx file holds {len(raw) - header} bytes of data, its header says {dims}.",
            where=str(path),
            fix="the file is truncated; copy it again",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _check_idx_budget(path: Path, dims: list[int], header: int) -> None:
    """An idx header over the memory budget is refused before its data is read. A gzip file whose trailer (its
    unpacked size, mod 4 GiB) disagrees with the header is damaged, not large, and is said to be."""
    if math.prod(dims) * (1 + BYTES_PER_VALUE) <= MEMORY_BUDGET:
        return
    if path.suffix == ".gz":
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            unpacked = int.from_bytes(fh.read(4), "little")
        if (header + math.prod(dims)) % 2**32 != unpacked:
            raise DatasetError(
                f"Cannot read idx file: its header says {dims}, but the gzip stream unpacks to {unpacked:,} bytes "
                "(mod 4 GiB); the file is damaged.",
                where=str(path),
                fix="check that the file is a complete MNIST-format idx file; copy it again",
            )
    check_values(dims, 1, "The idx file's array", str(path), "keep fewer samples in one file")


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
        images = _read_idx(_find_idx(folder, prefix, "images"), ndim=3)
        labels = _read_idx(_find_idx(folder, prefix, "labels"), ndim=1)
        if len(images) != len(labels):
            raise DatasetError(
                f"{prefix} images {images.shape} and labels {labels.shape} do not match.",
                where=str(folder),
                fix="images must be idx3 (N,H,W) and labels idx1 (N,) of the same N",
            )
        parts += [images[:, None, :, :].copy(), labels.astype(np.int64)]
    return tuple(parts)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# .npz files


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# What reading a damaged archive member raises (zipfile: BadZipFile, NotImplementedError for an unknown
# compression, RuntimeError for an encrypted member; zlib.error; numpy: ValueError, EOFError, TokenError ...).
_UNREADABLE = (
    ValueError,
    TypeError,
    OverflowError,
    OSError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    NotImplementedError,
    RuntimeError,
    MemoryError,
    SyntaxError,
    tokenize.TokenError,  # numpy tokenizes a 1.0 header to read it
)


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, where: str) -> np.ndarray:
    """One array of the archive: its header is checked (no objects, no more data than the archive holds) first."""
    fix = f"the file is damaged or was not written by numpy.savez; {NPZ_FIX}"
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version not in _NPY_HEADERS:
                raise DatasetError(
                    f"Array {key!r} is in .npy format {version[0]}.{version[1]}; the SDK reads 1.0 and 2.0.",
                    where=f"{where}, array {key}",
                    fix=NPZ_FIX,
                )
            shape, _, dtype = _NPY_HEADERS[version](fh)
            header = fh.tell()
        if dtype.hasobject:
            raise DatasetError(
                f"Array {key!r} holds Python objects ({dtype}); the SDK never unpickles data files.",
                where=f"{where}, array {key}",
                fix="store plain numbers: x as uint8 or floats, y as integers, labels as strings",
            )
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size - header:  # a header that lies about its data: damage, said as such
            raise DatasetError(
                f"Array {key!r} declares shape {shape} of {dtype} ({nbytes:,} bytes); the archive holds "
                f"{max(info.file_size - header, 0):,}.",
                where=f"{where}, array {key}",
                fix=fix,
            )
        # a header that tells the truth about too much data (zeros compress 1000 to 1): the budget, before reading
        check_values(shape, dtype.itemsize, f"Array {key!r}", f"{where}, array {key}", "keep fewer samples in one file")
        with zf.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except _UNREADABLE as exc:  # zipfile, zlib and numpy raise many types for a damaged member
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DatasetError(
            f"Array {key!r} cannot be read: {type(exc).__name__}" + (f": {reason}" if reason else ""),
            where=f"{where}, array {key}",
            fix=fix,
        ) from exc


def _read_npz(path: Path, where: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays x, y and labels of an .npz archive (those present), and the names of all its members; nothing
    else in it is read."""
    kind = _kind(path, where)
    if kind != "file":
        what = {"missing": "does not exist", "dir": "is a folder"}.get(kind, "is not a regular file")
        raise DatasetError(
            f"Data file {path} {what}.", where=where, fix="give the path of an .npz file with arrays x and y"
        )
    size = path.stat().st_size
    if size == 0 or size > MAX_FILE_BYTES:
        raise DatasetError(
            f"Data file {path} is {'empty' if size == 0 else f'larger than {MAX_FILE_BYTES >> 30} GiB'}.",
            where=where,
            fix=NPZ_FIX,
        )
    try:
        zf = zipfile.ZipFile(path)
    except _UNREADABLE as exc:  # BadZipFile, OSError, EOFError, ValueError ... for a file that is no zip archive
        raise DatasetError(
            f"Cannot read {path} as .npz (a zip archive of .npy arrays): {type(exc).__name__}: {exc}",
            where=where,
            fix=NPZ_FIX,
        ) from None
    with zf:
        members = {info.filename.removesuffix(".npy"): info for info in zf.infolist()}
        unpacked = sum(members[k].file_size for k in NPZ_ARRAYS if k in members)
        if unpacked > MAX_FILE_BYTES:
            raise DatasetError(
                f"The arrays of {path} unpack to more than {MAX_FILE_BYTES >> 30} GiB.",
                where=where,
                fix="split the data set, or check that this is the file you meant",
            )
        arrays = {key: _npz_member(zf, members[key], key, where) for key in NPZ_ARRAYS if key in members}
    return arrays, sorted(members)


def _class_names(labels: np.ndarray, where: str) -> list[str]:
    if labels.ndim != 1 or not 1 <= len(labels) <= MAX_CLASSES or labels.dtype.kind not in "USiu":
        raise DatasetError(
            f"labels must be a list of 1 to {MAX_CLASSES} class names, got {labels.dtype} {labels.shape}.",
            where=f"{where}, array labels",
            fix="store labels=np.array(['cat', 'dog', ...]): one name per class",
        )
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in labels.tolist()]
    return [name[:MAX_LABEL_CHARS] for name in names]


def _npz_arrays(
    read: tuple[dict[str, np.ndarray], list[str]], where: str, labels_required: bool, raw: bool = False
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """x as uint8 (N, C, H, W) (raw: numbers as stored, for a model that takes features, not pixels), y as int64
    (None where absent and not required), class names if stored."""
    arrays, names = read
    missing = [k for k in ("x", "y") if k not in arrays and (k == "x" or labels_required)]
    if missing:
        found = ", ".join(names)[:500] or "nothing"
        raise DatasetError(
            f"The .npz file has no array {' or '.join(repr(m) for m in missing)} (it has: {found}).",
            where=where,
            fix=NPZ_FIX,
        )
    x, y = arrays["x"], arrays.get("y")
    if x.ndim not in (2, 3, 4) or 0 in x.shape:
        what = "holds no samples" if x.ndim and not len(x) else f"has shape {x.shape}"
        raise DatasetError(
            f"Array x {what}.",
            where=f"{where}, array x",
            fix="x must be (N,F), (N,H,W) or (N,C,H,W) with N >= 1 and no empty axis",
        )
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise DatasetError(
                f"Array shapes do not fit: x {x.shape}, y {y.shape}.",
                where=f"{where}, arrays x/y",
                fix="y must hold one integer label per sample of x: shape (N,)",
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"Labels y must be integers, got {y.dtype}.",
                where=f"{where}, array y",
                fix="store class indices 0..K-1, e.g. y.astype(np.int64)",
            )
        if y.min() < 0 or y.max() >= MAX_CLASSES:
            raise DatasetError(
                f"Labels y must be class indices from 0 to {MAX_CLASSES - 1}, got {y.min()} .. {y.max()}.",
                where=f"{where}, array y",
                fix="store class indices 0..K-1",
            )
    x = _numbers(x, where) if raw else _pixels(x, where)
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None, :, :]
    labels = _class_names(arrays["labels"], where) if "labels" in arrays else None
    if labels is not None and y is not None and y.max() >= len(labels):
        raise DatasetError(
            f"Labels y reach class {int(y.max())}, but the file names {len(labels)} class(es) in its array labels.",
            where=f"{where}, arrays y/labels",
            fix="store one name per class in labels (K names for labels 0..K-1), or drop the labels array",
        )
    return x, (None if y is None else y.astype(np.int64)), labels


def _numbers(x: np.ndarray, where: str) -> np.ndarray:
    """Features as stored: numbers (booleans as 0 / 1); their range is the model's input map's to judge."""
    if x.dtype.kind == "b":
        return x.astype(np.uint8)
    if x.dtype.kind not in "uif":
        raise DatasetError(
            f"x must hold numbers; got {x.dtype}.",
            where=f"{where}, array x",
            fix="store x as floats (or integers) in the values the model's forward takes",
        )
    return x


def _pixels(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 as is; floats must be finite and in [0, 1] (they are scaled to 0..255)."""
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(
            f"x must be uint8 pixels or floats in [0, 1]; got {x.dtype}.",
            where=f"{where}, array x",
            fix="store x.astype(np.uint8) for 0..255 pixels, or x / 255.0 as floats",
        )
    finite = np.isfinite(x)
    if not finite.all():
        raise DatasetError(
            f"x holds {int(x.size - finite.sum())} NaN or infinite value(s).",
            where=f"{where}, array x",
            fix="replace or drop the samples with NaN / inf pixels",
        )
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise DatasetError(
            f"x must be uint8, or floats in [0, 1]; got {x.dtype} in [{low}, {high}].",
            where=f"{where}, array x",
            fix="scale the data to [0, 1] or store uint8 pixels",
        )
    pixels = np.empty(x.shape, dtype=np.uint8)  # sample by sample: no float64 copy of the whole array
    for i in range(len(x)):
        pixels[i] = np.rint(x[i].astype(np.float64) * 255.0)
    return pixels


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The user's own data: x, y and optional labels (see module docstring)."""
    x, y, labels = _npz_arrays(_read_npz(Path(path), str(path)), str(path), labels_required=True)
    return x, y, labels  # type: ignore[return-value]


def load_samples(spec: str | Path, raw: bool = False) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """A user's samples, whole and unsplit: an .npz (x, y optional, labels optional) or an MNIST idx folder
    (its train and test files together). x comes back uint8 (N, C, H, W); raw: as stored (features, not pixels)."""
    where = f"--data {spec}"
    if not isinstance(spec, str | Path) or not str(spec):
        raise DatasetError(f"--data must be a path, got {spec!r}.", where="--data", fix="e.g. --data samples.npz")
    path = Path(spec)
    if _kind(path, where) == "dir":
        x_train, y_train, x_test, y_test = load_idx_folder(path)
        return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), None
    if path.suffix != ".npz":
        raise DatasetError(
            f"--data {spec} is neither an .npz file nor a folder of MNIST idx files.",
            where=where,
            fix="save your samples with numpy.savez(path, x=..., y=...) (y optional)",
        )
    return _npz_arrays(_read_npz(path, where), where, labels_required=False, raw=raw)


# ---------------------------------------------------------------------------------------------------------------------
# The entry point


def load_dataset(
    spec: str, seed: int = 0, image_size: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Dataset:
    """Resolve a data set name or path and split it, deterministically by seed."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(
            f"The data set must be a name or a path, got {spec!r}.",
            where="--dataset",
            fix=f"use {names_text()}, a folder of MNIST idx files, or an .npz file with x and y",
        )
    seed = check_seed(seed)
    image_size = check_image_size(image_size)
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(fraction, float | int) or not 0 < fraction < 1:
            raise ConfigError(f"{name} must be in (0, 1), got {fraction!r}.", where=name, fix="e.g. 0.2")
    labels: list[str] | None
    entry = None
    built_in = BUILT_IN.get(spec)
    if built_in is not None:  # its split may be in the SDK's cache: no scikit-learn to load (sdk/dataset_cache.py)
        options = {"seed": seed, "image_size": image_size, "val": val_fraction, "test": test_fraction}
        entry = dataset_cache.key(spec, built_in.source_files(), **options)
        cached = dataset_cache.read(entry)
        if cached is not None:
            return cached
        x_rest, y_rest, x_test, y_test = built_in.load(seed, image_size, test_fraction)
        labels = list(built_in.labels)
    elif _kind(Path(spec), spec) == "dir":
        x_rest, y_rest, x_test, y_test = load_idx_folder(Path(spec))
        labels = None
        if image_size and image_size != x_rest.shape[-1]:
            x_rest, x_test = resize(x_rest, image_size), resize(x_test, image_size)
    elif spec.endswith(".npz"):
        x, y, labels = load_npz(Path(spec))
        if image_size and x.shape[-1] != image_size:
            x = resize(x, image_size)
        x_rest, y_rest, x_test, y_test = split(x, y, test_fraction, seed, where=spec)
    else:
        raise DatasetError(
            f"Unknown data set '{spec}'.",
            where="--dataset",
            fix=f"use {names_text()}, a folder of MNIST idx files, or an .npz file with x and y",
        )
    num_classes = int(max(y_rest.max(), y_test.max())) + 1
    labels = labels or [str(i) for i in range(num_classes)]
    if len(labels) < num_classes:
        raise DatasetError(
            f"{len(labels)} label names for {num_classes} classes.",
            where=f"{spec}, labels",
            fix="give one name per class",
        )
    x_train, y_train, x_val, y_val = split(x_rest, y_rest, val_fraction, seed, part="validation", where=spec)
    dataset = Dataset(spec, x_train, y_train, x_val, y_val, x_test, y_test, list(labels))
    if entry is not None:
        dataset_cache.write(entry, dataset)
    return dataset
