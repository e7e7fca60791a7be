"""The model zoo: Brevitas networks configurable in weight and activation bits."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sdk.errors import ConfigError
from sdk.zoo import cnv, dscnn, mlp, resnet
from sdk.zoo.bits import PRESETS, BitsConfig, LayerBits, parse_bits


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    build: Callable[[tuple[int, int, int], int, BitsConfig], nn.Module]
    layer_names: Callable[[], list[str]]


def _mlp(hidden: list[int]) -> tuple[Callable, Callable]:
    return (lambda shape, classes, bits: mlp.QuantMLP(shape, classes, hidden, bits)), (lambda: mlp.layer_names(hidden))


ZOO: dict[str, ModelSpec] = {
    "tfc": ModelSpec("tfc", "MLP, 3 x 64 hidden (FINN TFC)", *_mlp([64, 64, 64])),
    "sfc": ModelSpec("sfc", "MLP, 3 x 256 hidden (FINN SFC)", *_mlp([256, 256, 256])),
    "lfc": ModelSpec("lfc", "MLP, 3 x 1024 hidden (FINN LFC)", *_mlp([1024, 1024, 1024])),
    "cnv": ModelSpec(
        "cnv", "CNV-style conv net: 2 x (conv 3x3, conv 3x3, maxpool), fc 128", cnv.QuantCNV, cnv.layer_names
    ),
    "dscnn": ModelSpec(
        "dscnn", "Depthwise-separable CNN (KWS DS-CNN / MobileNet style)", dscnn.QuantDSCNN, dscnn.layer_names
    ),
    "resnet8": ModelSpec(
        "resnet8", "Residual CNN, 3 stages (ResNet-8, MLPerf Tiny style)", resnet.QuantResNet8, resnet.layer_names
    ),
}


def get_spec(name: str) -> ModelSpec:
    if name in ZOO:
        return ZOO[name]
    close = difflib.get_close_matches(name, list(ZOO), n=2)
    fix = f"did you mean {' or '.join(close)}?" if close else f"models: {', '.join(ZOO)}"
    raise ConfigError(f"Unknown model '{name}'.", where="MODEL", fix=fix)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, bits: BitsConfig) -> nn.Module:
    """Build a zoo model; overrides must name layers the model has."""
    spec = get_spec(name)
    bits.check_layer_names(spec.layer_names(), name)
    return spec.build(tuple(input_shape), num_classes, bits)


__all__ = ["ZOO", "ModelSpec", "PRESETS", "BitsConfig", "LayerBits", "build_model", "get_spec", "parse_bits"]
