"""`sdk deploy`: one trained model to one board, as a verified deployment package.

The orchestration only: resolve the model and the board, take verification
samples and the QAT model's outputs on them, hand everything to the board's
target adapter, then commit the package atomically. The adapter does the flow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk import __version__
from sdk.advice import advise
from sdk.boards import Board, get_board
from sdk.data import INPUT_SCALE, check_values, load_dataset, load_samples
from sdk.errors import CheckpointError, ConfigError, DatasetError, ExportError, InternalError, SDKError
from sdk.package import PackageBuilder, check_output_path, sha256_file, tool_versions
from sdk.progress import JobProgress, ProgressCallback, progress_callback
from sdk.report import REPORT_JSON, REPORT_MD, kib, percent
from sdk.scratch import clear_scratch, scratch_dir
from sdk.step_times import StepClock, StepTable
from targets.base import finite_positive, parse_options
from targets.registry import get_target

if TYPE_CHECKING:
    from sdk.input_map import InputMap

# the step table's rows that are no progress event: the checks before any work, and the scratch folder's removal
PREPARE_STEP = "check settings, board and output folder"
CLEAN_STEP = "remove scratch files"

DEFAULT_SAMPLES = 100  # verification samples taken from the card's data set when --samples is not given

# Packages every deploy uses, whatever the flow; each target adds its own (Target.tool_packages).
CORE_TOOL_PACKAGES = ("torch", "brevitas", "onnx", "onnxruntime", "qonnx", "numpy")


MAX_PATH_BYTES, MAX_NAME_BYTES = 4095, 255  # Linux's PATH_MAX (less the NUL) and NAME_MAX


def _too_long(path: str) -> bool:
    """A path the OS refuses by its length alone (ENAMETOOLONG), told before any file is touched."""
    encoded = path.encode("utf-8", "surrogateescape")
    return len(encoded) > MAX_PATH_BYTES or any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/"))


@dataclass
class DeployConfig:
    """Everything that determines a deployment. Serialised into the package manifest."""

    target: str  # board name (see `sdk boards`), or board:flow for a board that serves several; a,b,c for several
    model: str  # a training run folder (exported on the fly), or a QONNX file with its model card beside it
    out: str | None = None  # package folder; default: deploy/<board>
    clock_mhz: float | None = None  # override the board's clock
    input_scale: float | None = None  # a QONNX graph with a float input receives pixel * input_scale
    data: str | None = None  # verification samples: an .npz (x, y optional) or an idx folder, used whole
    samples: int | None = None  # at most this many samples (default: all of --data, 100 of the card's data set)
    # the flows' own options the user set, by name (each flow declares its own: FlowInfo.options); the board's flow
    # takes its own, and refuses another flow's (targets.base.parse_options)
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not isinstance(self.target, str) or not isinstance(self.model, str | Path):
            raise ConfigError(
                "DeployConfig needs the target as a board name and the model as a path.",
                where="DeployConfig(target=..., model=...)",
                fix="e.g. DeployConfig(target='pynq-z2', model='run/')",
            )
        for name in ("out", "data"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str | Path) or not str(value)):
                raise ConfigError(
                    f"--{name} must be a path, got {value!r}.",
                    where=f"--{name}",
                    fix=f"e.g. --{name} deploy/pynq-z2" if name == "out" else "e.g. --data samples.npz",
                )
            if value is not None and _too_long(str(value)):
                raise ConfigError(
                    f"--{name} is too long for a path ({len(str(value)):,} characters; at most {MAX_PATH_BYTES:,} "
                    f"bytes, {MAX_NAME_BYTES} for each name in it).",
                    where=f"--{name}",
                    fix="use a shorter path",
                )
        if self.samples is not None and (
            isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1
        ):
            raise ConfigError(
                f"--samples must be an integer of at least 1, got {self.samples!r}.",
                where="--samples",
                fix="e.g. --samples 100",
            )
        self._validate_options()
        finite_positive(self.clock_mhz, "--clock-mhz", "100")
        finite_positive(self.input_scale, "--input-scale", "0.00392156862745098")

    def _validate_options(self) -> None:
        """Every option is one a registered flow declares; a switch is a bool ("no" is truthy, so never guessed)."""
        from targets.registry import deploy_options

        if not isinstance(self.options, dict):
            raise ConfigError(
                f"DeployConfig's options must be a dict of option name -> value, got {type(self.options).__name__}.",
                where="DeployConfig(options=...)",
                fix="pass a dict of option name -> value (`sdk deploy --help` lists the flows' options)",
            )
        specs = deploy_options()
        unknown = sorted(str(name) for name in self.options if name not in specs)
        if unknown:
            raise ConfigError(
                f"Unknown flow option(s): {', '.join(unknown)}.",
                where=", ".join(unknown),
                fix=f"use the options the flows declare: {', '.join(specs)}",
            )
        for name, value in self.options.items():
            if specs[name].type is bool and not isinstance(value, bool):
                flag = specs[name].flag
                raise ConfigError(f"{flag} is a switch (True or False), got {value!r}.", where=flag, fix=f"{name}=True")

    def flow_options(self) -> dict[str, Any]:
        """The flow options the user set (differing from their defaults), by name."""
        from targets.registry import deploy_options, set_options

        return set_options(self.options, deploy_options())

    def recorded(self) -> dict[str, Any]:
        """What the package's manifest records of the deploy: the settings, and every flow option (its default
        where the user set none)."""
        from targets.registry import deploy_options

        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "out", "options")}
        return settings | {name: spec.default for name, spec in deploy_options().items()} | self.options

    def package_dir(self, choice: TargetChoice) -> Path:
        return Path(self.out) if self.out else Path("deploy") / choice.folder

    def boards(self) -> list[str]:
        """--target a,b,c: one deployment per board."""
        names = [name.strip() for name in self.target.split(",") if name.strip()]
        if not names:
            raise ConfigError(
                "--target names no board.", where="--target", fix="e.g. --target pynq-z2 (see `sdk boards`)"
            )
        if len(set(names)) != len(names):
            raise ConfigError(
                f"--target names a board twice: {self.target}.", where="--target", fix="name each board once"
            )
        return names


@dataclass
class DeployResult:
    board: str
    flow: str
    package: Path
    verified: bool
    summary: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    error: str | None = None  # an error that stopped this board (in a multi-target deploy)
    error_exit_code: int = 2  # 2: a user error, 3: a bug in the SDK
    failure: dict[str, Any] | None = None  # why the exactness rule failed (sdk.verify.Verification.failure)

    @property
    def exit_code(self) -> int:
        return self.error_exit_code if self.error else 0 if self.verified else 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "package": str(self.package), "exit_code": self.exit_code}


@dataclass
class ResolvedModel:
    onnx_path: Path
    card: dict[str, Any]
    brevitas: Any | None  # the QAT model, where its checkpoint is at hand
    notes: list[str] = field(default_factory=list)  # what was read differently from the file (into each report)


def resolve_model(model: str, workdir: Path, input_scale: float | None = None) -> ResolvedModel:
    """A run folder is exported (and checked against Brevitas) once per checkpoint; a QONNX file is taken with its
    model card where one lies beside it, else with a card read off the graph (see sdk.model_card.card_from_graph).
    Either way the graph is the source model the flows compare against: no torch is loaded for it."""
    from sdk.export_cache import export_run_cached
    from sdk.model_card import card_from_graph, card_path_for, check_graph_tensors, read_card
    from sdk.onnx_guard import legacy_note, load_onnx_safely
    from sdk.runs import CHECKPOINT_NAME

    path = Path(model)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(
                f"{path} is not a training run (no {CHECKPOINT_NAME}).",
                where="--model",
                fix="pass a folder written by `sdk train`, or a QONNX file from `sdk export`",
            )
        _no_input_scale(input_scale, "a training run's export")
        exported = export_run_cached(path, workdir / "model.qonnx.onnx")
        return ResolvedModel(exported.onnx_path, exported.card, None)
    if not path.is_file():
        raise CheckpointError(
            f"Model {path} does not exist.",
            where="--model",
            fix="pass a training run folder or a .onnx file from `sdk export`",
        )
    local = workdir / "model.qonnx.onnx"
    local.write_bytes(path.read_bytes())  # what is checked is what is deployed, even if the file changes meanwhile
    renamed: list[str] = []  # older QONNX: quantizers in FINN's domain, read as qonnx's (a note is logged)
    proto = load_onnx_safely(local, f"--model {model}", renamed=renamed)  # before any library sees the graph
    notes = []
    if renamed:  # every later reader (flows, package, simulate) gets the graph with qonnx's domain, noted once
        local.write_bytes(proto.SerializeToString())
        notes.append(legacy_note(f"--model {model}", renamed))
    if not card_path_for(path).is_file():  # any QONNX file: the card comes from the graph
        card = card_from_graph(local, local, input_scale, where=f"--model {model}", checked=proto)
        return ResolvedModel(local, card, None, notes)
    card = read_card(path)
    _no_input_scale(input_scale, f"the model card {card_path_for(path).name}")
    _card_fits_graph(card, proto, f"{card_path_for(path)}, input.image_shape")
    check_graph_tensors(proto, f"--model {model}")
    card_path_for(local).write_text(json.dumps(card, indent=2))
    return ResolvedModel(local, card, None, notes)


def _no_input_scale(input_scale: float | None, source: str) -> None:
    """--input-scale only puts a Mul in front of a card-less graph's float input; a graph with a card takes uint8
    pixels and scales them itself, so the option would be ignored (yet recorded in the manifest): refused."""
    if input_scale is not None:
        raise ConfigError(
            f"--input-scale {input_scale} would be ignored: {source} says the graph takes uint8 pixels and scales "
            "them itself (the scale is inside the graph).",
            where="--input-scale",
            fix="drop --input-scale; it is for a QONNX file with a float input and no model card beside it",
        )


def _card_fits_graph(card: dict[str, Any], proto: Any, where: str) -> None:
    """The card's input shape is the graph's: every flow makes its samples from the card and feeds them to the
    graph, so a card written for another graph is refused here, by `sdk check` as by `sdk deploy`."""
    from sdk.model_card import graph_input_shape

    expected = graph_input_shape(card)
    if not proto.graph.input or not proto.graph.input[0].type.tensor_type.shape.dim:
        return  # no input, or one without a declared shape: the flows' own checks name it
    first = proto.graph.input[0]
    graph = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    if len(graph) != len(expected) or any(g is not None and g != e for g, e in zip(graph[1:], expected[1:])):
        shown = ["?" if d is None else d for d in graph]
        raise ExportError(
            f"The model card gives the input shape {expected}; the graph's input '{first.name}' has {shown}.",
            where=where,
            fix="use the card written with this graph (`sdk export` writes both), or delete the card to let the SDK "
            "read the input from the graph",
        )


@dataclass
class Samples:
    """The verification inputs (device codes, sdk.input_map, in the card's input layout), their labels if known, and
    what they are."""

    x: np.ndarray
    y: np.ndarray | None
    label: str  # for every accuracy reported: what it was measured on


RANDOM_SEED = 0  # random verification inputs are reproducible


def in_model_layout(x: np.ndarray, card: dict[str, Any], where: str) -> np.ndarray:
    """Samples as the card's (N, C, H, W); an MLP takes any layout of the right size (it flattens the sample), a
    sequence model (C, 1, T) also (N, C, T) (which arrives here as (N, 1, C, T))."""
    shape = tuple(card["input"]["image_shape"])
    if x.shape[1:] == shape:
        return x  # in the card's layout already (every rule below would leave it as it is)
    from sdk.model_card import is_sequence

    if card["input"]["flatten"] and int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        x = x.reshape(len(x), *shape)
    elif is_sequence(card) and tuple(x.shape[1:]) == (1, shape[0], shape[2]):
        x = x.reshape(len(x), *shape)
    if tuple(x.shape[1:]) != shape:
        if is_sequence(card):
            given = tuple(x.shape[2:] if x.ndim == 4 and x.shape[1] == 1 else x.shape[1:])  # (N, C, T) came as 4-D
            raise DatasetError(
                f"The samples have shape {given}; the model takes ({shape[0]}, {shape[2]}) (C, T).",
                where=where,
                fix=f"store x as (N, {shape[0]}, {shape[2]}): channels over time, as the model's forward takes them",
            )
        raise DatasetError(
            f"The samples have shape {tuple(x.shape[1:])}; the model takes {shape} (C, H, W).",
            where=where,
            fix="store x as (N, C, H, W) (or (N, H, W), (N, F) for one channel) in the model's input size",
        )
    return x


def model_batch(
    x: Any, card: dict[str, Any], where: str = "x", codes: bool = False, mapping: InputMap | None = None
) -> np.ndarray:
    """A batch handed to a package (`sdk.simulate`), checked the same way for every flow before any runs it and
    turned into the device codes every flow takes (sdk.input_map): a numeric array of at least one sample, shaped
    like the card's input ((N, H, W) and (N, F) as --data takes them), holding what the model's forward takes
    (pixels: uint8, or floats in [0, 1] as --data takes them; features: floats the first quantizer takes without
    clipping). codes=True: x holds the device's integers already. Nothing is cast, wrapped or clipped silently.
    mapping: the card's input map, where the caller read it once (a loaded package)."""
    from sdk.model_card import input_map_of

    mapping = mapping or input_map_of(card)

    def fix() -> str:  # written only for an error: a loaded package's every call passes here
        return f"pass the samples as an array (N, C, H, W) of what the model's forward takes: {mapping.value_range()}"

    if x is None or isinstance(x, str | bytes | dict):
        raise ConfigError(f"{where} must be an array of samples, got {type(x).__name__}.", where=where, fix=fix())
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as exc:  # a ragged list, an object numpy cannot make an array of
        raise ConfigError(f"{where} is not an array of samples: {exc}", where=where, fix=fix()) from None
    if array.dtype.kind not in "uifb":
        raise ConfigError(f"{where} holds {array.dtype} values, not numbers.", where=where, fix=fix())
    if array.ndim not in (2, 3, 4) or array.size == 0:
        what = "holds no samples" if array.size == 0 else f"has shape {array.shape}"
        raise ConfigError(f"{where} {what}; a batch is (N, C, H, W) with N >= 1.", where=where, fix=fix())
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[:, None, None, :]
    elif array.ndim == 3:
        array = array[:, None, :, :]
    try:
        array = in_model_layout(array, card, where)
    except DatasetError as exc:
        raise ConfigError(exc.what, where=where, fix=exc.fix) from None
    return device_codes(array, card, where, codes, mapping)


def device_codes(
    x: np.ndarray, card: dict[str, Any], where: str, codes: bool = False, mapping: InputMap | None = None
) -> np.ndarray:
    """x (in the card's layout) as the device's integer codes: the one conversion of every user value (--data,
    `sdk simulate --data`, sdk.simulate) for every flow. Pixels given as floats must be in [0, 1], as --data takes
    them; codes=True takes the device's integers as they are."""
    from sdk.model_card import input_map_of

    mapping = mapping or input_map_of(card)
    if mapping.user_pixels and x.dtype.kind == "f" and not codes:
        x = _float_pixels(x, where)
    if codes or mapping.takes_codes:
        return mapping.check_codes(
            x,
            where,
            lambda: (
                f"pass {mapping.value_range()}" + (" (floats in [0, 1] are scaled by 255)" if mapping.is_pixels else "")
            ),
        )
    return mapping.codes(x, where)


def _float_pixels(x: np.ndarray, where: str) -> np.ndarray:
    """Float pixels as --data takes them: finite, in [0, 1], scaled to 0..255 (uint8)."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(x) | (x < 0) | (x > 1)
    if bad.any():
        value = x.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
        raise ConfigError(
            f"{where} holds {int(bad.sum()):,} float value(s) outside [0, 1], e.g. {value}: this model takes pixels, "
            "as uint8 0..255 or as floats in [0, 1].",
            where=where,
            fix="pass uint8 pixels (np.asarray(x, np.uint8)) or floats in [0, 1] (x / 255)",
        )
    return np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)


def check_labels(y: np.ndarray | None, reference: np.ndarray, where: str) -> None:
    """Labels the model cannot produce are refused before they count into an accuracy: a model with K outputs
    gives the classes 0..K-1 (one output: a binary classifier, 0 and 1). The same check for every flow."""
    if y is None or not len(y):
        return
    outputs = int(np.prod(reference.shape[1:])) if reference.ndim > 1 else 1
    classes = 2 if outputs == 1 else outputs
    wrong = np.unique(y[(y < 0) | (y >= classes)])
    if len(wrong):
        shown = ", ".join(str(v) for v in wrong[:5]) + (" ..." if len(wrong) > 5 else "")
        raise DatasetError(
            f"Labels y hold {shown}: the model has {outputs} output(s), so its classes are 0..{classes - 1}; "
            "an accuracy on these labels would count them as wrong answers.",
            where=f"{where}, array y",
            fix=f"give labels 0..{classes - 1} in the model's class order, or leave y out (accuracy not measured)",
        )


def verification_samples(card: dict[str, Any], count: int | None, data: str | None = None) -> Samples:
    """--data (the whole file, or its first --samples), else the card's data set's test split (its first --samples,
    100 by default), else random inputs over the input's whole integer range (no labels: accuracy not measured).
    Samples are device codes (sdk.input_map)."""
    from sdk.model_card import input_map_of

    shape = tuple(card["input"]["image_shape"])
    if data is not None:
        x, y, _ = load_samples(data, raw=not input_map_of(card).user_pixels)
        x = in_model_layout(x, card, f"--data {data}")
        x, y = x[:count], (None if y is None else y[:count])
        x = device_codes(x, card, f"--data {data}")
        unlabelled = "" if y is not None else " (no labels: accuracy not measured)"
        return Samples(x, y, f"{Path(data).name}, {len(x):,} samples{unlabelled}")
    spec = card.get("dataset")
    count = DEFAULT_SAMPLES if count is None else count
    if not spec:
        check_values((count, *shape), 1, f"{count:,} random inputs", "--samples", "verify on fewer: --samples 100")
        mapping = input_map_of(card)
        x = np.random.default_rng(RANDOM_SEED).integers(mapping.low, mapping.high + 1, size=(count, *shape))
        if mapping.dtype == "BIPOLAR":
            x = np.where(x >= 0, 1, -1)
        return Samples(
            x.astype(mapping.code_dtype()),
            None,
            f"{count:,} random inputs over the whole input range (no labels: accuracy not measured)",
        )
    try:
        dataset = load_dataset(spec["name"], seed=spec.get("seed", 0), image_size=spec.get("image_size"))
    except SDKError as exc:  # the card's own seed / image size / data set name: say so, not as an option
        if not str(exc.where or "").startswith("--"):
            raise
        field = exc.where.removeprefix("--").replace("-", "_")
        raise CheckpointError(
            f"The model card's dataset.{field} is not usable: {exc.what}",
            where="model card, dataset",
            fix="export the model again with `sdk export RUN`, or pass your samples with --data",
        ) from exc
    if spec.get("fingerprint") and dataset.fingerprint() != spec["fingerprint"]:
        raise CheckpointError(
            f"The data set '{spec['name']}' differs from the one the model was trained on.",
            where="model card, dataset",
            fix="deploy where the training data is available, or pass your samples with --data",
        )
    x, y = dataset.x_test[:count], dataset.y_test[:count]
    return Samples(x, y, f"{spec['name']} test split, {len(x):,} samples")


def qat_outputs(resolved: ResolvedModel, x: np.ndarray) -> np.ndarray:
    """The source model's float outputs: the Brevitas module itself where the caller gave one (the Python API),
    else the QONNX graph (a run's export was checked equal to its Brevitas model when it was exported), its outputs
    on this batch cached (sdk/reference_cache.py)."""
    from sdk.graph_run import run_qonnx
    from sdk.model_card import input_map_of
    from sdk.reference_cache import cached_outputs

    flat = resolved.card["input"]["flatten"]
    if resolved.brevitas is not None and input_map_of(resolved.card).is_pixels:
        import torch

        from sdk.qat import module_input

        scale = float(resolved.card.get("normalisation", {}).get("scale", INPUT_SCALE))
        with torch.no_grad():
            return resolved.brevitas(module_input(x, resolved.card, scale)).numpy()
    return cached_outputs(resolved.onnx_path, x, flat, lambda: run_qonnx(resolved.onnx_path, x, flat))


@dataclass(frozen=True)
class TargetChoice:
    """One entry of --target: a board and the flow to deploy with (the board's first flow unless named)."""

    board: Board
    flow: str

    @property
    def folder(self) -> str:
        """The package folder's name: the board's, plus the flow where it is not the board's default."""
        return self.board.name if self.flow == self.board.flows[0] else f"{self.board.name}-{self.flow}"

    @property
    def target(self):
        return get_target(self.flow)


def choose_target(name: str) -> TargetChoice:
    """'pynq-z2' or 'ethos-u55-128:tflm' (a board that serves several flows, with the flow to use)."""
    board_name, _, flow = name.partition(":")
    board = get_board(board_name.strip())
    flow = flow.strip() or board.flows[0]
    if flow not in board.flows:
        raise ConfigError(
            f"Board {board.name} does not serve the flow '{flow}'.",
            where=f"--target {name}",
            fix=f"use one of its flows: {', '.join(f'{board.name}:{f}' for f in board.flows)}",
        )
    choice = TargetChoice(board, flow)
    choice.target.validate_board(board)
    return choice


@dataclass
class PreparedModel:
    """What every board of one deploy shares: the exported model, the verification samples and the QAT outputs
    on them."""

    resolved: ResolvedModel
    samples: Samples
    reference: np.ndarray


def prepare_model(config: DeployConfig, workdir: Path, qat_model: Any = None) -> PreparedModel:
    """Export (or copy) the model into workdir, take the samples and run the QAT model on them: once per deploy.

    qat_model: the Brevitas module itself, where the caller has it (the Python API with an nn.Module)."""
    resolved = resolve_model(config.model, workdir, config.input_scale)
    if qat_model is not None:
        resolved.brevitas = qat_model.eval()
    samples = verification_samples(resolved.card, config.samples, config.data)
    reference = qat_outputs(resolved, samples.x)
    check_labels(samples.y, reference, f"--data {config.data}" if config.data else "the model card's data set")
    return PreparedModel(resolved, samples, reference)


def _request(config: DeployConfig, choice: TargetChoice, workdir: Path, prepared: PreparedModel):
    from targets.base import BuildRequest

    resolved = prepared.resolved
    options = parse_options(choice.target, config.flow_options(), choice.board)
    return BuildRequest(
        resolved.onnx_path,
        resolved.card,
        choice.board,
        options,
        config.clock_mhz or choice.board.clock_mhz,
        workdir,
        prepared.samples.x,
        prepared.samples.y,
        prepared.reference,
        prepared.samples.label,
        resolved.brevitas,
    )


def check(config: DeployConfig, qat_model: Any = None) -> None:
    """Only the mapping check of the target: raises an SDKError naming every unsupported layer."""
    config.validate()
    choice = choose_target(config.target)
    parse_options(choice.target, config.flow_options(), choice.board)
    with scratch_dir("check") as tmp:
        # no samples, no QAT outputs: the check only needs the graph (and the QAT model, for the TFLite writer)
        resolved = resolve_model(config.model, Path(tmp), config.input_scale)
        module = resolved.brevitas if qat_model is None else qat_model
        try:
            choice.target.check(resolved.onnx_path, choice.board, Path(tmp), module)
        except SDKError as exc:  # a fix names another target only if that target's check takes the model
            advise(exc, choice.flow, resolved.onnx_path, Path(tmp), module)
            raise


def deploy(
    config: DeployConfig,
    progress: ProgressCallback | None = None,
    prepared: PreparedModel | None = None,
    qat_model: Any = None,
) -> DeployResult:
    """Build, verify and package one deployment; the package appears only when complete.

    progress: called with a ProgressEvent per step (sdk.progress); nothing is drawn or printed here.
    prepared: the model and samples from prepare_model(), shared by the boards of a multi-target deploy."""
    clock = StepClock()  # every second of the deploy, up to its report, in the report's step table
    clock.start(PREPARE_STEP)
    from sdk.model_card import input_map_of
    from sdk.report import add_failure, write_report

    config.validate()
    choice = choose_target(config.target)
    board, target = choice.board, choice.target
    parse_options(target, config.flow_options(), board)  # refused before any long work
    final_dir = config.package_dir(choice)
    check_output_path(final_dir)  # a file, a foreign folder, a read-only parent or a running deploy: before long work
    events = JobProgress(progress_callback(progress), "deploy", board.name)
    with scratch_dir("deploy") as tmp, _finishing(events):
        clock.start("load model and samples")
        events.start("load model and samples")
        prepared = prepared or prepare_model(config, Path(tmp), qat_model)
        request = _request(config, choice, Path(tmp), prepared)

        def step(message: str) -> None:
            clock.start(message)
            events.step(message)

        with PackageBuilder(final_dir) as pkg:
            try:
                outcome = target.build(request, pkg, step)
            except SDKError as exc:  # a fix names another target only if that target's check takes the model
                advise(exc, choice.flow, request.model_path, Path(tmp), request.qat_model)
                raise
            step("write report")
            outcome.report.notes.extend(prepared.resolved.notes)
            _add_input_map(outcome.report, request.card)
            add_failure(outcome.report, outcome.verification.failure())
            step("commit package")
            pkg.add_file("model.qonnx.onnx", request.model_path)
            pkg.write_json("model.qonnx.json", request.card)
            tools = list(dict.fromkeys([*CORE_TOOL_PACKAGES, *target.tool_packages]))
            manifest = {
                "sdk_version": __version__,
                "board": board.to_dict() | {"path": board.path.name},
                "flow": choice.flow,
                "artifact": target.artifact_name,
                "clock_mhz": request.clock_mhz,
                "deploy_config": config.recorded(),
                "inputs": {"model_sha256": sha256_file(request.model_path), "card_sha256": _card_hash(request.card)},
                "tool_versions": tool_versions(tools),
                "verified": outcome.verification.passed,
                "input": input_map_of(request.card).to_dict(),
            }
            hashed = pkg.file_entries()  # the commit's hashing, timed here: the report is all it adds
            clock.start(CLEAN_STEP)
            clear_scratch(Path(tmp))
            _add_step_times(outcome.report, clock.finish())
            write_report(pkg, outcome.report)
            # measured timings: in the manifest, not in the package's identity
            pkg.commit(manifest, volatile=(REPORT_JSON, REPORT_MD), hashed=hashed)
    return DeployResult(
        board.name,
        choice.flow,
        final_dir,
        outcome.verification.passed,
        outcome.summary,
        outcome.messages,
        failure=outcome.verification.failure(),
    )


@contextmanager
def _finishing(events: JobProgress) -> Iterator[None]:
    """The job's last event, whether it succeeds or fails."""
    try:
        yield
    finally:
        events.finish()


def _add_input_map(report, card: dict[str, Any]) -> None:
    """What the package's input takes and how the user's values become it, in report.md and report.json."""
    from sdk.model_card import input_map_of

    mapping = input_map_of(card)
    report.summary["input"] = mapping.describe()
    report.data["input"] = mapping.to_dict()


def _add_step_times(report, table: StepTable) -> None:
    """Seconds per deploy step, "other" and the total, in report.md's table and report.json (data.deploy_steps,
    data.deploy_seconds): from the call up to the report itself, which is then written with them."""
    from sdk.report import Table

    report.data["deploy_steps"] = table.to_list()
    report.data["deploy_seconds"] = {"total": table.total, "other": table.other}
    report.tables.append(Table("Time per step (seconds)", ["step", "seconds"], table.rows()))


def _card_hash(card: dict[str, Any]) -> str:
    import hashlib

    stable = {k: v for k, v in card.items() if k != "source_checkpoint"} | {
        "source_sha256": card.get("source_checkpoint", {}).get("sha256")
    }
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def deploy_many(
    config: DeployConfig,
    progress: ProgressCallback | None = None,
    per_board_folders: bool | None = None,
    qat_model: Any = None,
) -> list[DeployResult]:
    """--target a,b,c: deploy the one model to each board, into <out>/<board> (default deploy/<board>).

    progress: called with each board's ProgressEvents (sdk.progress); nothing is drawn or printed here.
    One board without per_board_folders keeps `sdk deploy`'s meaning of --out (the
    package folder itself). A user error on one of several boards (too large,
    unsupported layer) is recorded in its result and the other boards still
    deploy; each package is still all or nothing.
    """
    from dataclasses import replace

    config.validate()
    progress = progress_callback(progress)
    names = config.boards()
    nested = len(names) > 1 if per_board_folders is None else per_board_folders
    if not nested:
        return [deploy(config, progress, qat_model=qat_model)]
    choices = [choose_target(name) for name in names]  # every name is checked before the first long build
    for choice in choices:
        parse_options(choice.target, config.flow_options(), choice.board)
    base = Path(config.out) if config.out else Path("deploy")
    for choice in choices:
        check_output_path(base / choice.folder)
    results = []
    with scratch_dir("deploy-model") as tmp:
        prepared = prepare_model(config, Path(tmp), qat_model)  # exported, sampled and run once for all boards
        for name, choice in zip(names, choices):
            single = replace(config, target=name, out=str(base / choice.folder))
            try:
                results.append(deploy(single, progress, prepared))
            except Exception as exc:  # one board's failure, even a crash, never stops the others
                if len(choices) == 1:
                    raise
                error = exc if isinstance(exc, SDKError) else InternalError.from_crash(exc)
                results.append(
                    DeployResult(
                        choice.board.name,
                        choice.flow,
                        base / choice.folder,
                        False,
                        {},
                        [],
                        error=str(error),
                        error_exit_code=error.exit_code,
                    )
                )
    return results


COMPARISON_COLUMNS = [
    "board",
    "flow",
    "accuracy (QAT)",
    "exactness rule",
    "result",
    "speed",
    "resources / memory",
    "artifact",
]


def comparison_rows(results: list[DeployResult]) -> list[list[str]]:
    """One row per board for the comparison table (COMPARISON_COLUMNS); the cells of each flow come from its target."""
    rows = []
    for r in results:
        target = get_target(r.flow)
        if r.error:
            rows.append([r.board, r.flow, "-", target.rule_name, "ERROR", "-", r.error.splitlines()[0][:80], "-"])
            continue
        s = r.summary
        artifact = r.package / target.artifact_name
        cells = target.comparison_cells(s)
        rows.append(
            [
                r.board,
                r.flow,
                f"{percent(s.get('accuracy'))} ({percent(s.get('qat_accuracy'))})"
                if s.get("accuracy") is not None
                else "not measured",
                target.rule_name,
                "PASSED" if r.verified else "FAILED",
                cells.speed,
                cells.resources,
                kib(artifact.stat().st_size) if artifact.is_file() else "-",
            ]
        )
    return rows
