"""TFLM runtime and Vela compiler on a real int8 .tflite: outputs, arena, memory fit, NPU estimates, errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from sdk.boards import get_board
from sdk.data import load_dataset
from sdk.errors import SDKError
from sdk.qat import load_checkpoint
from targets.ethosu.vela import VelaError, compile_vela
from targets.tflite.golden import run_golden
from targets.tflite.writer import write_tflite
from targets.tflm.runtime import (
    ModelTooLargeError,
    TflmError,
    TflmRun,
    check_memory,
    raise_if_too_large,
    run_tflm,
)

NUM_SAMPLES = 20
NPU_BOARDS = ["ethos-u55-128", "ethos-u65-256"]


@pytest.fixture(scope="module")
def model_path(tfc_run, tmp_path_factory) -> Path:
    """The committed TFC w2a2 run (real Brevitas QAT on digits), written as int8 .tflite."""
    model, payload = load_checkpoint(tfc_run)
    path = tmp_path_factory.mktemp("tflm") / "model.tflite"
    write_tflite(model, {"input_shape": payload["input_shape"], "labels": payload["labels"]}, path)
    return path


@pytest.fixture(scope="module")
def x_int8() -> np.ndarray:
    x = load_dataset("digits").x_test[:NUM_SAMPLES]
    return (x.reshape(len(x), -1).astype(np.int16) - 128).astype(np.int8)


def _op_outputs(path: Path) -> tuple[list[str], list[str]]:
    """(output tensor of every op, graph outputs) of a .tflite, by name."""
    graph = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0).subgraphs[0]
    return [graph.tensors[op.outputs[0]].name.decode() for op in graph.operators], [
        graph.tensors[i].name.decode() for i in graph.outputs
    ]


@pytest.fixture(scope="module")
def tflm(model_path, x_int8) -> TflmRun:
    return run_tflm(model_path, x_int8)


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corrupt") / "random.tflite"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def test_tflm_outputs_equal_double_rounding_golden(tflm, model_path, x_int8):
    golden = run_golden(model_path, x_int8, rounding="double")
    assert list(tflm.outputs) == _op_outputs(model_path)[1]
    for name, value in tflm.outputs.items():
        assert value.shape == (NUM_SAMPLES, 10) and value.dtype == golden[name].dtype
        np.testing.assert_array_equal(value, golden[name], err_msg=name)


def test_arena_is_the_smallest_that_runs(tflm, model_path):
    from tflite_micro.python.tflite_micro import runtime

    used = tflm.arena_used_bytes
    assert isinstance(used, int) and 0 < tflm.arena_recorded_bytes < used < tflm.arena_allocated_bytes
    assert tflm.model_bytes == model_path.stat().st_size
    interpreter = runtime.Interpreter.from_file(str(model_path), arena_size=used)  # success path: safe in-process
    interpreter.set_input(np.zeros((1, 64), np.int8), 0)
    interpreter.invoke()
    # one byte less must fail; TFLM's failure path may crash, so try it in a child
    probe = (
        "import sys; from tflite_micro.python.tflite_micro import runtime\n"
        "try: runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))\n"
        "except RuntimeError: sys.exit(3)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", probe, str(model_path), str(used - 1)], check=False, capture_output=True
    )
    assert child.returncode != 0
    assert json.loads(json.dumps(tflm.to_dict()))["arena_used_bytes"] == used


def test_model_fits_stm32f746(tflm):
    board = get_board("stm32f746g-disco")
    fits = check_memory(tflm.arena_used_bytes, tflm.model_bytes, board)
    assert [(f.resource, f.capacity_bytes) for f in fits] == [("sram", 327680), ("flash", 1048576)]
    assert all(f.fits and 0 < f.headroom < 1 for f in fits)
    raise_if_too_large(fits, board)


def test_too_small_board_is_refused(tflm):
    stm32 = get_board("stm32f746g-disco")
    chip = dataclasses.replace(stm32.chip_spec, name="tiny-chip", capacity={"sram_bytes": 4096, "flash_bytes": 1 << 20})
    tiny = dataclasses.replace(stm32, name="tiny-mcu", display_name="Tiny MCU", chip="tiny-chip", chip_spec=chip)
    fits = check_memory(tflm.arena_used_bytes, tflm.model_bytes, tiny)
    assert [f.fits for f in fits] == [False, True] and fits[0].headroom < 0
    with pytest.raises(ModelTooLargeError) as err:
        raise_if_too_large(fits, tiny)
    message = str(err.value)
    assert isinstance(err.value, SDKError) and err.value.fix and "tiny-mcu" in err.value.where
    assert (
        "SRAM" in message
        and f"{tflm.arena_used_bytes:,}" in message
        and "4,096" in message
        and "FLASH" not in err.value.what
    )


@pytest.mark.parametrize("board_name", NPU_BOARDS)
def test_vela_compiles_for_ethos_u(model_path, tmp_path, board_name):
    board = get_board(board_name)
    result = compile_vela(model_path, board, tmp_path / "vela")
    model = schema.ModelT.InitFromPackedBuf(result.optimised_tflite.read_bytes(), 0)
    assert b"ethos-u" in [code.customCode for code in model.operatorCodes]
    s = result.summary
    assert s["cycles"] > 0 and s["inferences_per_second"] > 0
    assert s["inferences_per_second"] == pytest.approx(board.clock_mhz * 1e6 / s["cycles"])
    assert s["inferences_per_second"] == pytest.approx(
        s["vela_inferences_per_second"]
    )  # board clock == Vela's core clock
    assert s["sram_bytes"] > 0 and s["flash_bytes"] + s["dram_bytes"] > 0
    # Vela has no DEQUANTIZE on the NPU: the float output op stays on the CPU, all else is one NPU command stream
    op_outputs, (graph_output,) = _op_outputs(model_path)
    assert s["cpu_ops"] == [{"op": "DEQUANTIZE", "output": graph_output, "reason": "Unsupported opType"}]
    assert s["npu_ops"] == len(op_outputs) - 1 and s["npu_command_streams"] == 1
    assert [name for name, _ in result.per_layer] == [name for name in op_outputs if name != graph_output]
    assert sum(cycles for _, cycles in result.per_layer) == s["cycles"]
    assert result.vela_version and result.log_path.is_file()
    json.dumps(result.to_dict())


def test_corrupt_file_raises_tflm_error(corrupt, x_int8):
    with pytest.raises(TflmError, match="not a TFLite flatbuffer") as err:
        run_tflm(corrupt, x_int8)
    assert err.value.fix and str(corrupt) in err.value.where


def test_corrupt_file_raises_vela_error(corrupt, tmp_path):
    with pytest.raises(VelaError, match="Not a TFLite flatbuffer") as err:  # refused before Vela reads it
        compile_vela(corrupt, get_board("ethos-u55-128"), tmp_path / "vela")
    assert "Traceback" not in str(err.value) and err.value.fix


def test_op_tflm_lacks_raises_tflm_error(model_path, x_int8, tmp_path):
    """The Vela output's ethos-u custom op has no TFLM kernel without the NPU driver."""
    result = compile_vela(model_path, get_board("ethos-u55-128"), tmp_path / "vela")
    with pytest.raises(TflmError, match="operator 0 \\(CUSTOM 'ethos-u'\\)") as err:
        run_tflm(result.optimised_tflite, x_int8)
    assert "Vela" in err.value.fix


def test_non_npu_board_raises_vela_error(model_path, tmp_path):
    with pytest.raises(VelaError, match="not an Ethos-U board"):
        compile_vela(model_path, get_board("stm32f746g-disco"), tmp_path / "vela")


def test_wrong_input_raises_tflm_error(model_path, x_int8):
    with pytest.raises(TflmError, match="does not fit the model's input"):
        run_tflm(model_path, x_int8.astype(np.float32))
