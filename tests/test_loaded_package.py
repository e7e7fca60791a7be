"""sdk.load: a package verified once, its artifact in memory; `pkg(x)` gives exactly what sdk.simulate(package, x)
gives, for every flow, and opens no file (audited with sys.addaudithook during the calls)."""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk.data import load_dataset
from sdk.deployment import DeployConfig, deploy_many
from sdk.errors import ConfigError, PackageError

BOARDS = ["pynq-z2", "tflite", "stm32f746g-disco", "ethos-u55-128"]  # finn, tflite, tflm, ethosu
_OPENED: list[tuple[str, str]] | None = None  # what the audit hook records while a `_no_file_opened` block runs


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event in ("open", "os.open", "shutil.copyfile", "os.listdir", "os.scandir"):
        _OPENED.append((event, str(args[0]) if args else ""))


sys.addaudithook(_audit)  # a hook cannot be removed: it records only inside `_no_file_opened`


@contextmanager
def _no_file_opened():
    global _OPENED
    _OPENED = []
    try:
        yield
        assert _OPENED == [], f"the calls opened files: {_OPENED[:5]}"
    finally:
        _OPENED = None


@pytest.fixture(scope="module")
def packages(tfc_run, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("loaded")
    results = deploy_many(DeployConfig(target=",".join(BOARDS), model=str(tfc_run), out=str(out), samples=20))
    assert all(result.exit_code == 0 for result in results)
    return {board: Path(result.package) for board, result in zip(BOARDS, results, strict=True)}


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return load_dataset("digits").x_test[:40]


def test_load_is_part_of_the_public_api():
    assert "load" in sdk.__all__ and "LoadedPackage" in sdk.__all__
    assert sdk.load.__doc__ and "sdk.simulate" in sdk.load.__doc__


@pytest.mark.parametrize("board", BOARDS)
def test_a_loaded_package_gives_what_simulate_gives_and_opens_no_file(packages, pixels, board):
    expected = sdk.simulate(packages[board], pixels)
    pkg = sdk.load(packages[board])
    assert pkg.flow == {"pynq-z2": "finn", "tflite": "tflite", "stm32f746g-disco": "tflm"}.get(board, "ethosu")
    with _no_file_opened():
        whole = pkg(pixels)
        one_by_one = np.concatenate([pkg.simulate(pixels[i : i + 1]) for i in range(len(pixels))])
        floats = pkg(pixels.astype(np.float32) / 255)
    for outputs in (whole, one_by_one, floats):
        assert outputs.dtype == expected.dtype and outputs.shape == expected.shape
        np.testing.assert_array_equal(outputs, expected)  # bit-exact, not close


@pytest.mark.parametrize("board", ["pynq-z2", "tflite"])
def test_device_codes_and_the_run_s_figures(packages, pixels, board):
    pkg = sdk.load(packages[board], threads=1)
    codes = pixels.astype(np.uint8)  # pixel models take the pixels as their codes
    np.testing.assert_array_equal(pkg(codes, codes=True), sdk.simulate(packages[board], codes, codes=True))
    with _no_file_opened():
        run = pkg.run(pixels)
    np.testing.assert_array_equal(run.outputs, pkg(pixels))
    if board == "tflite":  # the runtime beside the golden model: `sdk simulate`'s figure
        assert run.agreement == {"LiteRT reference kernels = golden model": 1.0}
    else:
        assert run.bit_exact and run.agreement == {}


def test_load_verifies_the_package_once_with_simulate_s_errors(packages, pixels, tmp_path):
    copy = tmp_path / "tflite"
    shutil.copytree(packages["tflite"], copy)
    (copy / "model.tflite").write_bytes((copy / "model.tflite").read_bytes()[:-1] + b"\0")
    with pytest.raises(PackageError) as loading:
        sdk.load(copy)
    with pytest.raises(PackageError) as simulating:
        sdk.simulate(copy, pixels)
    assert loading.value.what == simulating.value.what and "model.tflite" in loading.value.where


def test_a_loaded_package_runs_what_was_verified_at_load(packages, pixels, tmp_path):
    """Its calls read nothing on disk: a package removed (or changed) after load is not seen; load it again."""
    copy = tmp_path / "pynq-z2"
    shutil.copytree(packages["pynq-z2"], copy)
    pkg = sdk.load(copy)
    expected = pkg(pixels)
    shutil.rmtree(copy)
    np.testing.assert_array_equal(pkg(pixels), expected)
    with pytest.raises(PackageError):
        sdk.load(copy)


def test_load_refuses_what_simulate_refuses(packages, pixels):
    with pytest.raises(ConfigError, match="unknown option"):
        sdk.load(packages["tflite"], fps=1000)
    with pytest.raises(ConfigError, match="this package is for tflite"):
        sdk.load(packages["tflite"], rtlsim=True)
    for threads in (0, 1.5, True):
        with pytest.raises(ConfigError, match="threads"):
            sdk.load(packages["pynq-z2"], threads=threads)
    with pytest.raises(ConfigError, match="package"):
        sdk.load(None)
    pkg = sdk.load(packages["pynq-z2"])
    with pytest.raises(ConfigError, match="x"):
        pkg(pixels.astype(np.float32) * 2)  # pixels as floats must lie in [0, 1], as for sdk.simulate
    with pytest.raises(ConfigError, match="codes"):
        pkg(pixels, codes="yes")
