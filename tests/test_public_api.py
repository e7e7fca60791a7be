"""The stable Python API: every name in sdk.__all__ resolves, and without torch where it does not need it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sdk

ROOT = Path(__file__).resolve().parent.parent
# The names that are training or export themselves: resolving them loads torch and Brevitas.
NEED_TORCH = {"train", "TrainResult", "load_checkpoint", "export_run", "export_module"}

RESOLVE = """
import importlib, pkgutil, sys, types
import sdk
torch_free = [name for name in sdk.__all__ if name not in {need_torch!r}]
for name in torch_free:
    assert getattr(sdk, name) is not None, name
    assert "torch" not in sys.modules, f"sdk.{{name}} imported torch"
for name in {need_torch!r}:
    assert name in sdk.__all__, name
    getattr(sdk, name)
# every submodule imported (Python then sets sdk.<module> on the package): the names still mean the API's objects
for info in [m for m in pkgutil.iter_modules(sdk.__path__) if m.name != "__main__"]:
    importlib.import_module(f"sdk.{{info.name}}")
for name in sdk.__all__:
    assert not isinstance(getattr(sdk, name), types.ModuleType), f"sdk.{{name}} is a module"
"""


def test_every_public_name_resolves_and_torch_loads_only_for_training_and_export():
    code = RESOLVE.format(need_torch=sorted(NEED_TORCH))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_read_card_is_the_model_card_reader():
    from sdk.model_card import read_card

    assert sdk.read_card is read_card and "read_card" in sdk.__all__
