import pytest
import torch

from sdk.errors import ConfigError
from sdk.zoo import PRESETS, ZOO, build_model, parse_bits


def _input(model, shape=(1, 8, 8)):
    x = torch.rand(3, *shape)
    return x.reshape(3, -1) if model.flat_input else x


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("preset", PRESETS)
def test_every_model_builds_at_every_preset(name, preset):
    model = build_model(name, (1, 8, 8), 10, parse_bits(preset)).eval()
    assert model(_input(model)).shape == (3, 10)


CONV_MODELS = sorted(name for name, spec in ZOO.items() if spec.layer_names()[0].startswith("conv"))


def test_the_zoo_has_conv_models():
    assert {"cnv", "dscnn", "resnet8"} <= set(CONV_MODELS)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_take_larger_images(name):
    model = build_model(name, (1, 16, 16), 4, parse_bits("w2a2")).eval()
    assert model(_input(model, (1, 16, 16))).shape == (3, 4)


def _weight_bits(layer) -> int:
    return int(layer.quant_weight().bit_width)


def test_bits_reach_the_layers_and_overrides_win():
    model = build_model("tfc", (1, 8, 8), 10, parse_bits("w2a2", "fc0=w8a4,fc_out=w4"))
    body = dict(model.body.named_children())
    assert _weight_bits(body["fc0"]) == 8 and _weight_bits(body["fc1"]) == 2 and _weight_bits(body["fc_out"]) == 4
    model.eval()
    model(torch.rand(2, 64))
    assert int(body["act0"].act_quant.bit_width()) == 4 and int(body["act1"].act_quant.bit_width()) == 2


def test_binary_weights_are_bipolar():
    model = build_model("tfc", (1, 8, 8), 10, parse_bits("w1a1"))
    weights = model.body.fc1.quant_weight()
    assert set(torch.unique(weights.value / weights.scale).tolist()) <= {-1.0, 1.0}


def test_layer_names_match_overrides_for_every_model():
    for name, spec in ZOO.items():
        overrides = ",".join(f"{layer}=w3a3" for layer in spec.layer_names())
        build_model(name, (1, 8, 8), 10, parse_bits("w2a2", overrides))


@pytest.mark.parametrize(
    "bits, layer_bits, expect",
    [
        ("w9a2", "", "out of range"),
        ("w0a2", "", "out of range"),
        ("w2a12", "", "out of range"),
        ("2-2", "", "Cannot read bits"),
        ("w2", "", "both weight and activation"),
        ("w2a2", "fc0", "Cannot read layer override"),
        ("w2a2", "fc0=w16", "out of range"),
    ],
)
def test_bad_bits(bits, layer_bits, expect):
    with pytest.raises(ConfigError) as info:
        parse_bits(bits, layer_bits)
    assert expect in info.value.what


def test_unknown_layer_and_model():
    with pytest.raises(ConfigError) as info:
        build_model("tfc", (1, 8, 8), 10, parse_bits("w2a2", "conv0=w4"))
    assert "conv0" in info.value.what and "fc0" in info.value.fix
    with pytest.raises(ConfigError, match="did you mean"):
        build_model("tcf", (1, 8, 8), 10, parse_bits("w2a2"))
