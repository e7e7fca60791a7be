"""Bit-width configuration: a preset (w2a2 ...) plus per-layer overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sdk.errors import ConfigError

PRESETS = ("w1a1", "w1a2", "w2a2", "w4a4", "w8a8")
MIN_BITS, MAX_BITS = 1, 8
_SPEC = re.compile(r"^(?:w(?P<w>\d+))?(?:a(?P<a>\d+))?$")


@dataclass(frozen=True)
class LayerBits:
    """Weight and activation bits of one compute layer (its output activation)."""

    weight: int
    act: int


@dataclass
class BitsConfig:
    """Default bits for every layer and overrides by layer name."""

    weight: int
    act: int
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)

    def for_layer(self, name: str) -> LayerBits:
        over = self.overrides.get(name, {})
        return LayerBits(over.get("weight", self.weight), over.get("act", self.act))

    def check_layer_names(self, known: list[str], model: str) -> None:
        for name in self.overrides:
            if name not in known:
                raise ConfigError(
                    f"Model '{model}' has no layer '{name}'.",
                    where="--layer-bits",
                    fix=f"layers of {model}: {', '.join(known)}",
                )

    @property
    def tag(self) -> str:
        return f"w{self.weight}a{self.act}"

    def to_dict(self) -> dict:
        return {"weight": self.weight, "act": self.act, "overrides": self.overrides}

    @classmethod
    def from_dict(cls, data: dict) -> BitsConfig:
        return cls(int(data["weight"]), int(data["act"]), {k: dict(v) for k, v in data.get("overrides", {}).items()})


def _check_range(value: int, what: str, where: str) -> int:
    if not MIN_BITS <= value <= MAX_BITS:
        raise ConfigError(
            f"{what} of {value} bits is out of range.",
            where=where,
            fix=f"use {MIN_BITS} to {MAX_BITS} bits (presets: {', '.join(PRESETS)})",
        )
    return value


def _parse_pair(text: str, where: str) -> dict[str, int]:
    match = _SPEC.match(text.strip().lower())
    if not match or not (match["w"] or match["a"]):
        raise ConfigError(
            f"Cannot read bits '{text}'.", where=where, fix="write wXaY, e.g. w2a2, or w8 / a4 alone in an override"
        )
    out: dict[str, int] = {}
    if match["w"]:
        out["weight"] = _check_range(int(match["w"]), "Weight width", where)
    if match["a"]:
        out["act"] = _check_range(int(match["a"]), "Activation width", where)
    return out


def parse_bits(preset: str, layer_bits: str | None = None) -> BitsConfig:
    """`preset` like 'w2a2'; `layer_bits` like 'fc0=w8a8,fc_out=w4'."""
    base = _parse_pair(preset, "--bits")
    if set(base) != {"weight", "act"}:
        raise ConfigError(
            f"Bits '{preset}' must give both weight and activation bits.", where="--bits", fix="e.g. --bits w2a2"
        )
    overrides: dict[str, dict[str, int]] = {}
    for item in filter(None, (part.strip() for part in (layer_bits or "").split(","))):
        name, sep, spec = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"Cannot read layer override '{item}'.", where="--layer-bits", fix="write LAYER=wXaY, e.g. fc0=w8a8"
            )
        overrides[name.strip()] = _parse_pair(spec, f"--layer-bits {name.strip()}")
    return BitsConfig(base["weight"], base["act"], overrides)
