"""The TFLite-family target adapters' shared flow, and the `tflite` (LiteRT on CPUs) target.

Every TFLite-family deploy: write the int8 .tflite from the QAT model, run it
in the board's runtime, verify (runtime = golden model bit for bit; every op
within 1 LSB of the QAT model), measure, report. The microcontroller (tflm)
and NPU (ethosu) targets add their own runtime and measurements.

Package contents:
  model.tflite            the int8 flatbuffer (serving_default signature, SDK metadata)
  tflite_info.json        its tensors, ops and per-layer quantization
  model.qonnx.onnx/.json  the QONNX model and its card, as deployed
  report.json, report.md, plots
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.boards import Board
from sdk.errors import ConfigError, PackageError
from sdk.package import PackageBuilder
from sdk.report import PLOTS_STEP, Report, Table, bar_plot, kib, verification_table
from sdk.verify import Verification, share
from targets.base import BuildOutcome, BuildRequest, ComparisonCells, SimulatedOutputs
from targets.registry import NoOptions
from targets.tflite.errors import GoldenModelError, TfliteConversionError
from targets.tflite.flow import Options
from targets.tflite.verify import TensorAgreement, verify
from targets.tflite.writer import TfliteInfo, dequantized_logits, tflite_input, write_tflite

MODEL_NAME = "model.tflite"
INFO_NAME = "tflite_info.json"
SIMULATION_CHUNK = 256  # samples per golden-model call in `simulate`: its im2col copies grow with the batch
RULE_TEXT = "runtime = golden model of its kernels bit for bit; every op within 1 LSB of the QAT model"


def _card_like(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_shape": card["input"]["image_shape"],
        "flatten": card["input"]["flatten"],
        "labels": card.get("labels", []),
    }


def runtime_input(
    codes: np.ndarray, input_shape: list[int], float_input: bool, scale: float, zero_point: int
) -> np.ndarray:
    """The device codes as the file's input tensor takes them: int8 code + zero point, or float code * scale
    (flat or NHWC)."""
    x = tflite_input(codes, input_shape, zero_point)
    return ((x.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32) if float_input else x


def info_input(codes: np.ndarray, info: TfliteInfo) -> np.ndarray:
    float_input = info.tensors[0].dtype == "FLOAT32"
    return runtime_input(codes, info.input_shape, float_input, info.input_scale, info.input_zero_point)


@dataclass
class Measured:
    """What a runtime adds to the shared flow: its tensors for the exactness check, and its report."""

    tensors: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)  # headline numbers (CLI, comparison table)
    report_lines: dict[str, Any] = field(default_factory=dict)  # extra summary lines of report.md
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    plot: Callable[[PackageBuilder, Report], None] | None = None  # drawn after the weight-bytes plot


def _weight_bytes(layer) -> int | None:
    if layer.weights is None:
        return None
    return (layer.weights.size + 1) // 2 if layer.weight_type == "int4" else int(layer.weights.size)


class LoadedTflite:
    """A TFLite-family package in memory: its file parsed for the golden model, the flow's runtime made once."""

    def __init__(self, target: TfliteFamilyTarget, info: dict, golden, runtime: Callable) -> None:
        self.target, self.info, self.golden, self.runtime = target, info, golden, runtime

    def run(self, x: np.ndarray, agreement: bool = True) -> SimulatedOutputs:
        """The golden model's outputs on the batch (in chunks: its im2col copies grow with the batch); with
        `agreement`, the runtime's beside them, and the share of samples on which the two are equal."""
        from targets.tflite.golden import run_golden  # imported by load already

        info = self.info
        xin = runtime_input(
            x,
            info["input_shape"],
            info["tensors"][0]["dtype"] == "FLOAT32",
            info["input_scale"],
            int(info.get("input_zero_point", -128)),
        )
        output, logits, equal = info["output"], [], []
        for start in range(0, len(xin), SIMULATION_CHUNK):
            chunk = xin[start : start + SIMULATION_CHUNK]
            golden = run_golden(self.golden, chunk, self.target.rounding)[output]
            if agreement:
                runtime = self.runtime(chunk)[output]
                equal.append(np.all((runtime == golden).reshape(len(chunk), -1), axis=1))
            logits.append(golden)
        last = info["layers"][-1]
        outputs = dequantized_logits(np.concatenate(logits), last["scale"], last["zero_point"])
        if not agreement:
            return SimulatedOutputs(outputs, bit_exact=False)
        share = float(np.mean(np.concatenate(equal))) if equal else 1.0
        return SimulatedOutputs(
            outputs, bit_exact=False, agreement={f"{self.target.runtime_label} = golden model": share}
        )


class TfliteFamilyTarget:
    """Write, run, verify, report; subclasses say which runtime and what to measure."""

    flow = ""
    rule_name = "=golden, QAT±1 LSB"
    rule_text = RULE_TEXT
    artifact_name = MODEL_NAME
    tool_packages: tuple[str, ...] = ("ai-edge-litert", "flatbuffers")
    rounding = "litert"  # golden model of the runtime (targets.tflite.golden.RUNTIME_ROUNDING)
    runtime_label = ""
    default_io = "int8"
    int4_refusal: tuple[str, str] | None = (
        "int4 weights are not supported by this flow's runtime",
        "deploy without --int4-weights",
    )

    def check(self, model_path: Path, board: Board, workdir: Path, qat_model: Any = None) -> None:
        """Lowering names the first layer the writer cannot express (an SDKError, exit 2); the file is then written
        and, on a board with memory limits, measured as a deploy measures it: check refuses what deploy refuses."""
        from targets.tflite.lowering import lower
        from targets.tflite.writer import _metadata, load_graph, write_lowered

        lowered = lower(load_graph(model_path, {}, workdir))
        path = workdir / "check.tflite"  # as deploy writes it, but for the labels of the card check does not read
        info = write_lowered(lowered, path, _metadata({}, lowered), float_input=False, float_output=False)
        self.check_fits(path, np.zeros((1, *info.input_shape), np.int8), board, workdir)

    def check_fits(self, path: Path, x: np.ndarray, board: Board, workdir: Path) -> None:
        """Raise ModelTooLargeError where the int8 file at `path` (x: one input) does not fit the board, as
        `measure` would; an application CPU has no limit to check."""

    def validate_board(self, board: Board) -> None:
        """Nothing beyond the board schema: memory capacities are checked against the measured model."""

    def resolve_io(self, options: Options, board: Board) -> tuple[bool, bool, bool]:
        """(float_input, float_output, int4_weights); --int4-weights is refused where the runtime cannot run int4."""
        io = options.io or self.default_io
        if options.int4_weights and self.int4_refusal is not None:
            what, fix = self.int4_refusal
            raise ConfigError(f"--int4-weights on {board.name}: {what}.", where="--int4-weights", fix=fix)
        return io == "float", io == "float", options.int4_weights

    def open_runtime(self, path: Path, interpreter) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        """The flow's runtime on the file, made once: a batch -> the graph outputs. `interpreter`: LiteRT on its
        reference kernels (open_tflite), already made from the file."""
        raise NotImplementedError

    def load(self, package: Path, card: dict[str, Any], options: NoOptions, threads: int | None = None) -> LoadedTflite:
        """The package's model.tflite read once for the golden model of the flow's runtime, and the runtime itself
        made once beside it; its tflite_info.json read."""
        from targets.tflite.golden import golden_graph
        from targets.tflite.runtime import open_tflite

        path = package / MODEL_NAME
        interpreter = open_tflite(path)  # a missing or corrupt file: TfliteFileError (exit 2) before any run
        if not (package / INFO_NAME).is_file():
            raise PackageError(
                f"The package lacks {INFO_NAME}.", where=str(package), fix="deploy again; packages are written whole"
            )
        info = json.loads((package / INFO_NAME).read_text())
        return LoadedTflite(self, info, golden_graph(path), self.open_runtime(path, interpreter))

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells:
        raise NotImplementedError

    def measure(
        self, path: Path, info: TfliteInfo, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]
    ) -> Measured:
        raise NotImplementedError

    def build(self, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]) -> BuildOutcome:
        float_input, float_output, int4 = self.resolve_io(request.options, request.board)
        progress("write int8 .tflite from the QONNX graph")
        path = pkg.path(MODEL_NAME)
        info = write_tflite(
            request.model_path,
            _card_like(request.card),
            path,
            float_input=float_input,
            float_output=float_output,
            int4_weights=int4,
        )
        pkg.write_json(INFO_NAME, info.to_dict() | {"path": MODEL_NAME})
        progress(f"run in {self.runtime_label}")
        measured = self.measure(path, info, request, pkg, progress)
        progress("verify: runtime = golden model, golden ~ QAT model")
        try:
            verification, agreements = verify(
                path,
                info,
                request.model_path,
                request.x,
                request.y,
                request.reference,
                self.runtime_label,
                measured.tensors,
                self.rounding,
                info_input(request.x, info),
            )
        except GoldenModelError as exc:  # e.g. an int32 accumulator overflow the model's weights cause
            raise TfliteConversionError(
                f"The int8 graph cannot be computed exactly: {exc.what}",
                where=f"{MODEL_NAME} for {request.board.name}",
                fix="retrain with fewer weight bits or narrower layers; if the model is a zoo model, report it",
            ) from exc
        report, summary = self._report(
            request.board, info, verification, agreements, measured, pkg, request.data_label, progress
        )
        return BuildOutcome(report, verification, summary, measured.messages)

    def _report(
        self,
        board: Board,
        info: TfliteInfo,
        verification: Verification,
        agreements: list[TensorAgreement],
        measured: Measured,
        pkg: PackageBuilder,
        data_label: str,
        progress: Callable[[str], None],
    ) -> tuple[Report, dict[str, Any]]:
        """report.md, report.json and its plots (a step of their own), and the deploy's summary (the runtime's
        measurements added)."""
        accuracy = verification.accuracy
        summary = {
            "board": board.display_name,
            "verified": verification.passed,
            "model_bytes": info.size_bytes,
            "accuracy": accuracy["tflite"],
            "qat_accuracy": accuracy["qat_model"],
            "accuracy_on": data_label,
        } | measured.summary
        report = Report(
            title=f"{self.runtime_label} deployment to {board.display_name}",
            summary=_report_summary(board, info, verification, data_label) | measured.report_lines,
        )
        report.tables += [verification_table(verification), _agreement_table(agreements), _layer_table(info)]
        report.tables += measured.tables
        report.notes.append(
            "'op alone' feeds each op the QAT model's own input (the rule); 'end to end' runs the int8 graph on its "
            "own, where differences compound (reported, with the accuracy of each)."
        )
        progress(PLOTS_STEP)
        _weight_plot(report, pkg, info)
        if measured.plot is not None:
            measured.plot(pkg, report)
        report.data = {
            "tflite": info.to_dict() | {"path": MODEL_NAME},
            "verification": verification.to_dict(),
            "agreement": [vars(a) for a in agreements],
        } | measured.data
        return report, summary


def _report_summary(board: Board, info: TfliteInfo, verification: Verification, data_label: str) -> dict[str, str]:
    """The summary at the top of report.md, before the runtime's own lines."""
    accuracy = verification.accuracy
    status = "PASSED" if verification.passed else f"FAILED at {verification.first_failure.first_difference}"
    return {
        "board": board.display_name,
        "exactness rule": verification.rule,
        "verification": status,
        f"accuracy on {data_label} (int8 .tflite / QAT)": f"{share(accuracy['tflite'])} / "
        f"{share(accuracy['qat_model'])}",
        "same class as the QAT model": f"{accuracy['agreement']:.2%}",
        "model file": f"{info.size_bytes:,} bytes, {len(info.ops)} ops",
    }


def _agreement_table(agreements: list[TensorAgreement]) -> Table:
    """Each tensor's distance to the QAT model, fed the QAT model's input and end to end."""
    columns = ["tensor", "op alone: max LSB", "op alone: mismatch %", "end to end: max LSB", "end to end: mismatch %"]
    return Table("Each tensor against the QAT model (LSB)", columns, [a.row() for a in agreements])


def _layer_table(info: TfliteInfo) -> Table:
    """Each layer's shape, bits, storage and quantization."""
    columns = ["layer", "op", "output shape", "weight bits", "stored as", "act bits", "weight bytes"]
    columns += ["scale", "zero point"]
    rows = [
        [
            layer.name,
            layer.op,
            "x".join(map(str, layer.shape)),
            layer.weight_bits,
            layer.weight_type if layer.weights is not None else None,
            layer.act_bits,
            _weight_bytes(layer),
            layer.scale,
            layer.zero_point,
        ]
        for layer in info.layers
    ]
    return Table("Layers", columns, rows)


def _weight_plot(report: Report, pkg: PackageBuilder, info: TfliteInfo) -> None:
    """weight_bytes_per_layer.png: the layers that carry weights."""
    weighted = [layer for layer in info.layers if layer.weights is not None]
    bar_plot(
        pkg,
        report,
        "weight_bytes_per_layer.png",
        [layer.name for layer in weighted],
        [_weight_bytes(layer) for layer in weighted],
        "Weight bytes per layer in the .tflite",
        "bytes",
    )


class TfliteTarget(TfliteFamilyTarget):
    """LiteRT on an application CPU: reference kernels for the exactness rule, XNNPACK and reference timed."""

    flow = "tflite"
    rounding = "litert"
    runtime_label = "LiteRT reference kernels"
    default_io = "float"
    int4_refusal = None  # LiteRT's reference kernels run INT4 FULLY_CONNECTED and CONV_2D
    latency_runs = 50

    def open_runtime(self, path: Path, interpreter) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        from targets.tflite.runtime import run_interpreter

        return lambda x: run_interpreter(interpreter, x, path)

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells:
        latency = summary.get("latency_us")
        return ComparisonCells(
            "-" if latency is None else f"{latency:.1f} us (host)", f"file {kib(summary.get('model_bytes'))}"
        )

    def measure(self, path, info, request, pkg, progress) -> Measured:
        from targets.tflite.runtime import measure_latency, run_litert

        x = info_input(request.x, info)
        reference = run_litert(path, x, kernels="reference", all_tensors=True)
        xnnpack = run_litert(path, x, kernels="xnnpack")
        progress("time LiteRT (XNNPACK and reference kernels)")
        latencies = {
            kernels: measure_latency(path, x[:1], kernels=kernels, runs=self.latency_runs)
            for kernels in ("xnnpack", "reference")
        }
        out = info.output_name
        xnn_agree = float(np.mean(xnnpack[out].argmax(1) == reference[out].argmax(1)))
        xnn_equal = float(np.mean(np.all((xnnpack[out] == reference[out]).reshape(len(x), -1), axis=1)))
        lat = latencies["xnnpack"]
        return Measured(
            reference,
            summary={
                "latency_us": round(lat.median_us, 2),
                "latency_reference_us": round(latencies["reference"].median_us, 2),
            },
            report_lines={
                "latency (batch 1, 1 thread, median)": f"XNNPACK {lat.median_us:.1f} us, reference kernels "
                f"{latencies['reference'].median_us:.1f} us",
                "XNNPACK against the reference kernels": f"same class on {xnn_agree:.2%}, "
                f"identical output on {xnn_equal:.2%} "
                "(XNNPACK requantizes in float; not part of the rule)",
            },
            tables=[
                Table(
                    "Latency (microseconds, batch 1)",
                    ["kernels", "median", "p10", "p90", "runs", "threads", "XNNPACK partitions"],
                    [
                        [t.kernels, t.median_us, t.p10_us, t.p90_us, t.runs, t.threads, t.delegate_nodes]
                        for t in latencies.values()
                    ],
                )
            ],
            data={
                "latency": {k: v.to_dict() for k, v in latencies.items()},
                "xnnpack": {"same_class": xnn_agree, "identical": xnn_equal},
            },
            messages=[
                "Latency is this machine's, measured here; "
                "run the package's model.tflite on the target CPU for its own."
            ],
        )
