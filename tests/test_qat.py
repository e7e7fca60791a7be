import json

import pytest
import torch

from sdk.errors import CheckpointError, ConfigError
from sdk.qat import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train


@pytest.mark.slow
def test_run_folder_contents(tmp_path):
    train(TrainConfig(model="tfc", bits="w2a2", epochs=5), tmp_path, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5  # 5 epochs on 10 classes: far above chance
    assert len(metrics["history"]) == 5 and metrics["config"]["bits"] == "w2a2"
    model, payload = load_checkpoint(tmp_path)
    assert payload["input_shape"] == [1, 8, 8] and len(payload["labels"]) == 10 and not model.training


def test_the_committed_fixture_run_loads(tfc_run):
    model, payload = load_checkpoint(tfc_run)
    assert payload["input_shape"] == [1, 8, 8] and len(payload["labels"]) == 10 and not model.training


@pytest.mark.slow
def test_training_is_deterministic(tmp_path):
    config = TrainConfig(model="tfc", bits="w2a2", epochs=2)
    a = train(config, tmp_path / "a", progress=False)
    b = train(config, tmp_path / "b", progress=False)
    assert a.history == b.history and a.test_accuracy == b.test_accuracy
    sa = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_config_writes_nothing(tmp_path):
    for config in (
        TrainConfig(bits="w2a9"),
        TrainConfig(model="nope"),
        TrainConfig(epochs=0),
        TrainConfig(layer_bits="conv0=w4"),
    ):
        with pytest.raises(ConfigError):
            train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert "cannot be read" in info.value.what and str(tmp_path) in info.value.where


def test_foreign_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="not an SDK checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "absent")


class Payload:
    """Stands for any pickled Python object an untrusted checkpoint could carry."""


def test_checkpoint_refuses_pickled_code(tmp_path):
    """weights_only=True: a checkpoint carrying arbitrary objects is rejected, not executed."""
    torch.save({"format": "sdk-checkpoint/1", "obj": Payload()}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path)
