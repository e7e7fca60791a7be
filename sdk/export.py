"""Export a training run to QONNX, the one interchange format of the SDK.

The exported graph takes uint8 pixels (annotated UINT8) and starts with the
Mul by 1/255 the model was trained behind, so every downstream flow sees the
integer input the device will get. Beside the .onnx file a model card (JSON)
records input spec, normalisation, labels, bits, accuracy and the hash of the
source checkpoint. The export is checked by executing it with qonnx against
the Brevitas model before anything is written to the final path. The export
works in a scratch folder of the temp folder, never in the user's; it does not
replace an existing .onnx or card unless asked to (force).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdk.data import INPUT_SCALE, load_dataset
from sdk.errors import CheckpointError, ExportError
from sdk.graph_run import run_qonnx
from sdk.input_map import InputMap, pixel_map, read_input_interface
from sdk.model_card import (
    CARD_FORMAT,
    NORMALISATION,
    ExportResult,
    card_path_for,
    input_spec,
    is_sequence,
    normalisation_of,
)
from sdk.package import sha256_file
from sdk.qat import CHECKPOINT_NAME, TrainConfig, check_out_dir, load_checkpoint, module_input, read_metrics
from sdk.scratch import scratch_dir

# Floats may differ by accumulation order between PyTorch and onnxruntime. Up to
# 4 bits that stays at float32 rounding (~1e-7 of the output range); at 8 bits
# an activation that lands on a rounding tie can round the other way in one of
# them, one LSB, which moves the output by up to ~1e-3 of its range. Relative:
EXPORT_RTOL = 1e-3


class _ScaledInput(nn.Module):
    """uint8 pixels -> x * scale (x / 255 by default), in the graph so that the graph input is integer."""

    def __init__(self, model: nn.Module, scale: float = INPUT_SCALE):
        super().__init__()
        self.model = model
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale)


def _check_against_brevitas(
    onnx_path: Path,
    model: nn.Module,
    x_codes: np.ndarray,
    card: dict[str, Any],
    mapping: InputMap | None = None,
    pixel_scale: float = INPUT_SCALE,
    module_shape: list[int] | None = None,
) -> dict[str, Any]:
    """The exported graph (it takes device codes; `card` is its card) against the module (it takes pixels *
    pixel_scale, or, where it quantizes its own input, the values whose codes these are: `mapping`, shaped as one
    sample of `module_shape`)."""
    with torch.no_grad():
        if mapping is None:
            inputs = module_input(x_codes, card, pixel_scale)
        else:
            values = torch.from_numpy(mapping.values(x_codes))
            inputs = values.reshape(len(values), *(module_shape or [-1]))
        reference = model(inputs).numpy()
    exported = run_qonnx(onnx_path, x_codes, card["input"]["flatten"])
    max_abs = float(np.max(np.abs(exported - reference)))
    span = float(np.max(np.abs(reference))) or 1.0
    # Reported only: binary nets have exactly tied logits, where argmax follows float noise.
    same_class = float(np.mean(exported.argmax(1) == reference.argmax(1)))
    return {
        "samples": int(len(x_codes)),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / span,
        "argmax_agreement": same_class,
        "passed": bool(max_abs / span <= EXPORT_RTOL),
    }


def _refuse_to_overwrite(out_path: Path, force: bool) -> None:
    """Neither the .onnx nor the card beside it exists (or force): checked before the export's minutes of work."""
    card_path = card_path_for(out_path)
    for path in (out_path, card_path):
        if path.is_dir():
            raise ExportError(
                f"{path} is a folder; the export writes {'its model card' if path == card_path else 'the graph'} "
                "there.",
                where=f"--out {out_path}",
                fix="give an --out whose .onnx and .json names are free",
            )
        if not force and (path.exists() or path.is_symlink()):
            raise _exists(path, out_path)


def _exists(path: Path, out_path: Path) -> ExportError:
    card = path != out_path
    return ExportError(
        f"{path} exists; the export does not replace it"
        + (f" (it writes the model card of {out_path.name} there)." if card else "."),
        where=f"--out {out_path}",
        fix="give another --out, move the file away, or pass --force (force=True) to replace it",
    )


def _put(source: Path, dest: Path, force: bool, out_path: Path) -> None:
    """source -> dest by one rename (force) or one hard link (never overwrites; where the disk has no links, dest
    is checked just before the rename). OSError EXDEV when the two are on different disks."""
    if force:
        os.replace(source, dest)
        return
    try:
        os.link(source, dest)
    except FileExistsError:
        raise _exists(dest, out_path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):  # e.g. FAT: no links
            raise
        if dest.exists() or dest.is_symlink():
            raise _exists(dest, out_path) from None
        os.replace(source, dest)


def _place(files: list[tuple[Path, Path]], force: bool, out_path: Path) -> None:
    """Move each finished (source, destination) pair into place in one step. Where the scratch folder is on another
    disk, the file is copied first to a staging file of this call beside the destination. Without force an
    existing destination is never replaced; a refusal takes back the files this call placed. Nothing else in the
    destination's folder is touched."""
    placed: list[tuple[Path, os.stat_result]] = []
    try:
        for source, dest in files:
            ours = os.stat(source)
            try:
                _put(source, dest, force, out_path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                staging = dest.with_name(f".{dest.name}.sdk-{secrets.token_hex(8)}.part")
                fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    with os.fdopen(fd, "wb") as handle, open(source, "rb") as src:
                        shutil.copyfileobj(src, handle)
                        handle.flush()
                        os.fsync(handle.fileno())
                    ours = os.stat(staging)
                    _put(staging, dest, force, out_path)
                finally:
                    staging.unlink(missing_ok=True)  # made above by this call (O_EXCL)
            placed.append((dest, ours))
    except BaseException:
        for dest, ours in placed:
            with contextlib.suppress(OSError):
                now = os.stat(dest)
                if not force and (now.st_ino, now.st_dev) == (ours.st_ino, ours.st_dev):
                    dest.unlink()  # still the file this call made
        raise


def export_run(run_dir: Path | str, out_path: Path | str, check_samples: int = 32, force: bool = False) -> ExportResult:
    """Export the best checkpoint of a run to QONNX plus its model card, verified.

    An existing .onnx at out_path or card beside it is replaced only with force=True."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    if out_path.suffix != ".onnx" or out_path.is_dir():
        raise ExportError(
            f"--out {out_path} must name an .onnx file (its model card goes beside it, as .json).",
            where="--out",
            fix="e.g. --out model.qonnx.onnx",
        )
    check_out_dir(out_path.parent, where="--out")
    _refuse_to_overwrite(out_path, force)
    checkpoint = run_dir / CHECKPOINT_NAME if run_dir.is_dir() else run_dir
    model, payload = load_checkpoint(checkpoint)
    config = TrainConfig(**payload["config"])
    metrics = read_metrics(checkpoint)
    input_shape = list(payload["input_shape"])
    flat = model.flat_input

    data = load_dataset(config.dataset, seed=config.seed, image_size=config.image_size)
    if data.fingerprint() != payload.get("dataset_fingerprint"):
        raise CheckpointError(
            f"The data set '{config.dataset}' differs from the one this run was trained on.",
            where=str(checkpoint),
            fix="export on the machine and data the run was trained with, or train again",
        )
    card = {
        "format": CARD_FORMAT,
        "model": config.model,
        "bits": config.bits_config().to_dict(),
        "input": input_spec(input_shape, flat),
        "normalisation": NORMALISATION,
        "labels": payload["labels"],
        "dataset": {
            "name": config.dataset,
            "image_size": config.image_size,
            "seed": config.seed,
            "fingerprint": payload.get("dataset_fingerprint"),
        },
        "accuracy": {"test": metrics.get("test_accuracy"), "val": payload.get("val_accuracy")},
        "source_checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint)},
    }
    return _export_checked(model, card, data.x_test[:check_samples], out_path, str(checkpoint), force)


def _random_codes(mapping: InputMap, count: int, shape: list[int]) -> np.ndarray:
    """Random device codes over the input quantizer's whole range (signs included), seeded."""
    x = np.random.default_rng(0).integers(mapping.low, mapping.high + 1, size=(count, *shape))
    return (np.where(x >= 0, 1, -1) if mapping.dtype == "BIPOLAR" else x).astype(mapping.code_dtype())


def quantizes_own_input(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether the module's forward runs its input through constant preprocessing into a quantizer first (then
    the device takes that quantizer's codes and users pass what forward takes); asked of one TorchScript export
    in the temp folder."""
    from qonnx.core.modelwrapper import ModelWrapper

    with scratch_dir("export") as tmp, contextlib.redirect_stdout(StringIO()):
        try:
            qmodel = _export_qonnx_clean(model, example, Path(tmp) / "probe.onnx", EXPORTERS[0])
            return read_input_interface(ModelWrapper(qmodel.model), "probe") is not None
        except Exception:  # not exportable this way, or a quantizer the targets refuse: the pixel path's export
            return False  # and its checks name it


EXPORTERS = ("TorchScript", "dynamo")  # torch.onnx's exporters, in the order an export tries them


def _export_qonnx_clean(model: nn.Module, example: torch.Tensor, path: Path, exporter: str):
    """Brevitas's export_qonnx through one of torch's exporters, the graph cleaned up by qonnx."""
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from sdk.graph_names import mark_exported

    path.unlink(missing_ok=True)
    export_qonnx(model, input_t=example, export_path=str(path), dynamo=exporter == "dynamo")
    # messages name a node by the file's name and the module's layer (sdk.graph_names); /Mul is _ScaledInput's
    return mark_exported(ModelWrapper(str(path)), cleanup_model, "/Mul" if exporter == "TorchScript" else None)


def _export_checked(
    model: nn.Module,
    card: dict[str, Any],
    x_check: np.ndarray | None,
    out_path: Path,
    where: str,
    force: bool,
    own_input: bool = False,
) -> ExportResult:
    """Export `model` behind the uint8 -> /255 input scale, check it against the model on x_check, then write the
    .onnx and its card (with the check) atomically. own_input: the module quantizes its own input, so it is
    exported as it is and its graph's input becomes its first quantizer's codes (sdk.input_map); the check then
    runs on random codes over that quantizer's whole range.

    TorchScript traces a model in a tenth of dynamo's time (benchmarks/export_time.py). The two write the same
    layers in different ops (MatMul / Flatten / GlobalAveragePool where dynamo writes Gemm / Reshape /
    ReduceMean); every flow reads both, since users hand in either. Where TorchScript fails, writes an op qonnx
    cannot read (Brevitas's QuantLSTMCell) or a graph that disagrees with the model, dynamo exports it as it
    would alone. Only a graph that passed the check is kept."""
    from qonnx.core.datatype import DataType
    from qonnx.util.cleanup import cleanup_model

    graph_shape = card["input"]["shape"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir("export") as tmp:  # the temp folder: nothing is made or swept in the user's folder
        tmp_onnx = Path(tmp) / "model.onnx"
        pixel_scale = float(card["normalisation"]["scale"])
        wrapped = model if own_input else _ScaledInput(model, pixel_scale).eval()
        chatter = StringIO()  # torch.onnx prints progress to stdout; keep stdout for --json
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" is not news
        for exporter in EXPORTERS:
            last = exporter == EXPORTERS[-1]
            try:
                with contextlib.redirect_stdout(chatter):
                    qmodel = _export_qonnx_clean(wrapped, torch.zeros(graph_shape), tmp_onnx, exporter)
            except Exception as exc:
                if not last:
                    continue
                raise ExportError(
                    f"Brevitas could not export model '{card['model']}': {type(exc).__name__}: {exc}\n"
                    f"{chatter.getvalue()[-2000:]}",
                    where=where,
                    fix="the model may use a layer Brevitas cannot export; export it with "
                    "brevitas.export.export_qonnx yourself to see where, and replace that layer",
                ) from exc
            mapping = read_input_interface(qmodel, where, pixels_in=not own_input)
            if own_input and mapping is None:  # the other exporter may write the input's quantizer first
                if not last:
                    continue
                raise ExportError(
                    f"The export of model '{card['model']}' does not start with the quantizer its forward "
                    "applies to its input.",
                    where=where,
                    fix="this is a bug in the export; please report it with the model",
                )
            exported_card, x_codes, reference = card, x_check, model
            if mapping is None:  # uint8 pixels, scaled in the graph
                qmodel.set_tensor_datatype(qmodel.graph.input[0].name, DataType["UINT8"])
            else:  # the first quantizer's codes (after the pixel scale, where the module takes pixels)
                qmodel = cleanup_model(qmodel)
                shape = card["input"]["image_shape"]
                if mapping.flat and not card["input"]["flatten"]:  # a flatten before the quantizer was cut off
                    shape = [1, 1, int(np.prod(shape))]
                sequence = is_sequence(card) and not mapping.flat
                exported_card = {**card, "input": input_spec(shape, mapping.flat, sequence, mapping)}
                exported_card["normalisation"] = normalisation_of(mapping)
                x_codes = _random_codes(mapping, len(x_check), shape)
                reference = wrapped
            qmodel.save(str(tmp_onnx))
            try:
                module_shape = card["input"]["shape"][1:]  # one sample as the module takes it
                check = _check_against_brevitas(
                    tmp_onnx, reference, x_codes, exported_card, mapping, pixel_scale, module_shape
                )
            except Exception:
                if not last:  # a graph the check cannot run: the next exporter's may
                    continue
                raise
            if check["passed"]:
                break
            if last:
                raise ExportError(
                    "The exported graph disagrees with the Brevitas model "
                    f"(max relative diff {check['max_rel_diff']:.2e}).",
                    where=where,
                    fix="this is a bug in the export; please report it with the model",
                )
        card = {**exported_card, "check": check, "onnx_sha256": sha256_file(tmp_onnx)}
        tmp_card = Path(tmp) / "card.json"
        tmp_card.write_text(json.dumps(card, indent=2))
        card_path = card_path_for(out_path)
        _place([(tmp_onnx, out_path), (tmp_card, card_path)], force, out_path)
    return ExportResult(out_path, card_path, card)


BINARY_WEIGHTS_FIX = (
    "for 1-bit weights use weight_quant=SignedBinaryWeightPerTensorConst (from brevitas.quant): weights of -scale / "
    "+scale, which the FPGA boards and (with 2..8-bit activations) the TFLite targets deploy"
)


def _refuse_weights_brevitas_cannot_export(model: nn.Module) -> None:
    """Weight quantizers whose export would not compute the module, named by layer before the export.

    Brevitas's default weight quantizer is signed and narrow-range: at weight_bit_width=1 its only integer is 0, its
    scale max|w| / 0 is infinite and the module computes NaN. Any other 1-bit weight quantizer whose integers hold a
    0 (signed -1 / 0, unsigned 0 / 1) is written by Brevitas's QONNX export as BipolarQuant (-1 / +1), a graph that
    disagrees with the module. 1-bit weights are Brevitas's binary quantizer."""
    for name, module in model.named_modules():
        if getattr(module, "weight_quant", None) is None or not callable(getattr(module, "quant_weight", None)):
            continue
        try:
            with torch.no_grad():
                weight = module.quant_weight()
                scale, bits = weight.scale, int(weight.bit_width)
                ints = torch.unique(torch.round(weight.value / scale)) if bits == 1 else None
        except Exception:  # not a quantized weight this check can read: the export and its check judge it
            continue
        layer = f"Layer {name or type(module).__name__} ({type(module).__name__})"
        where = f"layer {name or type(module).__name__}"
        if not bool(torch.isfinite(scale).all()):
            if bits == 1:
                raise ExportError(
                    f"{layer} has a weight scale that is not finite: weight_bit_width=1 with a signed narrow-range "
                    "quantizer (Brevitas's default) leaves 0 as the only integer, so its scale divides by 0 and the "
                    "module computes NaN.",
                    where=where,
                    fix=BINARY_WEIGHTS_FIX,
                )
            raise ExportError(
                f"{layer} has a weight scale that is not finite (a NaN or infinite weight gives one); the module "
                "computes NaN.",
                where=where,
                fix="give the layer finite weights (retrain, or check how they were loaded)",
            )
        if ints is not None and bool((ints == 0).any()):
            shown = " / ".join(str(int(v)) for v in ints.tolist()[:3])
            raise ExportError(
                f"{layer} quantizes weights to 1 bit with the integers {shown}: Brevitas exports every 1-bit "
                "quantizer as QONNX's BipolarQuant (-1 / +1), so the exported graph would not compute this module.",
                where=where,
                fix=BINARY_WEIGHTS_FIX,
            )


def export_module(
    model: nn.Module,
    example_input: torch.Tensor | np.ndarray | tuple[int, ...],
    out_path: Path | str,
    labels: list[str] | None = None,
    check_samples: int = 32,
    force: bool = False,
    input_scale: float | None = None,
) -> ExportResult:
    """Export a user's own Brevitas module to QONNX plus a model card, checked on random inputs.

    A module whose forward quantizes its input first (a QuantIdentity, perhaps after constant preprocessing such
    as x*2-1) takes its own values: the exported graph takes that quantizer's codes, and the card records the map
    from the values to them (sdk.input_map). Any other module, and any module given `input_scale` (pixel data),
    takes pixels * input_scale (pixels / 255 by default: floats in [0, 1]); its exported graph takes the uint8
    pixels and holds the scale itself, like the SDK's own exports. Either way samples are shaped like
    `example_input`: (1, C, H, W) for a conv net, (1, C, T) for a Conv1d net over sequences (its samples are
    (C, 1, T)), (1, F) for an MLP. The card names no data set: verification samples come from --data, else random
    inputs. An existing file at out_path or card beside it is replaced only with force=True."""
    shape = tuple(example_input) if isinstance(example_input, tuple) else tuple(np.shape(example_input))
    if len(shape) not in (2, 3, 4) or shape[0] != 1 or any(int(d) < 1 for d in shape):
        raise ExportError(
            f"The example input has shape {shape}; the SDK takes one sample, (1, C, H, W), (1, C, T) or (1, F).",
            where="example_input",
            fix="pass e.g. torch.zeros(1, 1, 28, 28) for a conv net, torch.zeros(1, 10, 49) for a Conv1d net or "
            "torch.zeros(1, 784) for an MLP",
        )
    flat, sequence = len(shape) == 2, len(shape) == 3
    input_shape = [1, 1, int(shape[1])] if flat else [int(shape[1]), 1, int(shape[2])] if sequence else shape[1:]
    input_shape = [int(d) for d in input_shape]
    spec = input_spec(input_shape, flat, sequence)
    model = model.eval()
    _refuse_weights_brevitas_cannot_export(model)
    with torch.no_grad():
        outputs = model(torch.zeros(spec["shape"])).reshape(1, -1).shape[1]
    card = {
        "format": CARD_FORMAT,
        "model": type(model).__name__,
        "bits": None,
        "input": spec,
        "normalisation": NORMALISATION if input_scale is None else normalisation_of(pixel_map(), input_scale),
        "labels": list(labels) if labels else [str(i) for i in range(outputs)],
        "dataset": None,
        "accuracy": None,
    }
    x_check = np.random.default_rng(0).integers(0, 256, size=(check_samples, *input_shape), dtype=np.uint8)
    _refuse_to_overwrite(Path(out_path), force)
    own = input_scale is None and quantizes_own_input(model, torch.zeros(spec["shape"]))
    return _export_checked(model, card, x_check, Path(out_path), f"model {type(model).__name__}", force, own)
