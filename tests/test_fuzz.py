"""Property-based fuzzing of every reader of user files: whatever the bytes, an SDKError (or success), never
another exception, never a crash by signal.

Seeds are real files: the session's QONNX export of the committed run, .tflite files written by the SDK's own
writer, an .npz and idx files, the board files, a model card, a package written by the package builder, the
committed checkpoint. Hypothesis mutates them (flip, set, truncate, insert, delete, splice bytes; or edits the
parsed structure) and also invents them. Readers in native code that could crash the process (LiteRT's C++,
TFLite Micro, torch's zip reader) run in a forked child, so a signal fails the test instead of killing the run:
children of a small server process that holds only the reader (tests/fuzz_children.py), which forks them far
faster than the pytest worker could. Example counts
are set per reader (EXAMPLES) so that the fast part runs in well under two minutes.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from click.testing import CliRunner
from fuzz_children import ChildServer, run_forked, verdict, zeros_input
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from sdk.boards import load_parts, parse_board
from sdk.cli import main
from sdk.data import _read_idx, load_dataset, load_npz, load_samples
from sdk.errors import InternalError, SDKError
from sdk.model_card import read_card
from sdk.onnx_guard import KNOWN_DOMAINS, is_known_domain, load_onnx_safely
from sdk.package import PackageBuilder, verify_package
from sdk.qat import load_checkpoint
from targets.tflite.golden import load_model, run_golden
from targets.tflite.writer import serialize, write_tflite

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_RUN = ROOT / "tests" / "fixtures" / "tfc_w2a2_digits"
BOARD_FILES = sorted((ROOT / "boards").glob("*.yaml"))

# Examples per reader (the counts the hardening report quotes).
EXAMPLES = {
    "onnx_bytes": 500,
    "onnx_domains": 200,
    "onnx_cli": 4,
    "tflite_golden_bytes": 300,
    "tflite_golden_structure": 400,
    "tflite_litert_bytes": 200,
    "tflite_litert_structure": 300,
    "tflite_tflm_bytes": 100,
    "tflite_tflm_structure": 150,
    "tflite_vela_structure": 15,
    "npz_bytes": 300,
    "npz_arrays": 200,
    "idx_bytes": 500,
    "board_yaml": 300,
    "board_text": 200,
    "card_json": 500,
    "manifest": 500,
    "checkpoint_bytes": 300,
    "checkpoint_payload": 200,
    "cli_train": 500,
    "cli_deploy": 500,
}
FUZZ = settings(
    deadline=None,
    database=None,  # nothing written into the working tree; a failure prints its example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def examples(reader: str) -> settings:
    return settings(FUZZ, max_examples=EXAMPLES[reader])


# ---------------------------------------------------------------------------------------------------------------------
# The property, and mutations


def sdk_error_or_success(call: Callable[[], object]) -> object | None:
    """The call's result, or None when it raised a user-facing SDKError; anything else fails the example."""
    try:
        return call()
    except InternalError:
        raise  # a bug (exit 3), not a user error
    except SDKError as exc:
        assert exc.what and exc.exit_code == 2
        return None


class Seeds(list):
    """Seed files with a short repr: Hypothesis writes a strategy's arguments out when it reports an example,
    and warns (HypothesisWarning) when that repr runs to megabytes of seed bytes."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed files, {sum(map(len, self)):,} bytes>"


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few byte-level edits: flip a bit, set a byte, truncate, insert, delete, splice another seed."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "set", "truncate", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, max(len(other) - 1, 0)))
            data[at : at + 32] = other[start : start + 32]
    return bytes(data)


def corpus(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly mutated seeds, sometimes the seed itself, sometimes noise."""
    seeds = Seeds(seeds)
    return st.one_of(mutated(seeds), mutated(seeds), st.sampled_from(seeds), st.binary(max_size=512))


def in_child(call: Callable[[], None], timeout: float = 120.0) -> str:
    """Run `call` in a child forked from this process (for readers no ChildServer holds): 'ok', 'sdk' (an
    SDKError), or fail on another exception, a signal or a hang."""
    gc.freeze()  # the parent's objects: the child's collections never touch (and so never copy) their pages
    try:
        return verdict(*run_forked(call, timeout), timeout)
    finally:
        gc.unfreeze()


def test_a_crash_an_exception_and_a_hang_in_a_child_are_told_apart():
    """The fuzz tests' guard itself: a reader that dies by a signal, raises, or hangs is reported, not survived."""
    assert run_forked(lambda: os.kill(os.getpid(), signal.SIGSEGV), timeout=30) == ("signal", signal.SIGSEGV, "")
    end, code, report = run_forked(lambda: {}["missing"], timeout=30)
    assert (end, code) == ("exit", 1) and "KeyError" in report
    assert run_forked(lambda: time.sleep(30), timeout=0.5) == ("hang", 0, "")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder for the module's examples (hypothesis reuses a test's fixtures across examples)."""
    return tmp_path_factory.mktemp("fuzz")


def _put(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# .onnx: the guard (every byte), and `sdk check` (a handful, in a fresh interpreter)


@pytest.fixture(scope="module")
def onnx_seeds(tfc_export) -> list[bytes]:
    small = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        )
    )
    return Seeds([tfc_export.read_bytes(), small.SerializeToString()])


def _check_guard(path: Path) -> None:
    model = sdk_error_or_success(lambda: load_onnx_safely(path, "--model fuzz.onnx"))
    if model is not None:  # accepted: then every node is in a known domain
        assert all(is_known_domain(node.domain, finn_ops=False) for node in model.graph.node)


@examples("onnx_bytes")
@given(data=st.data())
def test_onnx_guard_bytes(onnx_seeds, scratch, data):
    _check_guard(_put(scratch, "fuzz.onnx", data.draw(corpus(onnx_seeds))))


DOMAINS = st.one_of(
    st.sampled_from(sorted(KNOWN_DOMAINS) + ["os", "sys", "subprocess", "mymodule", "qonnx", "finn", "builtins"]),
    st.sampled_from(["qonnx.custom_op.", "finn.custom_op.", "qonnx.custom_op.general."]).flatmap(
        lambda prefix: st.text(min_size=1, max_size=12).map(lambda tail: prefix + tail)
    ),
    st.text(max_size=20),
)


@examples("onnx_domains")
@given(domains=st.lists(DOMAINS, min_size=1, max_size=4), data=st.data())
def test_onnx_guard_domains(tfc_export, scratch, domains, data):
    """The export with nodes moved to drawn domains: accepted only if every domain is known; nothing is imported."""
    model = onnx.load(str(tfc_export))
    for domain in domains:
        node = model.graph.node[data.draw(st.integers(0, len(model.graph.node) - 1))]
        node.domain = domain
    before = set(sys.modules)
    path = _put(scratch, "domains.onnx", model.SerializeToString())
    accepted = sdk_error_or_success(lambda: load_onnx_safely(path, "--model domains.onnx")) is not None
    assert not accepted or all(is_known_domain(node.domain, finn_ops=False) for node in model.graph.node)

    imported = set(sys.modules) - before
    assert not imported & set(domains), imported  # reading never imports a module a domain names


@pytest.mark.slow
@settings(examples("onnx_cli"), phases=[Phase.explicit, Phase.generate])  # no shrinking: each run is a process
@given(data=st.data())
def test_onnx_through_sdk_check(tfc_export, scratch, data):
    mutant = data.draw(mutated([tfc_export.read_bytes()]))
    path = _put(scratch, "cli.onnx", mutant)
    (scratch / "cli.json").write_bytes(tfc_export.with_suffix(".json").read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "check", "--target", "pynq-z2", "--model", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------------
# .tflite: the golden model's reader and LiteRT, on files the SDK's writer wrote


@pytest.fixture(scope="module")
def tflite_seeds(tmp_path_factory) -> list[bytes]:
    """The committed TFC run and an (untrained) CNV, DS-CNN, as the writer writes them: every op the SDK emits."""
    from sdk.zoo import build_model, parse_bits

    folder = tmp_path_factory.mktemp("tflite")
    model, payload = load_checkpoint(FIXTURE_RUN)
    card = {"input_shape": payload["input_shape"], "labels": payload["labels"]}
    seeds = [write_tflite(model, card, folder / "tfc.tflite").path.read_bytes()]
    seeds.append(write_tflite(model, card, folder / "tfc-int8.tflite", float_output=False).path.read_bytes())
    for name in ("cnv", "dscnn", "resnet8"):
        net = build_model(name, (1, 8, 8), 10, parse_bits("w2a2")).eval()
        card = {"input_shape": [1, 8, 8], "labels": [str(k) for k in range(10)]}
        seeds.append(write_tflite(net, card, folder / f"{name}.tflite").path.read_bytes())
    return Seeds(seeds)


def _golden(path: Path) -> None:
    model = sdk_error_or_success(lambda: load_model(path))
    if model is not None:
        sdk_error_or_success(lambda: run_golden(path, zeros_input(model)))


@st.composite
def edited_tflite(draw, seeds: list[bytes]) -> bytes:
    """A seed's object model with a few fields changed (shapes, buffers, indices, types, quantization, op codes)."""
    model = schema.ModelT.InitFromPackedBuf(draw(st.sampled_from(seeds)), 0)
    graph = model.subgraphs[0]
    small = st.sampled_from([-1, 0, 1, 2, 3, 7, 64, 1000, 2**20, 2**31 - 1])
    for _ in range(draw(st.integers(1, 3))):
        tensor = graph.tensors[draw(st.integers(0, len(graph.tensors) - 1))]
        op = graph.operators[draw(st.integers(0, len(graph.operators) - 1))]
        field = draw(st.integers(0, 10))
        if field == 0 and tensor.shape is not None and len(tensor.shape):
            shape = [int(d) for d in tensor.shape]
            shape[draw(st.integers(0, len(shape) - 1))] = draw(small)
            tensor.shape = shape
        elif field == 1:
            tensor.buffer = draw(st.integers(0, len(model.buffers) + 1))
        elif field == 2 and op.inputs is not None and len(op.inputs):
            inputs = [int(i) for i in op.inputs]
            inputs[draw(st.integers(0, len(inputs) - 1))] = draw(st.integers(-2, len(graph.tensors) + 1))
            op.inputs = inputs
        elif field == 3 and tensor.quantization is not None and tensor.quantization.scale is not None:
            scales = list(tensor.quantization.scale)
            tensor.quantization.scale = draw(
                st.one_of(
                    st.just(scales[: draw(st.integers(0, 2))]),
                    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3),
                )
            )
        elif field == 4 and tensor.quantization is not None:
            tensor.quantization.quantizedDimension = draw(st.integers(-2, 5))
        elif field == 5:
            tensor.type = draw(st.integers(0, 22))
        elif field == 6:
            op.opcodeIndex = draw(st.integers(0, len(model.operatorCodes)))
        elif field == 7:
            op.outputs = [draw(st.integers(-1, len(graph.tensors)))]
        elif field == 8 and tensor.shape is not None:
            shape = list(tensor.shape)
            tensor.shape = shape + [draw(st.integers(1, 3))] if draw(st.booleans()) else shape[:-1]
        elif field == 9:
            code = model.operatorCodes[draw(st.integers(0, len(model.operatorCodes) - 1))]
            code.builtinCode = code.deprecatedBuiltinCode = draw(st.integers(0, 127))
        elif field == 10:
            graph.inputs = [draw(st.integers(-1, len(graph.tensors)))]
    try:
        return serialize(model)
    except Exception:  # a value the flatbuffer cannot even hold (the writer's limit, not the reader's)
        assume(False)
        raise


@examples("tflite_golden_bytes")
@given(data=st.data())
def test_tflite_golden_bytes(tflite_seeds, scratch, data):
    _golden(_put(scratch, "golden.tflite", data.draw(corpus(tflite_seeds))))


@examples("tflite_golden_structure")
@given(data=st.data())
def test_tflite_golden_structure(tflite_seeds, scratch, data):
    _golden(_put(scratch, "golden-edit.tflite", data.draw(edited_tflite(tflite_seeds))))


@pytest.fixture(scope="module")
def litert_server(tflite_seeds, scratch):
    server = ChildServer("litert", _put(scratch, "litert-seed.tflite", tflite_seeds[0]))
    yield server
    server.close()


@pytest.fixture(scope="module")
def tflm_server(tflite_seeds, scratch):
    server = ChildServer("tflm", _put(scratch, "tflm-seed.tflite", tflite_seeds[0]))
    yield server
    server.close()


@pytest.mark.slow  # forked children per example: the fast set keeps the in-process readers
@examples("tflite_litert_bytes")
@given(data=st.data())
def test_tflite_litert_bytes(tflite_seeds, scratch, litert_server, data):
    path = _put(scratch, "litert.tflite", data.draw(corpus(tflite_seeds)))
    litert_server.read(path)


@pytest.mark.slow  # forked children per example: the fast set keeps the in-process readers
@examples("tflite_litert_structure")
@given(data=st.data())
def test_tflite_litert_structure(tflite_seeds, scratch, litert_server, data):
    path = _put(scratch, "litert-edit.tflite", data.draw(edited_tflite(tflite_seeds)))
    litert_server.read(path)


@pytest.mark.slow  # forked children per example
@examples("tflite_tflm_bytes")
@given(data=st.data())
def test_tflite_tflm_bytes(tflite_seeds, scratch, tflm_server, data):
    path = _put(scratch, "tflm.tflite", data.draw(corpus(tflite_seeds)))
    tflm_server.read(path)


@pytest.mark.slow  # forked children per example
@examples("tflite_tflm_structure")
@given(data=st.data())
def test_tflite_tflm_structure(tflite_seeds, scratch, tflm_server, data):
    path = _put(scratch, "tflm-edit.tflite", data.draw(edited_tflite(tflite_seeds)))
    tflm_server.read(path)


@pytest.mark.slow  # Vela is a subprocess per example: a few seconds each
@examples("tflite_vela_structure")
@given(data=st.data())
def test_tflite_vela_structure(tflite_seeds, scratch, data):
    from sdk.boards import get_board
    from targets.ethosu.vela import compile_vela

    path = _put(scratch, "vela-edit.tflite", data.draw(edited_tflite(tflite_seeds)))
    out = scratch / "vela-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    in_child(lambda: compile_vela(path, get_board("ethos-u55-128"), out))


# ---------------------------------------------------------------------------------------------------------------------
# Data sets: .npz archives and idx files


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ_SEEDS = [
    _npz_bytes(x=np.random.default_rng(0).integers(0, 256, (40, 6, 6)).astype(np.uint8), y=np.arange(40) % 4),
    _npz_bytes(x=np.random.default_rng(1).random((30, 1, 4, 4)).astype(np.float32), y=np.arange(30) % 3),
    _npz_bytes(x=np.zeros((20, 12), np.uint8), y=np.arange(20) % 2, labels=np.array(["a", "b"])),
]


@examples("npz_bytes")
@given(data=st.data())
def test_npz_bytes(scratch, data):
    path = _put(scratch, "fuzz.npz", data.draw(corpus(NPZ_SEEDS)))
    sdk_error_or_success(lambda: load_npz(path))
    sdk_error_or_success(lambda: load_samples(str(path)))


DTYPES = st.sampled_from(
    [np.uint8, np.int8, np.int64, np.uint64, np.float16, np.float32, np.float64, np.bool_, np.complex64, "U3", "S2"]
)


@examples("npz_arrays")
@given(
    x_shape=st.lists(st.integers(0, 6), min_size=0, max_size=5),
    x_dtype=DTYPES,
    y_len=st.integers(0, 40),
    y_dtype=DTYPES,
    fill=st.sampled_from([0, 1, -1, 0.5, 255, 256, float("nan"), float("inf")]),
    classes=st.integers(1, 12),
    labels=st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=4)),
)
def test_npz_arrays(scratch, x_shape, x_dtype, y_len, y_dtype, fill, classes, labels):
    """Drawn arrays of any shape and type: load_dataset splits them or says why not."""
    try:
        with np.errstate(all="ignore"):
            x = np.full(x_shape, fill).astype(x_dtype)
            y = (np.arange(y_len) % classes).astype(y_dtype)
    except (TypeError, ValueError, OverflowError):
        assume(False)  # numpy itself refuses to build these arrays
    arrays = {"x": x, "y": y} | ({"labels": np.array(labels, dtype=str)} if labels is not None else {})
    path = _put(scratch, "arrays.npz", _npz_bytes(**arrays))
    sdk_error_or_success(lambda: load_dataset(str(path)))


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()


IDX_SEEDS = [_idx(np.zeros((5, 3, 3), np.uint8)), _idx(np.arange(5, dtype=np.uint8))]


@examples("idx_bytes")
@given(data=st.data(), gz=st.booleans())
def test_idx_bytes(scratch, data, gz):
    import gzip

    raw = data.draw(corpus(IDX_SEEDS))
    payload = data.draw(st.sampled_from([gzip.compress(raw), gzip.compress(raw)[:-5], raw])) if gz else raw
    path = _put(scratch, "fuzz-images-idx3-ubyte" + (".gz" if gz else ""), payload)
    sdk_error_or_success(lambda: _read_idx(path))
    sdk_error_or_success(lambda: _read_idx(path, ndim=3))


# ---------------------------------------------------------------------------------------------------------------------
# Board files, model cards, package manifests


@pytest.fixture(scope="module")
def parts():
    return load_parts()


BOARD_SEEDS = [path.read_bytes() for path in BOARD_FILES]


@examples("board_yaml")
@given(data=st.data())
def test_board_yaml_bytes(scratch, parts, data):
    path = _put(scratch, "fuzzboard.yaml", data.draw(corpus(BOARD_SEEDS)))
    sdk_error_or_success(lambda: parse_board(path, parts))


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


@examples("board_text")
@given(data=st.data(), seed=st.sampled_from(BOARD_FILES))
def test_board_fields(scratch, parts, data, seed):
    """A real board with one field's value replaced by any YAML value (as JSON, which YAML reads)."""
    lines = seed.read_text().splitlines()
    keyed = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")]
    at = data.draw(st.sampled_from(keyed))
    key = lines[at].split(":")[0]
    lines[at] = f"{key}: {json.dumps(data.draw(YAML_VALUES))}"
    path = _put(scratch, seed.name, "\n".join(lines).encode())
    sdk_error_or_success(lambda: parse_board(path, parts))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)


def _edit_json(data, document: object) -> object:
    """Replace one value somewhere in a JSON document by a drawn one (or the whole document)."""
    if not isinstance(document, dict | list) or not document or data.draw(st.integers(0, 4)) == 0:
        return data.draw(JSON_VALUES)
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = data.draw(st.sampled_from(keys))
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[key] = _edit_json(data, document[key])
    return copy


@examples("card_json")
@given(data=st.data())
def test_model_card(tfc_export, scratch, data):
    card = tfc_export.with_suffix(".json").read_bytes()
    if data.draw(st.booleans()):
        payload = data.draw(corpus([card]))
    else:
        payload = json.dumps(_edit_json(data, json.loads(card))).encode()
    _put(scratch, "card.json", payload)
    sdk_error_or_success(lambda: read_card(scratch / "card.onnx"))


@pytest.fixture(scope="module")
def package(tmp_path_factory, tfc_export) -> Path:
    """A package the builder wrote (the shape of a deploy's, without a deploy)."""
    folder = tmp_path_factory.mktemp("pkg") / "tflite"
    with PackageBuilder(folder) as pkg:
        pkg.add_file("model.qonnx.onnx", tfc_export)
        pkg.write_json("model.qonnx.json", json.loads(tfc_export.with_suffix(".json").read_text()))
        pkg.write_text("model.tflite", "artifact")
        pkg.commit({"flow": "tflite", "board": {"name": "tflite"}})
    return folder


def _read_manifest() -> Callable[[Path], dict]:
    """sdk.simulation's manifest reading (sdk.simulate before its rename)."""
    for name in ("sdk.simulation", "sdk.simulate"):
        with contextlib.suppress(ModuleNotFoundError):
            return importlib.import_module(name)._manifest
    raise AssertionError("no simulation module")


@examples("manifest")
@given(data=st.data())
def test_manifest(package, data):
    manifest_path = package / "manifest.json"
    original = manifest_path.read_bytes()
    read = _read_manifest()
    if data.draw(st.booleans()):
        payload = data.draw(corpus([original]))
    else:
        payload = json.dumps(_edit_json(data, json.loads(original))).encode()
    try:
        manifest_path.write_bytes(payload)
        sdk_error_or_success(lambda: read(package))
        sdk_error_or_success(lambda: verify_package(package))
    finally:
        manifest_path.write_bytes(original)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints (torch's zip reader runs in a child)

CHECKPOINT = (FIXTURE_RUN / "checkpoint.pt").read_bytes()


@pytest.fixture(scope="module")
def checkpoint_server():
    server = ChildServer("checkpoint", FIXTURE_RUN)
    yield server
    server.close()


@pytest.mark.slow  # forked children per example: the fast set keeps the in-process readers
@examples("checkpoint_bytes")
@given(data=st.data())
def test_checkpoint_bytes(scratch, checkpoint_server, data):
    run = scratch / "run-bytes"
    run.mkdir(exist_ok=True)
    _put(run, "checkpoint.pt", data.draw(corpus([CHECKPOINT])))
    checkpoint_server.read(run)


CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)


@examples("checkpoint_payload")
@given(data=st.data())
def test_checkpoint_payload(scratch, data):
    """The committed checkpoint with drawn values in its config and fields (saved by torch, loaded weights-only)."""
    payload = torch.load(FIXTURE_RUN / "checkpoint.pt", weights_only=True)
    payload["config"] = dict(payload["config"])
    for _ in range(data.draw(st.integers(1, 3))):
        if isinstance(payload["config"], dict) and data.draw(st.booleans()):
            key = data.draw(st.sampled_from([*payload["config"], "unknown"]))
            payload["config"][key] = data.draw(CONFIG_VALUES)
        else:
            key = data.draw(st.sampled_from(["input_shape", "labels", "format", "config", "state_dict"]))
            payload[key] = data.draw(st.one_of(CONFIG_VALUES, st.lists(st.integers(-3, 70), max_size=4)))
    run = scratch / "run-payload"
    run.mkdir(exist_ok=True)
    torch.save(payload, run / "checkpoint.pt")
    sdk_error_or_success(lambda: load_checkpoint(run))


# ---------------------------------------------------------------------------------------------------------------------
# CLI option values: odd numbers stop at validation (or at a missing file), never in the middle of long work

ODD_NUMBERS = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "0", "-0", "-1", "1e308", "-1e308", "1e-320", "0x10", "1_0", ""]),
    st.sampled_from([" 5", "5 ", "٣", "1e999", "9" * 40, "-9" * 20, "True", "none"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def _cli(args: list[str], out: Path) -> None:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    text = result.stdout + result.stderr
    assert result.exit_code == 2, text
    assert "Traceback" not in text and "InternalError" not in text, text
    assert not out.exists()


@examples("cli_train")
@given(
    options=st.dictionaries(
        st.sampled_from(["--epochs", "--batch-size", "--lr", "--seed", "--image-size"]), ODD_NUMBERS, min_size=1
    )
)
def test_cli_train_numbers(scratch, options):
    out = scratch / "train-out"
    flat = [part for item in options.items() for part in item]
    _cli(["train", "tfc", *flat, "--dataset", str(scratch / "absent" / "data.npz"), "--out", str(out)], out)


@pytest.mark.slow  # 500 CLI invocations
@examples("cli_deploy")
@given(
    options=st.dictionaries(st.sampled_from(["--fps", "--max-util", "--clock-mhz", "--samples"]), ODD_NUMBERS),
    target=st.sampled_from(["pynq-z2", "tflite", "pynq-z2,tflite", "ethos-u55-128:tflm"]),
)
def test_cli_deploy_numbers(scratch, options, target):
    out = scratch / "deploy-out"
    flat = [part for item in options.items() for part in item]
    model = str(scratch / "absent" / "model.onnx")
    _cli(["deploy", "--target", target, "--model", model, *flat, "--out", str(out)], out)
