"""The library reports progress as events and draws nothing; the CLI draws them (sdk.cli.ProgressBars)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sdk
from sdk.deployment import CLEAN_STEP, PREPARE_STEP
from sdk.errors import ConfigError, DatasetError
from sdk.progress import ProgressEvent
from sdk.quiet import quiet


def _in_order(events: list[ProgressEvent], stage: str, subject: str) -> None:
    """A job's events: the first at done=0, one more step each, the last (and only the last) finished."""
    assert events and all(e.stage == stage and e.subject == subject for e in events)
    assert [e.finished for e in events] == [False] * (len(events) - 1) + [True]
    steps = events[:-1]
    assert [e.done for e in steps] == list(range(len(steps)))


def test_a_deploy_reports_its_steps_in_order_and_prints_nothing(tfc_run, tmp_path, capsys):
    events: list[ProgressEvent] = []
    with quiet():  # third-party chatter aside, whatever reaches stdout or stderr would be the SDK's own
        result = sdk.deploy(tfc_run, "tflite", out=str(tmp_path / "a"), samples=10, progress=events.append)
        sdk.deploy_many(sdk.DeployConfig(target="tflite", model=str(tfc_run), out=str(tmp_path / "b"), samples=10))
    assert result.verified
    _in_order(events, "deploy", "tflite")
    assert events[0].step == "load model and samples" and events[0].message == "tflite: load model and samples"
    assert [e.step for e in events[-3:-1]] == ["write report", "commit package"] and events[-1].step == ""
    # report.json times the same steps, each up to the next, the last two included; and, no events of their own,
    # the checks before any work and the scratch folder's removal (after which the report is written)
    timed = [s["step"] for s in json.loads((result.package / "report.json").read_text())["data"]["deploy_steps"]]
    assert timed == [PREPARE_STEP, *[e.step for e in events[:-1]], CLEAN_STEP]
    assert capsys.readouterr() == ("", "")


def test_a_failed_deploy_still_ends_its_events(tfc_run, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 3), np.uint8))
    events: list[ProgressEvent] = []
    with pytest.raises(DatasetError):
        sdk.deploy(tfc_run, "tflite", out=str(tmp_path / "o"), data=str(bad), progress=events.append)
    _in_order(events, "deploy", "tflite")


@pytest.mark.slow
def test_training_reports_each_epoch_in_order_and_prints_nothing(tmp_path, capsys):
    events: list[ProgressEvent] = []
    with quiet():
        result = sdk.train(sdk.TrainConfig(epochs=2), tmp_path / "run", progress=events.append)
        sdk.train(sdk.TrainConfig(epochs=1), tmp_path / "quiet-run")
    _in_order(events, "train", "tfc w2a2")
    assert [e.total for e in events] == [2, 2, 2, 2] and [e.done for e in events] == [0, 1, 2, 2]
    assert events[0].metrics == {"loss": 0.0, "val": 0.0, "best": 0.0}
    for event, epoch in zip(events[1:3], result.history):
        assert event.metrics["loss"] == epoch["loss"] and event.metrics["val"] == epoch["val_accuracy"]
    assert events[2].metrics["best"] == result.val_accuracy
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("progress", [True, "yes", 3])
def test_progress_is_a_callable_or_nothing(tfc_run, progress):
    with pytest.raises(ConfigError) as info:
        sdk.deploy(tfc_run, "tflite", progress=progress)
    assert info.value.where == "progress" and "ProgressBars" in info.value.fix


def test_the_cli_bars_draw_the_events_on_stderr(capsys):
    """Off a terminal, rich prints each job's last state once, when its last event closes the display."""
    bars = sdk.ProgressBars()
    for step in ("load model and samples", "write report"):
        bars(ProgressEvent("deploy", "tflite", step, 0, message=f"tflite: {step}"))
    bars(ProgressEvent("deploy", "tflite", "", 2, finished=True))
    metrics = {"loss": 0.5, "val": 0.75, "best": 0.8}
    bars(ProgressEvent("train", "tfc w2a2", "epoch", 1, 2, "tfc w2a2: epoch", metrics))
    bars(ProgressEvent("train", "tfc w2a2", "", 1, 2, finished=True))
    out, err = capsys.readouterr()
    assert out == "" and "tflite: write report" in err and "load model" not in err
    assert "train tfc w2a2" in err and "1/2 epochs" in err and "loss 0.500  val 75.00%  best 80.00%" in err
