"""A flow from outside the SDK's tree (tests/plugins/tiny_flow), registered as an installed package registers one:
a *.dist-info whose entry_points.txt names its FlowInfo in the group `sdk.flows`. Every command runs in a subprocess
with that folder on its path, so the registration is the real one: the flow is listed, its options are flags of
`sdk deploy` and `sdk simulate` and keywords of sdk.deploy / sdk.simulate, its tool shows in `sdk doctor`, and a
model deploys through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"
TINY_BOARD = """\
name: tiny-cpu
display_name: "A CPU the tiny flow serves"
vendor: "Test"
kind: cpu
flows: [tiny, tflite]
lifecycle: active
clock_mhz: 1000
description: "A board whose default flow is the tiny flow registered by a test package."
source: "tests/test_flow_plugins.py"
core: "any application processor"
"""


def _install(site: Path, name: str, *entries: str) -> None:
    """What pip leaves of a package with entry points: its dist-info (the code itself is on the path already)."""
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sdk.flows]\n" + "\n".join(entries) + "\n")


def _env(site: Path, boards: Path) -> dict[str, str]:
    paths = [str(ROOT), str(PLUGINS), str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "SDK_BOARDS_PATH": str(boards)}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    site, boards = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("boards")
    _install(site, "tiny_flow", "tiny = tiny_flow.flow:FLOW")
    (boards / "tiny-cpu.yaml").write_text(TINY_BOARD)
    return _env(site, boards)


def sdk(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


def test_the_plugin_flow_is_listed_with_its_options_boards_and_tools(env):
    flows = {row["flow"]: row for row in json.loads(sdk(env, "targets", "--json").stdout)}
    assert list(flows)[:4] == ["finn", "tflite", "tflm", "ethosu"] and flows["tiny"]["boards"] == ["tiny-cpu"]
    deploy_help = " ".join(sdk(env, "deploy", "--help").stdout.split())
    assert "--tiny-stamp TEXT Tiny flow: text written into the artifact's doc_string." in deploy_help
    assert "--fps FLOAT" in deploy_help and "--io [int8|float]" in deploy_help  # the built-in flows' flags stay
    assert "--tiny-repeat INTEGER Tiny flow: run the artifact this many times." in " ".join(
        sdk(env, "simulate", "--help").stdout.split()
    )
    doctor = {row["name"]: row for row in json.loads(sdk(env, "doctor", "--json").stdout)}
    assert doctor["tiny-tool"] == {
        "name": "tiny-tool",
        "present": True,
        "version": "1.0",
        "detail": "always here",
        "needed_for": "tiny flow",
    }
    assert "vivado" in doctor and "vela (CLI)" in doctor  # the built-in flows' tools stay
    boards = json.loads(sdk(env, "boards", "--flow", "tiny", "--json").stdout)
    assert [board["name"] for board in boards] == ["tiny-cpu"]


def test_a_model_deploys_and_simulates_through_the_plugin_with_the_cli(env, tfc_export, tmp_path):
    package = tmp_path / "pkg"
    args = ["deploy", "--target", "tiny-cpu", "--model", str(tfc_export), "--samples", "20", "--out", str(package)]
    result = json.loads(sdk(env, *args, "--tiny-stamp", "from the CLI", "--json").stdout)
    assert result["flow"] == "tiny" and result["verified"] and result["summary"]["stamp"] == "from the CLI"
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["flow"] == "tiny" and manifest["artifact"] == "tiny_model.onnx"
    assert manifest["deploy_config"]["tiny_stamp"] == "from the CLI" and manifest["deploy_config"]["samples"] == 20
    assert onnx.load(str(package / "tiny_model.onnx")).doc_string == "from the CLI"

    simulated = json.loads(sdk(env, "simulate", str(package), "--limit", "10", "--tiny-repeat", "2", "--json").stdout)
    assert simulated["flow"] == "tiny" and simulated["samples"] == 10 and simulated["agreement"] == 1.0
    assert simulated["runtime_agreement"] == {"runs": 2.0} and simulated["identical_outputs"] == 1.0

    refused = sdk(env, "simulate", str(package), "--rtlsim", "--json", code=2)
    assert "--rtlsim runs an FPGA package's RTL layers in Verilator; this package is for tiny." in refused.stdout
    refused = json.loads(sdk(env, *args, "--fps", "100", "--json", code=2).stdout)
    assert refused["what"] == "--fps does not apply to tiny-cpu (flow tiny)."
    other = ["deploy", "--target", "tflite", "--model", str(tfc_export), "--tiny-stamp", "x", "--json"]
    assert json.loads(sdk(env, *other, code=2).stdout)["what"] == "--tiny-stamp does not apply to tflite (flow tflite)."


API_SCRIPT = """
import json, sys
import numpy as np
import sdk
from sdk.errors import ConfigError

model, out = sys.argv[1], sys.argv[2]
result = sdk.deploy(model, "tiny-cpu", out=out, samples=12, tiny_stamp="from Python")
card = json.loads((result.package / "model.qonnx.json").read_text())
x = np.random.default_rng(0).integers(0, 256, size=(5, *card["input"]["image_shape"]), dtype=np.uint8)
outputs = sdk.simulate(result.package, x, tiny_repeat=2)
try:
    sdk.deploy(model, "tiny-cpu", out=out + "-typo", tiny_stmp="x")
    typo = None
except ConfigError as error:
    typo = error.to_dict()
print(json.dumps({"flow": result.flow, "verified": result.verified, "stamp": result.summary["stamp"],
                  "shape": list(outputs.shape), "typo": typo}))
"""


def test_a_model_deploys_and_simulates_through_the_plugin_with_the_python_api(env, tfc_export, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", API_SCRIPT, str(tfc_export), str(tmp_path / "api")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["flow"] == "tiny" and result["verified"] and result["stamp"] == "from Python"
    assert result["shape"][0] == 5
    assert result["typo"]["what"] == "sdk.deploy() got unknown option(s): tiny_stmp."
    assert "tiny_stamp" in result["typo"]["fix"]


def test_two_flows_of_one_name_are_refused_naming_both(tmp_path):
    site, boards = tmp_path / "site", tmp_path / "boards"
    boards.mkdir()
    _install(site, "tiny_flow", "tiny = tiny_flow.flow:FLOW")
    _install(site, "tiny_again", "tiny = tiny_flow.flow:FLOW")
    error = json.loads(sdk(_env(site, boards), "targets", "--json", code=2).stdout)
    assert error["what"].startswith("Two flows are named 'tiny': entry point 'tiny = tiny_flow.flow:FLOW'")
    assert "(package tiny_flow)" in error["what"] and "(package tiny_again)" in error["what"]


def test_an_entry_point_must_bear_its_flows_name_and_a_builtin_name_is_taken(tmp_path):
    site, boards = tmp_path / "site", tmp_path / "boards"
    boards.mkdir()
    _install(site, "tiny_flow", "tflite = tiny_flow.flow:FLOW")
    error = json.loads(sdk(_env(site, boards), "targets", "--json", code=2).stdout)
    assert "registers a flow named 'tiny', not 'tflite'" in error["what"]
    _install(site, "second_tflite", "tflite = tiny_flow.clash:SECOND_TFLITE")
    (site / "tiny_flow-0.1.dist-info" / "entry_points.txt").write_text("")
    error = json.loads(sdk(_env(site, boards), "targets", "--json", code=2).stdout)
    assert error["what"] == (
        "Two flows are named 'tflite': targets/tflite/flow.py and entry point "
        "'tflite = tiny_flow.clash:SECOND_TFLITE' in group sdk.flows (package second_tflite)."
    )


def test_options_declared_differently_by_two_flows_are_refused(tmp_path):
    site, boards = tmp_path / "site", tmp_path / "boards"
    boards.mkdir()
    _install(site, "clash_flow", "clash = tiny_flow.clash:FLOW")
    error = sdk(_env(site, boards), "deploy", "--help", code=2).stderr
    assert "The flows tflite, tflm, ethosu and clash declare the option --io differently" in " ".join(
        error.replace("│", " ").split()
    )


def test_an_option_named_like_a_core_flag_and_a_flow_name_that_is_no_word_are_refused(tmp_path):
    site, boards = tmp_path / "site", tmp_path / "boards"
    boards.mkdir()
    _install(site, "core_clash", "core_clash = tiny_flow.clash:CORE_CLASH")
    error = " ".join(sdk(_env(site, boards), "deploy", "--help", code=2).stderr.replace("│", " ").split())
    assert "The flow(s) core_clash declare the option --samples, which is `sdk deploy`'s own." in error
    site = tmp_path / "site2"
    _install(site, "upper", "Tiny = tiny_flow.clash:UPPER")
    error = json.loads(sdk(_env(site, boards), "targets", "--json", code=2).stdout)
    assert "a flow's name is lower-case letters, digits and '_'" in error["what"]
