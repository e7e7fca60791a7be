"""A package is checked against its manifest before anything reads it, and equal inputs give an equal identity.

The fast tests tamper with small packages the writer builds; the slow ones deploy real packages (LiteRT and
FINN), tamper with copies, and expect `sdk simulate` to exit 2 naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tampering import recompute_manifest

from sdk.boards import get_board
from sdk.cli import main
from sdk.deployment import DeployConfig, deploy
from sdk.errors import PackageError
from sdk.package import PackageBuilder, identity_sha256, verify_package
from sdk.simulation import run_package, simulate_package
from targets.finn import hardware

# --- fast: packages written by the builder ------------------------------------------------------------------------


@pytest.fixture
def package(tmp_path) -> Path:
    with PackageBuilder(tmp_path / "pkg") as pkg:
        pkg.write_text("model.bin", "weights\n")
        pkg.write_text("sources/layer0.cpp", "int main() {}\n")
        pkg.write_json("report.json", {"latency_us": 12.5}, volatile=True)
        pkg.allow_unlisted("hardware")
        pkg.commit({"flow": "tflite", "board": {"name": "tflite"}, "artifact": "model.bin", "verified": False})
    return tmp_path / "pkg"


def _refused(package: Path, naming: str) -> PackageError:
    with pytest.raises(PackageError) as info:
        verify_package(package)
    assert naming in info.value.what and naming in info.value.where, info.value.render()
    assert info.value.fix
    return info.value


def test_an_untouched_package_verifies(package):
    manifest = verify_package(package)
    assert {entry["path"] for entry in manifest["files"]} == {"model.bin", "sources/layer0.cpp", "report.json"}
    assert manifest["volatile"] == ["report.json"] and manifest["unlisted_allowed"] == ["hardware"]


def test_a_changed_file_is_refused_even_at_the_same_size(package):
    (package / "model.bin").write_text("weighty\n")
    assert "sha256" in _refused(package, "model.bin").what


def test_a_changed_measured_file_is_refused_too(package):
    (package / "report.json").write_text('{"latency_us": 1}\n')
    _refused(package, "report.json")


def test_a_missing_file_is_refused(package):
    (package / "sources" / "layer0.cpp").unlink()
    assert "is missing" in _refused(package, "sources/layer0.cpp").what


@pytest.mark.parametrize("extra", ["model2.bin", "sources/layer1.cpp", ".hidden"])
def test_an_added_file_is_refused(package, extra):
    (package / extra).write_text("x\n")
    assert "was added" in _refused(package, extra).what


def test_links_are_refused(package, tmp_path):
    (tmp_path / "elsewhere.bin").write_text("weights\n")
    (package / "model.bin").unlink()
    (package / "model.bin").symlink_to(tmp_path / "elsewhere.bin")  # same bytes, but not the file the SDK wrote
    _refused(package, "model.bin")
    (package / "model.bin").unlink()
    (package / "model.bin").write_text("weights\n")
    (package / "linked").symlink_to(tmp_path)
    _refused(package, "linked")


def test_files_a_packaged_script_writes_into_its_folder_are_allowed(package):
    (package / "hardware" / "build").mkdir(parents=True)
    (package / "hardware" / "build" / "top.bit").write_bytes(b"\x00")
    assert verify_package(package)
    (package / "hardwareX").write_text("no\n")  # the folder, not a prefix of a name
    _refused(package, "hardwareX")


@pytest.mark.parametrize(
    "content, says",
    [
        ("{}", "not a deployment package manifest"),
        ("not json {", "not JSON"),
        ("[1, 2]", "not a deployment package manifest"),
        ('{"format": "sdk-package/2"}', "no file list"),
        (
            '{"format": "sdk-package/2", "files": [{"path": "../x", "sha256": "0", "bytes": 1, "mode": "0644"}]}',
            "malformed",
        ),
    ],
)
def test_a_broken_manifest_is_refused(package, content, says):
    (package / "manifest.json").write_text(content)
    error = _refused(package, "manifest.json")
    assert says in error.what


def test_a_missing_manifest_or_package_is_refused(package, tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        verify_package(tmp_path / "nowhere")
    with pytest.raises(PackageError, match="is a file"):
        verify_package(package / "model.bin")
    (package / "manifest.json").unlink()
    with pytest.raises(PackageError, match="no manifest.json"):
        verify_package(package)


def test_an_edited_manifest_field_is_refused(package):
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["board"]["name"] = "pynq-z2"
    (package / "manifest.json").write_text(json.dumps(manifest))
    assert "identity_sha256" in _refused(package, "manifest.json").what


def _rewrite(package: Path, edit, recompute: bool = False) -> None:
    """Edit manifest.json in place; with `recompute`, as someone who also recomputes its identity would."""
    manifest = json.loads((package / "manifest.json").read_text())
    edit(manifest)
    if recompute:
        try:
            manifest["identity_sha256"] = identity_sha256(manifest)
        except (TypeError, KeyError, AttributeError):  # a field too broken to hash: the stored identity stays
            pass
    (package / "manifest.json").write_text(json.dumps(manifest))


def _edit_board(manifest: dict) -> None:
    manifest["board"]["name"] = "pynq-z2"
    manifest["verified"] = True


@pytest.mark.parametrize("identity", [None, "", "0" * 63, "G" * 64, 7, ["0" * 64]])
def test_the_manifest_cannot_switch_its_identity_check_off(package, identity):
    """Deleting identity_sha256 (or making it unreadable) used to skip the check: fields could then be edited."""

    def edit(manifest: dict) -> None:
        _edit_board(manifest)
        if identity is None:
            del manifest["identity_sha256"]
        else:
            manifest["identity_sha256"] = identity

    _rewrite(package, edit)
    error = _refused(package, "manifest.json")
    assert "identity_sha256" in error.what and "field identity_sha256" in error.where


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("format"), "format"),
        (lambda m: m.update(format="sdk-package/1"), "format"),
        (lambda m: m.pop("files"), "files"),
        (lambda m: m.update(files={"model.bin": "x"}), "files"),
        (lambda m: m["files"][0].pop("mode"), "files[0]"),
        (lambda m: m["files"][0].update(mode="0777"), "files[0]"),
        (lambda m: m["files"][1].update(bytes="14"), "files[1]"),
        (lambda m: m["files"][1].update(bytes=-1), "files[1]"),
        (lambda m: m["files"][2].update(sha256="0" * 64 + "\n"), "files[2]"),
        (lambda m: m["files"][2].update(path="/etc/passwd"), "files[2]"),
        (lambda m: m["files"][2].update(extra=1), "files[2]"),
        (lambda m: m["files"].append(dict(m["files"][0])), "files[3]"),
        (lambda m: m.update(volatile="report.json"), "volatile"),
        (lambda m: m.update(volatile=["elsewhere.json"]), "volatile"),
        (lambda m: m.update(unlisted_allowed=["/"]), "unlisted_allowed"),
        (lambda m: m.update(unlisted_allowed=["../x"]), "unlisted_allowed"),
    ],
)
def test_a_missing_or_malformed_manifest_field_is_refused_naming_it(package, edit, field):
    _rewrite(package, edit, recompute=True)  # even with the identity recomputed to match
    error = _refused(package, "manifest.json")
    assert f"field {field}" in error.where, error.render()


def test_file_modes_are_recorded_and_checked(package, tmp_path):
    entries = {entry["path"]: entry["mode"] for entry in verify_package(package)["files"]}
    assert set(entries.values()) == {"0644"}
    (package / "model.bin").chmod(0o755)  # made executable after the deploy
    assert "mode" in _refused(package, "model.bin").what
    (package / "model.bin").chmod(0o646)  # writable by anyone
    assert "writable by all" in _refused(package, "model.bin").what
    (package / "model.bin").chmod(0o600)  # a copy under a strict umask is still the same package
    verify_package(package)

    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o700)
    with PackageBuilder(tmp_path / "exec") as pkg:
        pkg.add_file("run.sh", script)
        pkg.write_text("data.txt", "x\n").chmod(0o600)
        pkg.commit({})
    assert {e["path"]: e["mode"] for e in verify_package(tmp_path / "exec")["files"]} == {
        "run.sh": "0755",
        "data.txt": "0644",
    }
    assert (tmp_path / "exec" / "data.txt").stat().st_mode & 0o777 == 0o644  # one mode, whatever the umask
    (tmp_path / "exec" / "run.sh").chmod(0o644)
    _refused(tmp_path / "exec", "run.sh")


def test_a_recomputed_manifest_is_what_only_a_signature_would_catch(package):
    """The documented limit (README, 'What the manifest protects against'): editing a file and recomputing the whole
    manifest passes the integrity check; the readers' own checks (fields, graphs, regenerated RTL) still apply."""
    (package / "model.bin").write_text("other weights\n")

    def edit(manifest: dict) -> None:
        entry = next(e for e in manifest["files"] if e["path"] == "model.bin")
        entry.update(sha256=hashlib.sha256(b"other weights\n").hexdigest(), bytes=14)

    _rewrite(package, edit, recompute=True)
    verify_package(package)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("flow"), "flow"),
        (lambda m: m.update(flow="python"), "flow"),
        (lambda m: m.update(board="tflite"), "board"),
        (lambda m: m["board"].pop("name"), "board.name"),
        (lambda m: m["board"].update(part=["xc7z020clg400-1"]), "board.part"),
        (lambda m: m["board"].update(part="$(id)"), "board.part"),
        (lambda m: m.pop("artifact"), "artifact"),
        (lambda m: m.update(artifact="../model.bin"), "artifact"),
        (lambda m: m.pop("verified"), "verified"),
        (lambda m: m.update(verified="yes"), "verified"),
        (lambda m: m.update(clock_mhz=float("nan")), "clock_mhz"),
        (lambda m: m.update(clock_mhz=-100), "clock_mhz"),
    ],
)
def test_a_malformed_deploy_field_is_refused_by_the_readers(package, edit, field):
    _rewrite(package, edit, recompute=True)
    with pytest.raises(PackageError) as info:
        simulate_package(package)
    assert f"field {field}" in info.value.where and field in info.value.what, info.value.render()


def test_readers_verify_first(package):
    (package / "model.bin").write_text("changed\n")
    for read in (lambda: run_package(package, np.zeros((1, 8, 8), np.uint8)), lambda: simulate_package(package)):
        with pytest.raises(PackageError, match="model.bin"):
            read()


# --- finish_bitfile.py checks its package before any vendor tool ------------------------------------------------

# A stand-in `finn` that records being called: the script must refuse a changed package before it gets there.
_RECORDING_FINN = {
    "finn/__init__.py": "",
    "finn/util/__init__.py": "",
    "finn/util/settings.py": (
        "import pathlib\ndef initialize_dummy_settings():\n    pathlib.Path('FINN_CALLED').touch()\n"
    ),
}


@pytest.fixture
def fpga_package(tmp_path) -> Path:
    with PackageBuilder(tmp_path / "pkg") as pkg:
        pkg.write_text(hardware.FINISH_SCRIPT, hardware.finish_script(get_board("pynq-z2"), 100.0))
        pkg.write_text("dataflow_model.onnx", "graph\n")
        pkg.write_json("folding_config.json", {"MVAU_0": {"PE": 1}})
        pkg.allow_unlisted("hardware")
        pkg.commit({"flow": "finn"})
    for rel, source in _RECORDING_FINN.items():
        (tmp_path / "stub" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stub" / rel).write_text(source)
    return tmp_path / "pkg"


def _finish(package: Path, vivado: bool = True) -> subprocess.CompletedProcess:
    """`python finish_bitfile.py` in the package, with Vivado's variables set (or not) and the recording `finn`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XILINX")}
    env["PYTHONPATH"] = str(package.parent / "stub")
    if vivado:
        env |= {"XILINX_VIVADO": "/opt/vivado", "XILINX_HLS": "/opt/hls"}
    return subprocess.run(
        [sys.executable, hardware.FINISH_SCRIPT], cwd=package, capture_output=True, text=True, env=env, timeout=60
    )


def _chmod_x(package: Path) -> str:
    (package / "folding_config.json").chmod(0o755)
    return "folding_config.json"


def _change_folding(package: Path) -> str:
    (package / "folding_config.json").write_text('{"MVAU_0": {"PE": 64}}\n')
    return "folding_config.json"


def _drop_identity(package: Path) -> str:
    _rewrite(package, lambda m: m.pop("identity_sha256"))
    return "identity_sha256"


def _add_file(package: Path) -> str:
    (package / "extra.tcl").write_text("exec rm -rf ~\n")
    return "extra.tcl"


@pytest.mark.parametrize("tamper", [_change_folding, _chmod_x, _drop_identity, _add_file])
def test_finish_bitfile_refuses_a_changed_package_before_any_vendor_tool(fpga_package, tamper):
    name = tamper(fpga_package)
    proc = _finish(fpga_package)
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert "Vivado" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (fpga_package / "FINN_CALLED").exists()  # FINN's builder never started


def test_finish_bitfile_goes_on_with_an_untouched_package(fpga_package):
    proc = _finish(fpga_package, vivado=False)
    assert proc.returncode == 1 and "needs Vivado and Vitis HLS" in proc.stderr, proc.stderr
    proc = _finish(fpga_package)  # the recording finn stops it after settings: the check had passed
    assert (fpga_package / "FINN_CALLED").exists(), proc.stderr


def test_finish_bitfile_needs_no_sdk(fpga_package):
    """A Vivado machine may not have the SDK: the script carries the check (isolated mode: no PYTHONPATH)."""
    _change_folding(fpga_package)
    proc = subprocess.run(
        [sys.executable, "-I", hardware.FINISH_SCRIPT], cwd=fpga_package, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "folding_config.json" in proc.stderr, proc.stderr


# --- slow: real packages of the LiteRT and FINN flows ------------------------------------------------------------

FLOWS = {"tflite": "model.tflite", "pynq-z2": "dataflow_model.onnx"}


@pytest.fixture(scope="module")
def deployed(tfc_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deployed")
    for target in FLOWS:
        deploy(DeployConfig(target=target, model=str(tfc_run), out=str(root / target), samples=8), progress=False)
    return {target: root / target for target in FLOWS}


def _simulate(package: Path) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["simulate", str(package), "--limit", "8", "--json"])
    return result.exit_code, json.loads(result.stdout)


def _copy(deployed: dict[str, Path], target: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(deployed[target], tmp_path / target))


@pytest.mark.slow
@pytest.mark.parametrize("target", FLOWS)
def test_an_untouched_real_package_simulates(deployed, target):
    code, result = _simulate(deployed[target])
    assert code == 0 and result["samples"] == 8, result


def _weight_bytes(model: Path) -> tuple[int, int]:
    """(offset, length) of the classifier's int8 weights inside the .tflite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    for detail in interpreter.get_tensor_details():
        if detail["name"].endswith("MatMul_3/weights"):  # the TFC graph's classifier node
            weights = interpreter.get_tensor(detail["index"]).tobytes()
            return model.read_bytes().index(weights), len(weights)
    raise AssertionError("no classifier weights in the file")


def _change_report(package: Path) -> str:
    path = package / "report.json"
    path.write_text(path.read_text().replace('"verified": false', '"verified": true').replace("0.", "1.", 1))
    return "report.json"


def _change_weights(package: Path) -> str:
    path = package / "model.tflite"
    offset, length = _weight_bytes(path)
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x01  # one weight, one bit: the file still loads and runs
    path.write_bytes(bytes(data))
    return "model.tflite"


def _delete_folding(package: Path) -> str:
    (package / "folding_config.json").unlink()
    return "folding_config.json"


def _add_source(package: Path) -> str:
    (package / "sources" / "extra.cpp").write_text("// not the SDK's\n")
    return "sources/extra.cpp"


def _empty_manifest(package: Path) -> str:
    (package / "manifest.json").write_text("{}")
    return "manifest.json"


def _garbled_manifest(package: Path) -> str:
    (package / "manifest.json").write_text('{\n  "files": [')
    return "manifest.json"


def _add_artifact(package: Path) -> str:
    shutil.copy(package / "model.tflite", package / "model_v2.tflite")
    return "model_v2.tflite"


@pytest.mark.slow
@pytest.mark.parametrize(
    "target, tamper",
    [
        ("tflite", _change_report),
        ("tflite", _change_weights),
        ("tflite", _add_artifact),
        ("tflite", _empty_manifest),
        ("pynq-z2", _delete_folding),
        ("pynq-z2", _add_source),
        ("pynq-z2", _empty_manifest),
        ("pynq-z2", _garbled_manifest),
    ],
)
def test_a_tampered_real_package_exits_2_naming_the_file(deployed, tmp_path, target, tamper):
    package = _copy(deployed, target, tmp_path)
    name = tamper(package)
    code, error = _simulate(package)
    assert code == 2 and error["error"] == "PackageError", error
    assert name in error["what"] and name in error["where"], error
    with pytest.raises(PackageError, match=name.replace(".", r"\.")):
        run_package(package, np.zeros((1, 8, 8), np.uint8))


@pytest.mark.slow
@pytest.mark.parametrize("target", FLOWS)
def test_the_same_inputs_give_the_same_identity(deployed, tfc_run, tmp_path, target):
    """The measured files (report.json, report.md: LiteRT latencies, FINN step times) are volatile: they are listed
    and hashed, but the package's identity covers only what the same inputs reproduce."""
    again = tmp_path / target
    deploy(DeployConfig(target=target, model=str(tfc_run), out=str(again), samples=8), progress=False)
    first, second = verify_package(deployed[target]), verify_package(again)
    hashes = [{entry["path"]: entry["sha256"] for entry in m["files"]} for m in (first, second)]
    differing = sorted(path for path in hashes[0] if hashes[0][path] != hashes[1].get(path))
    assert first["identity_sha256"] == second["identity_sha256"], (
        f"files that differ: {differing}; volatile: {first.get('volatile', [])}"
    )
    assert set(differing) <= set(first.get("volatile", []))
    assert {k: v for k, v in first.items() if k != "files"} == {k: v for k, v in second.items() if k != "files"}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["stm32f746g-disco", "ethos-u55-128"])
def test_the_microcontroller_and_npu_flows_give_the_same_identity_too(tfc_run, tmp_path, target):
    manifests = []
    for name in ("one", "two"):
        deploy(DeployConfig(target=target, model=str(tfc_run), out=str(tmp_path / name), samples=8), progress=False)
        manifests.append(verify_package(tmp_path / name))
    assert manifests[0]["identity_sha256"] == manifests[1]["identity_sha256"]


# --- packaged RTL is never trusted (--rtlsim) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtl_package(tmp_path_factory) -> Path:
    """A user's two-layer MLP, every layer RTL (Thresholding_rtl, MVAU_rtl), deployed with --rtlsim."""
    import torch
    from test_rtl_deploy import FPS, PIXELS, LinearClassifier

    from sdk import deploy as deploy_model

    out = tmp_path_factory.mktemp("rtl_pkg") / "pkg"
    result = deploy_model(
        LinearClassifier().eval(), "pynq-z2", example_input=torch.zeros(1, 64), out=str(out), samples=8,
        rtlsim=True, fps=FPS, input_scale=PIXELS,
    )  # fmt: skip
    assert result.verified
    np.savez(out.parent / "x.npz", x=np.random.default_rng(0).uniform(0, 1, (4, 64)).astype(np.float32))
    return out


def _simulate_rtl(package: Path) -> tuple[int, dict]:
    args = ["simulate", str(package), "--data", str(package.parent / "x.npz"), "--rtlsim", "--json"]
    result = CliRunner().invoke(main, args)
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.slow
def test_the_regenerated_rtl_equals_the_packaged_rtl_of_an_untouched_package(rtl_package, tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper

    from targets.finn.environment import prepare_finn
    from targets.finn.rtl_verify import regenerate_sources

    prepare_finn(tmp_path / "finn")
    dataflow = ModelWrapper(str(rtl_package / "dataflow_model.onnx"))
    regenerate_sources(dataflow, "xc7z020clg400-1", 100.0, rtl_package / "sources", tmp_path / "sources")
    ours = sorted(p.relative_to(tmp_path / "sources") for p in (tmp_path / "sources").rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(rtl_package / "sources") for p in (rtl_package / "sources").rglob("*") if p.is_file())
    assert ours == theirs and len(ours) > 3
    assert all((tmp_path / "sources" / p).read_bytes() == (rtl_package / "sources" / p).read_bytes() for p in ours)
    code, result = _simulate_rtl(rtl_package)
    assert code == 0 and not result["failures"], result


@pytest.mark.slow
@pytest.mark.parametrize(
    "payload",
    [
        'initial $system("touch {marker}");',
        'initial $c("system(\\"touch {marker}\\");");',
        'import "DPI-C" function int system(input string cmd);\ninitial system("touch {marker}");',
    ],
    ids=["$system", "$c", "DPI"],
)
def test_packaged_rtl_that_runs_a_command_is_refused_and_never_runs(rtl_package, tmp_path, payload):
    package = _copy({"rtl": rtl_package}, "rtl", tmp_path)
    shutil.copy(rtl_package.parent / "x.npz", tmp_path / "x.npz")
    marker = tmp_path / "PWNED"
    source = package / "sources" / "Thresholding_rtl_0" / "Thresholding_rtl_0.v"
    text = source.read_text()
    source.write_text(text.replace("endmodule", payload.format(marker=marker) + "\nendmodule", 1))
    recompute_manifest(package)
    verify_package(package)  # the manifest alone cannot tell: it was recomputed
    code, error = _simulate_rtl(package)
    assert code == 2 and error["error"] == "PackageError", error
    assert "sources/Thresholding_rtl_0/Thresholding_rtl_0.v" in error["what"], error
    assert "Thresholding_rtl_0.v" in error["where"]
    assert not marker.exists()


@pytest.mark.slow
def test_rtl_the_sdk_would_compile_is_scanned_before_verilator_sees_it(rtl_package, tmp_path):
    """The guard is on the compile itself (deploy and simulate alike), not only on the comparison: a layer whose
    sources hold $system is refused by build_layer, before any cache lookup or Verilator run."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sdk.errors import SimulationError
    from targets.finn.rtl_layer import rtl_layer
    from targets.finn.verilator import build_layer

    sources = Path(shutil.copytree(rtl_package / "sources", tmp_path / "sources"))
    marker = tmp_path / "PWNED"
    wrapper = sources / "Thresholding_rtl_0" / "Thresholding_rtl_0.v"
    wrapper.write_text(wrapper.read_text().replace("endmodule", f'initial $system("touch {marker}");\nendmodule'))
    dataflow = ModelWrapper(str(rtl_package / "dataflow_model.onnx"))
    layer = rtl_layer(dataflow, "Thresholding_rtl_0", sources / "Thresholding_rtl_0")
    with pytest.raises(SimulationError, match=r"\$system") as info:
        build_layer(layer, tmp_path / "cache")
    assert "sources/Thresholding_rtl_0/Thresholding_rtl_0.v" in info.value.where
    assert not marker.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_graph_path_attribute_is_never_written_into(rtl_package, tmp_path):
    """code_gen_dir_ipgen naming a folder of the user's: the package graph is refused before anything reads it."""
    import onnx

    package = _copy({"rtl": rtl_package}, "rtl", tmp_path)
    shutil.copy(rtl_package.parent / "x.npz", tmp_path / "x.npz")
    victim = tmp_path / "victim"
    victim.mkdir()
    model = onnx.load(str(package / "dataflow_model.onnx"))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "code_gen_dir_ipgen":
                attribute.s = str(victim).encode()
        if not any(a.name == "code_gen_dir_ipgen" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("code_gen_dir_ipgen", str(victim)))
    onnx.save(model, str(package / "dataflow_model.onnx"))
    recompute_manifest(package)
    code, result = _simulate_rtl(package)
    assert list(victim.iterdir()) == []
    assert code == 2 and "code_gen_dir_ipgen" in result["where"], result  # refused before anything reads it


# --- a package's graphs are checked before the simulator reads them -----------------------------------------------


def _set_attribute(node_name: str, name: str, value):
    def edit(model) -> None:
        import onnx

        node = next(n for n in model.graph.node if n.name == node_name)
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept)
        if value is not None:
            node.attribute.append(onnx.helper.make_attribute(name, value))

    return edit


def _output_shape(model) -> None:
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 11


def _rename(model) -> None:
    model.graph.node[0].name = "../../evil"


def _op_type(model) -> None:
    model.graph.node[1].op_type = "Pool_hls"


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit, node, attribute",
    [
        (_set_attribute("MVAU_rtl_0", "PE", "5"), "MVAU_rtl_0", "PE"),  # a string where FINN reads an integer
        (_set_attribute("MVAU_rtl_0", "accDataType", ""), "MVAU_rtl_0", "accDataType"),  # qonnx's KeyError
        (_set_attribute("MVAU_rtl_0", "outputDataType", "INT99x"), "MVAU_rtl_0", "outputDataType"),
        (_set_attribute("MVAU_rtl_0", "MW", None), "MVAU_rtl_0", "MW"),  # a required attribute deleted
        (_set_attribute("MVAU_rtl_0", "binaryXnorMode", 5), "MVAU_rtl_0", "binaryXnorMode"),  # qonnx's assertion
        (_set_attribute("MVAU_rtl_0", "MH", 2**40), "MVAU_rtl_0", "MH"),
        (_set_attribute("Thresholding_rtl_0", "NumChannels", 0), "Thresholding_rtl_0", "NumChannels"),
        (_set_attribute("Thresholding_rtl_0", "PE", 3), "Thresholding_rtl_0", "PE"),  # 3 does not divide 64
        (_set_attribute("Thresholding_rtl_0", "numInputVectors", [1, 0]), "Thresholding_rtl_0", "numInputVectors"),
        (_output_shape, "MVAU_rtl_0", None),  # the graph's shape against what the attributes make
        (_rename, "../../evil", None),
        (_op_type, "MVAU_rtl_0", None),
    ],
    ids=[
        "PE text", "accDataType empty", "datatype unknown", "MW deleted", "bool 5", "MH 2**40", "channels 0",
        "PE not dividing", "vectors 0", "output shape", "name a path", "op type",
    ],
)  # fmt: skip
def test_a_corrupt_dataflow_graph_is_exit_2_naming_node_and_attribute(rtl_package, tmp_path, edit, node, attribute):
    import onnx

    package = _copy({"rtl": rtl_package}, "rtl", tmp_path)
    model = onnx.load(str(package / "dataflow_model.onnx"))
    edit(model)
    onnx.save(model, str(package / "dataflow_model.onnx"))
    recompute_manifest(package)
    result = CliRunner().invoke(main, ["simulate", str(package), "--data", str(rtl_package.parent / "x.npz"), "--json"])
    error = json.loads(result.stdout)
    assert result.exit_code == 2 and error["error"] == "PackageError", error
    assert "dataflow_model.onnx" in error["where"] and f"node {node}" in error["where"], error
    if attribute:
        assert f"attribute {attribute}" in error["where"] and attribute in error["what"], error


_BUILDING_FINN = {
    **_RECORDING_FINN,
    "finn/util/settings.py": "def initialize_dummy_settings():\n    pass\n",
    "finn/builder/__init__.py": "",
    "finn/builder/build_dataflow.py": (
        "import pathlib\n"
        "def build_dataflow_cfg(model, cfg):\n"
        "    out = pathlib.Path(cfg.kwargs['output_dir'])\n"
        "    out.mkdir(parents=True, exist_ok=True)\n"
        "    (out / 'top.bit').write_bytes(b'bit')\n"
        "    return 0\n"
    ),
    "finn/builder/build_dataflow_config.py": (
        "import enum\n"
        "class ShellFlowType(enum.Enum):\n    VIVADO_ZYNQ = 1\n    VITIS_ALVEO = 2\n"
        "class DataflowOutputType(enum.Enum):\n    BITFILE = 1\n    PYNQ_DRIVER = 2\n    DEPLOYMENT_PACKAGE = 3\n"
        "class DataflowBuildConfig:\n    def __init__(self, **kwargs):\n        self.kwargs = kwargs\n"
    ),
}


def test_the_deploy_runs_the_script_s_build_in_the_package_it_is_writing(tmp_path, monkeypatch):
    """Before the commit there is no manifest to check: the deploy runs build() alone, and leaves no __pycache__."""
    from targets.finn.environment import VendorTools

    for rel, source in _BUILDING_FINN.items():
        (tmp_path / "stub" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stub" / rel).write_text(source)
    building = tmp_path / ".pkg.tmp-00000000"
    building.mkdir()
    (building / hardware.FINISH_SCRIPT).write_text(hardware.finish_script(get_board("pynq-z2"), 100.0))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "stub"))
    monkeypatch.setenv("XILINX_VIVADO", "/opt/vivado")
    monkeypatch.setenv("XILINX_HLS", "/opt/hls")
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    outcome = hardware.run_hardware_steps(building, VendorTools(Path("/opt/vivado"), Path("/opt/hls")))
    assert outcome.ran and outcome.bitfile == "hardware/top.bit", outcome
    assert sorted(p.name for p in building.iterdir()) == [hardware.FINISH_SCRIPT, "hardware"]


FUZZ_CASES = int(os.environ.get("SDK_PACKAGE_FUZZ_CASES", "60"))  # 1,000 measured: see the merge note


def _mutate(model, rng) -> str:
    """One random corruption of a dataflow graph: an attribute's value or type, a deleted attribute, a tensor's
    shape or datatype annotation, an initializer, an op type, a node name or an input."""
    import onnx

    node = rng.choice(list(model.graph.node))
    kind = rng.choice(["value", "value", "delete", "shape", "datatype", "initializer", "op", "name", "input"])
    if kind == "value" and node.attribute:
        attribute = rng.choice(list(node.attribute))
        value = rng.choice([0, -1, 3, 2**40, "UINT8", "nonsense", "", [1], [0, 5], 0.5, float("nan")])
        node.attribute.remove(attribute)
        node.attribute.append(onnx.helper.make_attribute(attribute.name, value))
    elif kind == "delete" and node.attribute:
        node.attribute.remove(rng.choice(list(node.attribute)))
    elif kind == "shape":
        tensors = [*model.graph.value_info, *model.graph.input, *model.graph.output]
        dims = rng.choice(tensors).type.tensor_type.shape.dim
        if dims:
            rng.choice(list(dims)).dim_value = rng.choice([0, 3, 10**9])
    elif kind == "datatype" and model.graph.quantization_annotation:
        for entry in rng.choice(list(model.graph.quantization_annotation)).quant_parameter_tensor_names:
            if entry.key == "finn_datatype":
                entry.value = rng.choice(["FLOAT32", "BIPOLAR", "garbage", "INT64", "FIXED<8,4>"])
    elif kind == "initializer" and model.graph.initializer:
        tensor = rng.choice(list(model.graph.initializer))
        values = onnx.numpy_helper.to_array(tensor).astype(np.float32)
        values = rng.choice([values.reshape(-1)[: max(1, values.size // 2)], values * 1e30, values + 0.5])
        tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    elif kind == "op":
        node.op_type = rng.choice(["MVAU_hls", "Thresholding_rtl", "Pool_hls", "LabelSelect_hls", "FMPadding_rtl"])
    elif kind == "name":
        node.name = rng.choice(["", "../x", "a b", model.graph.node[0].name])
    elif kind == "input" and node.input:
        node.input[0] = rng.choice(["missing", "", node.output[0]])
    return kind


@pytest.mark.slow
def test_fuzzed_dataflow_graphs_with_a_recomputed_manifest_never_give_a_traceback(rtl_package, tmp_path):
    """Seeded corruptions of the package's dataflow_model.onnx, its manifest recomputed each time: the simulator
    answers or refuses with an SDK error (exit 2), never a traceback. Before graph_check, 242 of 1,000 failed
    inside qonnx or the kernels (KeyError, AssertionError, AttributeError)."""
    import random

    import onnx

    from sdk.errors import SDKError

    package = _copy({"rtl": rtl_package}, "rtl", tmp_path)
    original = onnx.load(str(rtl_package / "dataflow_model.onnx"))
    x = np.zeros((2, 64), np.float32)
    rng, tracebacks, outcomes = random.Random(21), [], {"answered": 0, "refused": 0}
    for case in range(FUZZ_CASES):
        model = onnx.ModelProto()
        model.CopyFrom(original)
        kinds = [_mutate(model, rng) for _ in range(rng.choice([1, 1, 2]))]
        onnx.save(model, str(package / "dataflow_model.onnx"))
        recompute_manifest(package)
        try:
            run_package(package, x)
            outcomes["answered"] += 1
        except SDKError:
            outcomes["refused"] += 1
        except Exception as exc:  # what this test counts
            tracebacks.append(f"case {case} {kinds}: {type(exc).__name__}: {exc}"[:300])
    assert not tracebacks, "\n".join(tracebacks[:10])
    assert outcomes["refused"] > FUZZ_CASES // 3, outcomes  # the corruptions do reach the checks


@pytest.fixture(scope="module")
def cnn_package(zoo_runs, tmp_path_factory) -> Path:
    """The cnv zoo model on pynq-z2: its parent graph transposes NCHW to NHWC before the accelerator."""
    out = tmp_path_factory.mktemp("cnn_pkg") / "pkg"
    deploy(DeployConfig(target="pynq-z2", model=str(zoo_runs["cnv"]), out=str(out), samples=8), progress=False)
    return out


def _perm(value):
    return _set_attribute("Transpose_0", "perm", value)


def _scale_of_three(model) -> None:
    import onnx

    scale = next(t for t in model.graph.initializer if t.name == "Mul_0_param0")
    scale.CopyFrom(onnx.numpy_helper.from_array(np.ones(3, np.float32), scale.name))


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit, node, attribute",
    [
        (_perm([0, 2, 2, 1]), "Transpose_0", "perm"),  # numpy's ValueError before
        (_perm([0, 1, 2]), "Transpose_0", "perm"),
        (_perm([0, 1, 2, 3]), "GenericPartition_0", None),  # a permutation, but not the accelerator's layout
        (_scale_of_three, "Mul_0", None),  # does not broadcast onto the 10 outputs
    ],
    ids=["perm repeated", "perm short", "perm other layout", "scale shape"],
)
def test_a_corrupt_parent_graph_is_exit_2_naming_the_node(cnn_package, tmp_path, edit, node, attribute):
    import onnx

    package = _copy({"cnn": cnn_package}, "cnn", tmp_path)
    model = onnx.load(str(package / "parent_model.onnx"))
    edit(model)
    onnx.save(model, str(package / "parent_model.onnx"))
    recompute_manifest(package)
    with pytest.raises(PackageError) as info:
        run_package(package, np.zeros((2, 1, 8, 8), np.float32))
    assert "parent_model.onnx" in info.value.where and f"node {node}" in info.value.where, info.value.render()
    if attribute:
        assert f"attribute {attribute}" in info.value.where
