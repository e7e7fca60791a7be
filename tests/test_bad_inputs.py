"""Bad inputs, as a user gives them: every one exits 2 with one clear message, no traceback, and writes nothing.

One table of cases across `sdk train`, `sdk export`, `sdk check`, `sdk simulate` and `sdk boards`, run
in-process with click's CliRunner and --json (the error is then one JSON document on stdout, its fields
checked); click's own usage errors (a word where a number goes) are checked on stderr. The folder a case
works in is snapshot before and after: nothing may be created, changed or left behind. No case trains or
deploys: each fails before the long work. Then the ONNX guard (sdk/onnx_guard.py) on crafted graphs, the
hardened finishing script of the FPGA flow, and a planted module that a graph must never get imported.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from sdk.boards import get_board
from sdk.cli import main
from sdk.errors import ExportError
from sdk.onnx_guard import KNOWN_DOMAINS, is_known_domain, load_onnx_safely
from sdk.package import PackageBuilder
from targets.finn import hardware

FIXTURE_RUN = Path(__file__).resolve().parent / "fixtures" / "tfc_w2a2_digits"
PYNQ_Z2 = (Path(__file__).resolve().parent.parent / "boards" / "pynq-z2.yaml").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# Building bad files


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`, with a hash of each file's bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _good_xy(n: int = 60, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 256, (n, 8, 8)).astype(np.uint8), "y": np.arange(n) % classes}


def _lying_npz(path: Path) -> Path:
    """A well-formed zip whose x.npy header declares a shape far larger than the data in the archive."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + b"\0" * 64)
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(3, np.int64))
        zf.writestr("y.npy", buffer.getvalue())
    return path


def _idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    header = magic or bytes([0, 0, 0x08, array.ndim])
    return header + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.astype(np.uint8).tobytes()


def _idx_folder(folder: Path, images: dict[str, bytes] | None = None, labels: dict[str, bytes] | None = None) -> Path:
    """An MNIST-format folder of 3 classes; `images` / `labels` replace a file's bytes (prefix -> bytes, b"" drops)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        files = {
            f"{prefix}-images-idx3-ubyte.gz": (images or {}).get(prefix, _idx_bytes(rng.integers(0, 256, (n, 6, 6)))),
            f"{prefix}-labels-idx1-ubyte.gz": (labels or {}).get(prefix, _idx_bytes(np.arange(n) % 3)),
        }
        for name, data in files.items():
            if data:
                (folder / name).write_bytes(gzip.compress(data))
    return folder


def _checkpoint(folder: Path, change: Callable[[dict], None] | None = None, raw: bytes | None = None) -> Path:
    """A run folder from the committed fixture, its checkpoint changed (or replaced by raw bytes)."""
    folder.mkdir()
    shutil.copyfile(FIXTURE_RUN / "metrics.json", folder / "metrics.json")
    if raw is not None:
        (folder / "checkpoint.pt").write_bytes(raw)
        return folder
    payload = torch.load(FIXTURE_RUN / "checkpoint.pt", weights_only=True)
    payload["config"] = dict(payload["config"])
    if change:
        change(payload)
    torch.save(payload, folder / "checkpoint.pt")
    return folder


def _run_copy(folder: Path) -> Path:
    shutil.copytree(FIXTURE_RUN, folder)
    return folder


def _package(folder: Path, manifest: bytes | None, card: bytes | None = b"{}") -> Path:
    folder.mkdir()
    if manifest is not None:
        (folder / "manifest.json").write_bytes(manifest)
    if card is not None:
        (folder / "model.qonnx.json").write_bytes(card)
    return folder


def _board_folder(folder: Path, text: str | bytes, name: str = "myboard.yaml") -> Path:
    folder.mkdir()
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return folder


def _board_text(**changes: str) -> str:
    """pynq-z2's file as a new board, with lines replaced (key -> whole new line, "" drops the line)."""
    lines = []
    for line in PYNQ_Z2.replace("name: pynq-z2", "name: my-board").splitlines():
        key = line.split(":")[0].strip()
        lines.append(changes.pop(key) if key in changes else line)
    return "\n".join([*(line for line in lines if line), *changes.values()]) + "\n"


def _onnx_beside_card(tmp: Path, export: Path, data: bytes) -> Path:
    model = tmp / "model.onnx"
    model.write_bytes(data)
    shutil.copyfile(export.with_suffix(".json"), model.with_suffix(".json"))
    return model


def _graph(domain: str = "", nodes: int = 1, inputs: bool = True, outputs: bool = True) -> onnx.ModelProto:
    """A small valid graph: y = Relu(x), its node in `domain`."""
    node_list = [helper.make_node("Relu", ["x"], ["y"], domain=domain, name="relu")][:nodes]
    graph = helper.make_graph(
        node_list,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])] if inputs else [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])] if outputs else [],
    )
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


# ---------------------------------------------------------------------------------------------------------------------
# The table


@dataclass
class Ctx:
    """What a case builds its arguments from: a fresh folder, and (where asked for) the session's export."""

    tmp: Path
    export: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def out(self) -> str:
        return str(self.tmp / "out")


@dataclass
class Case:
    id: str
    make: Callable[[Ctx], list[str]]
    expect: str  # a fragment of the message (what, where or fix)
    error: str | None  # the SDKError class; None: click's own usage error (a word where a number goes)
    needs_export: bool = False
    marks: tuple = ()


def train(*extra: str, dataset: Callable[[Ctx], str] | None = None) -> Callable[[Ctx], list[str]]:
    def make(ctx: Ctx) -> list[str]:
        data = ["--dataset", dataset(ctx)] if dataset else []
        return ["train", "tfc", "--epochs", "1", *data, *extra, "--out", ctx.out]

    return make


def train_out(out: Callable[[Ctx], str]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["train", "tfc", "--epochs", "1", "--out", out(ctx)]


def npz(**arrays) -> Callable[[Ctx], str]:
    return lambda ctx: str(_npz(ctx.tmp / "data.npz", **arrays))


def npz_bytes(make: Callable[[], bytes]) -> Callable[[Ctx], str]:
    def build(ctx: Ctx) -> str:
        path = ctx.tmp / "data.npz"
        path.write_bytes(make())
        return str(path)

    return build


def _npz_payload(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def idx(**kwargs) -> Callable[[Ctx], str]:
    return lambda ctx: str(_idx_folder(ctx.tmp / "idx", **kwargs))


def export(make_run: Callable[[Path], Path], out: Callable[[Ctx], str] | None = None) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["export", str(make_run(ctx.tmp / "run")), "--out", out(ctx) if out else ctx.out + ".onnx"]


def check(target: str, model: Callable[[Ctx], str]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["check", "--target", target, "--model", model(ctx)]


def check_onnx(data: Callable[[Ctx], bytes]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: [
        "check",
        "--target",
        "pynq-z2",
        "--model",
        str(_onnx_beside_card(ctx.tmp, ctx.export, data(ctx))),
    ]


def simulate(manifest: bytes | None, card: bytes | None = b"{}", *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["simulate", str(_package(ctx.tmp / "pkg", manifest, card)), *extra]


def boards(text: str | bytes, name: str = "myboard.yaml") -> Callable[[Ctx], list[str]]:
    def make(ctx: Ctx) -> list[str]:
        ctx.env["SDK_BOARDS_PATH"] = str(_board_folder(ctx.tmp / "boards", text, name))
        return ["boards"]

    return make


def _read_only_out(ctx: Ctx) -> str:
    """A folder the process cannot write in: a chmod 555 folder, or /sys for root (whom chmod does not stop)."""
    if os.geteuid() == 0:
        if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and _writable("/sys"):
            pytest.skip("no read-only folder for root here")
        return "/sys/sdk-bad-input-run"
    folder = ctx.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "run")


def _writable(folder: str) -> bool:
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder))
        return True
    except OSError:
        return False


def _existing_file(ctx: Ctx) -> str:
    path = ctx.tmp / "taken"
    path.write_text("keep me")
    return str(path)


def _graph_bytes(**kwargs) -> Callable[[Ctx], bytes]:
    return lambda ctx: _graph(**kwargs).SerializeToString()


def _truncated_export(ctx: Ctx) -> bytes:
    return ctx.export.read_bytes()[: len(ctx.export.read_bytes()) // 2]


_OK = np.arange(60) % 3
CASES: list[Case] = [
    # --- sdk train: option values ---------------------------------------------------------------------------------
    Case("train-seed-negative", train("--seed", "-1"), "seed", "ConfigError"),
    Case("train-seed-2**32", train("--seed", str(2**32)), "seed", "ConfigError"),
    Case("train-seed-word", train("--seed", "abc"), "'abc' is not a valid integer", None),
    Case("train-image-size-0", train("--image-size", "0"), "image size", "ConfigError"),
    Case("train-image-size-negative", train("--image-size", "-3"), "image size", "ConfigError"),
    Case("train-image-size-absurd", train("--image-size", "100000"), "image size", "ConfigError"),
    Case("train-epochs-0", train("--epochs", "0"), "--epochs", "ConfigError"),
    Case("train-epochs-negative", train("--epochs", "-5"), "--epochs", "ConfigError"),
    Case("train-epochs-absurd", train("--epochs", str(10**9)), "--epochs", "ConfigError"),
    Case("train-epochs-fraction", train("--epochs", "1.5"), "'1.5' is not a valid integer", None),
    Case("train-batch-0", train("--batch-size", "0"), "--batch-size", "ConfigError"),
    Case("train-batch-1", train("--batch-size", "1"), "--batch-size", "ConfigError"),
    Case("train-batch-absurd", train("--batch-size", str(10**12)), "--batch-size", "ConfigError"),
    Case("train-lr-nan", train("--lr", "nan"), "--lr", "ConfigError"),
    Case("train-lr-inf", train("--lr", "inf"), "--lr", "ConfigError"),
    Case("train-lr-minus-inf", train("--lr", "-inf"), "--lr", "ConfigError"),
    Case("train-lr-0", train("--lr", "0"), "--lr", "ConfigError"),
    Case("train-lr-negative", train("--lr", "-0.1"), "--lr", "ConfigError"),
    Case("train-lr-word", train("--lr", "fast"), "'fast' is not a valid float", None),
    Case("train-bits-out-of-range", train("--bits", "w2a12"), "out of range", "ConfigError"),
    Case("train-bits-empty", train("--bits", ""), "--bits", "ConfigError"),
    Case("train-layer-bits-unknown-layer", train("--layer-bits", "fc9=w4"), "fc9", "ConfigError"),
    Case("train-layer-bits-garbage", train("--layer-bits", "garbage"), "layer override", "ConfigError"),
    Case("train-unknown-model", lambda ctx: ["train", "alexnet", "--out", ctx.out], "Unknown model", "ConfigError"),
    Case(
        "train-dataset-missing",
        train(dataset=lambda ctx: str(ctx.tmp / "missing.npz")),
        "does not exist",
        "DatasetError",
    ),
    Case("train-dataset-unknown", train(dataset=lambda ctx: "cifar-10"), "Unknown data set", "DatasetError"),
    Case("train-dataset-empty-name", train(dataset=lambda ctx: ""), "--dataset", "ConfigError"),
    # --- sdk train: --out ------------------------------------------------------------------------------------------
    Case("train-out-existing-file", train_out(_existing_file), "not a folder", "ConfigError"),
    Case("train-out-below-a-file", train_out(lambda ctx: _existing_file(ctx) + "/run"), "is a file", "ConfigError"),
    Case("train-out-read-only", train_out(_read_only_out), "cannot be written", "ConfigError"),
    Case("train-out-name-too-long", train_out(lambda ctx: str(ctx.tmp / ("r" * 300))), "--out", "ConfigError"),
    # --- sdk train: .npz data sets ---------------------------------------------------------------------------------
    Case("npz-empty-file", train(dataset=npz_bytes(lambda: b"")), "empty", "DatasetError"),
    Case("npz-random-bytes", train(dataset=npz_bytes(lambda: os.urandom(2000))), "as .npz", "DatasetError"),
    Case(
        "npz-truncated",
        train(dataset=npz_bytes(lambda: _npz_payload(**_good_xy())[:1500])),
        "npz",
        "DatasetError",
    ),
    Case(
        "npz-object-array",
        train(dataset=npz(x=np.array([object()] * 60), y=_OK)),
        "Python objects",
        "DatasetError",
    ),
    Case(
        "npz-lying-header", train(dataset=lambda ctx: str(_lying_npz(ctx.tmp / "data.npz"))), "declares", "DatasetError"
    ),
    Case(
        "npz-no-samples",
        train(dataset=npz(x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, int))),
        "no samples",
        "DatasetError",
    ),
    Case("npz-x-y-lengths", train(dataset=npz(x=_good_xy()["x"], y=_OK[:50])), "do not fit", "DatasetError"),
    Case("npz-y-2d", train(dataset=npz(x=_good_xy()["x"], y=_OK.reshape(30, 2))), "do not fit", "DatasetError"),
    Case("npz-no-y", train(dataset=npz(x=_good_xy()["x"])), "no array 'y'", "DatasetError"),
    Case("npz-no-x", train(dataset=npz(images=_good_xy()["x"], y=_OK)), "no array 'x'", "DatasetError"),
    Case("npz-negative-labels", train(dataset=npz(x=_good_xy()["x"], y=_OK - 1)), "class indices", "DatasetError"),
    Case("npz-float-labels", train(dataset=npz(x=_good_xy()["x"], y=_OK + 0.5)), "integers", "DatasetError"),
    Case("npz-nan-pixels", train(dataset=npz(x=np.full((60, 8, 8), np.nan), y=_OK)), "NaN", "DatasetError"),
    Case("npz-inf-pixels", train(dataset=npz(x=np.full((60, 8, 8), np.inf), y=_OK)), "infinite", "DatasetError"),
    Case("npz-floats-above-1", train(dataset=npz(x=np.full((60, 8, 8), 3.0), y=_OK)), "[0, 1]", "DatasetError"),
    Case("npz-int64-pixels", train(dataset=npz(x=np.zeros((60, 8, 8), np.int64), y=_OK)), "uint8", "DatasetError"),
    Case("npz-string-pixels", train(dataset=npz(x=np.full((60, 8, 8), "a"), y=_OK)), "uint8", "DatasetError"),
    Case("npz-5d-x", train(dataset=npz(x=np.zeros((60, 1, 1, 8, 8), np.uint8), y=_OK)), "shape", "DatasetError"),
    Case("npz-single-class", train(dataset=npz(x=_good_xy()["x"], y=np.zeros(60, int))), "one class", "DatasetError"),
    Case(
        "npz-one-sample-per-class",
        train(dataset=npz(x=_good_xy(n=5)["x"], y=np.arange(5))),
        "single sample",
        "DatasetError",
    ),
    Case(
        "npz-too-few-for-the-splits",
        train(dataset=npz(x=_good_xy(n=20)["x"], y=np.arange(20) % 10)),
        "cannot be split",
        "DatasetError",
    ),
    Case(
        "npz-labels-2d",
        train(dataset=npz(**_good_xy(), labels=np.array([["a", "b", "c"]]))),
        "labels",
        "DatasetError",
    ),
    # --- sdk train: MNIST idx folders ------------------------------------------------------------------------------
    Case(
        "idx-bad-magic", train(dataset=idx(images={"train": b"\x01\x02\x03\x04" + b"\0" * 40})), "magic", "DatasetError"
    ),
    Case(
        "idx-truncated",
        train(dataset=idx(images={"train": _idx_bytes(np.zeros((60, 6, 6)))[:-10]})),
        "truncated",
        "DatasetError",
    ),
    Case(
        "idx-images-header-1d",
        train(dataset=idx(images={"train": _idx_bytes(np.zeros(60))})),
        "dimension",
        "DatasetError",
    ),
    Case(
        "idx-header-cut-short",
        train(dataset=idx(images={"train": bytes([0, 0, 8, 3, 0, 0])})),
        "cut short",
        "DatasetError",
    ),
    Case(
        "idx-zero-samples",
        train(dataset=idx(images={"train": _idx_bytes(np.zeros((0, 6, 6)))})),
        "no samples",
        "DatasetError",
    ),
    Case("idx-missing-labels", train(dataset=idx(labels={"train": b""})), "labels idx file", "DatasetError"),
    Case(
        "idx-count-mismatch",
        train(dataset=idx(labels={"train": _idx_bytes(np.arange(50) % 3)})),
        "do not match",
        "DatasetError",
    ),
    Case(
        "idx-single-class",
        train(dataset=idx(labels={"train": _idx_bytes(np.zeros(60)), "t10k": _idx_bytes(np.zeros(20))})),
        "one class",
        "DatasetError",
    ),
    Case(
        "idx-corrupt-gzip",
        lambda ctx: [
            "train",
            "tfc",
            "--dataset",
            str(_corrupt_gzip(_idx_folder(ctx.tmp / "idx"))),
            "--out",
            ctx.out,
        ],
        "Cannot read idx file",
        "DatasetError",
    ),
    # --- sdk export: run folders and checkpoints ---------------------------------------------------------------------
    Case(
        "export-no-run",
        lambda ctx: ["export", str(ctx.tmp / "nowhere"), "--out", ctx.out + ".onnx"],
        "No checkpoint",
        "CheckpointError",
    ),
    Case("export-empty-run", export(lambda p: (p.mkdir(), p)[1]), "No checkpoint", "CheckpointError"),
    Case("export-checkpoint-0-bytes", export(lambda p: _checkpoint(p, raw=b"")), "empty", "CheckpointError"),
    Case(
        "export-checkpoint-garbage",
        export(lambda p: _checkpoint(p, raw=b"\0garbage")),
        "cannot be read",
        "CheckpointError",
    ),
    Case(
        "export-checkpoint-truncated",
        export(lambda p: _checkpoint(p, raw=(FIXTURE_RUN / "checkpoint.pt").read_bytes()[:5000])),
        "cannot be read",
        "CheckpointError",
    ),
    Case(
        "export-checkpoint-foreign",
        export(lambda p: (p.mkdir(), torch.save({"weights": torch.zeros(3)}, p / "checkpoint.pt"), p)[2]),
        "not an SDK checkpoint",
        "CheckpointError",
    ),
    Case("export-no-config", export(lambda p: _checkpoint(p, lambda c: c.pop("config"))), "config", "CheckpointError"),
    Case(
        "export-unknown-config-key",
        export(lambda p: _checkpoint(p, lambda c: c["config"].update(colour="red"))),
        "colour",
        "CheckpointError",
    ),
    Case(
        "export-config-bad-seed",
        export(lambda p: _checkpoint(p, lambda c: c["config"].update(seed=-4))),
        "seed",
        "CheckpointError",
    ),
    Case(
        "export-config-bad-model",
        export(lambda p: _checkpoint(p, lambda c: c["config"].update(model=["tfc"]))),
        "MODEL",
        "CheckpointError",
    ),
    Case(
        "export-weights-do-not-fit",
        export(lambda p: _checkpoint(p, lambda c: c.update(input_shape=[1, 16, 16]))),
        "do not fit",
        "CheckpointError",
    ),
    Case(
        "export-bad-input-shape",
        export(lambda p: _checkpoint(p, lambda c: c.update(input_shape="8x8"))),
        "input_shape",
        "CheckpointError",
    ),
    Case(
        "export-metrics-corrupt",
        export(lambda p: (_run_copy(p), (p / "metrics.json").write_text("{oops"), p)[2]),
        "metrics.json",
        "CheckpointError",
    ),
    Case(
        "export-metrics-not-an-object",
        export(lambda p: (_run_copy(p), (p / "metrics.json").write_text("[1, 2]"), p)[2]),
        "metrics.json",
        "CheckpointError",
    ),
    Case(
        "export-out-below-a-file",
        export(_run_copy, out=lambda ctx: _existing_file(ctx) + "/model.onnx"),
        "--out",
        "ConfigError",
        marks=(),
    ),
    # --- sdk check ---------------------------------------------------------------------------------------------------
    Case("check-unknown-board", check("pynq-z3", lambda ctx: str(ctx.export)), "Unknown board", "BoardError", True),
    Case("check-empty-target", check("", lambda ctx: str(ctx.export)), "board", "BoardError", True),
    Case("check-wrong-flow", check("pynq-z2:tflm", lambda ctx: str(ctx.export)), "does not serve", "ConfigError", True),
    Case(
        "check-model-missing",
        check("pynq-z2", lambda ctx: str(ctx.tmp / "none.onnx")),
        "does not exist",
        "CheckpointError",
    ),
    Case(
        "check-folder-not-a-run",
        check("pynq-z2", lambda ctx: str((ctx.tmp / "empty").mkdir() or ctx.tmp / "empty")),
        "not a training run",
        "CheckpointError",
    ),
    Case(
        "check-card-corrupt",
        lambda ctx: [
            "check",
            "--target",
            "pynq-z2",
            "--model",
            str(_with_card(_onnx_beside_card(ctx.tmp, ctx.export, ctx.export.read_bytes()), b"{not json")),
        ],
        "not valid JSON",
        "ExportError",
        True,
    ),
    Case("check-onnx-random", check_onnx(lambda ctx: os.urandom(3000)), "model.onnx", "ExportError", True, ()),
    Case("check-onnx-empty", check_onnx(lambda ctx: b""), "empty", "ExportError", True, ()),
    Case("check-onnx-truncated", check_onnx(_truncated_export), "model.onnx", "ExportError", True, ()),
    Case(
        "check-onnx-foreign-domain",
        check_onnx(_graph_bytes(domain="mymodule")),
        "mymodule",
        "ExportError",
        True,
        (),
    ),
    Case("check-onnx-no-nodes", check_onnx(_graph_bytes(nodes=0)), "no nodes", "ExportError", True, ()),
    # --- sdk simulate ------------------------------------------------------------------------------------------------
    Case("simulate-no-package", lambda ctx: ["simulate", str(ctx.tmp / "nowhere")], "does not exist", "PackageError"),
    Case("simulate-no-manifest", simulate(None), "manifest", "PackageError"),
    Case("simulate-manifest-corrupt", simulate(b"{oops"), "manifest", "PackageError"),
    Case("simulate-manifest-not-utf8", simulate(b"\xff\xfe\x00"), "manifest", "PackageError"),
    Case("simulate-manifest-unknown-flow", simulate(b'{"flow": "gpu", "board": {}}'), "manifest", "PackageError"),
    Case("simulate-manifest-flow-a-list", simulate(b'{"flow": [], "board": {}}'), "manifest", "PackageError"),
    # --- sdk boards: the user's board files (SDK_BOARDS_PATH) --------------------------------------------------------
    Case("boards-unknown-name", lambda ctx: ["boards", "pynq-z3"], "Unknown board", "BoardError"),
    Case(
        "boards-path-missing",
        lambda ctx: (ctx.env.update(SDK_BOARDS_PATH=str(ctx.tmp / "nowhere")), ["boards"])[1],
        "does not exist",
        "BoardError",
    ),
    Case("boards-bad-yaml", boards("name: x\nkind: fpga\n  chip: [\n"), "not valid YAML", "BoardError"),
    Case("boards-alias", boards("a: &x 1\nb: *x\n"), "alias", "BoardError"),
    Case("boards-duplicate-key", boards(PYNQ_Z2.replace("name: pynq-z2", "name: a\nname: b")), "twice", "BoardError"),
    Case("boards-unknown-field", boards(_board_text(colour="colour: red")), "colour", "BoardError"),
    Case("boards-missing-field", boards(_board_text(vendor="")), "vendor", "BoardError"),
    Case("boards-bad-kind", boards(_board_text(kind="kind: gpu")), "kind", "BoardError"),
    Case("boards-not-utf8", boards(b"name: \xff\xfe\n"), "UTF-8", "BoardError"),
    Case("boards-not-a-mapping", boards("- a\n- b\n"), "myboard.yaml", "BoardError"),
    Case("boards-redefines-builtin", boards(PYNQ_Z2, name="pynq-z2.yaml"), "already defined", "BoardError"),
    Case("boards-huge-file", boards("# " + "x" * (1 << 21) + "\n"), "larger than", "BoardError"),
    Case(
        "boards-folder-named-yaml",
        lambda ctx: (
            (ctx.tmp / "boards" / "dir.yaml").mkdir(parents=True),
            ctx.env.update(SDK_BOARDS_PATH=str(ctx.tmp / "boards")),
            ["boards"],
        )[2],
        "folder",
        "BoardError",
    ),
]


def _corrupt_gzip(folder: Path) -> Path:
    path = folder / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[20:40] = b"\xff" * 20
    path.write_bytes(bytes(data))
    return folder


def _with_card(model: Path, card: bytes) -> Path:
    model.with_suffix(".json").write_bytes(card)
    return model


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    groups = {c.id.split("-")[0] for c in CASES}
    assert groups >= {"train", "npz", "idx", "export", "check", "simulate", "boards"}


def _invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(main, args, env=env or None, catch_exceptions=False)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_exits_2_with_one_message_and_writes_nothing(case: Case, tmp_path, request):
    ctx = Ctx(tmp_path, request.getfixturevalue("tfc_export") if case.needs_export else None)
    args = case.make(ctx)
    before = _snapshot(tmp_path)
    result = _invoke([*args, "--json"], ctx.env)
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.exit_code == 2, text
    if case.error is None:  # click's usage error: one "Error:" line on stderr
        assert result.stderr.count("Error:") == 1 and case.expect in result.stderr, result.stderr
    else:
        payload = json.loads(result.stdout)  # one JSON document, nothing else on stdout
        assert payload["error"] == case.error and payload["exit_code"] == 2, payload
        assert payload["what"] and payload["where"] and payload["fix"], payload
        message = " ".join(str(payload[k]) for k in ("what", "where", "fix"))
        assert case.expect in message, payload
        assert "/tmp/sdk-" not in message, payload  # names what the user gave, never a temporary copy
    assert _snapshot(tmp_path) == before
    if Path(ctx.out).name == "out":
        assert not Path(ctx.out).exists()


def test_plain_output_is_one_panel(tmp_path):
    """Without --json: one bordered block on stderr with what, where and fix, nothing on stdout."""
    result = _invoke(["train", "tfc", "--lr", "nan", "--out", str(tmp_path / "run")], {})
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("ConfigError") == 1 and "where:" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The ONNX guard on crafted graphs


def _write(tmp_path: Path, model: onnx.ModelProto | bytes, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


@pytest.mark.parametrize(
    "model, expect",
    [
        (b"", "empty"),
        (b"\x08", "not an ONNX model"),
        (b"\xff" * 100, "not an ONNX model"),
        (_graph(nodes=0), "no nodes"),
        (_graph(inputs=False), "no inputs"),
        (_graph(outputs=False), "no outputs"),
        (helper.make_model(helper.make_graph([], "g", [], [])), "no nodes"),
        (onnx.ModelProto(ir_version=8, producer_name="x"), "no graph"),
        (_graph(domain="os"), "'os'"),
        (_graph(domain="mymodule"), "'mymodule'"),
        (_graph(domain="qonnx.custom_op.general.os"), "qonnx.custom_op.general.os"),
        (_graph(domain="finn.custom_op..fpgadataflow"), "finn.custom_op..fpgadataflow"),
        (_graph(domain="qonnx.custom_op.general/../../x"), "qonnx.custom_op.general/../../x"),
        # a domain that is not UTF-8: protobuf hands it over as bytes
        (_graph(domain="Xonnx.custom_op.general").SerializeToString().replace(b"X", b"\x80"), "x80onnx.custom_op"),
    ],
)
def test_guard_refuses(tmp_path, model, expect):
    path = _write(tmp_path, model)
    with pytest.raises(ExportError) as info:
        load_onnx_safely(path, "--model net.onnx")
    assert expect in info.value.what and info.value.where == "--model net.onnx" and info.value.fix
    assert str(path) not in info.value.render()  # named as the user gave it


def test_guard_refuses_a_subgraph_or_function_in_an_unknown_domain(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"], domain="evil")],
        "body",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    model = _graph()
    model.graph.node.append(helper.make_node("If", ["c"], ["z"], then_branch=body, else_branch=body))
    with pytest.raises(ExportError, match="'evil'"):
        load_onnx_safely(_write(tmp_path, model), "m.onnx")
    function = helper.make_function("evil.functions", "F", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])], [])
    model = _graph()
    model.functions.append(function)
    with pytest.raises(ExportError, match="evil.functions"):
        load_onnx_safely(_write(tmp_path, model), "m.onnx")


def test_guard_refuses_external_data_and_missing_paths(tmp_path):
    model = _graph()
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../etc/passwd")
    weight.ClearField("float_data")
    model.graph.initializer.append(weight)
    with pytest.raises(ExportError, match="external file"):
        load_onnx_safely(_write(tmp_path, model), "m.onnx")
    with pytest.raises(ExportError, match="does not exist"):
        load_onnx_safely(tmp_path / "absent.onnx", "--model absent.onnx")
    with pytest.raises(ExportError, match="not a file"):
        load_onnx_safely(tmp_path, "--model folder")


def test_guard_size_limit(tmp_path, monkeypatch):
    import sdk.onnx_guard as guard

    monkeypatch.setattr(guard, "MAX_BYTES", 10)
    with pytest.raises(ExportError, match="larger than 2 GiB"):
        load_onnx_safely(_write(tmp_path, _graph()), "m.onnx")


def test_guard_passes_what_the_sdk_writes(tfc_export):
    model = load_onnx_safely(tfc_export, "--model tfc.onnx")
    assert {node.domain for node in model.graph.node} <= KNOWN_DOMAINS
    assert is_known_domain("finn.custom_op.fpgadataflow.hls") and is_known_domain("onnx.brevitas")
    assert not is_known_domain("finn.custom_op.fpgadataflow.hls", finn_ops=False)
    assert is_known_domain("qonnx.custom_op.general.quant")  # an existing sub-module of a known package
    assert not is_known_domain("qonnx.custom_op.general.no_such_module") and not is_known_domain("qonnx")


def _partition(model_file: str) -> onnx.ModelProto:
    model = _graph()
    node = helper.make_node(
        "StreamingDataflowPartition", ["x"], ["z"], domain="finn.custom_op.fpgadataflow", model=model_file
    )
    model.graph.node.append(node)
    return model


def test_guard_takes_finn_ops_only_for_package_graphs(tmp_path):
    """FINN's domains are refused in a user's model and taken in a package's graphs (finn_ops=True), where a
    partition may name only a file beside the graph (FINN loads it)."""
    path = _write(tmp_path, _partition("dataflow_model.onnx"))
    with pytest.raises(ExportError, match="FINN's own ops"):
        load_onnx_safely(path, "--model m.onnx")
    assert load_onnx_safely(path, "parent.onnx", finn_ops=True).graph.node[-1].op_type == "StreamingDataflowPartition"
    for elsewhere in ("/etc/evil.onnx", "../evil.onnx", "sub/evil.onnx", ""):
        with pytest.raises(ExportError, match="names the model file"):
            load_onnx_safely(_write(tmp_path, _partition(elsewhere)), "parent.onnx", finn_ops=True)


@pytest.mark.slow
def test_guard_passes_the_graphs_finn_writes(tfc_export, tmp_path):
    """The parent and dataflow graphs of a real FINN run (up to the estimates), as a package holds them."""
    from targets.finn import steps
    from targets.finn.environment import prepare_finn
    from targets.finn.partition import relocatable_parent

    prepare_finn(tmp_path)
    cfg = steps.FinnConfig(get_board("pynq-z2"), tmp_path)
    dataflow = steps.run_steps(steps.load_qonnx(tfc_export), cfg, stop="estimate")
    dataflow.save(str(tmp_path / "dataflow_model.onnx"))
    relocatable_parent(cfg.parent, "dataflow_model.onnx").save(str(tmp_path / "parent.onnx"))
    for name in ("dataflow_model.onnx", "parent.onnx"):
        model = load_onnx_safely(tmp_path / name, name, finn_ops=True)
        assert {node.domain for node in model.graph.node} & {
            "finn.custom_op.fpgadataflow.hls",
            "finn.custom_op.fpgadataflow",
        }


PLANTED = """
import pathlib
pathlib.Path("IMPORTED").write_text("the graph made a library import me")
"""


@pytest.mark.parametrize("domain", ["mymodule", "os"])
def test_a_planted_module_is_never_imported_by_the_guard(tmp_path, domain):
    """A module named like the node's domain lies in the working folder; reading the graph must not import it.

    Run in a fresh interpreter whose working folder is first on sys.path; the control shows that qonnx itself
    does import it when asked about the domain, so the canary would catch an import."""
    (tmp_path / f"{domain}.py").write_text(PLANTED)
    _write(tmp_path, _graph(domain=domain), "evil.onnx")
    script = f"""
import sys
from sdk.errors import ExportError
from sdk.onnx_guard import load_onnx_safely
try:
    load_onnx_safely("evil.onnx", "--model evil.onnx")
except ExportError as exc:
    print("refused:", exc.what.splitlines()[0])
module = sys.modules.get({domain!r})
print("imported:", getattr(module, "__file__", "") == {str(tmp_path / domain) + ".py"!r})
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "imported: False" in proc.stdout and not (tmp_path / "IMPORTED").exists()
    if domain == "mymodule":  # the control: qonnx imports whatever the domain names
        control = "from qonnx.custom_op.registry import is_custom_op; is_custom_op('mymodule')"
        subprocess.run([sys.executable, "-c", control], cwd=tmp_path, capture_output=True, env=env, check=False)
        assert (tmp_path / "IMPORTED").exists()


@pytest.mark.slow
def test_sdk_check_never_imports_a_planted_module(tmp_path, tfc_export):
    """End to end: `sdk check` on an exported model whose first node names the domain of a planted module."""
    (tmp_path / "mymodule.py").write_text(PLANTED)
    model = onnx.load(str(tfc_export))
    model.graph.node[0].domain = "mymodule"
    model.opset_import.append(helper.make_opsetid("mymodule", 1))
    _write(tmp_path, model, "evil.onnx")
    shutil.copyfile(tfc_export.with_suffix(".json"), tmp_path / "evil.json")
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "check", "--target", "pynq-z2", "--model", "evil.onnx"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        timeout=600,
    )
    assert not (tmp_path / "IMPORTED").exists(), "the graph made a library import mymodule.py"
    assert proc.returncode == 2 and "mymodule" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------------------------
# The FPGA flow's finishing script: board values are data, never code

INJECTIONS = [
    '"""; import os; os.system("touch PWNED"); """',
    "'''; open('PWNED', 'w'); '''",
    "x\nimport os\nos.system('touch PWNED')\n",
    'a"b\'c\\d\\\\"\\n\\x00',
    "\\N{LATIN SMALL LETTER A}\\u0041 {}{0} %s %(x)s",
    "é ü 中文 \u2028 \ud800",
    "__import__('os').system('touch PWNED')",
]


def _hostile_board(text: str, shell: str = "alveo"):
    """pynq-z2 with every field that reaches the script replaced by `text` (constructed directly: the worst case)."""
    board = get_board("alveo-u250" if shell == "alveo" else "pynq-z2")
    sections = {"finn": {"board": text, "shell": shell, "platform": text if shell == "alveo" else None}}
    return replace(board, display_name=text, chip=text, sections=sections)


def _names_and_strings(tree: ast.AST) -> tuple[set[str], list[str]]:
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return names, strings


@pytest.mark.parametrize("text", INJECTIONS)
@pytest.mark.parametrize("shell", ["zynq", "alveo"])
def test_finish_script_keeps_board_values_as_data(tmp_path, text, shell):
    board = _hostile_board(text, shell)
    script = hardware.finish_script(board, 123.0)
    tree = ast.parse(script)  # compiles
    benign = ast.parse(hardware.finish_script(get_board("alveo-u250" if shell == "alveo" else "pynq-z2"), 123.0))
    names, strings = _names_and_strings(tree)
    assert names == _names_and_strings(benign)[0]  # the same code: nothing of the board became a name or a call
    assert len(strings) == len(_names_and_strings(benign)[1])  # the same literals; the board's are inside INPUTS
    inputs = json.loads(next(s for s in strings if s.startswith("{")))
    assert inputs == hardware.finish_script_inputs(board, 123.0)
    assert inputs["display_name"] == inputs["board"] == inputs["fpga_part"] == text
    assert script.isascii()
    # Run it with Vivado absent: it reads its inputs, prints them, and stops before FINN; nothing else happens.
    with PackageBuilder(tmp_path / "pkg") as pkg:  # the script checks its package first
        pkg.write_text(hardware.FINISH_SCRIPT, script)
        pkg.commit({})
    env = {k: v for k, v in os.environ.items() if not k.startswith("XILINX")}
    proc = subprocess.run(
        [sys.executable, hardware.FINISH_SCRIPT], cwd=tmp_path / "pkg", capture_output=True, env=env, timeout=60
    )
    assert proc.returncode == 1 and b"needs Vivado and Vitis HLS" in proc.stderr, proc.stderr
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == [hardware.FINISH_SCRIPT, "manifest.json"]


FAKE_FINN = {
    "finn/__init__.py": "",
    "finn/util/__init__.py": "",
    "finn/util/settings.py": "def initialize_dummy_settings():\n    pass\n",
    "finn/builder/__init__.py": "",
    "finn/builder/build_dataflow.py": (
        "import json\n"
        "def build_dataflow_cfg(model, cfg):\n"
        "    json.dump({'model': model, **cfg.kwargs}, open('received.json', 'w'), default=str)\n"
        "    return 0\n"
    ),
    "finn/builder/build_dataflow_config.py": (
        "import enum\n"
        "class ShellFlowType(enum.Enum):\n    VIVADO_ZYNQ = 'vivado_zynq'\n    VITIS_ALVEO = 'vitis_alveo'\n"
        "class DataflowOutputType(enum.Enum):\n    BITFILE = 1\n    PYNQ_DRIVER = 2\n    DEPLOYMENT_PACKAGE = 3\n"
        "class DataflowBuildConfig:\n    def __init__(self, **kwargs):\n        self.kwargs = kwargs\n"
    ),
}


@pytest.mark.parametrize("shell", ["zynq", "alveo"])
def test_finish_script_hands_the_values_to_finn_unchanged(tmp_path, shell):
    """With a stand-in `finn` (and Vivado's variables set): FINN's builder receives the board's text exactly."""
    text = INJECTIONS[0] + INJECTIONS[2] + INJECTIONS[3]
    for rel, source in FAKE_FINN.items():
        (tmp_path / "stub" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stub" / rel).write_text(source)
    with PackageBuilder(tmp_path / "pkg") as pkg:
        pkg.write_text(hardware.FINISH_SCRIPT, hardware.finish_script(_hostile_board(text, shell), 250.0))
        pkg.commit({})
    env = {**os.environ, "XILINX_VIVADO": "/x", "XILINX_HLS": "/x", "PYTHONPATH": str(tmp_path / "stub")}
    proc = subprocess.run([sys.executable, hardware.FINISH_SCRIPT], cwd=tmp_path / "pkg", capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr
    received = json.loads((tmp_path / "pkg" / "received.json").read_text())
    assert received["board"] == received["fpga_part"] == text and received["synth_clk_period_ns"] == 4.0
    assert received["shell_flow_type"] == (
        "ShellFlowType.VITIS_ALVEO" if shell == "alveo" else "ShellFlowType.VIVADO_ZYNQ"
    )
    assert received.get("vitis_platform") == (text if shell == "alveo" else None)
    assert received["steps"] == hardware.HARDWARE_STEPS and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("clock", [float("nan"), float("inf"), 0.0, -5.0, True, "100"])
def test_finish_script_refuses_a_bad_clock(clock):
    with pytest.raises(Exception) as info:
        hardware.finish_script(get_board("pynq-z2"), clock)
    assert type(info.value).__name__ == "ConfigError" and "--clock-mhz" in info.value.where
