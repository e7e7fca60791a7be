"""Shared fixtures: a small trained run shipped with the tests, and its real QONNX export.

The fast test set trains nothing: `tfc_run`, `tfc_w4a4_run` and `zoo_runs` are copies of training runs
committed in tests/fixtures, written by `sdk train` (real Brevitas QAT on scikit-learn's digits). Tests that train are
marked slow.

`make test` runs the suite on every core (pytest-xdist, whole files per worker, so a module's fixtures are
built once). Each worker then gets one BLAS / OpenMP thread: two workers with two threads each would fight
over this 2-core machine. The files that take longest start first, so none is left running alone at the end.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch or numpy start their thread pools
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"

import shutil
from pathlib import Path

import pytest

from sdk.export import export_run

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# the longest files first (measured with --durations): they set the run's length when they start late. The
# Makefile passes --no-loadscope-reorder: xdist would otherwise order files by their number of tests.
LONGEST_FIRST = (
    "test_rtlsim.py",
    "test_fuzz.py",
    "test_deploy_finn.py",
    "test_rtl_stitch.py",
    "test_examples.py",
    "test_end_to_end.py",
    "test_deploy_tflite.py",
    "test_own_models.py",
    "test_residual_fpga.py",
    "test_rtl_deploy.py",
    "test_export.py",
    "test_cli.py",
    "test_folding.py",
    "test_sim_finn.py",
    "test_kill.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """Deploys cache their exports and Verilator builds in a folder of this test run, not in the user's ~/.cache
    (subprocesses too). The workers of one run share it, as deploys on one machine do: an export or a build one
    worker made, or is making, the others reuse."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "sdk-cache"
    shared.mkdir(exist_ok=True)
    os.environ["SDK_CACHE_DIR"] = str(shared)
    return shared


def committed_run(name: str, tmp_path_factory) -> Path:
    """A committed training run of tests/fixtures (written by `sdk train`), copied so tests may write beside it."""
    out = tmp_path_factory.mktemp(name)
    for path in (FIXTURES / name).iterdir():
        shutil.copyfile(path, out / path.name)
    return out


@pytest.fixture(scope="session")
def tfc_run(tmp_path_factory) -> Path:
    """TFC w2a2 trained for 5 epochs on digits (`sdk train tfc --bits w2a2 --epochs 5`)."""
    return committed_run("tfc_w2a2_digits", tmp_path_factory)


@pytest.fixture(scope="session")
def zoo_runs(tmp_path_factory) -> dict[str, Path]:
    """The conv zoo models trained briefly on digits: cnv w2a2 and dscnn w2a2 3 epochs, resnet8 w4a4 2 epochs."""
    names = {"cnv": "cnv_w2a2_digits", "dscnn": "dscnn_w2a2_digits", "resnet8": "resnet8_w4a4_digits"}
    return {model: committed_run(name, tmp_path_factory) for model, name in names.items()}


@pytest.fixture(scope="session")
def tfc_w4a4_run(tmp_path_factory) -> Path:
    """TFC w4a4 trained for 2 epochs on digits (`sdk train tfc --bits w4a4 --epochs 2`)."""
    return committed_run("tfc_w4a4_digits", tmp_path_factory)


@pytest.fixture(scope="session")
def tfc_export(tfc_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfc_export") / "tfc.qonnx.onnx"
    export_run(tfc_run, out)
    return out
