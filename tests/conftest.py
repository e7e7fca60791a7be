"""Shared fixtures: one short real training run and its real QONNX export."""
from __future__ import annotations

from pathlib import Path

import pytest

from sdk.export import export_run
from sdk.qat import TrainConfig, train


@pytest.fixture(scope="session")
def tfc_run(tmp_path_factory) -> Path:
    """TFC w2a2 trained briefly on digits (real Brevitas QAT)."""
    out = tmp_path_factory.mktemp("tfc_run")
    train(TrainConfig(model="tfc", bits="w2a2", epochs=5), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tfc_export(tfc_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfc_export") / "tfc.qonnx.onnx"
    export_run(tfc_run, out)
    return out
