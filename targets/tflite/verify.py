"""The exactness rule of the TFLite-family targets, applied on sample inputs.

runtime = golden model   the runtime's output (every tensor where the runtime
                         exposes them) equals the numpy model of its kernels,
                         bit for bit, on every sample
golden ~ QAT model       each op, fed the QAT model's own integer input, is
                         within 1 LSB of the QAT model's output (the fixed-point
                         requantization may round the other way at a tie); a
                         sigmoid / tanh / softmax also within one LSB of its
                         input times the function's largest slope (its int8
                         input is the graph's value rounded); the mismatch rate
                         is reported per tensor
final output             the graph's final output, with every compared tensor
                         fed from the QAT model, within 1 LSB (plus the same
                         slope allowance after an activation) of the source
                         model's own final output (its forward, not a hooked
                         layer): an op dropped, added or mis-lowered after the
                         last compared tensor (a sigmoid, a softmax, a scale)
                         cannot pass. The fed tensors are the QONNX graph's; on
                         a sample where a quantizer's input sits on a rounding
                         tie, the graph (onnxruntime's float32) and the module
                         (PyTorch's) may round it apart by one code, which the
                         layers after it amplify: there the output is held to
                         the same tolerance against the graph's own output (the
                         run its fed tensors come from), counted as a tie
end to end               mismatch rate, output error in LSB and class agreement
                         of the whole int8 graph against the QAT model
                         (reported, not a limit: 1-LSB differences compound)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.graph_run import qonnx_tensors, tie_samples
from sdk.onnx_guard import load_onnx_safely
from sdk.verify import Check, Verification, accuracy, binary_threshold, compare_layers, same_class
from targets.tflite.golden import run_golden
from targets.tflite.lowering import INT8_MAX, INT8_MIN, Layer, graph_to_nhwc
from targets.tflite.writer import TfliteInfo, dequantized_logits, tflite_input

MAX_LSB = 1
RULE = (
    "TFLite: the runtime equals the numpy golden model of its kernels on every sample; every op within 1 LSB of the "
    "QAT model given the QAT model's input (after a sigmoid / tanh / softmax: plus one LSB of its input times the "
    "function's largest slope; mismatch rate reported)"
)


@dataclass
class TensorAgreement:
    """One tensor of the int8 graph against the QAT model."""

    name: str
    max_lsb: int
    mismatch_rate: float  # fraction of values that differ
    end_to_end_max_lsb: int
    end_to_end_mismatch_rate: float
    allowed_lsb: float = float(MAX_LSB)  # the op's tolerance: MAX_LSB, plus the slope allowance after an activation

    @property
    def within(self) -> bool:
        """Within its tolerance (a value half an LSB from both sides is a tie: float32 noise must not fail it)."""
        return self.max_lsb <= self.allowed_lsb + 1e-3

    def row(self) -> list:
        return [self.name, self.max_lsb, self.mismatch_rate, self.end_to_end_max_lsb, self.end_to_end_mismatch_rate]


def graph_codes(
    onnx_path: Path, layers: list[Layer], x_uint8: np.ndarray, flat: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The QONNX graph's value of each compared layer, as int8 codes on that layer's scale (NHWC, unclamped), and
    the graph's final output, from one run (the output the fed tensors are consistent with)."""
    compared = [layer for layer in layers if layer.compared and layer.source]
    output = load_onnx_safely(onnx_path, str(onnx_path)).graph.output[0].name
    values = qonnx_tensors(onnx_path, x_uint8, flat, sorted({layer.source for layer in compared} | {output}))
    codes = {}
    for layer in compared:
        value = graph_to_nhwc(values[layer.source].astype(np.float64)).reshape(len(x_uint8), *layer.shape)
        codes[layer.name] = np.rint(value / np.float32(layer.scale)).astype(np.int64) + layer.zero_point
    return codes, values[output]


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, float]:
    diff = np.abs(ours.astype(np.int64) - theirs)
    return int(diff.max(initial=0)), float((diff > 0).mean())


def compare_with_qat(
    tflite_path: Path,
    info: TfliteInfo,
    onnx_path: Path,
    x_uint8: np.ndarray,
    rounding: str,
    x: np.ndarray | None = None,
    chained: dict[str, np.ndarray] | None = None,
) -> tuple[list[TensorAgreement], dict[str, np.ndarray], np.ndarray]:
    """Per compared tensor: the golden model, op by op (fed the QAT tensors) and end to end, against the QAT model.

    x: the samples as the file's input takes them (default: int8 p - 128); chained: the
    golden model's own run on x, where the caller has it already. Also returns the fed ("isolated") run and the
    QONNX graph's final output on the same run as the fed tensors."""
    x = tflite_input(x_uint8, info.input_shape, info.input_zero_point) if x is None else x
    codes, graph_output = graph_codes(onnx_path, info.layers, x_uint8, flat=len(info.input_shape) == 1)
    feed = {name: np.clip(value, INT8_MIN, INT8_MAX).astype(np.int8) for name, value in codes.items()}
    isolated = run_golden(tflite_path, x, rounding, feed=feed)
    chained = run_golden(tflite_path, x, rounding) if chained is None else chained
    allowed = {layer.name: allowed_output_lsb(layer) for layer in info.layers}
    agreements = [
        TensorAgreement(name, *_agreement(isolated[name], value), *_agreement(chained[name], value), allowed[name])
        for name, value in codes.items()
    ]
    return agreements, isolated, graph_output


def compare_with_runtime(runtime: str, ours: dict[str, np.ndarray], golden: dict[str, np.ndarray]) -> Check:
    """Bit-exact equality of every tensor the runtime exposes; names the first that differs."""
    shared = [name for name in golden if name in ours]
    name = f"{runtime} = golden model"
    if not shared:
        return Check(
            name,
            False,
            len(next(iter(golden.values()))),
            "the runtime exposed no tensor of the graph",
            first_difference="no shared tensor",
        )
    return compare_layers(
        name,
        [(tensor, np.asarray(ours[tensor])) for tensor in shared],
        [golden[tensor] for tensor in shared],
        f"{len(shared)} tensors compared bit-exact",
    )


def output_error_lsb(ours: np.ndarray, reference: np.ndarray, scale: float) -> np.ndarray:
    """|ours - reference| in steps of the output quantizer, per value (shapes must agree)."""
    return np.abs(ours.astype(np.float64) - reference.astype(np.float64)) / float(scale)


def allowed_output_lsb(last: Layer) -> float:
    """MAX_LSB of the output, plus, after a sigmoid / tanh / softmax, one LSB of its input carried through the
    function's largest slope (its int8 input is itself within an LSB of the graph's value)."""
    if last.slope and last.input_scale:
        return MAX_LSB + last.slope * float(last.input_scale) / float(last.scale)
    return float(MAX_LSB)


def compare_final_output(
    fed: np.ndarray,
    chained: np.ndarray,
    reference: np.ndarray,
    scale: float,
    allowed: float = MAX_LSB,
    graph: np.ndarray | None = None,
    ties: Callable[[], np.ndarray] | None = None,
) -> Check:
    """The artifact's final output against the source model's: within `allowed` LSB with the QAT tensors fed in
    (the rule), and end to end as the device runs it (reported: class agreement and error in LSB).

    graph: the QONNX graph's own output on the run the fed tensors come from; ties: per sample, does a quantizer of
    the graph sit on a rounding tie (computed only if needed). A sample beyond `allowed` of the source model passes,
    counted as a tie, only where it sits on a tie and is within `allowed` of the graph: the graph and the module
    rounded that tie apart, and the artifact follows the graph it was fed from. Where the graph is the source model
    (a deploy of a QONNX file), nothing changes."""
    name = f"final output within {MAX_LSB} LSB of the source model"
    if fed.shape != reference.shape:
        return Check(
            name,
            False,
            len(reference),
            f"the artifact returns {fed.shape[1:]} per sample, the source model {reference.shape[1:]}",
            first_difference="network output",
            mismatch_rate=1.0,
        )
    # a value exactly half an LSB from both is a rounding tie; float32 noise must not make it 2 LSB
    fed_error = output_error_lsb(fed, reference, scale).reshape(len(fed), -1).max(axis=1, initial=0)
    bad = fed_error > allowed + 1e-3
    tied, graph_error = np.zeros_like(bad), fed_error
    if bad.any() and graph is not None and ties is not None and graph.shape == fed.shape:
        graph_error = output_error_lsb(fed, graph, scale).reshape(len(fed), -1).max(axis=1, initial=0)
        follows_graph = bad & (graph_error <= allowed + 1e-3)
        if follows_graph.any():
            tied = follows_graph & ties()
            bad &= ~tied
    chained_error = output_error_lsb(chained, reference, scale)
    agree = float(np.mean(same_class(chained, reference)))
    worst = float(fed_error[~tied].max(initial=0))
    detail = (
        f"with the QAT tensors fed in: max {worst:.2f} LSB"
        + (
            f" ({int(tied.sum())} sample(s) on a rounding tie that the QONNX graph and the source model round apart, "
            f"{float(fed_error[tied].max()):.2f} LSB from the model there: within {float(graph_error[tied].max()):.2f}"
            " LSB of the graph the fed tensors come from, counted as ties)"
            if tied.any()
            else ""
        )
        + f"; end to end (reported): max {float(chained_error.max(initial=0)):.2f} LSB, mean "
        f"{float(chained_error.mean()):.2f} LSB"
        + ("" if agree is None else f", same class on {agree:.1%}")
        + f" (LSB = {scale:.4g}"
        + ("" if allowed == MAX_LSB else f"; allowed {allowed:.2f} LSB after the final activation")
        + ")"
    )
    return Check(
        name,
        not bad.any(),
        len(reference),
        detail,
        first_difference="network output" if bad.any() else None,
        mismatch_rate=float(bad.mean()),
        ties=int(tied.sum()),
        first_sample=int(np.argmax(bad)) if bad.any() else None,
    )


def verify(
    tflite_path: Path,
    info: TfliteInfo,
    onnx_path: Path,
    x_uint8: np.ndarray,
    y: np.ndarray,
    reference: np.ndarray,
    runtime: str,
    runtime_tensors: dict[str, np.ndarray],
    rounding: str,
    x: np.ndarray,
) -> tuple[Verification, list[TensorAgreement]]:
    """The whole rule: runtime vs golden, golden vs QAT per op, and the accuracy of each (x: the runtime's input)."""
    verification = Verification(rule=RULE)
    golden = run_golden(tflite_path, x, rounding)
    verification.checks.append(compare_with_runtime(runtime, runtime_tensors, golden))
    agreements, isolated, graph_output = compare_with_qat(tflite_path, info, onnx_path, x_uint8, rounding, x, golden)
    worst = max(agreements, key=lambda a: (a.max_lsb, a.mismatch_rate))
    first_bad = next((a for a in agreements if not a.within), None)
    slack = "".join(
        f"; {a.name} allowed {a.allowed_lsb:.2f} LSB after its activation (measured {a.max_lsb})"
        for a in agreements
        if a.allowed_lsb != MAX_LSB
    )
    beyond = (
        f"; {first_bad.name} is {first_bad.max_lsb} LSB from the QAT model on {first_bad.mismatch_rate:.2%} of values, "
        f"allowed {first_bad.allowed_lsb:.2f}"
        if first_bad
        else ""
    )
    verification.checks.append(
        Check(
            f"every op within {MAX_LSB} LSB of the QAT model",
            first_bad is None,
            len(x_uint8),
            f"{len(agreements)} tensors, each op fed the QAT model's input; worst {worst.name}: {worst.max_lsb} LSB on "
            f"{worst.mismatch_rate:.2%} of values{slack}{beyond}",
            first_difference=first_bad.name if first_bad else None,
            mismatch_rate=worst.mismatch_rate,
        )
    )
    last = info.layers[-1]
    logits = dequantized_logits(golden[info.output_name], last.scale, last.zero_point)
    fed = dequantized_logits(isolated[info.output_name], last.scale, last.zero_point)
    flat = len(info.input_shape) == 1
    verification.checks.append(
        compare_final_output(
            fed,
            logits,
            reference,
            last.scale,
            allowed_output_lsb(last),
            graph_output,
            lambda: tie_samples(onnx_path, x_uint8, flat),
        )
    )
    verification.accuracy = {
        "tflite": accuracy(logits, y, binary_threshold(reference)),
        "qat_model": accuracy(reference, y, binary_threshold(reference)),
        "agreement": float(np.mean(same_class(logits, reference))),
    }
    return verification, agreements
