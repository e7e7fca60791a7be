"""The int8 .tflite writer: real LiteRT reference kernels vs the numpy golden model
(exact), and vs the Brevitas model (within 1 LSB, mismatch rate reported)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from sdk.data import Dataset, load_dataset
from sdk.errors import SDKError
from sdk.export import export_module
from sdk.qat import load_checkpoint
from sdk.zoo import build_model, parse_bits
from targets.tflite.golden import quantize_multiplier, run_golden
from targets.tflite.verify import compare_with_qat
from targets.tflite.writer import (
    BUFFER_ALIGNMENT,
    METADATA_NAME,
    SIGNATURE_KEY,
    TfliteConversionError,
    TfliteInfo,
    tflite_input,
    write_tflite,
)

NUM_SAMPLES = 100
BITS = ["w2a2", "w4a4"]


@dataclass
class Written:
    model: torch.nn.Module
    card: dict
    path: Path
    info: TfliteInfo
    onnx: Path


def _card(payload: dict) -> dict:
    return {"input_shape": payload["input_shape"], "labels": payload["labels"], "flatten": True}


def _write(model: torch.nn.Module, card: dict, folder: Path, **options) -> Written:
    """Export the module to QONNX (as a deploy does), then write the .tflite from that graph."""
    onnx = export_module(model, (1, int(np.prod(card["input_shape"]))), folder / "model.onnx").onnx_path
    path = folder / "model.tflite"
    return Written(model, card, path, write_tflite(onnx, card, path, **options), onnx)


HIDDEN = ["MatMul_0", "MatMul_1", "MatMul_2"]  # the TFC graph's node names: three hidden layers and the classifier


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def written(tfc_run, tfc_w4a4_run, tmp_path_factory) -> dict[str, Written]:
    """The committed TFC runs (real Brevitas QAT on digits), one per bit width, written as .tflite."""
    out: dict[str, Written] = {}
    for bits, run in zip(BITS, (tfc_run, tfc_w4a4_run)):
        model, payload = load_checkpoint(run)
        out[bits] = _write(model, _card(payload), tmp_path_factory.mktemp(f"tfc_{bits}"))
    return out


@pytest.fixture(scope="module")
def samples(digits) -> tuple[np.ndarray, np.ndarray]:
    return digits.x_test[:NUM_SAMPLES], digits.y_test[:NUM_SAMPLES]


def _int8_input(x_uint8: np.ndarray, shape: list[int] | None = None) -> np.ndarray:
    return tflite_input(x_uint8, shape or [64])


def _litert(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the graph after one batched invoke on LiteRT's reference kernels."""
    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return {t["name"]: interpreter.get_tensor(t["index"]) for t in interpreter.get_tensor_details()}


def _compare_with_brevitas(w: Written, x_uint8: np.ndarray) -> dict[str, tuple[int, float]]:
    """Per tensor: (max |diff| in LSB, mismatch rate) of each op, fed the QAT model's input, against the QAT model."""
    return {
        a.name: (a.max_lsb, a.mismatch_rate) for a in compare_with_qat(w.path, w.info, w.onnx, x_uint8, "litert")[0]
    }


@pytest.mark.parametrize("bits", BITS)
def test_litert_reference_equals_golden_on_every_tensor(written, samples, bits):
    w = written[bits]
    x = _int8_input(samples[0])
    lite = _litert(w.path, x)
    golden = run_golden(w.path, x)
    assert set(golden) == {"input", "logits_float"} | {
        f"{name}{suffix}" for name in HIDDEN for suffix in ("", "/pre_clamp")
    } | {"MatMul_3"}
    for name, value in golden.items():
        assert lite[name].dtype == value.dtype, name
        np.testing.assert_array_equal(lite[name], value, err_msg=f"tensor {name}")


@pytest.mark.parametrize("bits", BITS)
def test_hidden_activations_within_one_lsb_of_brevitas(written, samples, bits):
    stats = _compare_with_brevitas(written[bits], samples[0])
    print(f"\n{bits} vs Brevitas (max LSB, mismatch rate): {stats}")
    assert set(stats) == {*HIDDEN, "MatMul_3"}
    for act, (max_diff, rate) in stats.items():
        assert max_diff <= 1, f"{act}: {max_diff} LSB"
        assert rate < 0.05, f"{act}: mismatch rate {rate:.2%}"


@pytest.mark.parametrize("bits", BITS)
def test_argmax_agrees_with_brevitas(written, samples, bits):
    w = written[bits]
    logits = run_golden(w.path, _int8_input(samples[0]))["logits_float"]
    with torch.no_grad():
        reference = w.model(torch.from_numpy(samples[0].reshape(NUM_SAMPLES, -1).astype(np.float32) / 255)).numpy()
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    print(f"\n{bits} argmax agreement {agreement:.2%}")
    assert agreement > 0.95
    # the int8 logits cover the whole accumulator range: no saturation
    assert np.abs(reference).max() / w.info.layers[-1].scale < 127.5


def test_file_is_tfl3_with_aligned_buffers_signature_and_metadata(written):
    w = written["w2a2"]
    buf = w.path.read_bytes()
    assert buf[4:8] == b"TFL3"
    model = schema.Model.GetRootAs(buf, 0)
    assert model.Buffers(0).DataLength() == 0
    with_data = 0
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            start = buffer._tab.Vector(buffer._tab.Offset(4))  # field 0 (data): absolute start of the bytes
            assert start % BUFFER_ALIGNMENT == 0, f"buffer {i} starts at {start}"
            with_data += 1
    assert with_data == 3 * 2 + 3 + 1 + 1  # weights+bias x3, clamps x3, fc_out weights, metadata
    full = schema.ModelT.InitFromPackedBuf(buf, 0)
    assert full.signatureDefs[0].signatureKey.decode() == SIGNATURE_KEY
    meta = {m.name.decode(): m.buffer for m in full.metadata}
    info = json.loads(bytes(full.buffers[meta[METADATA_NAME]].data))
    assert info["labels"] == w.card["labels"] and "sdk_version" in info and info["normalisation"]["zero_point"] == -128
    runner = Interpreter(model_path=str(w.path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    assert list(runner.get_signature_list()) == [SIGNATURE_KEY]


def test_float_input_adds_exact_quantize(written, samples, tmp_path):
    w = written["w4a4"]
    path = tmp_path / "float_in.tflite"
    write_tflite(w.onnx, w.card, path, float_input=True)
    x = samples[0].reshape(NUM_SAMPLES, -1).astype(np.float32) / np.float32(255.0)
    lite, golden = _litert(path, x), run_golden(path, x)
    for name, value in golden.items():
        np.testing.assert_array_equal(lite[name], value, err_msg=f"tensor {name}")
    np.testing.assert_array_equal(golden["input/int8"], _int8_input(samples[0]))
    np.testing.assert_array_equal(golden["MatMul_3"], run_golden(w.path, _int8_input(samples[0]))["MatMul_3"])


def test_negative_batchnorm_factors_negate_channels(written, samples, tfc_run, tmp_path):
    w = written["w2a2"]
    model, _ = load_checkpoint(tfc_run)
    with torch.no_grad():
        model.body.bn1.weight[:16] *= -1  # 16 channels with a negative BatchNorm factor
    negated = _write(model, w.card, tmp_path)
    path, info = negated.path, negated.info
    assert info.layers[1].negated_channels == 16
    x = _int8_input(samples[0])
    golden = run_golden(path, x)
    lite = _litert(path, x)
    for name, value in golden.items():
        np.testing.assert_array_equal(lite[name], value, err_msg=f"tensor {name}")
    stats = _compare_with_brevitas(negated, samples[0])
    assert all(max_diff <= 1 and rate < 0.05 for max_diff, rate in stats.values()), stats


@pytest.mark.parametrize("bits", BITS)
def test_tflm_matches_double_rounding_golden(written, samples, bits):
    """TFLM rounds twice in every kernel; LiteRT 2.3.0's reference FULLY_CONNECTED once."""
    from tflite_micro.python.tflite_micro import runtime

    w = written[bits]
    x = _int8_input(samples[0])
    interpreter = runtime.Interpreter.from_file(str(w.path))
    outputs = []
    for row in x:
        interpreter.set_input(row[None, :], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).copy())
    np.testing.assert_array_equal(np.concatenate(outputs), run_golden(w.path, x, rounding="tflm")["logits_float"])


@pytest.mark.parametrize(("name", "bits"), [("sfc", "w8a8"), ("lfc", "w3a5")])
def test_other_mlps_and_bit_widths_match_golden(name, bits, samples, tmp_path):
    """Untrained sfc / lfc: other widths, 8-bit activations (no MINIMUM) and odd bit widths."""
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10, parse_bits(bits)).eval()
    card = {"input_shape": [1, 8, 8], "labels": [str(i) for i in range(10)], "flatten": True}
    written = _write(model, card, tmp_path)
    path, info = written.path, written.info
    assert any(op.op == "MINIMUM" for op in info.ops) == (bits != "w8a8")
    x = _int8_input(samples[0])
    golden, lite = run_golden(path, x), _litert(path, x)
    for tensor, value in golden.items():
        np.testing.assert_array_equal(lite[tensor], value, err_msg=f"tensor {tensor}")
    stats = _compare_with_brevitas(written, samples[0])
    print(f"\n{name} {bits} vs Brevitas (max LSB, mismatch rate): {stats}")
    assert all(max_diff <= 1 and rate < 0.05 for max_diff, rate in stats.values()), stats


@pytest.mark.parametrize("bits", ["w1a1", "w2a1"])
def test_one_bit_activations_are_refused(bits, tmp_path):
    """1-bit (bipolar) activations have no int8 requantization; 1-bit weights lower (test_tflite_binary_weights)."""
    model = build_model("tfc", (1, 8, 8), 10, parse_bits(bits)).eval()
    with pytest.raises(TfliteConversionError, match="1-bit") as err:
        card = {"input_shape": [1, 8, 8], "labels": [str(i) for i in range(10)], "flatten": True}
        write_tflite(model, card, tmp_path / "m.tflite")
    assert isinstance(err.value, SDKError) and err.value.fix
    assert not (tmp_path / "m.tflite").exists()


def test_quantize_multiplier_matches_tflite():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    q, shift = quantize_multiplier(0.3)
    assert abs(q * 2.0 ** (shift - 31) - 0.3) < 2**-31


def test_a_differing_runtime_tensor_is_named(written, samples):
    """The rule's first check fails on one changed value and names the tensor (the deploy then exits 1)."""
    from targets.tflite.verify import compare_with_runtime

    w = written["w2a2"]
    golden = run_golden(w.path, _int8_input(samples[0]))
    assert compare_with_runtime("LiteRT", golden, golden).passed
    tampered = {name: value.copy() for name, value in golden.items()}
    tampered["MatMul_1"][3, 5] += 1
    check = compare_with_runtime("LiteRT", tampered, golden)
    assert not check.passed and check.first_difference == "MatMul_1" and check.mismatch_rate == 1 / NUM_SAMPLES
