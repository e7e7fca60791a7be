"""End to end: every zoo model deployed to LiteRT (tflite), a Cortex-M board (TFLM) and an Ethos-U NPU
(Vela), verified in the real runtimes; several targets at once; the user errors (exit 2, no package)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from step_table import report_steps

from sdk.deployment import CLEAN_STEP, PREPARE_STEP, DeployConfig, comparison_rows, deploy, deploy_many
from sdk.errors import ConfigError, SDKError
from sdk.qat import TrainConfig, train
from sdk.report import PLOTS_STEP
from targets.tflite.lowering import TfliteConversionError
from targets.tflm.runtime import ModelTooLargeError

BOARDS = ["tflite", "stm32f746g-disco", "ethos-u55-128"]
SAMPLES = 40


def _check_package(result, board: str) -> dict:
    assert result.exit_code == 0 and result.verified, result.summary
    package = result.package
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["verified"] and manifest["board"]["name"] == board
    for name in (
        "model.tflite",
        "tflite_info.json",
        "report.md",
        "report.json",
        "weight_bytes_per_layer.png",
        "model.qonnx.onnx",
    ):
        assert (package / name).is_file(), name
    report = json.loads((package / "report.json").read_text())
    checks = report["data"]["verification"]["checks"]
    assert [c["passed"] for c in checks] == [True, True, True] and "bit-exact" in checks[0]["detail"]
    assert checks[2]["name"].startswith("final output")  # the artifact's output against the source model's
    return report


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_tfc_deploys_to_each_tflite_board(tfc_run, tmp_path, board):
    result = deploy(
        DeployConfig(target=board, model=str(tfc_run), out=str(tmp_path / board), samples=SAMPLES), progress=False
    )
    report = _check_package(result, board)
    s = result.summary
    assert s["accuracy"] > 0.8 and s["model_bytes"] == (tmp_path / board / "model.tflite").stat().st_size
    if board == "tflite":
        assert (
            s["latency_us"] > 0
            and s["latency_reference_us"] > 0
            and set(report["data"]["latency"]) == {"xnnpack", "reference"}
        )
    if board == "stm32f746g-disco":
        assert 0 < s["arena_bytes"] < 327680 and 0 < s["sram_used"] < 1 and (tmp_path / board / "memory.png").is_file()
    if board == "ethos-u55-128":
        assert s["cycles"] > 0 and s["inferences_per_second"] > 0 and s["cpu_ops"] == 0  # int8 I/O: every op on the NPU
        assert (tmp_path / board / "model_vela.tflite").is_file() and (
            tmp_path / board / "vela_cycles_per_layer.png"
        ).is_file()
        assert (
            s["off_chip_bytes"] > 0
            and json.loads((tmp_path / board / "vela_summary.json").read_text())["summary"]["sram_bytes"] > 0
        )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnv", "dscnn", "resnet8"])
@pytest.mark.parametrize("board", BOARDS)
def test_conv_zoo_models_deploy_to_each_tflite_board(zoo_runs, tmp_path, model, board):
    result = deploy(
        DeployConfig(target=board, model=str(zoo_runs[model]), out=str(tmp_path / "pkg"), samples=SAMPLES),
        progress=False,
    )
    _check_package(result, board)


@pytest.mark.slow
def test_several_targets_one_folder_each_and_a_comparison(tfc_run, tmp_path):
    out = tmp_path / "multi"
    targets = "pynq-z2,tflite,ethos-u55-128,nrf52840-dk"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdk",
            "deploy",
            "--target",
            targets,
            "--model",
            str(tfc_run),
            "--out",
            str(out),
            "--samples",
            "20",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for board in targets.split(","):
        assert (out / board / "manifest.json").is_file() and board in proc.stdout
    assert "PASSED" in proc.stdout and "FAILED" not in proc.stdout


@pytest.mark.slow
def test_an_error_on_one_board_does_not_stop_the_others(tfc_run, tmp_path, monkeypatch):
    root = Path(__file__).resolve().parent.parent / "boards"
    boards = tmp_path / "boards"
    (boards / "parts").mkdir(parents=True)
    part = (root / "parts" / "nrf52840.yaml").read_text().replace("name: nrf52840", "name: tiny-chip")
    part = "\n".join(
        "  sram_bytes: 1024" if line.strip().startswith("sram_bytes:") else line for line in part.splitlines()
    )
    (boards / "parts" / "tiny-chip.yaml").write_text(part + "\n")
    text = (root / "nrf52840-dk.yaml").read_text().replace("name: nrf52840-dk", "name: tiny-mcu")
    (boards / "tiny-mcu.yaml").write_text(text.replace("chip: nrf52840", "chip: tiny-chip"))
    monkeypatch.setenv("SDK_BOARDS_PATH", str(boards))
    out = tmp_path / "multi"
    results = deploy_many(
        DeployConfig(target="tiny-mcu,tflite", model=str(tfc_run), out=str(out), samples=10), progress=False
    )
    assert [r.exit_code for r in results] == [2, 0]
    assert "SRAM" in results[0].error and "tiny-mcu" in results[0].error
    assert not (out / "tiny-mcu").exists() and (out / "tflite" / "manifest.json").is_file()
    rows = comparison_rows(results)
    assert rows[0][4] == "ERROR" and rows[1][4] == "PASSED"
    with pytest.raises(ModelTooLargeError, match="tensor arena needs"):
        deploy(
            DeployConfig(target="tiny-mcu", model=str(tfc_run), out=str(tmp_path / "single"), samples=4), progress=False
        )
    assert not (tmp_path / "single").exists()


@pytest.mark.slow
def test_user_errors_exit_2_and_leave_nothing(tfc_run, tfc_export, tmp_path):
    with pytest.raises(ConfigError, match="int4 FULLY_CONNECTED"):
        deploy(
            DeployConfig(
                target="stm32f746g-disco", model=str(tfc_run), out=str(tmp_path / "a"), options={"int4_weights": True}
            ),
            progress=False,
        )
    with pytest.raises(ConfigError, match="int4"):
        deploy(
            DeployConfig(
                target="ethos-u55-128", model=str(tfc_run), out=str(tmp_path / "a"), options={"int4_weights": True}
            ),
            progress=False,
        )
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="does not apply to pynq-z2"):
        deploy(DeployConfig(target="pynq-z2", model=str(tfc_run), options={"io": "int8"}), progress=False)
    with pytest.raises(ConfigError, match="does not apply to stm32f746g-disco"):
        deploy_many(
            DeployConfig(target="stm32f746g-disco,tflite", model=str(tfc_run), options={"fps": 1000.0}), progress=False
        )
    foreign = tmp_path / "my-project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a deployment package"):
        deploy(DeployConfig(target="tflite", model=str(tfc_run), out=str(foreign)), progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="names a board twice"):
        deploy_many(DeployConfig(target="tflite,tflite", model=str(tfc_run)), progress=False)
    one_bit = tmp_path / "w1a1"
    train(TrainConfig(model="tfc", bits="w1a1", epochs=1), one_bit, progress=False)
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "check", "--target", "ethos-u55-128", "--model", str(one_bit)],
        capture_output=True,
        text=True,
    )
    panel = " ".join(proc.stderr.replace("│", " ").split())
    assert proc.returncode == 2 and "1-bit" in panel and "fix:" in panel
    assert "deploy it to an FPGA board: `sdk check --target pynq-z2` accepts it" in panel  # FINN's check said so
    with pytest.raises(TfliteConversionError):
        deploy(DeployConfig(target="tflite", model=str(one_bit), out=str(tmp_path / "b")), progress=False)
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_int4_weights_on_litert(tfc_run, zoo_runs, tmp_path):
    """Packed int4 weights: half the weight bytes, the same exactness rule; more than 4 weight bits is refused."""
    int8 = deploy(
        DeployConfig(target="tflite", model=str(tfc_run), out=str(tmp_path / "int8"), samples=20), progress=False
    )
    int4 = deploy(
        DeployConfig(
            target="tflite", model=str(tfc_run), out=str(tmp_path / "int4"), samples=20, options={"int4_weights": True}
        ),
        progress=False,
    )
    assert int4.verified and int4.summary["model_bytes"] < 0.8 * int8.summary["model_bytes"]
    info = json.loads((tmp_path / "int4" / "tflite_info.json").read_text())
    assert {t["dtype"] for t in info["tensors"] if t["name"].endswith("/weights")} == {"INT4"}
    residual = deploy(
        DeployConfig(
            target="tflite",
            model=str(zoo_runs["resnet8"]),
            out=str(tmp_path / "res"),
            samples=10,
            options={"int4_weights": True},
        ),
        progress=False,
    )
    assert residual.verified
    eight_bit = tmp_path / "w8"
    train(TrainConfig(model="tfc", bits="w8a8", epochs=1), eight_bit, progress=False)
    with pytest.raises(TfliteConversionError, match="int4 holds 4"):
        deploy(
            DeployConfig(
                target="tflite", model=str(eight_bit), out=str(tmp_path / "w8pkg"), options={"int4_weights": True}
            ),
            progress=False,
        )
    assert not (tmp_path / "w8pkg").exists()


@pytest.mark.slow
def test_simulate_a_tflite_package_and_refuse_a_corrupt_one(tfc_run, tmp_path):
    package = tmp_path / "pkg"
    deploy(DeployConfig(target="stm32f746g-disco", model=str(tfc_run), out=str(package), samples=10), progress=False)
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "simulate", str(package), "--limit", "50", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sim = json.loads(proc.stdout)
    assert (
        sim["flow"] == "tflm"
        and sim["runtime_agreement"] == {"TensorFlow Lite Micro = golden model": 1.0}
        and sim["agreement"] > 0.9
    )
    (package / "model.tflite").write_bytes((package / "model.tflite").read_bytes()[:200])
    proc = subprocess.run([sys.executable, "-m", "sdk", "simulate", str(package)], capture_output=True, text=True)
    assert proc.returncode == 2 and "model.tflite" in proc.stderr and "Traceback" not in proc.stderr


def test_a_qonnx_file_without_its_checkpoint_deploys_from_the_graph(tfc_run, tfc_export, tmp_path):
    """The .tflite is lowered from the QONNX graph itself: the training checkpoint is not needed."""
    card_path = tfc_export.with_suffix(".json")
    lonely = tmp_path / "lonely.qonnx.onnx"
    lonely.write_bytes(tfc_export.read_bytes())
    card = json.loads(card_path.read_text())
    card["source_checkpoint"]["path"] = str(tmp_path / "gone.pt")
    lonely.with_suffix(".json").write_text(json.dumps(card))
    result = deploy(
        DeployConfig(target="tflite", model=str(lonely), out=str(tmp_path / "c"), samples=30), progress=False
    )
    assert result.verified and result.exit_code == 0


@pytest.mark.slow
def test_float_io_is_selectable(tfc_run, tmp_path):
    """--io float puts QUANTIZE / DEQUANTIZE at the boundaries (run by TFLM too);
    --io int8 takes int8 and gives int8 logits."""
    floats = deploy(
        DeployConfig(
            target="ethos-u55-128", model=str(tfc_run), out=str(tmp_path / "f"), samples=20, options={"io": "float"}
        ),
        progress=False,
    )
    assert floats.verified and floats.summary["cpu_ops"] == 2  # Vela leaves the float boundary ops to the CPU
    ops = [op["op"] for op in json.loads((tmp_path / "f" / "tflite_info.json").read_text())["ops"]]
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    ints = deploy(
        DeployConfig(target="tflite", model=str(tfc_run), out=str(tmp_path / "i"), samples=20, options={"io": "int8"}),
        progress=False,
    )
    info = json.loads((tmp_path / "i" / "tflite_info.json").read_text())
    assert (
        ints.verified and info["tensors"][0]["dtype"] == "INT8" and "DEQUANTIZE" not in [op["op"] for op in info["ops"]]
    )


@pytest.mark.parametrize(("field", "value"), [("seed", -1), ("image_size", 0)])
def test_a_bad_card_dataset_field_is_named_as_the_card_field(tfc_export, tmp_path, field, value):
    card = json.loads(tfc_export.with_suffix(".json").read_text())
    card["dataset"][field] = value
    model = tmp_path / "m.qonnx.onnx"
    model.write_bytes(tfc_export.read_bytes())
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(SDKError) as info:
        deploy(DeployConfig(target="tflite", model=str(model), out=str(tmp_path / "o")), progress=False)
    assert f"dataset.{field}" in info.value.what and info.value.where == "model card, dataset"
    assert not (tmp_path / "o").exists()


def test_the_report_gives_the_seconds_of_each_deploy_step(tfc_run, tmp_path):
    deploy(DeployConfig(target="tflite", model=str(tfc_run), out=str(tmp_path / "t"), samples=10), progress=False)
    steps = json.loads((tmp_path / "t" / "report.json").read_text())["data"]["deploy_steps"]
    assert [s["step"] for s in steps][1:3] == ["load model and samples", "write int8 .tflite from the QONNX graph"]
    assert all(s["seconds"] >= 0 for s in steps) and "Time per step" in (tmp_path / "t" / "report.md").read_text()
    # every stage of the deploy under its own name, the plots, the report and the commit included
    names = report_steps(tmp_path / "t")
    assert names == [
        PREPARE_STEP,
        "load model and samples",
        "write int8 .tflite from the QONNX graph",
        "run in LiteRT reference kernels",
        "time LiteRT (XNNPACK and reference kernels)",
        "verify: runtime = golden model, golden ~ QAT model",
        PLOTS_STEP,
        "write report",
        "commit package",
        CLEAN_STEP,
    ]
