import gzip

import numpy as np
import pytest

from sdk import data as data_module
from sdk.data import load_dataset
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
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", tmp_path / "nowhere")
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
