"""Nothing read from a file runs as code, and no file makes a step run forever or allocate without bound.

Each test plants a payload (a Python expression or a path that would write a marker file) where qonnx or FINN
would evaluate, run or load it, and checks that the SDK refuses the file with exit 2 naming the field, through the
real `sdk check` / `sdk deploy` / `sdk simulate`, and that the marker never appears. docs/ARCHITECTURE.md,
"Security", lists every site these tests cover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from tampering import recompute_manifest

from sdk.boards import get_board
from sdk.cli import main
from sdk.errors import ExportError, UnsupportedModelError
from sdk.onnx_guard import (
    MEMORY_BUDGET,
    TENSOR_LAYOUTS,
    TENSOR_SPARSITY,
    is_datatype_name,
    load_onnx_safely,
)
from targets.finn import steps

ROOT = Path(__file__).resolve().parents[1]


def _payload(marker: Path) -> str:
    """A Python expression that writes `marker` if anything evaluates it."""
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('ran') or ['N', 'C']"


def _planted(export: Path, folder: Path, change: Callable[[onnx.ModelProto], None]) -> Path:
    """A copy of the SDK's export (with its model card beside it) changed by `change`."""
    model = onnx.load(export)
    change(model)
    out = folder / "model.onnx"
    onnx.save(model, out)
    shutil.copyfile(export.with_suffix(".json"), out.with_suffix(".json"))
    return out


def _annotate(key: str, value: str, tensor: str | None = None) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        name = tensor or model.graph.input[0].name
        annotation = next((a for a in model.graph.quantization_annotation if a.tensor_name == name), None)
        if annotation is None:
            annotation = model.graph.quantization_annotation.add()
            annotation.tensor_name = name
        entry = annotation.quant_parameter_tensor_names.add()
        entry.key, entry.value = key, value

    return change


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, dict]:
    """`python -m sdk ARGS --json` in a subprocess of this worktree: the exit code and the JSON it printed."""
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


def _invoke(*args: str) -> tuple[int, dict]:
    """The same CLI in this process (faster): click's runner, exceptions not caught."""
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


# --- qonnx's eval() of tensor_layout: the reported exploit, through the real CLI -------------------------------------


@pytest.mark.parametrize("command", ["check", "deploy"])
def test_a_tensor_layout_payload_never_runs(tfc_export, tmp_path, command):
    marker = tmp_path / "ran.txt"
    model = _planted(tfc_export, tmp_path, _annotate("tensor_layout", _payload(marker)))
    args = ["--model", str(model), "--target", "pynq-z2"]
    if command == "deploy":
        args += ["--out", str(tmp_path / "pkg")]
    code, error = _cli(command, *args)
    assert code == 2 and error["error"] == "ExportError", error
    assert "tensor_layout" in error["what"] and "global_in" in error["what"], error
    assert not marker.exists() and not (tmp_path / "pkg").exists()


def test_the_payload_never_runs_on_the_tflite_path_either(tfc_export, tmp_path):
    marker = tmp_path / "ran.txt"
    model = _planted(tfc_export, tmp_path, _annotate("tensor_layout", _payload(marker)))
    code, error = _invoke("check", "--model", str(model), "--target", "tflite")
    assert code == 2 and "tensor_layout" in error["what"] and not marker.exists(), error


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("tensor_sparsity", "__import__('os').getpid() or {}", "not the depthwise-convolution mark"),  # evaluated
        ("tensor_sparsity", "{'dw': {'kernel_shape': [3, 3]}} and 1", "not the depthwise-convolution mark"),
        ("finn_datatype", "INT4') or __import__('os').getpid() or ('", "not a qonnx data type"),
        ("finn_datatype", "INT" + "9" * 5000, "not a qonnx data type"),  # int() of 5,000 digits: refused by name
        ("tensor_layout", "['N', 'C'] ", "not a layout qonnx knows"),  # exact strings only
        ("tensor_layout", "list('NC')", "not a layout qonnx knows"),
        ("anything", "x", "'anything'"),
    ],
)
def test_only_literal_annotations_pass(tfc_export, tmp_path, key, value, says):
    model = _planted(tfc_export, tmp_path, _annotate(key, value))
    code, error = _invoke("check", "--model", str(model), "--target", "pynq-z2")
    assert code == 2 and says in error["what"] and "global_in" in error["what"], error


def test_the_allow_lists_hold_what_qonnx_and_finn_write():
    """Every layout qonnx defines, written as qonnx writes it, and the data type names FINN uses, pass."""
    import qonnx.core.data_layout as layouts

    assert TENSOR_LAYOUTS == {str(v) for v in vars(layouts).values() if isinstance(v, list)}
    assert TENSOR_SPARSITY.fullmatch(str({"dw": {"kernel_shape": [3, 3]}}))  # qonnx's LowerConvsToMatMul writes it
    for name in ["BINARY", "BIPOLAR", "TERNARY", "FLOAT32", "UINT1", "INT2", "UINT8", "INT32", "INT64", "FIXED<8,4>"]:
        assert is_datatype_name(name), name
    for name in ["INT0", "INT65", "int8", "INT8 ", "UINT٨", "FLOAT64", "INT8; x", ""]:
        assert not is_datatype_name(name), name


# --- model metadata FINN reads as libraries, simulators and expressions ---------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("exec_mode", "rtlsim"),  # FINN's execute_onnx then loads the library rtlsim_so names
        ("rtlsim_so", "/tmp/evil.so"),
        ("vivado_stitch_ifnames", "__import__('os').getpid()"),  # eval()ed by FINN's Zynq and loop flows
    ],
)
def test_model_metadata_is_refused(tfc_export, tmp_path, key, value):
    def change(model: onnx.ModelProto) -> None:
        helper.set_model_props(model, {key: value})

    code, error = _invoke("check", "--model", str(_planted(tfc_export, tmp_path, change)), "--target", "pynq-z2")
    assert code == 2 and repr(key) in error["what"] and "metadata_props" in error["what"], error


# --- numbers that make FINN loop, and shapes that ask for more memory than the budget --------------------------------


def _nan_in_batchnorm(model: onnx.ModelProto) -> None:
    node = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    tensor = next(t for t in model.graph.initializer if t.name == node.input[2])
    values = numpy_helper.to_array(tensor).copy()
    values[0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def test_a_nan_in_batchnorm_is_refused_at_once_naming_the_tensor(tfc_export, tmp_path):
    """It used to make `sdk check --target pynq-z2` run forever (FINN's RoundAndClipThresholds, NaN != NaN)."""
    model = _planted(tfc_export, tmp_path, _nan_in_batchnorm)
    began = time.monotonic()
    code, error = _cli("check", "--model", str(model), "--target", "pynq-z2", timeout=120)
    assert code == 2 and "BatchNormalization_0_param1" in error["what"] and "NaN" in error["what"], error
    assert time.monotonic() - began < 60


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_a_non_finite_constant_is_refused(tfc_export, tmp_path, value):
    def change(model: onnx.ModelProto) -> None:  # a Constant node feeding the first Mul
        mul = model.graph.node[0]
        constant = helper.make_tensor("bad_scale", TensorProto.FLOAT, [], [value])
        model.graph.node.insert(0, helper.make_node("Constant", [], ["bad_scale_out"], value=constant, name="c"))
        mul.input[1] = "bad_scale_out"

    code, error = _invoke("check", "--model", str(_planted(tfc_export, tmp_path, change)), "--target", "pynq-z2")
    assert code == 2 and "'bad_scale'" in error["what"] and "NaN or infinite" in error["what"], error


@pytest.mark.parametrize("width", [3.7662e16, 0.0, 2.5, 33.0])
def test_a_quantizer_bit_width_outside_1_to_32_is_refused_at_once(tfc_export, tmp_path, width):
    """Found by fuzzing: a Quant whose bit width is 3.8e16 made FINN's weight folding compute 2**width, which never
    ends; the guard refuses such widths (and fractional or zero ones) naming the node, before any library."""

    def change(model: onnx.ModelProto) -> None:
        quant = next(n for n in model.graph.node if n.op_type == "Quant")
        tensor = next(t for t in model.graph.initializer if t.name == quant.input[3])
        tensor.CopyFrom(numpy_helper.from_array(np.array(width, dtype=np.float32), tensor.name))

    began = time.monotonic()
    code, error = _invoke("check", "--model", str(_planted(tfc_export, tmp_path, change)), "--target", "pynq-z2")
    assert code == 2 and "bit width" in error["what"] and "1 to 32" in error["what"], error
    assert time.monotonic() - began < 60


def _relu_graph(shape: list[int], initializer: onnx.TensorProto | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[initializer] if initializer is not None else [],
    )
    return helper.make_model(graph)


def _huge_initializer() -> onnx.TensorProto:
    tensor = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[100_000, 100_000])
    tensor.raw_data = b"\0" * 16
    return tensor


@pytest.mark.parametrize(
    "model, says",
    [
        (_relu_graph([1, 40_000, 40_000]), "'x' of shape 1x40000x40000 takes 6.0 GiB"),
        (_relu_graph([1, 4], _huge_initializer()), "'w' of shape 100000x100000 takes 37.3 GiB"),
        (_relu_graph([1, 2**62, 2**62]), "of shape 1x4611686018427387904x"),
    ],
)
def test_shapes_beyond_the_budget_are_refused_from_the_header(tmp_path, model, says):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ExportError) as info:
        load_onnx_safely(path, "--model m.onnx")
    assert says in info.value.what and f"{MEMORY_BUDGET >> 30} GiB" in info.value.what, info.value.what
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing large was built


def test_the_sum_of_declared_tensors_counts_too(tmp_path):
    """Many tensors each under the budget: qonnx allocates them all to execute the graph."""
    model = _relu_graph([1, 2**27])  # 512 MiB each
    for i in range(4):
        model.graph.value_info.append(helper.make_tensor_value_info(f"v{i}", TensorProto.FLOAT, [1, 2**27]))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ExportError, match="take 3.0 GiB together"):
        load_onnx_safely(path, "m.onnx")


@pytest.mark.parametrize("target", ["pynq-z2", "tflite"])
def test_a_tensor_declared_twice_is_refused_not_a_qonnx_assertion(tmp_path, target):
    """Found by fuzzing: an output repeated in value_info made qonnx assert (exit 3) in `sdk check`."""
    model = _relu_graph([1, 4])
    model.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    code, error = _invoke("check", "--target", target, "--model", str(path))
    assert code == 2 and "declares the tensor 'y' twice" in error["what"] and "tensor y" in error["where"], error


def test_a_card_size_input_through_check_is_refused(tfc_export, tmp_path):
    def change(model: onnx.ModelProto) -> None:
        for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, [1, 40_000 * 40_000], strict=True):
            dim.dim_value = size

    code, error = _invoke("check", "--model", str(_planted(tfc_export, tmp_path, change)), "--target", "pynq-z2")
    assert code == 2 and "memory budget" in error["what"] and "'global_in'" in error["what"], error


# --- the time limit of FINN's steps ----------------------------------------------------------------------------------


def test_a_step_over_its_time_limit_is_exit_2_naming_it(tfc_export):
    code, error = _cli(
        "check", "--model", str(tfc_export), "--target", "pynq-z2", env={"SDK_STEP_TIMEOUT": "0.001"}, timeout=120
    )
    assert code == 2 and error["error"] == "UnsupportedModelError", error
    assert "'qonnx_to_finn'" in error["what"] and "SDK_STEP_TIMEOUT" in error["fix"], error


def test_qonnx_clean_up_of_a_card_less_graph_runs_under_the_limit_too(tfc_export, tmp_path, monkeypatch):
    model = tmp_path / "bare.onnx"
    shutil.copyfile(tfc_export, model)  # no model card beside it: the SDK reads one off the graph (qonnx clean-up)
    monkeypatch.setenv("SDK_STEP_TIMEOUT", "0.001")
    code, error = _invoke("check", "--model", str(model), "--target", "tflite")
    assert code == 2 and "qonnx clean-up" in error["where"] and "SDK_STEP_TIMEOUT" in error["fix"], error


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_bad_time_limit_is_refused(tfc_export, value, monkeypatch):
    monkeypatch.setenv("SDK_STEP_TIMEOUT", value)
    code, error = _invoke("check", "--model", str(tfc_export), "--target", "pynq-z2")
    assert code == 2 and error["where"] == "environment variable SDK_STEP_TIMEOUT", error


@pytest.mark.parametrize("in_thread", [False, True])
def test_the_nan_loop_itself_is_stopped_by_the_time_limit(tfc_export, tmp_path, monkeypatch, in_thread):
    """Past the guard (the graph handed to the steps directly), FINN loops on the NaN; the limit stops it, in the
    main thread (SIGALRM) as in another (an asynchronous exception)."""
    model = onnx.load(tfc_export)
    _nan_in_batchnorm(model)
    monkeypatch.setenv("SDK_STEP_TIMEOUT", "8")
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path / "work")
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            steps.run_steps(ModelWrapper(model), cfg, stop=steps.CHECK_STEP)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the assertion below
            outcome.append(exc)

    began = time.monotonic()
    if in_thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(120)
        assert not thread.is_alive()
    else:
        run()
    assert isinstance(outcome[0], UnsupportedModelError), outcome
    assert "'convert_to_hw'" in outcome[0].what and "8 s" in outcome[0].what
    assert time.monotonic() - began < 60


# --- a package's graphs: the same guard, reached through `sdk simulate` ----------------------------------------------


@pytest.fixture(scope="module")
def fpga_package(tfc_run, tmp_path_factory) -> Path:
    from sdk.deployment import DeployConfig, deploy

    out = tmp_path_factory.mktemp("code_safety") / "pkg"
    deploy(DeployConfig(target="pynq-z2", model=str(tfc_run), out=str(out), samples=8), progress=False)
    return out


def _first_finn_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.domain.startswith("finn."))


def _set_attribute(name: str, value: str) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        node = _first_finn_node(model)
        for attribute in list(node.attribute):
            if attribute.name == name:
                node.attribute.remove(attribute)
        node.attribute.append(helper.make_attribute(name, value))

    return change


@pytest.mark.slow
@pytest.mark.parametrize("rel", ["dataflow_model.onnx", "parent_model.onnx"])
@pytest.mark.parametrize(
    "plant, says",
    [
        (lambda marker: _annotate("tensor_layout", _payload(marker), tensor=None), "tensor_layout"),
        (lambda marker: _annotate("finn_datatype", _payload(marker), tensor=None), "finn_datatype"),
        (lambda marker: lambda m: helper.set_model_props(m, {"exec_mode": "rtlsim"}), "'exec_mode'"),
    ],
    ids=["tensor_layout", "finn_datatype", "metadata"],
)
def test_a_package_graph_payload_is_refused_by_simulate(fpga_package, tmp_path, rel, plant, says):
    package = Path(shutil.copytree(fpga_package, tmp_path / "pkg"))
    marker = tmp_path / "ran.txt"
    model = onnx.load(package / rel)
    plant(marker)(model)
    onnx.save(model, package / rel)
    recompute_manifest(package, rel)
    code, error = _invoke("simulate", str(package), "--limit", "4")
    assert code == 2 and error["error"] == "PackageError" and says in error["what"], error
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, value",
    [
        ("exec_mode", "cppsim"),  # FINN's execute_node then runs executable_path
        ("executable_path", "/bin/sh"),
        ("code_gen_dir_cppsim", "/tmp"),
        ("code_gen_dir_ipgen", "/etc"),  # the SDK's rtlsim reads sources from here when it has none of its own
        ("rtlsim_so", "/tmp/evil.so"),
        ("gen_top_module", "evil"),
        ("inputDataType", "INT4') or __import__('os').getpid() or ('"),
    ],
)
def test_a_finn_attribute_naming_files_or_code_is_refused_by_simulate(fpga_package, tmp_path, name, value):
    package = Path(shutil.copytree(fpga_package, tmp_path / "pkg"))
    model = onnx.load(package / "dataflow_model.onnx")
    _set_attribute(name, value)(model)
    onnx.save(model, package / "dataflow_model.onnx")
    recompute_manifest(package, "dataflow_model.onnx")
    code, error = _invoke("simulate", str(package), "--limit", "4")
    assert code == 2 and error["error"] == "PackageError" and repr(name) in error["what"], error


@pytest.mark.slow
def test_the_package_graphs_carry_nothing_the_guard_refuses(fpga_package):
    """The SDK's own package passes its own guard (and so simulates): no paths, no metadata, literal annotations."""
    for rel in ("dataflow_model.onnx", "parent_model.onnx"):
        load_onnx_safely(fpga_package / rel, rel, finn_ops=True)
    code, result = _invoke("simulate", str(fpga_package), "--limit", "4")
    assert code == 0, result


def test_a_payload_in_a_cached_graph_never_runs(tfc_export, tmp_path, monkeypatch):
    """The SDK's graph cache (a folder any process of the user can write) is read through the same guard: a planted
    entry is refused, streamlined again and replaced."""
    monkeypatch.setenv("SDK_CACHE_DIR", str(tmp_path / "cache"))
    code, result = _invoke("check", "--model", str(tfc_export), "--target", "pynq-z2")
    entries = list((tmp_path / "cache" / "finn-graphs").glob("streamlined-*.onnx"))
    assert code == 0 and len(entries) == 1, result
    marker = tmp_path / "ran.txt"
    model = onnx.load(entries[0])
    _annotate("tensor_layout", _payload(marker))(model)
    onnx.save(model, entries[0])
    code, result = _invoke("check", "--model", str(tfc_export), "--target", "pynq-z2")
    assert code == 0 and not marker.exists(), result
    assert "__import__" not in entries[0].read_bytes().decode("latin-1")  # replaced by a clean one


# --- FINN's settings file: read with PyYAML's unsafe Loader -----------------------------------------------------------


def test_a_finn_settings_file_never_runs(tfc_export, tmp_path, monkeypatch):
    """FINN loads ~/.finn/settings.yaml (or $FINN_SETTINGS) with yaml.Loader, where a python/object/apply tag runs
    code; the SDK gives FINN a settings file of its own, so neither is read."""
    for variable in ("FINN_SETTINGS", "FINN_BUILD_DIR"):  # a user's shell, not this process after a deploy
        monkeypatch.delenv(variable, raising=False)
    marker = tmp_path / "ran.txt"
    payload = f'x: !!python/object/apply:builtins.open ["{marker}", "w"]\n'  # creates the marker when loaded
    home = tmp_path / "home"
    (home / ".finn").mkdir(parents=True)
    (home / ".finn" / "settings.yaml").write_text(payload)
    (tmp_path / "settings.yaml").write_text(payload)
    for env in ({"HOME": str(home)}, {"HOME": str(home), "FINN_SETTINGS": str(tmp_path / "settings.yaml")}):
        code, result = _cli("check", "--model", str(tfc_export), "--target", "pynq-z2", env=env, timeout=120)
        assert code == 0 and not marker.exists(), result
    # `sdk simulate --rtlsim` in a fresh process, with FINN_BUILD_DIR in the user's environment
    rtlsim = "from targets.finn.rtl_layer import finn_rtllib_ready; finn_rtllib_ready()"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "FINN_BUILD_DIR": str(tmp_path / "build")}
    subprocess.run([sys.executable, "-c", rtlsim], env=env, cwd=ROOT, check=True, timeout=120)
    assert not marker.exists()


# --- the audit stays true: a new eval/exec site in qonnx or FINN fails here until it is audited ----------------------

# (library file, number of eval( / exec( calls): each is listed in docs/ARCHITECTURE.md, "Security"
AUDITED_EVAL_SITES = {
    "qonnx/core/modelwrapper.py": 2,  # tensor_layout, tensor_sparsity annotations: guarded (literals only)
    "qonnx/util/cleanup.py": 1,  # command-line argument of qonnx's cleanup tool: the SDK never calls it
    "qonnx/util/prune_channels.py": 1,  # a prune spec file of qonnx's tool: never called
    "qonnx/util/range_analysis.py": 1,  # command-line argument of qonnx's tool: never called
    "finn/custom_op/fpgadataflow/rtl/finn_loop.py": 2,  # model metadata: guarded (no metadata_props)
    "finn/builder/build_dataflow_steps.py": 1,  # model metadata; FINN's builder: never called
    "finn/transformation/fpgadataflow/vivado_power_estimation.py": 1,  # model metadata; Vivado only
    "finn/transformation/fpgadataflow/make_zynq_proj.py": 6,  # model metadata; Vivado only
}


def test_every_eval_in_qonnx_and_finn_is_audited():
    import finn
    import qonnx

    found: dict[str, int] = {}
    call = re.compile(r"(?<![\w.])(eval|exec)\(")
    for package in (qonnx, finn):
        root = Path(package.__file__).parent
        for path in root.rglob("*.py"):
            if "test" in path.parts[-1] or "tests" in path.parts:
                continue
            text = "\n".join(line.split("#")[0] for line in path.read_text(errors="replace").splitlines())
            count = len(call.findall(text))
            if count:
                found[str(path.relative_to(root.parent))] = count
    assert found == AUDITED_EVAL_SITES
