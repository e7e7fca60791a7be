import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdk.data import load_dataset
from sdk.errors import CheckpointError
from sdk.export import export_run
from sdk.graph_run import run_qonnx
from sdk.model_card import card_path_for, read_card
from sdk.qat import CHECKPOINT_NAME, TrainConfig, load_checkpoint, model_input, train
from sdk.zoo import ZOO


def _assert_equal_to_brevitas(onnx_path, run_dir, samples=48):
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model, payload = load_checkpoint(run_dir)
    x = load_dataset("digits").x_test[:samples]
    exported = run_qonnx(onnx_path, x, model.flat_input)
    with torch.no_grad():
        reference = model(model_input(x, model.flat_input)).numpy()
    np.testing.assert_allclose(exported, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    qmodel = ModelWrapper(str(onnx_path))
    assert qmodel.get_tensor_datatype(qmodel.graph.input[0].name) == DataType["UINT8"]
    assert any(n.op_type in ("Quant", "BipolarQuant") for n in qmodel.graph.node)


def test_export_equals_brevitas(tfc_run, tfc_export):
    _assert_equal_to_brevitas(tfc_export, tfc_run)
    card = read_card(tfc_export)
    assert card["model"] == "tfc" and card["bits"]["weight"] == 2 and card["input"]["dtype"] == "uint8"
    assert card["input"]["shape"] == [1, 64] and card["labels"] == [str(i) for i in range(10)]
    assert card["check"]["passed"] and card["accuracy"]["test"] > 0.5
    assert len(card["source_checkpoint"]["sha256"]) == 64


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ZOO) - {"tfc", "lfc"}))
@pytest.mark.parametrize("bits", ["w1a1", "w2a2", "w4a4"])
def test_every_zoo_model_exports_exactly(tmp_path, name, bits):
    run = tmp_path / "run"
    train(TrainConfig(model=name, bits=bits, epochs=1), run, progress=False)
    out = tmp_path / f"{name}.onnx"
    export_run(run, out)
    _assert_equal_to_brevitas(out, run)


def test_failed_export_leaves_nothing(tmp_path, tfc_run):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CHECKPOINT_NAME).write_bytes((tfc_run / CHECKPOINT_NAME).read_bytes()[:1000])
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(CheckpointError):
        export_run(bad, out)
    assert not out.exists() and not card_path_for(out).exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _scale_input_by_two(exporters: set[str]):
    """export._export_qonnx_clean, with the graph's input scale doubled for the given exporters: a graph that
    computes something else than the model, as an exporter bug would write it."""

    from sdk import export

    real = export._export_qonnx_clean

    def clean(model, example, path, exporter):
        qmodel = real(model, example, path, exporter)
        if exporter in exporters:
            scale = next(n for n in qmodel.graph.node if n.op_type == "Mul").input[1]
            qmodel.set_initializer(scale, qmodel.get_initializer(scale) * 2)
        return qmodel

    return clean


def test_a_graph_that_disagrees_is_exported_again_by_dynamo_and_never_kept(tmp_path, tfc_run, monkeypatch):
    from qonnx.core.modelwrapper import ModelWrapper

    from sdk import export
    from sdk.errors import ExportError

    monkeypatch.setattr(export, "_export_qonnx_clean", _scale_input_by_two({"TorchScript"}))
    out = tmp_path / "m.onnx"
    result = export_run(tfc_run, out)
    assert result.card["check"]["passed"]
    assert {n.op_type for n in ModelWrapper(str(out)).graph.node} >= {"Gemm"}  # dynamo's graph, not MatMul's
    _assert_equal_to_brevitas(out, tfc_run)

    monkeypatch.setattr(export, "_export_qonnx_clean", _scale_input_by_two(set(export.EXPORTERS)))
    with pytest.raises(ExportError, match="disagrees with the Brevitas model"):
        export_run(tfc_run, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not card_path_for(tmp_path / "bad.onnx").exists()


def test_card_sits_beside_model(tfc_export):
    assert card_path_for(tfc_export).name == "tfc.qonnx.json"
    assert json.loads(card_path_for(tfc_export).read_text())["format"] == "sdk-model-card/1"


def test_batched_qonnx_execution_equals_one_sample_at_a_time(tfc_export, monkeypatch):
    import sdk.graph_run

    x = load_dataset("digits").x_test[:40]
    batched = run_qonnx(tfc_export, x, True)
    monkeypatch.setattr(sdk.graph_run, "QONNX_BATCH", 1)
    one_by_one = run_qonnx(tfc_export, x, True)
    assert batched.shape == (40, 10)  # equal up to float32 rounding (BLAS sums a batch in another order)
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-6 * np.abs(one_by_one).max())


def test_the_documented_card_schema_names_what_read_card_requires(tfc_export):
    """docs/model-card.schema.json documents the card; the fields it calls required are the ones read_card checks."""
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" / "model-card.schema.json").read_text())
    card = read_card(tfc_export)
    assert set(schema["required"]) <= set(card)
    assert set(schema["properties"]["input"]["required"]) <= set(card["input"])
    assert set(card) <= set(schema["properties"])  # every field an export writes is documented


def _user_folders_beside(folder: Path) -> list[Path]:
    """A user's folders named exactly like the SDK's scratch folders, beside an export's --out."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = [
        folder / f".sdk-export-{dead.pid}-abc_123",
        folder / f".sdk-export-{dead.pid}-{'0123456789abcdef' * 2}",
        folder / "sdk-release-2024-final",
    ]
    for path in folders:
        path.mkdir(parents=True)
        (path / "notes.txt").write_text("mine")
    return folders


def test_export_refuses_to_overwrite_and_touches_nothing_else_in_the_out_folder(tmp_path, tfc_run, monkeypatch):
    from sdk import export
    from sdk.errors import ExportError

    out = tmp_path / "dir" / "m.onnx"
    user = _user_folders_beside(out.parent)
    out.write_text("my graph")
    with pytest.raises(ExportError, match="m.onnx exists") as err:
        export_run(tfc_run, out)
    assert err.value.where == f"--out {out}" and "--force" in err.value.fix
    out.unlink()
    card_path_for(out).write_text("my notes")
    with pytest.raises(ExportError, match=r"m.json exists.*model card of m.onnx"):
        export_run(tfc_run, out)
    assert not out.exists() and card_path_for(out).read_text() == "my notes"
    card_path_for(out).unlink()

    real = export._check_against_brevitas

    def card_appears_meanwhile(*args):  # a file written by someone else while the export runs
        card_path_for(out).write_text("written meanwhile")
        return real(*args)

    monkeypatch.setattr(export, "_check_against_brevitas", card_appears_meanwhile)
    with pytest.raises(ExportError, match="m.json exists"):
        export_run(tfc_run, out)
    assert not out.exists() and card_path_for(out).read_text() == "written meanwhile"
    monkeypatch.undo()

    out.write_text("my graph")
    result = export_run(tfc_run, out, force=True)
    assert result.card["check"]["passed"] and read_card(out)["onnx_sha256"] == result.card["onnx_sha256"]
    assert sorted(out.parent.iterdir()) == sorted([out, card_path_for(out), *user])  # no scratch left
    assert all((path / "notes.txt").read_text() == "mine" for path in user)


def test_cli_export_refuses_an_existing_out_without_force(tmp_path, tfc_run):
    out = tmp_path / "m.onnx"
    out.write_text("my graph")
    command = [sys.executable, "-m", "sdk", "export", str(tfc_run), "--out", str(out), "--json"]
    proc = subprocess.run(command, capture_output=True, text=True)
    error = json.loads(proc.stdout)
    assert proc.returncode == 2 and error["what"].startswith(f"{out} exists") and "--force" in error["fix"]
    assert out.read_text() == "my graph" and not card_path_for(out).exists()
    assert subprocess.run([*command, "--force"], capture_output=True, text=True).returncode == 0
    assert read_card(out)["check"]["passed"]


def test_placing_across_disks_goes_through_a_staging_file_and_never_overwrites(tmp_path, monkeypatch):
    """Where the scratch folder is on another disk (a link or rename says EXDEV), the export copies to a staging
    file beside --out and moves that; an existing file is still refused, and no staging file is left."""
    import errno
    import os

    from sdk import export
    from sdk.errors import ExportError

    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    (scratch / "model.onnx").write_bytes(b"graph")
    (scratch / "card.json").write_text("{}")
    link, replace = os.link, os.replace

    def across(real):
        def call(source, dest, *args, **kwargs):
            if str(source).startswith(str(scratch)):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real(source, dest, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "link", across(link))
    monkeypatch.setattr(os, "replace", across(replace))
    files = [(scratch / "model.onnx", out / "m.onnx"), (scratch / "card.json", out / "m.json")]
    (out / "m.json").write_text("mine")
    with pytest.raises(ExportError, match="m.json exists"):
        export._place(files, False, out / "m.onnx")
    assert sorted(p.name for p in out.iterdir()) == ["m.json"] and (out / "m.json").read_text() == "mine"
    export._place(files, True, out / "m.onnx")
    assert (out / "m.onnx").read_bytes() == b"graph" and (out / "m.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "m.onnx"]
