"""LiteRT runtime wrapper: reference kernels equal the numpy golden model, XNNPACK agrees on
the argmax, latency numbers are well formed, and bad files raise TfliteFileError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from sdk.data import load_dataset
from sdk.errors import ConfigError, SDKError
from sdk.qat import load_checkpoint
from targets.tflite.golden import run_golden
from targets.tflite.runtime import (
    KERNELS,
    Latency,
    TfliteFileError,
    delegate_nodes,
    measure_latency,
    open_tflite,
    run_litert,
)
from targets.tflite.writer import TfliteInfo, serialize, write_tflite


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def info(tfc_run, tmp_path_factory) -> TfliteInfo:
    """The committed TFC w2a2 run (real Brevitas QAT on digits), written as int8 .tflite."""
    run = tmp_path_factory.mktemp("tflite")
    model, payload = load_checkpoint(tfc_run)
    return write_tflite(
        model, {"input_shape": payload["input_shape"], "labels": payload["labels"]}, run / "model.tflite"
    )


@pytest.fixture(scope="module")
def tflite_path(info) -> Path:
    return info.path


@pytest.fixture(scope="module")
def x_int8(digits) -> np.ndarray:
    """The whole digits test split as the file's input: uint8 pixel - 128, flat."""
    x = digits.x_test
    return (x.reshape(len(x), -1).astype(np.int16) - 128).astype(np.int8)


def test_reference_kernels_equal_golden_on_every_tensor(tflite_path, info, x_int8):
    lite = run_litert(tflite_path, x_int8, kernels="reference", all_tensors=True)
    golden = run_golden(tflite_path, x_int8)
    assert {info.input_name, info.logits_name, info.output_name} < set(golden)
    assert len(golden) >= 2 * len(info.layers) + 1  # every layer's output is compared, not only the logits
    assert set(golden) <= set(lite)
    for name, value in golden.items():
        assert lite[name].dtype == value.dtype, name
        np.testing.assert_array_equal(lite[name], value, err_msg=f"tensor {name}")


def test_outputs_only_by_default(tflite_path, info, x_int8):
    out = run_litert(tflite_path, x_int8[:7])
    assert list(out) == [info.output_name] and out[info.output_name].shape == (7, 10)


def test_xnnpack_argmax_agrees_with_reference(tflite_path, info, x_int8):
    fast = run_litert(tflite_path, x_int8, kernels="xnnpack")[info.output_name]
    reference = run_golden(tflite_path, x_int8)[info.output_name]
    agreement = float((fast.argmax(1) == reference.argmax(1)).mean())
    print(f"\nXNNPACK vs reference argmax agreement {agreement:.2%}, logits equal on {(fast == reference).mean():.2%}")
    assert agreement >= 0.95


def test_reference_never_uses_a_delegate_and_xnnpack_does(tflite_path):
    assert delegate_nodes(open_tflite(tflite_path, "reference")) == 0
    assert delegate_nodes(open_tflite(tflite_path, "xnnpack")) >= 1


@pytest.mark.parametrize("kernels", KERNELS)
def test_measure_latency_is_well_formed(tflite_path, x_int8, kernels):
    latency = measure_latency(tflite_path, x_int8[0], kernels, runs=20, warmup=2, threads=1)
    assert isinstance(latency, Latency)
    assert 0 < latency.p10_us <= latency.median_us <= latency.p90_us
    assert (latency.runs, latency.kernels, latency.threads, latency.batch) == (20, kernels, 1, 1)
    assert (latency.delegate_nodes > 0) == (kernels == "xnnpack")
    batched = measure_latency(tflite_path, x_int8[:1], kernels, runs=5, warmup=1, batch=8)
    assert batched.batch == 8 and batched.per_sample_us == pytest.approx(batched.median_us / 8)
    assert batched.samples_per_s > 0 and set(batched.to_dict()) >= {"median_us", "p10_us", "p90_us", "per_sample_us"}


def test_unknown_kernels_and_wrong_input_are_refused(tflite_path, x_int8):
    with pytest.raises(ConfigError, match="Unknown LiteRT kernels"):
        run_litert(tflite_path, x_int8, kernels="gpu")
    with pytest.raises(ValueError, match="int8"):
        run_litert(tflite_path, x_int8.astype(np.float32))
    with pytest.raises(ValueError, match="batch, 64"):
        run_litert(tflite_path, x_int8[:, :32])


def _assert_file_error(path: Path, what: str) -> None:
    for call in (
        lambda: open_tflite(path),
        lambda: run_litert(path, np.zeros((1, 64), np.int8)),
        lambda: measure_latency(path, np.zeros(64, np.int8), "xnnpack", runs=1),
    ):
        with pytest.raises(TfliteFileError, match=what) as err:
            call()
        assert isinstance(err.value, SDKError) and err.value.where == str(path) and err.value.fix


def test_missing_path_and_folder(tmp_path):
    _assert_file_error(tmp_path / "absent.tflite", "No .tflite file")
    _assert_file_error(tmp_path, "is a folder")


def test_random_and_empty_files(tmp_path):
    noise = tmp_path / "noise.tflite"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_file_error(noise, "not a TFLite flatbuffer")
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    _assert_file_error(empty, "not a TFLite flatbuffer")
    # the right identifier in front of noise gets past the cheap check; LiteRT's verifier refuses it
    disguised = tmp_path / "disguised.tflite"
    disguised.write_bytes(b"\x1c\x00\x00\x00TFL3" + noise.read_bytes())
    _assert_file_error(disguised, "LiteRT cannot load")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.99])
def test_truncated_file(tflite_path, tmp_path, keep):
    payload = tflite_path.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(payload[: int(len(payload) * keep)])
    _assert_file_error(cut, "LiteRT cannot load")


def test_file_litert_cannot_allocate(tflite_path, tmp_path):
    """A valid flatbuffer whose first op is an unknown custom op: LiteRT fails in allocate_tensors."""
    model = schema.ModelT.InitFromPackedBuf(tflite_path.read_bytes(), 0)
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = b"NoSuchOp"
    path = tmp_path / "custom.tflite"
    path.write_bytes(serialize(model))
    _assert_file_error(path, "NoSuchOp")
