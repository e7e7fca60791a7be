"""The model card: the JSON beside a QONNX file (input spec, normalisation, labels, data set, checks).

A card is optional: a QONNX file without one gets a card read off its graph (`card_from_graph`). Reading a card
never needs torch, so deploying a QONNX file starts fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk.data import BYTES_PER_VALUE, INPUT_SCALE, MEMORY_BUDGET
from sdk.errors import ConfigError, ExportError, SDKError
from sdk.input_map import MAX_INPUT_BITS, InputMap, annotated_map, pixel_map, read_input_interface
from sdk.onnx_guard import load_onnx_safely

CARD_FORMAT = "sdk-model-card/1"
MAX_CARD_BYTES = 1 << 20  # a card is a few KB (a label per class); more is a mistake or a file made to exhaust memory


NORMALISATION = {
    "scale": INPUT_SCALE,
    "offset": 0.0,
    "meaning": "model sees uint8 * scale; the scale is inside the graph",
}


SEQUENCE_LAYOUT = "NCW"  # a graph input (1, C, T): channels over time, as Conv1d takes it


def input_spec(
    input_shape: list[int], flat: bool, sequence: bool = False, mapping: InputMap | None = None
) -> dict[str, Any]:
    """The card's input: samples are (C, H, W) (`image_shape`); the graph takes them as (1, F) when flat, as
    (1, C, W) when a sequence (H = 1: a Conv1d's channels over time), else as they are. `map`: the device
    interface (sdk.input_map); uint8 pixels by default."""
    if flat:
        graph_shape, layout = [1, int(np.prod(input_shape))], "NC"
    elif sequence:
        graph_shape, layout = [1, input_shape[0], input_shape[2]], SEQUENCE_LAYOUT
    else:
        graph_shape, layout = [1, *input_shape], "NCHW"
    mapping = mapping or pixel_map()
    return {
        "shape": graph_shape,
        "dtype": "uint8" if mapping.is_pixels else mapping.dtype.lower(),
        "layout": layout,
        "image_shape": list(input_shape),
        "flatten": flat,
        "map": mapping.to_dict(),
    }


def input_map_of(card: dict[str, Any]) -> InputMap:
    """The card's device interface: uint8 pixels for cards written before it was recorded."""
    spec = card["input"].get("map")
    return pixel_map() if spec is None else InputMap.from_dict(spec)


def normalisation_of(mapping: InputMap, input_scale: float | None = None) -> dict[str, Any]:
    """The card's normalisation: how the user's values relate to what the graph takes."""
    if not mapping.takes_codes:
        return {"scale": mapping.scale, "offset": mapping.offset, "meaning": mapping.describe()}
    if not mapping.is_pixels:
        return {"scale": 1.0, "offset": 0.0, "meaning": mapping.describe()}
    return {
        "scale": INPUT_SCALE if input_scale is None else float(input_scale),
        "offset": 0.0,
        "meaning": "the graph receives uint8 pixels; "
        + ("their scale is the graph's own" if input_scale is None else "--input-scale put a Mul in front"),
    }


def is_sequence(card: dict[str, Any]) -> bool:
    """Whether the graph takes a sample (C, 1, T) as (1, C, T)."""
    return card["input"].get("layout") == SEQUENCE_LAYOUT


def graph_input_shape(card: dict[str, Any]) -> list[int]:
    """The shape of the graph's input (batch 1) for the card's samples."""
    spec = card["input"]
    return input_spec(list(spec["image_shape"]), spec["flatten"], is_sequence(card))["shape"]


@dataclass
class ExportResult:
    """A QONNX file and its model card, as an export (or the export cache) wrote them."""

    onnx_path: Path
    card_path: Path
    card: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": str(self.onnx_path),
            "card": str(self.card_path),
            **{k: self.card[k] for k in ("model", "bits", "input", "check")},
        }


def card_path_for(onnx_path: Path) -> Path:
    """model.qonnx.onnx -> model.qonnx.json"""
    return onnx_path.with_suffix(".json")


def read_card(onnx_path: Path) -> dict[str, Any]:
    path = card_path_for(Path(onnx_path))
    if not path.is_file():
        raise ExportError(
            f"The model card {path.name} is missing beside {onnx_path}.",
            where=str(path),
            fix="export with `sdk export RUN --out MODEL.onnx`, which writes both files",
        )
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise ExportError(
            f"The model card {path.name} cannot be read: {exc.strerror or exc}.", where=str(path), fix="check the file"
        ) from None
    if len(raw) > MAX_CARD_BYTES:
        raise ExportError(
            f"The model card {path.name} is larger than {MAX_CARD_BYTES >> 20} MiB; a card is a few KB of JSON.",
            where=str(path),
            fix="export again with `sdk export`, or delete the card to let the SDK read the input from the graph",
        )
    try:
        card = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ExportError(
            f"The model card {path.name} is not valid JSON: {exc}",
            where=str(path),
            fix="export again, or delete the card to let the SDK read the input from the graph",
        ) from exc
    problem = _card_problem(card)
    if problem:
        raise ExportError(
            f"The model card {path.name} {problem}.",
            where=str(path),
            fix="export again with `sdk export`, or delete the card to let the SDK read the input from the graph",
        )
    return card


def sample_too_large(shape: list[int]) -> str | None:
    """Why one sample of `shape` cannot be worked on within the SDK's memory budget (sdk.data.MEMORY_BUDGET), or
    None: asked of a card's and a graph's input shape before any sample of it is made."""
    need = math.prod(shape) * (1 + BYTES_PER_VALUE)
    if need <= MEMORY_BUDGET:
        return None
    return (
        f"one sample of it would take {need / 2**30:,.1f} GiB as the SDK works on it, over its memory budget of "
        f"{MEMORY_BUDGET >> 30} GiB"
    )


def check_graph_tensors(proto: Any, where: str) -> None:
    """Every tensor of the graph whose shape ONNX's shape inference knows, one sample's worth, against the memory
    budget: a graph can ask for a huge tensor from a small file (a ConstantOfShape of [1, 40000, 40000], a Resize),
    which no flow should be left to allocate. A graph shape inference cannot read is left to the flows' own checks."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # onnx raises several types for a graph it cannot infer; the flows refuse such a graph
        return
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shape = [int(d.dim_value) for d in dims]
            problem = sample_too_large(shape)
            if problem:
                raise ExportError(
                    f"The graph's tensor '{info.name}' has shape {shape}: {problem}.",
                    where=f"{where}, tensor {info.name}",
                    fix="export the model with smaller inputs and layers",
                )


def _card_problem(card: Any) -> str | None:
    """What makes a card unusable, or None: the fields every flow reads must be there, with the right types."""
    if not isinstance(card, dict):
        return "is not a JSON object"
    spec = card.get("input")
    if not isinstance(spec, dict):
        return "has no 'input' object"
    shape = spec.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        return f"has input.image_shape {shape!r}, not three positive integers (C, H, W)"
    problem = sample_too_large(shape)
    if problem:
        return f"has input.image_shape {shape}: {problem}"
    if not isinstance(spec.get("flatten"), bool):
        return "has no boolean input.flatten"
    if spec.get("layout") == SEQUENCE_LAYOUT and (shape[1] != 1 or spec["flatten"]):
        return f"has input.layout {SEQUENCE_LAYOUT} with input.image_shape {shape}, not (C, 1, T) unflattened"
    dataset = card.get("dataset")
    if dataset is not None and not (isinstance(dataset, dict) and isinstance(dataset.get("name"), str)):
        return "has a 'dataset' without a name"
    labels = card.get("labels", [])
    if not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)):
        return "has 'labels' that are not a list of names"
    return None


def _cleaned(cleanup_model: Callable, model: Any, where: str) -> Any:
    """qonnx's clean-up (its transformations repeat until the graph stops changing) under the SDK's time limit; the
    nodes, tensors and input keep the names the file gives them (sdk.graph_names), which every message uses."""
    from sdk.graph_names import keep_names
    from sdk.time_limit import STEP_TIMEOUT_VARIABLE, StepTimeout, step_timeout, time_limit

    limit = step_timeout()
    try:
        with time_limit(limit):
            return keep_names(model, cleanup_model)
    except StepTimeout:
        raise ExportError(
            f"qonnx's clean-up of the graph did not finish within {limit:g} s and was stopped.",
            where=f"{where}, qonnx clean-up",
            fix="check the graph for values and ops qonnx does not handle; if it is only large, allow more time: "
            f"{STEP_TIMEOUT_VARIABLE}=SECONDS",
        ) from None


def _check_input_codes(path: Path, shape: list[int], input_scale: float) -> None:
    """Refuse an --input-scale under which the pixel range (0..255) reaches the graph's first quantizer as one code:
    every input would then give the same output, and a deploy would verify a constant. Asked on pixels 0, 255, a
    ramp and its mirror; a graph without an activation quantizer is asked whether pixel * scale is still a float32
    number other than 0."""
    from sdk.graph_run import activation_codes

    if not np.float32(255 * input_scale) or not np.isfinite(np.float32(255 * input_scale)):
        _collapsed(input_scale, "255 * scale is 0 or not finite in float32")
    size = int(np.prod(shape[1:]))
    ramp = (np.arange(size) * 255 // max(size - 1, 1)).astype(np.uint8)
    x = np.stack([np.zeros(size, np.uint8), np.full(size, 255, np.uint8), ramp, 255 - ramp])
    x = x.reshape(len(x), *([1, 1, size] if len(shape) == 2 else shape[1:]))
    try:
        codes = activation_codes(path, x, len(shape) == 2)
    except SDKError:
        raise
    except Exception:  # qonnx cannot execute the graph: each flow's own check names why, in its terms
        return
    if codes:
        name, first = codes[0]
        if (first == first[:1]).all():
            _collapsed(input_scale, f"its first quantizer ({name}) gives the same codes for pixels 0 and 255")


def _collapsed(input_scale: float, why: str) -> None:
    raise ConfigError(
        f"--input-scale {input_scale} maps every pixel (0..255) to a single input code: {why}, so the model would "
        "give one output whatever the input.",
        where="--input-scale",
        fix="give the scale your model was trained with: 0.00392156862745098 (1/255) for pixels / 255, 1 for raw "
        "pixel values",
    )


def card_from_graph(
    onnx_path: Path, out_path: Path, input_scale: float | None, where: str, checked: Any = None
) -> dict[str, Any]:
    """A QONNX file without a model card: clean it up (shapes, constants, initializers given as graph inputs), take
    the input's shape and integer type from the graph, and write the graph the SDK deploys to `out_path`.

    The device interface (sdk.input_map) comes from the graph: an input annotated with an integer type takes those
    integers; a float input that the graph quantizes itself (after constant preprocessing such as x*2-1) takes its
    first quantizer's codes, with that preprocessing and quantizer moved to the host's input map; any other float
    input needs `input_scale`: the graph then receives pixel * input_scale (1/255 for a model trained on pixels /
    255), through a Mul put in front of it, as the SDK's own exports have.

    checked: the file's ModelProto as load_onnx_safely returned it, where the caller has it (not read twice)."""
    model = _readable_graph(onnx_path, where, checked)
    name, shape = _single_input(model, where)
    mapping = _annotated_input(model, name, len(shape) == 2, input_scale, where)
    if mapping is None and input_scale is None:
        mapping, model = _quantized_input(model, name, where)
    elif mapping is None:
        mapping, model = _scaled_pixels(model, name, shape, input_scale, out_path, where)
    model.save(str(out_path))
    card = _card_of(model, onnx_path.stem, mapping, input_scale)
    card_path_for(out_path).write_text(json.dumps(card, indent=2))
    return card


def _clean(model: Any, where: str) -> Any:
    """qonnx's clean-up of the graph (see _cleaned)."""
    from qonnx.util.cleanup import cleanup_model

    return _cleaned(cleanup_model, model, where)


def _readable_graph(onnx_path: Path, where: str, checked: Any) -> Any:
    """The file as a cleaned-up qonnx ModelWrapper, its nodes marked with their own names; checked for safety and
    size before qonnx sees it."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sdk.graph_names import mark_nodes

    if checked is None:
        checked = load_onnx_safely(onnx_path, where)  # before qonnx imports anything a node's domain names
    mark_nodes(checked.graph, fresh=True)  # the file's own names, for every message (sdk.graph_names)
    check_graph_tensors(checked, where)  # before qonnx's clean-up folds a constant of any size
    try:
        return _clean(ModelWrapper(checked), where)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"{onnx_path.name} cannot be read as a QONNX graph: {type(exc).__name__}: {exc}",
            where=where,
            fix="pass a .onnx file written by Brevitas's export_qonnx (or another QONNX exporter)",
        ) from exc


def _single_input(model: Any, where: str) -> tuple[str, list[int]]:
    """The graph's one input: its name and its shape, one sample of (1, C, H, W), (1, C, T) or (1, F) within the
    memory budget (and one output)."""
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ExportError(
            f"The graph has {len(model.graph.input)} inputs and {len(model.graph.output)} outputs; "
            "the SDK deploys graphs with one of each.",
            where=where,
            fix="export the model with a single input tensor and a single output tensor",
        )
    name = model.graph.input[0].name
    shape = [int(d) for d in (model.get_tensor_shape(name) or [])]
    if len(shape) not in (2, 3, 4) or shape[0] != 1 or any(d < 1 for d in shape):
        raise ExportError(
            f"The graph input '{name}' has shape {shape}; the SDK takes (1, C, H, W), (1, C, T) or (1, F).",
            where=f"{where}, input {name}",
            fix="export with one sample of a fixed shape, e.g. torch.zeros(1, 1, 28, 28)",
        )
    problem = sample_too_large(shape)
    if problem:
        raise ExportError(
            f"The graph input '{name}' has shape {shape}: {problem}.",
            where=f"{where}, input {name}",
            fix="export the model with a smaller input",
        )
    return name, shape


def _annotated_input(model: Any, name: str, flat: bool, input_scale: float | None, where: str) -> InputMap | None:
    """The input map of an input annotated with an integer type the targets take (None for a float input); an
    --input-scale for it, or an integer type too wide, is refused."""
    datatype = model.get_tensor_datatype(name)
    mapping = annotated_map(datatype, flat)
    if mapping is not None and input_scale is not None:
        raise ConfigError(
            f"--input-scale {input_scale} would be ignored: the graph input '{name}' is annotated {datatype.name}, so "
            "the graph takes those integers as they are.",
            where="--input-scale",
            fix="drop --input-scale for this model (it is for pixel data into a graph with a float input)",
        )
    if mapping is None and datatype.is_integer():
        raise ExportError(
            f"The graph input '{name}' is annotated {datatype.name}: every target takes integer inputs of 1 to "
            f"{MAX_INPUT_BITS} bits.",
            where=f"{where}, input {name}",
            fix=f"quantize the model's input to at most {MAX_INPUT_BITS} bits",
        )
    return mapping


def _quantized_input(model: Any, name: str, where: str) -> tuple[InputMap, Any]:
    """A float input the graph quantizes itself: the device takes its first quantizer's codes, and the graph loses
    the preprocessing and quantizer the host's input map now does."""
    mapping = read_input_interface(model, where)
    if mapping is None:
        datatype = model.get_tensor_datatype(name)
        raise ExportError(
            f"The graph input '{name}' is {datatype.name} and reaches a layer before any quantizer, so the SDK "
            "cannot tell which integers the device should take.",
            where=f"{where}, input {name}",
            fix="quantize the model's input first (a QuantIdentity at the start of forward; a constant scale or "
            "offset before it, such as x*2-1, is fine), or, for pixel data, pass --input-scale S so that the "
            "model receives pixel * S: 0.00392156862745098 (1/255) for a model trained on pixels / 255, 1 for "
            "raw pixel values",
        )
    return mapping, _clean(model, where)


def _scaled_pixels(
    model: Any, name: str, shape: list[int], input_scale: float, out_path: Path, where: str
) -> tuple[InputMap, Any]:
    """--input-scale: a Mul puts pixel * input_scale in front of the graph; the device takes uint8 pixels, or the
    first quantizer's codes where preprocessing and a quantizer follow the scale."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType

    from sdk.graph_names import SDK_INPUT_SCALE, mark_sdk_node

    if not (np.isfinite(input_scale) and input_scale > 0):
        raise ExportError(
            f"--input-scale must be a finite positive number, got {input_scale}.",
            where="--input-scale",
            fix="e.g. --input-scale 0.00392156862745098 (1/255)",
        )
    pixels, scale = f"{name}_pixels", f"{name}_pixel_scale"
    model.graph.input[0].name = pixels
    scaling = helper.make_node("Mul", [pixels, scale], [name], name="PixelScale")
    model.graph.node.insert(0, mark_sdk_node(scaling, SDK_INPUT_SCALE))
    model.set_initializer(scale, np.array(input_scale, dtype=np.float32))
    model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    model.set_tensor_datatype(pixels, DataType["UINT8"])
    model = _clean(model, where)
    model.save(str(out_path))
    _check_input_codes(out_path, shape, input_scale)  # on the pixels' graph, before any cut
    mapping = pixel_map()
    model.set_tensor_datatype(pixels, DataType["FLOAT32"])  # preprocessing after the pixel scale: the device
    preprocessed = read_input_interface(model, where, pixels_in=True)  # takes the first quantizer's codes
    if preprocessed is None:
        model.set_tensor_datatype(pixels, DataType["UINT8"])
        return mapping, model
    return preprocessed, _clean(model, where)


def _card_of(model: Any, name: str, mapping: InputMap, input_scale: float | None) -> dict[str, Any]:
    """The card of the graph as it will be deployed: its input (after any cut), its outputs as classes."""
    shape = [int(d) for d in model.get_tensor_shape(model.graph.input[0].name)]  # (1, F) where a flatten was cut
    flat, sequence = len(shape) == 2, len(shape) == 3
    input_shape = [1, 1, shape[1]] if flat else [shape[1], 1, shape[2]] if sequence else shape[1:]
    out_shape = model.get_tensor_shape(model.graph.output[0].name) or [1, 1]
    outputs = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 1
    return {
        "format": CARD_FORMAT,
        "model": name,
        "bits": None,
        "input": input_spec(input_shape, flat, sequence, mapping),
        "normalisation": normalisation_of(mapping, input_scale),
        "labels": [str(i) for i in range(outputs)],
        "dataset": None,
        "accuracy": None,
    }
