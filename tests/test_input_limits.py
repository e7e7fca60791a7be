"""User inputs at their limits, as a user gives them: the CLI in a subprocess, the Python API as a script calls it.

Memory bombs (a small compressed file whose header asks for gigabytes, a model card of a huge input) are refused
from their headers, against sdk.data.MEMORY_BUDGET, before any array is read or made; a card that does not fit its
graph, labels the model cannot produce, batches that are not pixels and an --input-scale that is ignored or that
collapses every pixel to one code are each a clean exit 2 (an SDKError naming the argument), the same on an FPGA
board and a TFLite one. Nothing here trains; the packages are deployed once per module, for the tests marked slow.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat
from torch import nn

import sdk
from sdk.data import BYTES_PER_VALUE, MEMORY_BUDGET
from sdk.errors import ConfigError, SDKError

ROOT = Path(__file__).resolve().parent.parent
BOMB_VALUES = MEMORY_BUDGET // (1 + BYTES_PER_VALUE) + (1 << 20)  # just over the budget as uint8: ~240 MB of zeros


def _sdk(*args: str, cwd: Path | None = None) -> tuple[int, dict, float]:
    """`python -m sdk ... --json` as a user runs it: exit code, the JSON document, seconds taken."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sdk", *args, "--json"], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    seconds = time.perf_counter() - start
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    try:
        payload = json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        payload = {"stdout": done.stdout}
    return done.returncode, payload, seconds


def _message(payload: dict) -> str:
    return " ".join(str(payload.get(k)) for k in ("what", "where", "fix"))


def _refused(payload: dict, code: int, *fragments: str) -> None:
    assert code == 2 and payload.get("exit_code") == 2, payload
    assert payload["what"] and payload["where"] and payload["fix"], payload
    for fragment in fragments:
        assert fragment in _message(payload), payload


# ---------------------------------------------------------------------------------------------------------------------
# Packages and files


@pytest.fixture(scope="module")
def packages(tfc_run, tmp_path_factory) -> dict[str, Path]:
    """The committed TFC run deployed to an FPGA board and to LiteRT: what `sdk simulate` is given."""
    base = tmp_path_factory.mktemp("packages")
    out = {}
    for board in ("pynq-z2", "tflite"):
        result = sdk.deploy(str(tfc_run), board, out=str(base / board), samples=20)
        assert result.verified
        out[board] = result.package
    return out


def _zero_npz(path: Path, shape: tuple[int, ...], descr: str = "|u1", with_y: bool = True) -> Path:
    """An .npz whose x is `shape` zeros, streamed into the archive (never held in memory): a few MB on disk."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
            left, chunk = int(np.prod(shape)) * np.dtype(descr).itemsize, bytes(32 << 20)
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        if with_y:
            with zf.open("y.npy", "w") as fh:
                np.lib.format.write_array(fh, np.zeros(10, np.int64))
    return path


@pytest.fixture(scope="module")
def npz_bomb(tmp_path_factory) -> Path:
    """x of BOMB_VALUES uint8 zeros (over the memory budget), compressed to about 1 MB."""
    path = _zero_npz(tmp_path_factory.mktemp("bomb") / "bomb.npz", (BOMB_VALUES // 64, 8, 8))
    assert path.stat().st_size < 5 << 20
    return path


def _idx_bomb(folder: Path) -> Path:
    """An MNIST idx folder whose train images file unpacks to more than the budget (gzip of zeros)."""
    folder.mkdir()
    n = BOMB_VALUES // 64
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as fh:
        fh.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 8, 8)))
        left, chunk = n * 64, bytes(32 << 20)
        while left:
            fh.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    for name, array in (
        ("train-labels-idx1-ubyte.gz", np.zeros(n, np.uint8)[:4]),
        ("t10k-images-idx3-ubyte.gz", np.zeros((4, 8, 8), np.uint8)),
        ("t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8)),
    ):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (folder / name).write_bytes(gzip.compress(header + array.tobytes()))
    return folder


def _export_with_card(tfc_export: Path, folder: Path, change) -> Path:
    """The TFC export and its card, copied, with the card changed by `change`."""
    folder.mkdir(exist_ok=True)
    model = folder / "tfc.onnx"
    shutil.copyfile(tfc_export, model)
    card = json.loads(tfc_export.with_suffix(".json").read_text())
    change(card)
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


# ---------------------------------------------------------------------------------------------------------------------
# 1. Memory bombs: refused from their headers


@pytest.mark.slow
def test_an_npz_bomb_is_refused_from_its_header_by_deploy_and_simulate(npz_bomb, tfc_run, packages, tmp_path):
    """Before: the archive's arrays were only bounded by 2 GiB each, so a 1.5 GiB array of zeros in a 1.5 MB file
    was read whole and copied several times (~8 GB, exit 3 after minutes)."""
    code, payload, seconds = _sdk(
        "deploy", "--target", "tflite", "--model", str(tfc_run), "--data", str(npz_bomb), "--out", str(tmp_path / "o")
    )
    _refused(payload, code, "memory budget", "array x", str(npz_bomb))
    assert seconds < 60 and not (tmp_path / "o").exists()
    code, payload, seconds = _sdk("simulate", str(packages["tflite"]), "--data", str(npz_bomb))
    _refused(payload, code, "memory budget", "array x")
    assert seconds < 60


@pytest.mark.slow
def test_an_idx_bomb_is_refused_from_its_header(packages, tmp_path):
    folder = _idx_bomb(tmp_path / "idx")
    code, payload, _ = _sdk("simulate", str(packages["pynq-z2"]), "--data", str(folder))
    _refused(payload, code, "memory budget", "train-images-idx3-ubyte.gz")


def test_a_float_npz_over_the_budget_is_refused_while_one_inside_it_is_read(tmp_path):
    """The budget counts the stored bytes too: float64 pixels cost more than uint8 ones of the same shape."""
    from sdk.data import load_samples
    from sdk.errors import DatasetError

    n = MEMORY_BUDGET // (8 + BYTES_PER_VALUE) // 64 + 1  # as uint8 these would fit
    path = _zero_npz(tmp_path / "floats.npz", (n, 8, 8), "<f8")
    with pytest.raises(DatasetError, match="memory budget") as info:
        load_samples(str(path))
    assert info.value.where.endswith("array x")
    np.savez(tmp_path / "small.npz", x=np.full((5, 8, 8), 0.5))
    x, _, _ = load_samples(str(tmp_path / "small.npz"))
    assert x.dtype == np.uint8 and (x == 128).all()


def test_a_card_of_a_huge_input_is_refused_before_any_sample_is_made(tfc_export, tmp_path):
    """Before: a card shape of 1x40000x40000 made 100 random samples of it (149 GiB)."""

    def huge(card: dict) -> None:
        card["input"]["image_shape"] = [1, 40000, 40000]
        card["dataset"] = None

    model = _export_with_card(tfc_export, tmp_path / "m", huge)
    for command in ("check", "deploy"):
        extra = ["--out", str(tmp_path / "o")] if command == "deploy" else []
        code, payload, seconds = _sdk(command, "--target", "tflite", "--model", str(model), *extra)
        _refused(payload, code, "memory budget", "tfc.json")
        assert seconds < 60 and not (tmp_path / "o").exists()


def test_random_verification_inputs_over_the_budget_are_refused_naming_samples(tfc_export, tmp_path):
    model = _export_with_card(tfc_export, tmp_path / "m", lambda card: card.update(dataset=None))
    with pytest.raises(SDKError, match="memory budget") as info:
        sdk.deploy(str(model), "tflite", out=str(tmp_path / "o"), samples=10**9)
    assert info.value.where == "--samples" and not (tmp_path / "o").exists()


def test_a_card_less_graph_of_a_huge_input_is_refused(tmp_path):
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20000, 20000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 20000, 20000])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big", [x], [y])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "big.onnx")
    code, payload, _ = _sdk("check", "--target", "tflite", "--model", str(tmp_path / "big.onnx"), "--input-scale", "1")
    _refused(payload, code, "memory budget", "20000")


def test_the_readme_documents_the_budget():
    readme = (ROOT / "README.md").read_text()
    assert "MEMORY_BUDGET" in readme and f"at most {MEMORY_BUDGET >> 30} GiB" in readme


# ---------------------------------------------------------------------------------------------------------------------
# 2. A card that does not fit its graph


def test_a_card_whose_input_differs_from_the_graph_is_refused_by_check_and_deploy_alike(tfc_export, tmp_path):
    """Before: `sdk check` passed and `sdk deploy` crashed in qonnx's executor (exit 3)."""

    def wrong(card: dict) -> None:
        card["input"]["image_shape"], card["input"]["shape"], card["dataset"] = [1, 8, 9], [1, 72], None

    model = _export_with_card(tfc_export, tmp_path / "m", wrong)
    for command in ("check", "deploy"):
        extra = ["--out", str(tmp_path / "o")] if command == "deploy" else []
        code, payload, _ = _sdk(command, "--target", "pynq-z2", "--model", str(model), *extra)
        _refused(payload, code, "[1, 72]", "[1, 64]", "tfc.json")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------------
# 3. The Python API misused


def _api_cases(run: str, package: Callable[[], Path]) -> list[tuple[str, object, str]]:
    """(name, call, the argument its error must name); the simulate-x cases need a real package (slow set)."""
    good = np.zeros((2, 1, 8, 8), np.uint8)
    return [
        ("unknown-option", lambda: sdk.deploy(run, "tflite", bogus=1), "bogus"),
        ("out-an-int", lambda: sdk.deploy(run, "tflite", out=123), "out"),
        ("data-an-int", lambda: sdk.deploy(run, "tflite", data=5), "data"),
        ("target-an-int", lambda: sdk.deploy(run, 5), "target"),
        ("target-empty", lambda: sdk.deploy(run, " "), "target"),
        ("target-a-list", lambda: sdk.deploy(run, ["tflite"]), "target"),
        ("progress-a-word", lambda: sdk.deploy(run, "tflite", progress="yes"), "progress"),
        ("samples-a-word", lambda: sdk.deploy(run, "tflite", samples="3"), "samples"),
        ("fps-a-word", lambda: sdk.deploy(run, "pynq-z2", fps="fast"), "fps"),
        ("require-bitfile-a-word", lambda: sdk.deploy(run, "pynq-z2", require_bitfile="no"), "require-bitfile"),
        ("check-target-none", lambda: sdk.check(run, None), "target"),
        ("model-an-int", lambda: sdk.check(5, "tflite"), "model"),
        ("simulate-x-none", lambda: sdk.simulate(package(), None), "x"),
        ("simulate-x-empty", lambda: sdk.simulate(package(), np.zeros((0, 1, 8, 8), np.uint8)), "x"),
        ("simulate-x-empty-list", lambda: sdk.simulate(package(), []), "x"),
        ("simulate-x-ragged", lambda: sdk.simulate(package(), [[1, 2], [3]]), "x"),
        ("simulate-x-strings", lambda: sdk.simulate(package(), np.full((2, 1, 8, 8), "a")), "x"),
        ("simulate-x-one-sample-1d", lambda: sdk.simulate(package(), np.zeros(64, np.uint8)), "x"),
        ("simulate-x-wrong-shape", lambda: sdk.simulate(package(), np.zeros((2, 1, 9, 9), np.uint8)), "x"),
        ("simulate-package-none", lambda: sdk.simulate(None, good), "package"),
        ("simulate-package-an-int", lambda: sdk.simulate(123, good), "package"),
        ("example-input-for-a-path", lambda: sdk.check(run, "tflite", example_input=torch.zeros(1, 64)), "example"),
        (
            "example-input-the-module-refuses",
            lambda: sdk.check(FloatInputMLP(), "tflite", torch.zeros(1, 65)),
            "example",
        ),
        ("example-input-huge", lambda: sdk.check(FloatInputMLP(), "tflite", (1, 1, 40000, 40000)), "example_input"),
    ]


API_CASES = [case[0] for case in _api_cases("run", Path)]


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(i, id=name, marks=(pytest.mark.slow,) if name.startswith("simulate-x") else ())
        for i, name in enumerate(API_CASES)
    ],
)
def test_python_api_misuse_raises_the_sdks_error_naming_the_argument(index, tfc_run, request, tmp_path, monkeypatch):
    name, call, argument = _api_cases(str(tfc_run), lambda: request.getfixturevalue("packages")["tflite"])[index]
    monkeypatch.chdir(tmp_path)  # a deploy that wrongly went ahead would write deploy/ here
    with pytest.raises(SDKError) as info:
        call()
    assert argument in str(info.value.where), (name, info.value.to_dict())
    assert info.value.fix and not list(tmp_path.iterdir()), name


def test_the_api_cases_are_all_run():
    assert len(API_CASES) == len(set(API_CASES)) == 24


# ---------------------------------------------------------------------------------------------------------------------
# 4. Wrongly accepted before: now refused on every target alike


@pytest.mark.slow
@pytest.mark.parametrize("board", ["pynq-z2", "tflite"])
@pytest.mark.parametrize(
    "values",
    [np.nan, np.inf, 300, -1, 1.5, 255.5],
    ids=["nan", "inf", "300", "minus-1", "float-1.5", "255.5"],
)
def test_a_batch_of_values_that_are_not_pixels_is_refused_by_every_package(packages, board, values):
    """Before: the tflite package cast NaN and wrapped 300 to 44; the FPGA package refused them. One check now:
    integers must be pixels 0..255, floats pixels in [0, 1], as --data takes them."""
    x = np.zeros((3, 1, 8, 8), dtype=np.asarray(values).dtype)
    x[1, 0, 2, 3] = values
    with pytest.raises(ConfigError, match="not pixels|outside \\[0, 1\\]") as info:
        sdk.simulate(packages[board], x)
    assert info.value.where == "x"


@pytest.mark.slow
@pytest.mark.parametrize("board", ["pynq-z2", "tflite"])
def test_pixels_in_any_numeric_type_give_the_uint8_outputs(packages, board):
    x = np.random.default_rng(0).integers(0, 256, size=(6, 1, 8, 8)).astype(np.uint8)
    expected = sdk.simulate(packages[board], x)
    for same in (x.astype(np.int64), x.astype(np.float32) / 255, x[:, 0], x.reshape(6, 64), x, x.astype(np.int16)):
        np.testing.assert_array_equal(sdk.simulate(packages[board], same), expected)
    np.testing.assert_array_equal(sdk.simulate(packages[board], x, codes=True), expected)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["pynq-z2", "tflite"])
@pytest.mark.parametrize("label", [10, 50, 9999])
def test_labels_the_model_cannot_produce_are_refused_by_deploy_and_simulate(tfc_run, packages, tmp_path, board, label):
    """Before: labels 50 or 9999 for a 10-class model were counted into the accuracy as wrong answers."""
    x = np.random.default_rng(1).integers(0, 256, size=(20, 1, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 10
    y[7] = label
    np.savez(tmp_path / "labelled.npz", x=x, y=y)
    code, payload, _ = _sdk("simulate", str(packages[board]), "--data", str(tmp_path / "labelled.npz"))
    _refused(payload, code, str(label), "0..9", "array y")
    if label == 50:  # deploy: once per flow (a deploy is the slow part)
        out = tmp_path / "o"
        code, payload, _ = _sdk(
            "deploy",
            "--target",
            board,
            "--model",
            str(tfc_run),
            "--data",
            str(tmp_path / "labelled.npz"),
            "--out",
            str(out),
        )
        _refused(payload, code, "50", "0..9")
        assert not out.exists()


@pytest.mark.slow
def test_labels_within_the_models_classes_still_measure_an_accuracy(packages, tmp_path):
    x = np.random.default_rng(1).integers(0, 256, size=(20, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(20) % 10)
    code, payload, _ = _sdk("simulate", str(packages["tflite"]), "--data", str(tmp_path / "ok.npz"))
    assert code == 0 and payload["accuracy"] is not None, payload


def test_input_scale_for_a_model_that_scales_its_own_input_is_refused(tfc_run, tfc_export, tmp_path):
    """Before: accepted, ignored, and recorded in the manifest as if it had been applied."""
    lonely = tmp_path / "lonely.onnx"  # the SDK's export without its card: its input is annotated UINT8
    shutil.copyfile(tfc_export, lonely)
    for model, named in ((tfc_run, "training run"), (tfc_export, "tfc.qonnx.json"), (lonely, "UINT8")):
        for command in ("check", "deploy"):
            extra = ["--out", str(tmp_path / "o")] if command == "deploy" else []
            code, payload, _ = _sdk(
                command, "--target", "tflite", "--model", str(model), "--input-scale", "0.5", *extra
            )
            _refused(payload, code, "--input-scale", named)
    assert not (tmp_path / "o").exists()


class InputQuantMLP(nn.Module):
    """A float-input MLP that quantizes its own input to 8 bits first (Brevitas QuantIdentity)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = QuantIdentity(bit_width=8)
        self.fc1 = QuantLinear(64, 16, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)
        self.relu = QuantReLU(bit_width=4)
        self.fc2 = QuantLinear(16, 10, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.inp(x))))


class FloatInputMLP(InputQuantMLP):
    """The same without an input quantizer: the first quantizer is the ReLU after fc1."""

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


@pytest.mark.parametrize("model_class", [InputQuantMLP, FloatInputMLP])
def test_an_input_scale_that_maps_every_pixel_to_one_code_is_refused(tmp_path, model_class):
    """Before: --input-scale 1e-30 passed, and every input became the same code (one output for every sample)."""
    from brevitas.export import export_qonnx

    path = tmp_path / "mine.onnx"
    export_qonnx(model_class().eval(), input_t=torch.zeros(1, 64), export_path=str(path))
    for scale in ("1e-30", "1e-45"):
        code, payload, _ = _sdk("check", "--target", "tflite", "--model", str(path), "--input-scale", scale)
        _refused(payload, code, "--input-scale", "single input code")
    code, payload, _ = _sdk("check", "--target", "tflite", "--model", str(path), "--input-scale", str(1 / 255))
    assert code == 0, payload


def test_an_npy_header_numpy_cannot_tokenize_is_a_dataset_error(tmp_path):
    """Found by fuzzing the .npz reader (1,500 one-to-six-byte mutations): a header with an unclosed bracket made
    numpy's header parser raise tokenize.TokenError, which escaped as a traceback."""
    from sdk.data import load_samples
    from sdk.errors import DatasetError

    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (20, 8, 8 }"
    header += b" " * (63 - len(header) % 64) + b"\n"
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(1280))
    with pytest.raises(DatasetError, match="cannot be read") as info:
        load_samples(str(tmp_path / "x.npz"))
    assert info.value.where.endswith("array x")


@pytest.mark.slow
def test_a_card_data_set_without_seed_or_image_size_takes_the_defaults(tfc_export, tmp_path):
    """Found by fuzzing model cards (800 mutations of the fields the flows read): a card whose dataset named only
    the data set crashed with KeyError 'seed' (exit 3); `sdk simulate` already took seed 0 and the native size."""
    model = _export_with_card(tfc_export, tmp_path / "m", lambda card: card.update(dataset={"name": "digits"}))
    result = sdk.deploy(str(model), "tflite", out=str(tmp_path / "o"), samples=10)
    assert result.verified and result.summary["accuracy_on"].startswith("digits test split")


@pytest.mark.parametrize("flag", ["--out", "--data"])
def test_a_path_too_long_for_the_os_is_a_clean_refusal(tfc_run, tmp_path, flag):
    """Before: a 5,000-character --out crashed in pathlib's stat (OSError ENAMETOOLONG, exit 3)."""
    long = str(tmp_path / ("a" * 5000))
    args = ["--out", long] if flag == "--out" else ["--data", long + ".npz", "--out", str(tmp_path / "o")]
    code, payload, _ = _sdk("deploy", "--target", "tflite", "--model", str(tfc_run), *args)
    _refused(payload, code, flag)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [b"[" * 200_000, b'{"labels": ["' + b"a" * (2 << 20) + b'"]}'],
    ids=["nested-200000-deep", "over-1-MiB"],
)
def test_a_card_json_nested_too_deep_or_too_large_is_refused(tfc_export, tmp_path, content):
    """Before: a card of 200,000 nested brackets raised RecursionError in json (exit 3); any size was read whole."""
    model = tmp_path / "m.onnx"
    shutil.copyfile(tfc_export, model)
    model.with_suffix(".json").write_bytes(content)
    code, payload, _ = _sdk("check", "--target", "tflite", "--model", str(model))
    _refused(payload, code, "m.json")


@pytest.mark.parametrize("with_card", [False, True], ids=["card-less", "with-card"])
def test_a_graph_that_makes_a_huge_tensor_from_a_small_file_is_refused(tfc_export, tmp_path, with_card):
    """A ConstantOfShape of [1, 40000, 40000] in a 1 KB graph: qonnx's clean-up (constant folding) or the executor
    would allocate 6 GB; refused from the inferred shapes first, naming the tensor."""
    from onnx import TensorProto, helper, numpy_helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    shape = numpy_helper.from_array(np.array([1, 40000, 40000], np.int64), "s")
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])]
    graph = helper.make_graph(nodes, "bomb", [x], [y], [shape])
    model = tmp_path / "bomb.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    scale = []
    if with_card:
        model.with_suffix(".json").write_text(tfc_export.with_suffix(".json").read_text())
    else:
        scale = ["--input-scale", "1"]
    code, payload, seconds = _sdk("check", "--target", "tflite", "--model", str(model), *scale)
    _refused(payload, code, "memory budget", "big")
    assert seconds < 60


def test_an_image_size_whose_resized_data_set_exceeds_the_budget_is_refused(tmp_path):
    """40,000 8x8 samples (2.5 MB) upscaled to 256 x 256 would be 10 GB of float32 in torch's interpolate."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40_000), ("t10k", 100)):
        for kind, array in (("images", rng.integers(0, 256, (n, 8, 8))), ("labels", np.arange(n) % 10)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            rank = 3 if kind == "images" else 1
            (folder / f"{prefix}-{kind}-idx{rank}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())
    out = tmp_path / "run"
    code, payload, seconds = _sdk(
        "train", "tfc", "--dataset", str(folder), "--image-size", "256", "--epochs", "1", "--out", str(out)
    )
    _refused(payload, code, "memory budget", "--image-size")
    assert seconds < 60 and not out.exists()
