"""The build scripts in examples/ run as an engineer would run them, on the public API only."""

import ast
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

import sdk
from sdk.train_config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def run(script, *args, cwd=ROOT):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, cwd=cwd, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


OWN_PACKAGES = ("sdk", "targets")  # the project's: an example reaches them through `import sdk` only


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_an_example_uses_only_the_public_api(script):
    """`import sdk` and names in sdk.__all__; no sdk submodule, no targets (third-party and stdlib are free)."""
    tree = ast.parse((ROOT / "examples" / script).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                assert top not in OWN_PACKAGES or alias.name == "sdk", f"{script}:{node.lineno} imports {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            assert node.level == 0, f"{script}:{node.lineno}: a relative import"
            if module.split(".")[0] in OWN_PACKAGES:
                assert module == "sdk", f"{script}:{node.lineno} imports from {module}"
                hidden = [a.name for a in node.names if a.name not in sdk.__all__]
                assert not hidden, f"{script}:{node.lineno} imports {hidden}, not in sdk.__all__"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sdk":
            assert node.attr in sdk.__all__, f"{script}:{node.lineno} uses sdk.{node.attr}, not in sdk.__all__"


@pytest.mark.slow
def test_train_and_export_digits(tmp_path):
    text = run("train_and_export_digits.py", "--epochs", "4", "--out", str(tmp_path), "--min-accuracy", "0.5")
    assert "matches Brevitas" in text and (tmp_path / "tfc_w2a2.qonnx.onnx").is_file()


@pytest.mark.slow
def test_train_own_npz(tmp_path):
    text = run("train_own_data.py", "--epochs", "10", "--out", str(tmp_path))
    assert "horizontal" in text and (tmp_path / "model.qonnx.onnx").is_file()
    accuracy = float(text.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90.0  # three easy synthetic classes


@pytest.mark.slow
def test_demo_deploys_to_pynq_z2_and_caches(tmp_path):
    first = run("demo.py", cwd=tmp_path)
    assert "PASSED" in first and "frames/s" in first and "finish_bitfile.py" in first
    for board in ("pynq-z2", "tflite", "ethos-u55-128", "stm32f746g-disco"):
        assert (tmp_path / "demo-out" / board / "manifest.json").is_file() and board in first
    assert "one model, several targets" in first and "FAILED" not in first and "ERROR" not in first
    # the demo trains with the SDK's defaults: the quality bar of TFC w2a2 on digits (test_end_to_end has CNV's)
    metrics = json.loads((tmp_path / "demo-out" / "run-tfc-w2a2" / "metrics.json").read_text())
    assert metrics["config"] == asdict(TrainConfig(model="tfc", bits="w2a2", dataset="digits")) == asdict(TrainConfig())
    assert metrics["test_accuracy"] >= 0.95, f"tfc w2a2 reached {metrics['test_accuracy']:.2%}, below 95%"
    card = json.loads((tmp_path / "demo-out" / "pynq-z2" / "model.qonnx.json").read_text())
    assert card["check"]["passed"] and card["accuracy"]["test"] == metrics["test_accuracy"]
    second = run("demo.py", cwd=tmp_path)
    assert "reusing trained run" in second and "PASSED" in second


@pytest.mark.slow
def test_deploy_fpga_example(tfc_run, tmp_path):
    text = run("deploy_fpga.py", "--model", str(tfc_run), "--board", "zcu104", "--out", str(tmp_path))
    assert "zcu104: verified" in text and (tmp_path / "zcu104" / "report.md").is_file()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deploy_fpga.py"), "--model", str(tfc_run), "--board", "zcu999"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Unknown board" in proc.stderr


@pytest.mark.slow
def test_deploy_everywhere_example(tfc_run, tmp_path):
    text = run(
        "deploy_everywhere.py",
        "--model",
        str(tfc_run),
        "--targets",
        "tflite,nrf52840-dk",
        "--samples",
        "20",
        "--out",
        str(tmp_path),
        "--json",
    )
    rows = json.loads(text[text.index("[") :])
    assert [row["board"] for row in rows] == ["tflite", "nrf52840-dk"] and {row["result"] for row in rows} == {"PASSED"}
    assert (tmp_path / "nrf52840-dk" / "report.md").is_file()
