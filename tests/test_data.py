import gzip

import numpy as np
import pytest

from sdk import data as data_module
from sdk import datasets as datasets_module
from sdk.data import load_dataset
from sdk.datasets import BUILT_IN, BuiltInDataset, names_text
from sdk.errors import DatasetError


def test_digits_default_split_is_fixed_by_seed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    assert a.x_train.dtype == np.uint8 and a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert np.array_equal(a.x_test, b.x_test) and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != load_dataset("digits", seed=1).fingerprint()
    assert a.x_train.max() == 255  # 16 -> 255


def test_digits_upscaled():
    d = load_dataset("digits", image_size=16)
    assert d.input_shape == (1, 16, 16) and d.x_train.dtype == np.uint8


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 6, 6)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 3)
    d = load_dataset(str(tmp_path))
    assert (
        d.input_shape == (1, 6, 6)
        and len(d.x_test) == 20
        and len(d.x_train) + len(d.x_val) == 60
        and d.num_classes == 3
    )


def test_idx_folder_missing_file(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 6, 6)))
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path))
    assert "labels" in info.value.what and str(tmp_path) in info.value.where


def test_truncated_idx_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (6).to_bytes(4, "big") * 2 + b"\0" * 7)
    with pytest.raises(DatasetError) as info:
        data_module._read_idx(path)
    assert "truncated" in info.value.fix


def test_fashion_mnist_absent_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist")
    assert "apt-get install -y dataset-fashion-mnist" in info.value.fix


def test_npz_user_data(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.random((50, 4, 4)).astype(np.float32), y=np.arange(50) % 2, labels=np.array(["no", "yes"]))
    d = load_dataset(str(path))
    assert d.labels == ["no", "yes"] and d.input_shape == (1, 4, 4) and d.x_train.dtype == np.uint8


@pytest.mark.parametrize(
    "arrays, expect",
    [
        ({"images": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(4, int)}, "no array 'x'"),
        ({"x": np.zeros((4, 2, 2), np.uint8)}, "no array 'y'"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(3, int)}, "shapes do not fit"),
        ({"x": np.full((4, 2, 2), 3.0), "y": np.zeros(4, int)}, "floats in [0, 1]"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(4, float)}, "must be integers"),
    ],
)
def test_npz_wrong_content(tmp_path, arrays, expect):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    assert expect in info.value.what and str(path) in info.value.where


def test_missing_npz_and_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.npz"))
    with pytest.raises(DatasetError, match="Unknown data set"):
        load_dataset("cifar-10")


# ---------------------------------------------------------------------------------------------------------------------
# The registry of built-in data sets (sdk/datasets.py): every other place reads it


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_a_built_in_data_set_is_what_its_entry_says(name):
    entry = BUILT_IN[name]
    if entry.check is not None and not entry.check()["present"]:
        pytest.skip(f"{name} is not installed on this machine")
    d = load_dataset(name)
    assert d.name == name and d.input_shape == entry.input_shape and d.num_classes == entry.num_classes
    assert d.labels == list(entry.labels) and d.x_train.dtype == np.uint8


def test_every_list_of_data_sets_is_the_registry():
    from click.testing import CliRunner

    from sdk.cli import main
    from sdk.datasets import DEFAULT, dataset_checks
    from sdk.train_config import TrainConfig

    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert f"{names_text()}, an idx folder, or an .npz file." in help_text and DEFAULT in BUILT_IN
    assert TrainConfig().dataset == DEFAULT
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar-10")
    assert f"use {names_text()}, a folder" in info.value.fix and all(name in info.value.fix for name in BUILT_IN)
    installable = [entry.name for entry in BUILT_IN.values() if entry.check is not None]
    assert [row["name"] for row in dataset_checks()] == installable


def test_a_new_data_set_is_one_entry(monkeypatch, tmp_path):
    """An entry and its loader: load_dataset, the split cache and the names in every message take it."""
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def stripes(seed, image_size, test_fraction):
        calls.append(seed)
        x = np.zeros((40, 1, 4, 4), np.uint8)
        y = np.arange(40) % 2
        x[y == 0, 0, 1, :] = x[y == 1, 0, :, 1] = 255
        return data_module.split(x, y, test_fraction, seed)

    entry = BuiltInDataset("stripes", "rows and columns", (1, 4, 4), ("row", "column"), stripes, list)
    monkeypatch.setitem(BUILT_IN, "stripes", entry)
    first = load_dataset("stripes", seed=2)
    assert first.labels == ["row", "column"] and first.input_shape == (1, 4, 4) and calls == [2]
    assert load_dataset("stripes", seed=2).fingerprint() == first.fingerprint() and calls == [2]  # from the cache
    assert "stripes" in names_text()
