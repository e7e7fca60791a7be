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
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "boards"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "SDK_BOARDS_PATH": str(tmp_path)},
    )
    panel = "".join(proc.stderr.replace("│", "").split())  # rich wraps a long path across lines
    assert proc.returncode == 2 and "bad.yaml" in panel and "Traceback" not in proc.stderr


def test_targets_and_models_and_doctor_json():
    from sdk.zoo.catalog import ZOO
    from targets.registry import FLOWS

    flows = {t["flow"]: t for t in json.loads(sdk("targets", "--json").stdout)}
    assert list(flows) == list(FLOWS) and "pynq-z2" in flows["finn"]["boards"]
    assert all(flows[name]["kind"] == info.kinds[0] for name, info in FLOWS.items())
    assert flows["finn"]["version"] == "1.6.1"
    models = json.loads(sdk("models", "--json").stdout)
    assert [m["name"] for m in models["models"]] == list(ZOO)
    checks = {c["name"]: c for c in json.loads(sdk("doctor", "--json").stdout)}
    assert checks["brevitas"]["version"] == "0.13.4" and checks["finn-plus"]["present"]
    assert "vivado" in checks and "vitis_hls" in checks


@pytest.mark.parametrize(
    "args, expect",
    [
        (["train", "tfc", "--bits", "w2a12"], "out of range"),
        (["train", "tfc", "--dataset", "missing.npz"], "does not exist"),
        (["train", "tfc", "--layer-bits", "conv9=w4"], "no layer 'conv9'"),
        (["train", "alexnet"], "Unknown model"),
    ],
)
def test_train_user_errors_exit_2(tmp_path, args, expect):
    proc = sdk(*args, "--out", str(tmp_path / "run"), check_code=2)
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_train_option_typos_and_the_zoo_listing_load_no_torch(tmp_path):
    """Answered from sdk.train_config and sdk.zoo.catalog, before the training stack loads."""
    code = (
        "import sys\n"
        "from sdk.cli import main\n"
        "for args in (['train', 'tfc', '--layer-bits', 'conv9=w4', '--out', sys.argv[1]], ['models', '--json']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as stop:\n"
        "        print('exit', stop.code)\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "exit 2" and lines[-1] == "no torch" and '"name": "resnet8",' in proc.stdout, proc.stderr
    assert "no layer 'conv9'" in proc.stderr and not (tmp_path / "run").exists()


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
def test_train_then_export_json_quietly_and_with_warnings_under_v(tmp_path):
    result = json.loads(sdk("train", "tfc", "--epochs", "3", "--out", str(tmp_path / "run"), "--json").stdout)
    assert result["test_accuracy"] > 0.5 and result["best_epoch"] >= 1
    proc = sdk("export", str(tmp_path / "run"), "--out", str(tmp_path / "m.qonnx.onnx"), "--json")
    assert json.loads(proc.stdout)["check"]["passed"] and (tmp_path / "m.qonnx.json").is_file()
    assert "Warning" not in proc.stderr and "warnings.warn" not in proc.stderr, proc.stderr  # libraries hushed
    verbose = sdk("-v", "export", str(tmp_path / "run"), "--out", str(tmp_path / "v.qonnx.onnx"))
    assert "exported" in verbose.stdout
    assert "UserWarning" in verbose.stderr  # -v shows the libraries' warnings


# --- exit codes, --json from the click context, --verbose, quiet third-party output ---------------------------


@pytest.fixture
def temp_command():
    """Registers commands on the real `sdk` group for one test (a crash path that needs no mocking)."""
    from sdk.cli import main

    added = []

    def register(func):
        command = main.command(name=func.__name__.replace("_", "-"))(func)
        added.append(command.name)
        return command

    yield register
    for name in added:
        main.commands.pop(name, None)


def invoke(*args):
    from click.testing import CliRunner

    from sdk.cli import main

    return CliRunner().invoke(main, list(args))


def flat(text):
    """Rich panel text on one line: box characters and wrapping removed."""
    return " ".join(text.replace("│", " ").split())


def test_crash_exits_3_with_bug_message(temp_command):
    @temp_command
    def crash():
        raise RuntimeError("boom")

    result = invoke("crash")
    assert result.exit_code == 3, result.output
    assert "this is a bug in the SDK; please report it" in flat(result.stderr)
    assert "RuntimeError: boom" in flat(result.stderr) and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["-v", "crash"], ["--verbose", "crash"], ["crash", "-v"]])
def test_verbose_shows_the_traceback(temp_command, args):
    @temp_command
    def crash():
        raise RuntimeError("boom")

    result = invoke(*args)
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr and "raise RuntimeError" in result.stderr
    assert "this is a bug in the SDK; please report it" in flat(result.stderr)


def test_crash_in_sdk_code_with_json_exit_3(monkeypatch):
    import sdk.doctor

    def broken():
        raise KeyError("tool")

    monkeypatch.setattr(sdk.doctor, "run_checks", broken)
    result = invoke("doctor", "--json")
    assert result.exit_code == 3
    payload = json.loads(result.stdout)  # the whole of stdout is the error's JSON
    assert payload["error"] == "InternalError" and payload["exit_code"] == 3
    assert "this is a bug in the SDK" in payload["fix"]
    assert "broken" in payload["where"] and "Traceback" not in result.stderr


def test_keyboard_interrupt_exits_130_quietly(temp_command):
    @temp_command
    def interrupted():
        raise KeyboardInterrupt

    result = invoke("interrupted")
    assert result.exit_code == 130 and result.stdout == "" and "Traceback" not in result.stderr


def test_causes_only_with_verbose(temp_command):
    from sdk.errors import ConfigError

    @temp_command
    def chained():
        try:
            int("w9")
        except ValueError as exc:
            raise ConfigError("Bad bits 'w9'.", where="--bits", fix="use w1..w8") from exc

    plain = invoke("chained")
    assert plain.exit_code == 2 and "Bad bits" in plain.stderr and "caused by" not in plain.stderr
    verbose = invoke("-v", "chained")
    assert verbose.exit_code == 2 and "caused by: ValueError: invalid literal for int()" in flat(verbose.stderr)
    assert "Traceback" not in verbose.stderr  # a user error is not a bug: no traceback even with -v


def test_user_error_json_alone_on_stdout(tmp_path):
    proc = sdk("train", "tfc", "--bits", "w2a12", "--out", str(tmp_path / "run"), "--json", check_code=2)
    payload = json.loads(proc.stdout)  # fails if anything but the JSON is on stdout
    assert payload["error"] == "ConfigError" and payload["exit_code"] == 2 and "out of range" in payload["what"]
    assert "Warning" not in proc.stderr


def test_json_format_comes_from_the_context_not_argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])
    result = invoke("train", "tfc", "--bits", "w2a12", "--out", str(tmp_path / "run"), "--json")
    assert result.exit_code == 2 and json.loads(result.stdout)["exit_code"] == 2
    monkeypatch.setattr(sys, "argv", ["sdk", "train", "--json"])  # --json in argv, not in this invocation
    result = invoke("train", "tfc", "--bits", "w2a12", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and result.stdout == "" and "out of range" in result.stderr


def test_deploy_fit_is_gone():
    assert "--fit" not in sdk("deploy", "--help").stdout
    proc = sdk("deploy", "--target", "tflite", "--model", "run/", "--fit", check_code=2)
    assert "No such option '--fit'" in proc.stderr


def test_internal_error_renders_as_bug():
    from sdk.errors import InternalError

    error = InternalError("folding search returned no folding", where="targets/finn/folding.py")
    assert error.exit_code == 3 and "this is a bug in the SDK; please report it" in error.render()
    assert error.to_dict()["fix"].startswith("this is a bug in the SDK; please report it")


def test_quiet_keeps_library_output_out(capfd):
    import logging
    import os
    import warnings

    from sdk.quiet import hush_stdout, quiet

    with quiet() as captured:
        warnings.warn("library warning", RuntimeWarning, stacklevel=1)  # pyproject ignores UserWarning in tests
        logging.getLogger("qonnx.transformation").warning("library log line")
        logging.getLogger("somelib").warning("unlisted library log line")
        os.write(2, b"INFO: native chatter\n")
        with hush_stdout():
            print("library print")
        print("sdk result")
        sys.stderr.write("sdk progress\n")
    out, err = capfd.readouterr()
    assert out == "sdk result\n" and "sdk progress" in err
    assert "library log line" not in out + err  # a listed library's logger is at ERROR while quiet
    for noise in ("library warning", "unlisted library", "native chatter", "library print"):
        assert noise not in out + err and any(noise in line for line in captured.lines())
    assert logging.getLogger("qonnx").level == logging.NOTSET  # restored
    with warnings.catch_warnings(record=True) as seen, quiet(verbose=True):
        warnings.simplefilter("always")
        warnings.warn("shown when verbose", UserWarning, stacklevel=1)
        os.write(2, b"native shown\n")
    assert [str(w.message) for w in seen] == ["shown when verbose"] and "native shown" in capfd.readouterr().err


# --- a deploy that fails its exactness rule: the reason on the command line, not only in report.md ----------------

# `python -m sdk`, with a bug put into the TFLite lowering first: the model's final LOGISTIC is dropped from the file
# (every component is real; the file computes logits where the model computes probabilities).
DROP_THE_SIGMOID = """
import runpy, sys
from targets.tflite import writer
original = writer.lower
def lower(*args, **kwargs):
    lowered = original(*args, **kwargs)
    assert lowered.layers[-1].op == "logistic"
    lowered.layers.pop()
    return lowered
writer.lower = lower
sys.argv = ["sdk", *sys.argv[1:]]
runpy.run_module("sdk", run_name="__main__")
"""


@pytest.fixture(scope="module")
def sigmoid_qonnx(tmp_path_factory):
    """A user's sigmoid classifier as Brevitas's export_qonnx writes it (float input: pixels / 255)."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantLinear, QuantReLU
    from torch import nn

    torch.manual_seed(5)
    body = nn.Sequential(QuantLinear(64, 16, bias=True, weight_bit_width=4), QuantReLU(bit_width=4))
    model = nn.Sequential(body, QuantLinear(16, 1, bias=True, weight_bit_width=4), nn.Sigmoid()).eval()
    path = tmp_path_factory.mktemp("model") / "sigmoid.onnx"
    export_qonnx(model, input_t=torch.zeros(1, 64), export_path=str(path))
    return path


def _deploy_with_the_sigmoid_dropped(model, out, *args):
    proc = subprocess.run(
        [sys.executable, "-c", DROP_THE_SIGMOID, "deploy", "--model", str(model), "--input-scale", str(1 / 255)]
        + ["--out", str(out), "--samples", "30", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_a_failed_deploy_prints_its_reason_and_fix_and_simulate_of_it_exits_1(sigmoid_qonnx, tmp_path):
    payload = json.loads(
        _deploy_with_the_sigmoid_dropped(sigmoid_qonnx, tmp_path / "t", "--target", "tflite", "--json").stdout
    )
    assert payload["verified"] is False and payload["exit_code"] == 1
    failure = payload["failure"]
    assert failure["check"].startswith("final output") and failure["layer"] == "network output"
    assert "LSB" in failure["detail"] and failure["mismatch_rate"] > 0 and "report" in failure["fix"]

    text = flat(_deploy_with_the_sigmoid_dropped(sigmoid_qonnx, tmp_path / "t2", "--target", "tflite").stdout)
    assert "FAILED at network output" in text and "(see report.md)" not in text
    assert "final output within 1 LSB of the source model failed at network output" in text
    assert "max" in text and "LSB" in text and "fix: do not use this package" in text
    report = (tmp_path / "t2" / "report.md").read_text()
    assert "| why it failed |" in report and "| fix |" in report

    several = _deploy_with_the_sigmoid_dropped(sigmoid_qonnx, tmp_path / "many", "--target", "tflite,stm32f746g-disco")
    text = flat(several.stdout)
    for board in ("tflite", "stm32f746g-disco"):
        assert f"{board}: FAILED final output within 1 LSB of the source model failed at network output" in text

    x = np.random.default_rng(0).integers(0, 256, size=(20, 64), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)  # one output: a binary classifier, no digit labels
    simulated = sdk("simulate", str(tmp_path / "t2"), "--data", str(tmp_path / "x.npz"), check_code=1)
    text = flat(simulated.stdout)
    assert "FAILED this package's deploy failed its exactness rule" in text and "network output" in text
    as_json = json.loads(
        sdk("simulate", str(tmp_path / "t2"), "--data", str(tmp_path / "x.npz"), "--json", check_code=1).stdout
    )
    assert any("failed its exactness rule" in failure for failure in as_json["failures"])


@pytest.mark.slow
def test_a_failed_fpga_deploy_names_the_layer_and_how_much_differs(tfc_run, tmp_path, monkeypatch):
    """FINN's flow with one weight of the second MVAU changed on the way (as a miscompiling tool would): --json and
    the summary name the layer, how many values differ and by how much, and the fix."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    from targets.finn import steps

    def change_the_second_layer(model, cfg):
        node = [n for n in model.graph.node if n.op_type.startswith("MVAU")][1]
        weights = model.get_initializer(node.input[1]).copy()
        weights[:, :8] = DataType[getCustomOp(node).get_nodeattr("weightDataType")].max()
        model.set_initializer(node.input[1], weights)
        return model

    position = steps.STEP_NAMES.index("check_mapping")
    flow = [*steps.STEPS[:position], ("change", "change", change_the_second_layer), *steps.STEPS[position:]]
    monkeypatch.setattr(steps, "STEPS", flow)
    monkeypatch.setattr(steps, "STEP_NAMES", [name for name, _, _ in flow])
    args = ["deploy", "--target", "pynq-z2", "--model", str(tfc_run), "--samples", "20"]
    result = invoke(*args, "--out", str(tmp_path / "json"), "--json")
    assert result.exit_code == 1, result.output
    failure = json.loads(result.stdout)["failure"]
    assert failure["layer"].startswith("MVAU") and failure["mismatch_rate"] > 0
    assert "differ by up to" in failure["detail"] and "first differing sample" in failure["detail"]
    assert failure["fix"].startswith("do not use this package")
    text = flat(invoke(*args, "--out", str(tmp_path / "text")).stdout)
    assert f"FAILED at {failure['layer']}" in text and "(see report.md)" not in text
    assert "differ by up to" in text and "fix: do not use this package" in text
