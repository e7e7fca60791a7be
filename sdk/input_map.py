"""The device interface: the integer codes a package's input takes, and the map from the user's values to them.

A deployed graph takes integer codes of one type (the `DataType` its input is annotated with: UINT8 pixels, the
INT8 codes of a signed first quantizer, BIPOLAR or BINARY bits, ...). Users pass what their model's forward takes:
pixels for a graph that takes pixels, the float features for a graph that quantizes its own input. The map turns
one into the other with the graph's own float32 operations (its preprocessing, e.g. `x*2-1`, then its first
quantizer), so the codes are exactly those the model computes; a value the quantizer would clip is refused, never
clipped silently.

`read_input_interface` finds that preprocessing and quantizer in a graph and cuts them off, so every flow gets a
graph whose input is integer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.errors import ConfigError, ExportError
from sdk.graph_names import SDK_INPUT_SCALE, describe, mark_sdk_node

PREPROCESSING_OPS = ("Mul", "Div", "Add", "Sub")
LAYOUT_OPS = ("Reshape", "Flatten")  # a flatten between the input and its first quantizer: the input becomes (1, F)
MAX_INPUT_BITS = 8  # every target's input is at most 8 bits (FINN streams them, the TFLite family takes int8)
SDK_INPUT_SCALE_NODE = "SdkInputScale"  # the Mul the SDK puts where the graph's first quantizer was
PIXELS = "pixels"  # the source of a map whose values are the codes (uint8 pixels, or codes the graph declares)


@dataclass(frozen=True)
class Step:
    """One float32 operation of the graph between its input and its first quantizer: x op constant."""

    op: str  # Mul, Div, Add, Sub
    constant: np.ndarray  # float32, broadcast against the graph's input layout (N, F) or (N, C, H, W)
    node: str  # the node's name in the user's file

    def apply(self, x: np.ndarray, inverse: bool = False) -> np.ndarray:
        """x op constant, as the graph computes it (in x's dtype); inverse: the operation that undoes it."""
        c = self.constant if x.dtype == np.float32 else self.constant.astype(x.dtype)
        op = {"Mul": "Div", "Div": "Mul", "Add": "Sub", "Sub": "Add"}[self.op] if inverse else self.op
        if op == "Mul":
            return x * c
        if op == "Div":
            return x / c
        if op == "Add":
            return x + c
        return x - c


@dataclass(frozen=True)
class InputMap:
    """What a package's input takes (codes of `dtype`, `low`..`high`) and how the user's values x become them:
    `steps` (the graph's preprocessing), then `x / quant_scale + quant_zero_point` rounded as the quantizer rounds
    (`rounding`; `sign` for a bipolar one). `scale` and `offset` say it in one line, x = scale * (code - offset),
    for documentation and firmware; the steps are what runs."""

    dtype: str  # a qonnx DataType name: UINT8, INT8, UINT4, BIPOLAR, BINARY, ...
    low: int
    high: int
    scale: float = 1.0
    offset: float = 0.0
    source: str = PIXELS  # PIXELS, or the name of the graph's first quantizer the map reproduces
    steps: tuple[Step, ...] = ()
    quant_scale: float = 1.0
    quant_zero_point: float = 0.0
    rounding: str = "ROUND"  # qonnx's rounding mode; "sign" for BipolarQuant and 1-bit signed Quant
    flat: bool = False  # the graph's input is (N, F): steps broadcast against that layout
    pixels_in: bool = False  # the user's values are pixels (--input-scale): the steps start with the pixel scale
    graph_shape: tuple[int, ...] = ()  # one sample as the graph's input took it: the layout the steps broadcast in

    @property
    def takes_codes(self) -> bool:
        """Whether the user's values are the codes themselves (pixels, or a graph input annotated integer)."""
        return self.source == PIXELS

    @property
    def is_pixels(self) -> bool:
        return self.takes_codes and self.dtype == "UINT8"

    @property
    def user_pixels(self) -> bool:
        """Whether users pass pixels (uint8, or floats in [0, 1] as --data takes them)."""
        return self.is_pixels or self.pixels_in

    def code_dtype(self) -> type:
        return np.uint8 if self.low >= 0 else np.int8

    def describe(self) -> str:
        """One line for reports and the CLI."""
        codes = "{-1, +1}" if self.dtype == "BIPOLAR" else f"{self.low}..{self.high}"
        if self.takes_codes:
            what = "uint8 pixels" if self.is_pixels else f"{self.dtype} values {codes}"
            return f"{what}, passed as they are"
        pre = "".join(f" {step.op} {_shown(step.constant)}" for step in self.steps)
        return (
            f"{self.dtype} codes {codes} from the {'pixels' if self.pixels_in else 'float input'} by the graph's own"
            + (f" preprocessing ({pre.strip()}) and" if pre else "")
            + f" first quantizer {self.source}: x = {self.scale:.9g} * (code - {self.offset:.9g})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "codes": [self.low, self.high],
            "scale": self.scale,
            "offset": self.offset,
            "meaning": "x = scale * (code - offset); x is what the model's forward takes",
            "source": self.source,
            "steps": [{"op": s.op, "constant": s.constant.tolist(), "node": s.node} for s in self.steps],
            "quantizer": {"scale": self.quant_scale, "zero_point": self.quant_zero_point, "rounding": self.rounding},
            "flat": self.flat,
            "pixels_in": self.pixels_in,
            "graph_shape": list(self.graph_shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputMap:
        quant = data.get("quantizer") or {}
        steps = tuple(
            Step(s["op"], np.asarray(s["constant"], dtype=np.float32), str(s.get("node", "")))
            for s in data.get("steps", [])
        )
        if any(s.op not in PREPROCESSING_OPS for s in steps):
            raise ValueError("an input map step is not one of " + ", ".join(PREPROCESSING_OPS))
        return cls(
            str(data["dtype"]),
            int(data["codes"][0]),
            int(data["codes"][1]),
            float(data.get("scale", 1.0)),
            float(data.get("offset", 0.0)),
            str(data.get("source", PIXELS)),
            steps,
            float(quant.get("scale", 1.0)),
            float(quant.get("zero_point", 0.0)),
            str(quant.get("rounding", "ROUND")),
            bool(data.get("flat", False)),
            bool(data.get("pixels_in", False)),
            tuple(int(d) for d in data.get("graph_shape", [])),
        )

    # ----------------------------------------------------------------------------------------------------------------
    # values -> codes

    def check_codes(self, x: np.ndarray, where: str, fix: str | Callable[[], str]) -> np.ndarray:
        """Codes given as codes: integers in low..high (BIPOLAR: -1 or +1), any numeric dtype; as code_dtype().
        fix: the error's fix, or a function writing it (only for an error)."""
        if self._integers_in_range(x):
            return x.astype(self.code_dtype(), copy=False)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(x) | (x < self.low) | (x > self.high) | (x != np.rint(x))
            if self.dtype == "BIPOLAR":
                bad |= x == 0
        if bad.any():
            value = x.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
            codes = "-1 or +1" if self.dtype == "BIPOLAR" else f"integers {self.low}..{self.high}"
            what = "pixels" if self.is_pixels else f"{self.dtype} input values"
            raise ConfigError(
                f"{where} holds {int(bad.sum()):,} value(s) that are not {what} ({codes}), e.g. {value}; the package "
                "would cast or wrap them, so they are refused for every target alike.",
                where=where,
                fix=fix() if callable(fix) else fix,
            )
        return x.astype(self.code_dtype())

    def _integers_in_range(self, x: np.ndarray) -> bool:
        """An integer array whose min and max lie in low..high (BIPOLAR: no 0): the fast yes of check_codes (an
        integer is finite and integral; a batch of pixels is checked in two passes, not five)."""
        if x.dtype.kind not in "iu" or x.size == 0:
            return False
        if x.dtype == np.uint8 and self.low <= 0 and self.high >= 255 and self.dtype != "BIPOLAR":
            return True  # every uint8 is a code (pixels): nothing to read
        if x.min() < self.low or x.max() > self.high:
            return False
        return self.dtype != "BIPOLAR" or bool(np.all(x))

    def codes(self, x: np.ndarray, where: str) -> np.ndarray:
        """The device codes of the user's values x (in the card's layout (N, C, H, W)), computed with the graph's
        own float32 operations; a value that is not finite, or that the first quantizer would clip, is refused."""
        fix = f"pass what the model's forward takes: {self.value_range()}"
        if self.takes_codes:
            return self.check_codes(np.asarray(x), where, fix)
        shape = x.shape
        values = np.asarray(x, dtype=np.float32)
        finite = np.isfinite(values)
        if not finite.all():
            raise ConfigError(
                f"{where} holds {int(values.size - finite.sum()):,} NaN or infinite value(s).",
                where=where,
                fix="replace or drop the samples with NaN / inf values",
            )
        values = self._graph_layout(values)
        with np.errstate(all="ignore"):
            for step in self.steps:
                values = step.apply(values).astype(np.float32, copy=False)
            if self.rounding == "sign":
                codes = np.where(values >= 0, 1, -1)
                return codes.astype(np.int8).reshape(shape)
            y = (values / np.float32(self.quant_scale) + np.float32(self.quant_zero_point)).astype(np.float32)
            rounded = _round(y, self.rounding)
        outside = ~np.isfinite(y) | (rounded < self.low) | (rounded > self.high)
        if outside.any():
            index = int(np.argmax(outside.reshape(-1)))
            value = np.asarray(x).reshape(-1)[index]
            raise ConfigError(
                f"{where} holds {int(outside.sum()):,} value(s) outside the model's input range, e.g. {value}: its "
                f"first quantizer {self.source} clips them ({self.value_range()}), and the SDK clips nothing "
                "silently.",
                where=where,
                fix=f"clip the values to the range the model was trained on ({self.value_range()}) before passing "
                "them, or retrain with a wider input quantizer",
            )
        return (rounded - np.float32(self.quant_zero_point)).astype(self.code_dtype()).reshape(shape)

    def values(self, codes: np.ndarray) -> np.ndarray:
        """Float32 values x whose codes are `codes` (the inverse of `codes` on the grid), e.g. to feed a module."""
        if self.takes_codes:
            return np.asarray(codes, dtype=np.float32)
        shape = codes.shape
        u = self._graph_layout(codes.astype(np.float64) * self.quant_scale)
        for step in reversed(self.steps):
            u = step.apply(u, inverse=True)
        return u.astype(np.float32).reshape(shape)

    def _graph_layout(self, values: np.ndarray) -> np.ndarray:
        """Samples in the layout of the graph's input, where the steps' constants broadcast."""
        if self.graph_shape and int(np.prod(self.graph_shape)) == int(np.prod(values.shape[1:])):
            return values.reshape(len(values), *self.graph_shape)
        return values.reshape(len(values), -1) if self.flat else values

    def value_range(self) -> str:
        if self.pixels_in:
            low, high = sorted(self.scale * (code - self.offset) for code in (self.low, self.high))
            return f"pixels in {max(low, 0):.6g} .. {min(high, 255):.6g} (uint8, or floats in [0, 1] times 255)"
        if self.takes_codes:
            return "pixels 0..255" if self.is_pixels else f"{self.dtype} values {self.low}..{self.high}"
        if self.rounding == "sign":
            return "any finite value (its sign is the bit)"
        ends = [self.scale * (code - self.offset) for code in (self.low, self.high)]
        if any(step.constant.size > 1 for step in self.steps):
            return f"codes {self.low}..{self.high} after the graph's per-channel preprocessing"
        return f"{min(ends):.6g} .. {max(ends):.6g}"


def _shown(constant: np.ndarray) -> str:
    return f"{float(constant.reshape(-1)[0]):.6g}" if constant.size == 1 else f"per-channel {list(constant.shape)}"


def _round(y: np.ndarray, mode: str) -> np.ndarray:
    """qonnx's rounding modes (qonnx.custom_op.general.intquant.resolve_rounding_mode), on float32."""
    mode = mode.upper()
    if mode in ("ROUND", "HALF_EVEN"):
        return np.round(y)
    if mode == "CEIL":
        return np.ceil(y)
    if mode == "FLOOR":
        return np.floor(y)
    if mode == "UP":
        return np.sign(y) * np.ceil(np.abs(y))
    if mode == "DOWN":
        return np.fix(y)
    if mode == "HALF_UP":
        return np.sign(y) * np.floor(np.abs(y) + np.float32(0.5))
    if mode == "HALF_DOWN":
        return np.sign(y) * np.ceil(np.abs(y) - np.float32(0.5))
    raise ValueError(f"unknown rounding mode {mode}")


ROUNDING_MODES = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")


def pixel_map() -> InputMap:
    """uint8 pixels, passed as they are: the SDK's own exports and graphs that get --input-scale."""
    return InputMap("UINT8", 0, 255)


def annotated_map(datatype: Any, flat: bool) -> InputMap | None:
    """A graph input annotated with an integer type of at most 8 bits takes those integers as they are."""
    if not datatype.is_integer() or datatype.bitwidth() > MAX_INPUT_BITS:
        return None
    return InputMap(datatype.name, int(datatype.min()), int(datatype.max()), flat=flat)


def read_input_interface(model: Any, where: str, name_of: Any = None, pixels_in: bool = False) -> InputMap | None:
    """The map of a graph whose float input runs through elementwise preprocessing by constants (Mul, Div, Add,
    Sub) into its first quantizer (Quant or BipolarQuant), with that chain cut off: the graph's input becomes the
    quantizer's integer codes (annotated with their DataType) times its scale, through one Mul the SDK adds.
    None where the input reaches anything else first (the caller asks for --input-scale). A quantizer the targets
    cannot take as their input is refused, naming it.

    model: a cleaned-up qonnx ModelWrapper, changed in place. name_of: node -> the name the user's file gives it.
    pixels_in: the graph starts with the SDK's pixel scale (--input-scale); its map is taken only where more
    preprocessing follows that scale (the pixels' own Mul alone lowers everywhere as it is: uint8 pixels stay the
    device's input, None)."""
    from onnx import helper
    from qonnx.core.datatype import DataType

    name_of = name_of or describe  # as the user's file names the node (sdk.graph_names)
    graph = model.graph
    input_name = graph.input[0].name
    shape = [int(d) for d in model.get_tensor_shape(input_name)]
    flat = len(shape) == 2
    tensor, steps, chain, layout = input_name, [], [], False
    while True:
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1 or graph.output[0].name == tensor:
            return None
        node = consumers[0]
        if node.op_type in PREPROCESSING_OPS:
            step = _preprocessing_step(model, node, tensor, shape, name_of(node))
            if step is None or (layout and step.constant.size != 1):
                return None  # a per-channel constant after a reshape is in another layout than the input's
            steps.append(step)
            chain.append(node)
            tensor = node.output[0]
            continue
        if node.op_type in LAYOUT_OPS and node.input[0] == tensor and all(s.constant.size == 1 for s in steps):
            out_shape = model.get_tensor_shape(node.output[0]) or []
            if len(out_shape) != 2 or int(np.prod(out_shape)) != int(np.prod(shape)):
                return None
            layout = True  # x.view(N, -1) before the quantizer: the input becomes (1, F), which the scalar steps
            chain.append(node)  # commute with (an MLP takes samples of any layout of the right size)
            tensor = node.output[0]
            continue
        if node.op_type not in ("Quant", "BipolarQuant") or node.input[0] != tensor:
            return None
        break
    if pixels_in and (len(steps) < 2 or steps[0].op != "Mul"):
        return None
    quant = node
    label = f"{name_of(quant)} ({quant.op_type})"
    params = [model.get_initializer(name) for name in quant.input[1:]]
    if any(p is None for p in params):
        raise ExportError(
            f"The graph's first quantizer {label} has a scale, zero point or bit width computed at run time.",
            where=f"{where}, node {name_of(quant)}",
            fix="export the model with constant quantizer parameters (Brevitas does)",
        )
    scale = params[0]
    if scale.size != 1 or not (np.isfinite(scale).all() and float(scale.reshape(-1)[0]) > 0):
        raise ExportError(
            f"The graph's first quantizer {label} has the scale {scale.reshape(-1)[:4].tolist()}: the targets take "
            "one positive scale for their input (per-tensor), not one per channel.",
            where=f"{where}, node {name_of(quant)}",
            fix="quantize the model's input per tensor (Brevitas's QuantIdentity does by default)",
        )
    s = float(np.float32(scale.reshape(-1)[0]))
    if quant.op_type == "BipolarQuant":
        datatype, zero_point, rounding = DataType["BIPOLAR"], 0.0, "sign"
    else:
        zero, bits = params[1], params[2]
        attrs = {a.name: helper.get_attribute_value(a) for a in quant.attribute}
        signed, narrow = int(attrs.get("signed", 1)), int(attrs.get("narrow", 0))
        rounding = attrs.get("rounding_mode", "ROUND")
        rounding = rounding.decode("utf-8", "replace") if isinstance(rounding, bytes) else str(rounding)
        if zero.size != 1 or float(zero.reshape(-1)[0]) != 0 or bits.size != 1:
            raise ExportError(
                f"The graph's first quantizer {label} has the zero point {zero.reshape(-1)[:4].tolist()}: the "
                "targets take the input codes of a quantizer whose zero point is 0 (one per tensor).",
                where=f"{where}, node {name_of(quant)}",
                fix="quantize the model's input with a zero point of 0 (Brevitas's QuantIdentity, signed or not)",
            )
        width = float(bits.reshape(-1)[0])
        if width != int(width) or not 1 <= width <= MAX_INPUT_BITS or rounding.upper() not in ROUNDING_MODES:
            problem = f"{width:g} bits" if rounding.upper() in ROUNDING_MODES else f"rounding mode {rounding!r}"
            raise ExportError(
                f"The graph's first quantizer {label} gives input codes of {problem}: every target takes integer "
                f"inputs of 1 to {MAX_INPUT_BITS} bits, rounded as qonnx rounds.",
                where=f"{where}, node {name_of(quant)}",
                fix=f"quantize the model's input to at most {MAX_INPUT_BITS} bits",
            )
        width, zero_point = int(width), 0.0
        if width == 1 and signed:
            datatype, rounding = DataType["BIPOLAR"], "sign"
        elif width == 1:
            datatype = DataType["BINARY"]
        else:
            prefix = "INT" if signed else "UINT"
            datatype = DataType[f"{prefix}{width}"]
        if narrow and signed and width > 1:
            low = -(2 ** (width - 1)) + 1
        else:
            low = int(datatype.min())
        high = int(datatype.max()) - (1 if narrow and not signed and width > 1 else 0)
    if quant.op_type == "BipolarQuant" or datatype.name == "BIPOLAR":
        low, high = -1, 1
    scale_doc, offset_doc = _affine(steps, s)
    mapping = InputMap(
        datatype.name,
        low,
        high,
        scale_doc,
        offset_doc,
        name_of(quant),
        tuple(steps),
        s,
        zero_point,
        rounding,
        flat or layout,
        pixels_in,
        tuple(shape[1:]),
    )
    _cut_off(model, chain, quant, s, datatype)
    if layout:
        _flatten_input(model, int(np.prod(shape)))
    return mapping


def _preprocessing_step(model: Any, node: Any, tensor: str, shape: list[int], name: str) -> Step | None:
    """The node as a Step when it combines `tensor` with a constant that broadcasts to the input's shape without
    growing it (a scalar, or one value per channel / feature); Sub and Div only with the constant second."""
    others = [i for i, name in enumerate(node.input) if name != tensor]
    if len(node.input) != 2 or len(others) != 1:
        return None
    index = others[0]
    if node.op_type in ("Sub", "Div") and index != 1:
        return None
    constant = model.get_initializer(node.input[index])
    if constant is None or constant.dtype.kind != "f" or not np.isfinite(constant).all():
        return None
    try:
        if list(np.broadcast_shapes(tuple(shape), constant.shape)) != shape:
            return None
    except ValueError:
        return None
    if node.op_type == "Div" and (constant == 0).any():
        return None
    return Step(node.op_type, constant.astype(np.float32), name)


def _affine(steps: list[Step], quant_scale: float) -> tuple[float, float]:
    """x = scale * (code - offset) for scalar steps (per-channel ones: the scale of the first channel; the steps
    are what runs)."""
    a, b = 1.0, 0.0  # u = a * x + b, where u is what the quantizer gets
    for step in steps:
        c = float(step.constant.reshape(-1)[0])
        if step.op == "Mul":
            a, b = a * c, b * c
        elif step.op == "Div":
            a, b = a / c, b / c
        elif step.op == "Add":
            b += c
        else:
            b -= c
    # u = quant_scale * code  =>  x = (quant_scale * code - b) / a = (quant_scale / a) * (code - b / quant_scale)
    return quant_scale / a, b / quant_scale


def _cut_off(model: Any, nodes: list[Any], quant: Any, scale: float, datatype: Any) -> None:
    """Remove the preprocessing (each node's users read its data input instead) and the quantizer (a Mul by its
    scale gives what it gave; qonnx's clean-up removes it where the scale is 1); the input (same name) now holds
    the codes. Layout ops between them stay."""
    from onnx import helper

    graph = model.graph
    input_name = graph.input[0].name
    for node in nodes:
        data = node.input[0] if node.op_type in LAYOUT_OPS else None
        data = data or next(name for name in node.input if model.get_initializer(name) is None)
        for user in model.find_consumers(node.output[0]):
            user.input[:] = [data if name == node.output[0] else name for name in user.input]
        graph.node.remove(node)
    scale_name = f"{input_name}_sdk_input_scale"
    model.set_initializer(scale_name, np.array(scale, dtype=np.float32))
    position = list(graph.node).index(quant)
    graph.node.remove(quant)
    mul = helper.make_node("Mul", [quant.input[0], scale_name], [quant.output[0]], name=SDK_INPUT_SCALE_NODE)
    graph.node.insert(position, mark_sdk_node(mul, SDK_INPUT_SCALE))  # messages: "the input scale the SDK added"
    model.set_tensor_datatype(input_name, datatype)


def _flatten_input(model: Any, features: int) -> None:
    """The graph input as (1, F), where a flatten before the first quantizer was cut off with it."""
    from onnx import TensorProto, helper

    graph = model.graph
    old = graph.input[0]
    datatype = model.get_tensor_datatype(old.name)
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(old.name, TensorProto.FLOAT, [1, features]))
    model.set_tensor_datatype(old.name, datatype)
