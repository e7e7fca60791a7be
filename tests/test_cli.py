"""The `sdk` command, run as a user runs it: a subprocess, exit codes and --json output."""
import json
import subprocess
import sys

import numpy as np
import pytest


def sdk(*args, check_code=0):
    proc = subprocess.run([sys.executable, "-m", "sdk", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc


def test_help_lists_commands():
    text = sdk("--help").stdout
    for command in ("boards", "targets", "train", "export", "doctor", "models"):
        assert command in text


def test_boards_json_and_one_board():
    boards = json.loads(sdk("boards", "--json").stdout)
    assert {"pynq-z2", "zcu104", "alveo-u250", "ethos-u55-128", "tflite"} <= {b["name"] for b in boards}
    one = json.loads(sdk("boards", "pynq-z2", "--json").stdout)
    assert one["part"] == "xc7z020clg400-1" and one["lifecycle"] == "legacy" and one["capacity"]["bram18"] == 280
    assert "xc7z020clg400-1" in sdk("boards", "pynq-z2").stdout


def test_unknown_board_exit_2_with_suggestion():
    proc = sdk("boards", "pynq-z3", check_code=2)
    assert "Unknown board 'pynq-z3'" in proc.stderr and "pynq-z2" in proc.stderr and "Traceback" not in proc.stderr
    payload = json.loads(sdk("boards", "zcu1O4", "--json", check_code=2).stdout)
    assert payload["error"] == "BoardError" and "zcu104" in payload["fix"]


def test_malformed_user_board_exit_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nkind: fpga\n  part: [\n")
    proc = subprocess.run([sys.executable, "-m", "sdk", "boards"], capture_output=True, text=True,
                          env={**__import__("os").environ, "SDK_BOARDS_PATH": str(tmp_path)})
    assert proc.returncode == 2 and "bad.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_targets_and_models_and_doctor_json():
    flows = {t["flow"]: t for t in json.loads(sdk("targets", "--json").stdout)}
    assert set(flows) == {"finn", "tflite", "tflm", "ethosu"} and "pynq-z2" in flows["finn"]["boards"]
    assert flows["finn"]["version"] == "1.6.1"
    models = json.loads(sdk("models", "--json").stdout)
    assert {m["name"] for m in models["models"]} == {"tfc", "sfc", "lfc", "cnv", "dscnn", "resnet8"}
    checks = {c["name"]: c for c in json.loads(sdk("doctor", "--json").stdout)}
    assert checks["brevitas"]["version"] == "0.13.4" and checks["finn-plus"]["present"]
    assert "vivado" in checks and "vitis_hls" in checks


@pytest.mark.parametrize("args, expect", [
    (["train", "tfc", "--bits", "w2a12"], "out of range"),
    (["train", "tfc", "--dataset", "missing.npz"], "does not exist"),
    (["train", "tfc", "--layer-bits", "conv9=w4"], "no layer 'conv9'"),
    (["train", "alexnet"], "Unknown model"),
])
def test_train_user_errors_exit_2(tmp_path, args, expect):
    proc = sdk(*args, "--out", str(tmp_path / "run"), check_code=2)
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_wrong_npz_keys_exit_2(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, images=np.zeros((10, 4, 4), np.uint8), y=np.zeros(10, int))
    proc = sdk("train", "tfc", "--dataset", str(path), "--out", str(tmp_path / "run"), check_code=2)
    assert "no array 'x'" in proc.stderr and "numpy.savez" in proc.stderr


def test_export_corrupt_checkpoint_exit_2(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    proc = sdk("export", str(tmp_path), "--out", str(tmp_path / "m.onnx"), "--json", check_code=2)
    assert json.loads(proc.stdout)["error"] == "CheckpointError"
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_train_then_export_json(tmp_path):
    result = json.loads(sdk("train", "tfc", "--epochs", "3", "--out", str(tmp_path / "run"), "--json").stdout)
    assert result["test_accuracy"] > 0.5 and result["best_epoch"] >= 1
    exported = json.loads(sdk("export", str(tmp_path / "run"), "--out", str(tmp_path / "m.qonnx.onnx"), "--json").stdout)
    assert exported["check"]["passed"] and (tmp_path / "m.qonnx.json").is_file()
