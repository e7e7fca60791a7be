"""`sdk deploy` to FPGA boards, end to end with real FINN and the SDK's simulator."""

import json
import subprocess
import sys

import pytest
from step_table import report_steps

from sdk.deployment import CLEAN_STEP, DeployConfig, check, deploy
from sdk.errors import BoardError, ConfigError, ModelTooLargeError, SDKError, UnsupportedLayersError
from sdk.qat import TrainConfig, train
from sdk.report import PLOTS_STEP

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cnv_run(zoo_runs):
    return zoo_runs["cnv"]


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104", "alveo-u250"])
def test_tfc_deploys_verified_within_capacity(tfc_run, tmp_path, board):
    result = deploy(
        DeployConfig(target=board, model=str(tfc_run), out=str(tmp_path / board), samples=40), progress=False
    )
    assert result.verified and result.exit_code == 0
    package = tmp_path / board
    manifest = json.loads((package / "manifest.json").read_text())
    names = {f["path"] for f in manifest["files"]}
    assert {
        "dataflow_model.onnx",
        "parent_model.onnx",
        "folding_config.json",
        "finish_bitfile.py",
        "report.md",
        "report.json",
        "cycles_per_layer.png",
        "utilisation.png",
        "model.qonnx.onnx",
    } <= names
    assert any(n.startswith("sources/MVAU") and n.endswith(".cpp") for n in names)
    assert manifest["board"]["part"] and manifest["tool_versions"]["finn-plus"] == "1.6.1" and manifest["verified"]
    report = json.loads((package / "report.json").read_text())
    estimate = report["data"]["estimate"]
    for resource in ("lut", "bram18", "uram", "dsp"):
        assert estimate["totals"][resource] <= 0.8 * estimate["capacity"][resource] + 1e-6
    assert estimate["fps"] > 0 and all(c["passed"] for c in report["data"]["verification"]["checks"])
    folding = json.loads((package / "folding_config.json").read_text())
    assert "Defaults" in folding and any("PE" in v for v in folding.values())
    assert "needs Vivado" in result.summary["bitfile"] and "finish the bitfile" in result.messages[0]
    # every stage timed under its own name: FINN's steps, the simulation, the package's files, the plots (after
    # the vendor tools, not under them), the report and the commit
    from targets.finn.steps import STEPS

    names = report_steps(package)
    labels = [label for _, label, _ in STEPS]
    assert [name for name in names if name in labels] == labels
    assert names[names.index(labels[-1]) + 1 :] == [
        "save the graphs and folding config",
        "vendor tools",
        PLOTS_STEP,
        "write report",
        "commit package",
        CLEAN_STEP,
    ]
    assert "simulate and verify" in names
    assert set(report["data"]["step_seconds"]) == {name for name, _, _ in STEPS}  # FINN's own steps, by name


@pytest.mark.parametrize("board", ["pynq-z2", "kv260", "alveo-u55c"])
def test_cnv_deploys_bit_exact(cnv_run, tmp_path, board):
    result = deploy(
        DeployConfig(target=board, model=str(cnv_run), out=str(tmp_path / board), samples=40), progress=False
    )
    assert result.verified
    report = json.loads((tmp_path / board / "report.json").read_text())
    estimate = report["data"]["estimate"]
    assert all(estimate["totals"][r] <= 0.8 * estimate["capacity"][r] + 1e-6 for r in ("lut", "bram18", "uram", "dsp"))
    checks = report["data"]["verification"]["checks"]
    assert {c["name"] for c in checks} >= {
        "simulator = FINN python execution, every layer",
        "accelerator integer output = QAT model",
    }


def test_depthwise_separable_cnn_deploys_bit_exact(zoo_runs, tmp_path):
    result = deploy(
        DeployConfig(target="zcu104", model=str(zoo_runs["dscnn"]), out=str(tmp_path / "z"), samples=30), progress=False
    )
    assert result.verified
    ops = {
        layer["op_type"]
        for layer in json.loads((tmp_path / "z" / "report.json").read_text())["data"]["estimate"]["layers"]
    }
    assert {"VVAU_hls", "GlobalAccPool_hls"} & ops or any(op.startswith("VVAU") for op in ops)


def test_target_fps_mode(tfc_run, tmp_path):
    slow = deploy(
        DeployConfig(target="pynq-z2", model=str(tfc_run), out=str(tmp_path / "a"), options={"fps": 1000}, samples=10),
        progress=False,
    )
    fast = deploy(
        DeployConfig(target="pynq-z2", model=str(tfc_run), out=str(tmp_path / "b"), samples=10), progress=False
    )
    assert slow.verified and fast.verified and fast.summary["fps"] > slow.summary["fps"] >= 1000


def test_same_inputs_give_identical_manifest(cnv_run, tmp_path, monkeypatch):
    """A conv net, whose FINN graph gains tensors that qonnx names at random: the first deploy exports and
    streamlines it, the second takes both from the cache, and the packages are the same."""
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("one", "two"):
        deploy(DeployConfig(target="pynq-z2", model=str(cnv_run), out=str(tmp_path / name), samples=10), progress=False)
    reports = [json.loads((tmp_path / name / "report.json").read_text())["data"] for name in ("one", "two")]
    assert [report["cached_steps"] for report in reports] == [[], ["streamline"]]
    assert "From the SDK cache" in (tmp_path / "two" / "report.md").read_text()
    one, two = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("one", "two"))
    assert one["identity_sha256"] == two["identity_sha256"]
    # every file but the measured reports (per-step times) is byte-identical
    assert one["volatile"] == ["report.json", "report.md"]
    assert [f for f in one["files"] if f["path"] not in one["volatile"]] == [
        f for f in two["files"] if f["path"] not in two["volatile"]
    ]


def test_qonnx_file_with_card_deploys(tfc_export, tmp_path):
    assert deploy(
        DeployConfig(target="ultra96-v2", model=str(tfc_export), out=str(tmp_path / "u"), samples=10), progress=False
    ).verified


def test_too_large_for_board_names_what_exceeds(tfc_run, tmp_path):
    # TFC fully folded needs about 1,300 LUTs: more than 2 % of a PYNQ-Z2 (LFC w8a8 at 80 % fails the same way, in
    # 14 s of FINN's work on 8-bit thresholds instead of 2)
    config = DeployConfig(
        target="pynq-z2", model=str(tfc_run), out=str(tmp_path / "p"), samples=4, options={"max_util": 0.02}
    )
    with pytest.raises(ModelTooLargeError) as info:
        deploy(config, progress=False)
    assert "does not fit PYNQ-Z2 even fully folded" in info.value.what
    assert "LUT" in info.value.what and "needs" in info.value.what and "cap" in info.value.what
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.tmp-*"))


def test_unsupported_layers_are_named(tmp_path):
    """Padded 1-bit convolutions (resnet8, once refused here, deploys: tests/test_residual_fpga.py)."""
    run = tmp_path / "run"
    train(TrainConfig(model="cnv", bits="w1a1", epochs=1), run, progress=False)
    with pytest.raises(UnsupportedLayersError) as info:
        check(DeployConfig(target="pynq-z2", model=str(run)))
    assert info.value.layers and all(layer.why and layer.fix for layer in info.value.layers)
    # a layer is the file's node (its op type); FINN's own node made from it (the FMPadding) is named in why
    assert any("a FMPadding FINN put at this node" in layer.why for layer in info.value.layers), info.value.layers
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "check", "--target", "pynq-z2", "--model", str(run), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and json.loads(proc.stdout)["layers"]


def test_user_errors(tfc_run, tmp_path):
    with pytest.raises(BoardError):
        deploy(DeployConfig(target="pynq-z9", model=str(tfc_run)), progress=False)
    with pytest.raises(ConfigError):
        deploy(DeployConfig(target="pynq-z2", model=str(tfc_run), options={"max_util": 1.5}), progress=False)
    with pytest.raises(SDKError, match="does not exist"):
        deploy(DeployConfig(target="pynq-z2", model=str(tmp_path / "nothing.onnx")), progress=False)


def test_cli_deploy_and_simulate(tfc_run, tmp_path):
    package = tmp_path / "pkg"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdk",
            "deploy",
            "--target",
            "pynq-z2",
            "--model",
            str(tfc_run),
            "--out",
            str(package),
            "--samples",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verified"]
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "simulate", str(package), "--data", "digits", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    sim = json.loads(proc.stdout)
    assert sim["samples"] == 360 and sim["identical_outputs"] == 1.0 and sim["agreement"] == 1.0
    (package / "dataflow_model.onnx").write_bytes(b"broken")
    proc = subprocess.run([sys.executable, "-m", "sdk", "simulate", str(package)], capture_output=True, text=True)
    assert proc.returncode == 2 and "corrupt" in proc.stderr


def test_require_bitfile_without_vivado_fails_cleanly(tfc_run, tmp_path, monkeypatch):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    with pytest.raises(SDKError, match="bitfile was required, but Vivado"):
        deploy(
            DeployConfig(
                target="pynq-z2",
                model=str(tfc_run),
                out=str(tmp_path / "p"),
                samples=4,
                options={"require_bitfile": True},
            ),
            progress=False,
        )
    assert not (tmp_path / "p").exists()
