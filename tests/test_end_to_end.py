"""Train with the SDK defaults on digits and export: the quality bar of the foundation."""

import pytest

from sdk.export import export_run
from sdk.model_card import read_card
from sdk.qat import TrainConfig, train


@pytest.mark.slow
@pytest.mark.parametrize("model, bar", [("cnv", 0.97)])  # TFC's (0.95): the demo trains it, test_examples checks
def test_default_training_meets_quality_bar_and_exports(tmp_path, model, bar):
    result = train(TrainConfig(model=model, bits="w2a2", dataset="digits"), tmp_path / "run", progress=False)
    assert result.test_accuracy >= bar, f"{model} w2a2 reached {result.test_accuracy:.2%}, below {bar:.0%}"
    exported = export_run(tmp_path / "run", tmp_path / f"{model}.qonnx.onnx")
    card = read_card(exported.onnx_path)
    assert card["check"]["passed"] and card["accuracy"]["test"] == result.test_accuracy
