"""The model zoo: Brevitas networks configurable in weight and activation bits.

Reading the zoo (names, layer names, bit presets) needs no torch: sdk.zoo.catalog. Building a model imports
its Brevitas module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdk.zoo.bits import PRESETS, BitsConfig, LayerBits, parse_bits
from sdk.zoo.catalog import ZOO, ModelSpec, get_spec

if TYPE_CHECKING:
    from torch import nn


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, bits: BitsConfig) -> nn.Module:
    """Build a zoo model; overrides must name layers the model has."""
    spec = get_spec(name)
    bits.check_layer_names(spec.layer_names(), name)
    return spec.build(tuple(input_shape), num_classes, bits)


__all__ = ["ZOO", "ModelSpec", "PRESETS", "BitsConfig", "LayerBits", "build_model", "get_spec", "parse_bits"]
