"""What the zoo holds: each model's name, description, architecture plan and layer names, without torch.

The CLI lists the zoo and checks a model name or a --layer-bits override from here before the training stack
loads; the Brevitas modules (cnv.py, dscnn.py, mlp.py, resnet.py) build from the same plans and are imported
only when a model is built.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdk.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from sdk.zoo.bits import BitsConfig

CNV_CONV_PLAN = [32, 32, "pool", 64, 64, "pool"]
CNV_FC_HIDDEN = [128]
DSCNN_STEM_CHANNELS = 32
DSCNN_BLOCKS = [(1, 64), (2, 64), (1, 64)]  # (stride of the depthwise conv, channels out of the pointwise conv)
RESNET_STEM_CHANNELS = 16
RESNET_STAGES = [(1, 16), (2, 32), (2, 64)]  # (stride, channels)


def mlp_layer_names(hidden: list[int]) -> list[str]:
    return [f"fc{i}" for i in range(len(hidden))] + ["fc_out"]


def cnv_layer_names() -> list[str]:
    convs = [f"conv{i}" for i in range(sum(1 for c in CNV_CONV_PLAN if c != "pool"))]
    return convs + [f"fc{i}" for i in range(len(CNV_FC_HIDDEN))] + ["fc_out"]


def dscnn_layer_names() -> list[str]:
    names = ["conv0"]
    for i in range(len(DSCNN_BLOCKS)):
        names += [f"dw{i}", f"pw{i}"]
    return names + ["fc_out"]


def resnet_layer_names() -> list[str]:
    names, in_ch = ["conv0"], RESNET_STEM_CHANNELS
    for i, (stride, out_ch) in enumerate(RESNET_STAGES):
        names += [f"s{i}_conv1", f"s{i}_conv2"]
        if stride != 1 or in_ch != out_ch:
            names.append(f"s{i}_shortcut")
        in_ch = out_ch
    return names + ["fc_out"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    build: Callable[[tuple[int, int, int], int, BitsConfig], nn.Module]
    layer_names: Callable[[], list[str]]


def _module_class(module: str, name: str, *extra) -> Callable:
    """A builder that imports the Brevitas module (and torch) when a model is built, not when the zoo is read."""

    def build(shape: tuple[int, int, int], classes: int, bits: BitsConfig) -> nn.Module:
        cls = getattr(importlib.import_module(f"sdk.zoo.{module}"), name)
        return cls(shape, classes, *extra, bits)

    return build


def _mlp(name: str, description: str, hidden: list[int]) -> ModelSpec:
    return ModelSpec(name, description, _module_class("mlp", "QuantMLP", hidden), lambda: mlp_layer_names(hidden))


ZOO: dict[str, ModelSpec] = {
    "tfc": _mlp("tfc", "MLP, 3 x 64 hidden (TFC of BNN-PYNQ)", [64, 64, 64]),
    "sfc": _mlp("sfc", "MLP, 3 x 256 hidden (SFC of Umuroglu et al., 2017)", [256, 256, 256]),
    "lfc": _mlp("lfc", "MLP, 3 x 1024 hidden (LFC of Umuroglu et al., 2017)", [1024, 1024, 1024]),
    "cnv": ModelSpec(
        "cnv",
        "CNV-style conv net: 2 x (conv 3x3, conv 3x3, maxpool), fc 128",
        _module_class("cnv", "QuantCNV"),
        cnv_layer_names,
    ),
    "dscnn": ModelSpec(
        "dscnn",
        "Depthwise-separable CNN (KWS DS-CNN / MobileNet style)",
        _module_class("dscnn", "QuantDSCNN"),
        dscnn_layer_names,
    ),
    "resnet8": ModelSpec(
        "resnet8",
        "Residual CNN, 3 stages (ResNet-8, MLPerf Tiny style)",
        _module_class("resnet", "QuantResNet8"),
        resnet_layer_names,
    ),
}


def get_spec(name: str) -> ModelSpec:
    if name in ZOO:
        return ZOO[name]
    close = difflib.get_close_matches(name, list(ZOO), n=2)
    fix = f"did you mean {' or '.join(close)}?" if close else f"models: {', '.join(ZOO)}"
    raise ConfigError(f"Unknown model '{name}'.", where="MODEL", fix=fix)
