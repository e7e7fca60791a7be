"""int8 .tflite on LiteRT against the Brevitas model in PyTorch: latency, throughput and file size.

Same trained model, same input, one run, one thread everywhere (torch.set_num_threads(1),
LiteRT num_threads=1). Timed per call with time.perf_counter_ns, medians reported, at
batch 1 and batch 64 (per-sample time and samples/s):
  - PyTorch, Brevitas forward (fake-quantized float; what the QAT model costs as is),
  - PyTorch, fp32 twin: the same layers as plain nn.Linear / nn.Conv2d / nn.ReLU holding the
    fake-quantized weights (what a float export of the same architecture costs),
  - LiteRT XNNPACK (default resolver; a phone or Linux CPU),
  - LiteRT reference kernels (BUILTIN_REF; the stand-in for an MCU/NPU, not meant to be fast).
File size: the .tflite's bytes against 4 bytes x the float parameters (compute-layer weights,
BatchNorm gamma/beta/mean/var) an fp32 file of the same model would store.

Models train for only a few epochs (default 3): accuracy is not the point here, and runs are
cached in benchmarks/results/cache/ (--retrain to redo them). A model the TFLite writer
refuses (TfliteConversionError, e.g. a CNN before the writer supports convs) is skipped with
the reason printed.
Usage: python benchmarks/tflite_vs_pytorch.py [--models tfc,cnv] [--epochs 3]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from sdk.data import Dataset, load_dataset
from sdk.qat import TrainConfig, load_checkpoint, model_input, train
from targets.tflite.adapter import info_input
from targets.tflite.runtime import (
    KERNELS,
    Latency,
    latency_from_samples,
    measure_latency,
    run_litert,
)
from targets.tflite.writer import METADATA_NAME, TfliteConversionError, write_tflite

BATCHES = (1, 64)
RESULTS = Path("benchmarks/results")
CACHE = RESULTS / "cache" / "tflite_vs_pytorch"


# ---------------------------------------------------------------- models


def cached_run(model: str, bits: str, epochs: int, data: Dataset, retrain: bool) -> Path:
    """A finished training run for (model, bits, epochs) on digits, trained only when the cache has none."""
    run = CACHE / f"{model}_{bits}_{epochs}ep"
    if not retrain and (run / "metrics.json").is_file():  # metrics.json is written last: the run finished
        _, payload = load_checkpoint(run)
        config = payload["config"]
        if (config["model"], config["bits"], config["epochs"], payload.get("dataset_fingerprint")) == (
            model,
            bits,
            epochs,
            data.fingerprint(),
        ):
            return run
    (run / "metrics.json").unlink(missing_ok=True)  # until training ends, the folder is no cache
    train(TrainConfig(model=model, bits=bits, epochs=epochs), run, data=data, progress=False)
    return run


def float_twin(model: nn.Module) -> nn.Module:
    """The same architecture in plain PyTorch fp32, holding the Brevitas model's fake-quantized weights."""
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU

    def replace(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, QuantLinear):
                new = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            elif isinstance(child, QuantConv2d):
                new = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    bias=child.bias is not None,
                )
            elif isinstance(child, QuantReLU):
                setattr(module, name, nn.ReLU())
                continue
            elif isinstance(child, QuantIdentity):
                setattr(module, name, nn.Identity())
                continue
            else:
                replace(child)
                continue
            with torch.no_grad():
                new.weight.copy_(child.quant_weight().value)
                if child.bias is not None:
                    new.bias.copy_(child.bias)
            setattr(module, name, new)

    twin = copy.deepcopy(model)
    replace(twin)
    return twin.eval()


def float_parameters(model: nn.Module) -> int:
    """Floats an fp32 file of the model stores: compute-layer weights (+ biases) and BatchNorm's four vectors."""
    count = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):  # Brevitas's QuantLinear / QuantConv2d subclass these
            count += module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            count += 4 * module.num_features
    return count


def tflite_payload_bytes(path: Path) -> tuple[int, int]:
    """Bytes of the constant buffers (weights, biases, clamps) and of the SDK metadata in the file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    meta = {m.buffer for m in model.metadata or [] if m.name.decode() == METADATA_NAME}
    sizes = [(i, len(b.data) if b.data is not None else 0) for i, b in enumerate(model.buffers)]
    return sum(n for i, n in sizes if i not in meta), sum(n for i, n in sizes if i in meta)


# ---------------------------------------------------------------- timing


@torch.no_grad()
def torch_latency(model: nn.Module, x: torch.Tensor, label: str, runs: int, warmup: int) -> Latency:
    """Per-call time of model(x), measured like measure_latency times invoke()."""
    for _ in range(warmup):
        model(x)
    times = np.empty(runs, dtype=np.int64)
    gc.disable()
    try:
        for i in range(runs):
            started = time.perf_counter_ns()
            model(x)
            times[i] = time.perf_counter_ns() - started
    finally:
        gc.enable()
    return latency_from_samples(times, label, torch.get_num_threads(), len(x))


def measure_model(name: str, bits: str, epochs: int, data: Dataset, args: argparse.Namespace, console: Console) -> dict:
    run = cached_run(name, bits, epochs, data, args.retrain)
    torch.set_num_threads(1)  # fairness: LiteRT runs with num_threads=1
    model, payload = load_checkpoint(run)
    path = run / "model.tflite"
    try:
        info = write_tflite(model, {"input_shape": payload["input_shape"], "labels": payload["labels"]}, path)
    except TfliteConversionError as exc:
        console.print(f"[yellow]skip {name} {bits}[/]: the TFLite writer refuses it: {exc.what}")
        return {"model": name, "bits": bits, "skipped": exc.what}
    metrics = json.loads((run / "metrics.json").read_text())
    twin = float_twin(model)
    x_test = data.x_test
    lite_x = info_input(x_test, info)
    torch_x = model_input(x_test, model.flat_input)
    with torch.no_grad():
        brevitas_pred, twin_pred = model(torch_x).argmax(1).numpy(), twin(torch_x).argmax(1).numpy()
    agreement = {
        k: float((run_litert(path, lite_x, k)[info.output_name].argmax(1) == brevitas_pred).mean()) for k in KERNELS
    }
    agreement["pytorch_fp32_twin"] = float((twin_pred == brevitas_pred).mean())

    timings: dict[str, dict[str, dict]] = {}
    for batch in BATCHES:
        runs, warmup = (args.runs_batch1, 10) if batch == 1 else (args.runs_batch64, 3)
        one = x_test[:1]
        tx = model_input(
            np.repeat(one, batch, axis=0), model.flat_input
        )  # same sample repeated: as measure_latency does
        row = {
            "pytorch_brevitas": torch_latency(model, tx, "pytorch-brevitas", runs, warmup),
            "pytorch_fp32_twin": torch_latency(twin, tx, "pytorch-fp32", runs, warmup),
        }
        for kernels in ("xnnpack", "reference"):
            row[f"litert_{kernels}"] = measure_latency(
                path, info_input(one, info), kernels, runs=runs, warmup=warmup, threads=1, batch=batch
            )
        timings[str(batch)] = {k: v.to_dict() for k, v in row.items()}

    tflite_bytes = path.stat().st_size
    int4_path = run / "model_int4.tflite"  # the same model with packed INT4 weights (LiteRT only)
    write_tflite(
        model, {"input_shape": payload["input_shape"], "labels": payload["labels"]}, int4_path, int4_weights=True
    )
    int4_bytes = int4_path.stat().st_size
    payload_bytes, metadata_bytes = tflite_payload_bytes(path)
    fp32_bytes = 4 * float_parameters(model)

    def speedup(batch: int, fast: str, slow: str) -> float:
        t = timings[str(batch)]
        return t[slow]["median_us"] / t[fast]["median_us"]

    return {
        "model": name,
        "bits": bits,
        "epochs": epochs,
        "test_accuracy": metrics["test_accuracy"],
        "argmax_agreement_with_brevitas": agreement,
        "timings": timings,
        "speedup": {
            f"batch{b}": {
                "xnnpack_vs_brevitas": speedup(b, "litert_xnnpack", "pytorch_brevitas"),
                "reference_vs_brevitas": speedup(b, "litert_reference", "pytorch_brevitas"),
                "xnnpack_vs_fp32_twin": speedup(b, "litert_xnnpack", "pytorch_fp32_twin"),
                "fp32_twin_vs_brevitas": speedup(b, "pytorch_fp32_twin", "pytorch_brevitas"),
            }
            for b in BATCHES
        },
        "size": {
            "tflite_bytes": tflite_bytes,
            "tflite_constant_bytes": payload_bytes,
            "tflite_metadata_bytes": metadata_bytes,
            "fp32_parameter_bytes": fp32_bytes,
            "float_parameters": fp32_bytes // 4,
            "fp32_over_tflite": fp32_bytes / tflite_bytes,
            "fp32_over_tflite_constants": fp32_bytes / payload_bytes,
            "int4_tflite_bytes": int4_bytes,
            "fp32_over_int4_tflite": fp32_bytes / int4_bytes,
        },
    }


# ---------------------------------------------------------------- report


def print_tables(rows: list[dict], console: Console) -> None:
    done = [r for r in rows if "skipped" not in r]
    latency = Table(title="Time per sample, 1 thread: median µs (ratios are time / time: > 1 means LiteRT is faster)")
    for col in (
        "model",
        "batch",
        "Brevitas",
        "fp32 twin",
        "XNNPACK",
        "LiteRT ref",
        "Brevitas/XNNPACK",
        "Brevitas/ref",
        "fp32/XNNPACK",
        "XNNPACK samples/s",
    ):
        latency.add_column(col, justify="left" if col == "model" else "right")
    for r in done:
        for b in BATCHES:
            t, s = r["timings"][str(b)], r["speedup"][f"batch{b}"]
            latency.add_row(
                f"{r['model']} {r['bits']}",
                str(b),
                *(
                    f"{t[k]['per_sample_us']:,.1f}"
                    for k in ("pytorch_brevitas", "pytorch_fp32_twin", "litert_xnnpack", "litert_reference")
                ),
                f"{s['xnnpack_vs_brevitas']:,.1f}x",
                f"{s['reference_vs_brevitas']:,.1f}x",
                f"{s['xnnpack_vs_fp32_twin']:,.1f}x",
                f"{t['litert_xnnpack']['samples_per_s']:,.0f}",
            )
    size = Table(title="File size (int8 .tflite vs fp32 parameters) and checks")
    for col in (
        "model",
        ".tflite B",
        "constants B",
        "metadata B",
        "fp32 B",
        "fp32/.tflite",
        "fp32/constants",
        "int4 .tflite B",
        "fp32/int4",
        "argmax = Brevitas: XNNPACK / ref",
        "XNNPACK partitions",
        "test acc",
    ):
        size.add_column(col, justify="left" if col == "model" else "right")
    for r in done:
        z, a = r["size"], r["argmax_agreement_with_brevitas"]
        size.add_row(
            f"{r['model']} {r['bits']}",
            f"{z['tflite_bytes']:,}",
            f"{z['tflite_constant_bytes']:,}",
            f"{z['tflite_metadata_bytes']:,}",
            f"{z['fp32_parameter_bytes']:,}",
            f"{z['fp32_over_tflite']:.1f}x",
            f"{z['fp32_over_tflite_constants']:.1f}x",
            f"{z['int4_tflite_bytes']:,}",
            f"{z['fp32_over_int4_tflite']:.1f}x",
            f"{a['xnnpack']:.1%} / {a['reference']:.1%}",
            str(r["timings"]["1"]["litert_xnnpack"]["delegate_nodes"]),
            f"{r['test_accuracy']:.1%}",
        )
    if done:
        console.print(latency)
        console.print(size)
    for r in rows:
        if "skipped" in r:
            console.print(f"skipped {r['model']} {r['bits']}: {r['skipped']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tfc,cnv", help="comma-separated zoo models (default tfc,cnv)")
    parser.add_argument("--bits", default="w2a2")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (few: accuracy is not measured here)")
    parser.add_argument("--runs-batch1", type=int, default=300, help="timed calls per backend at batch 1")
    parser.add_argument("--runs-batch64", type=int, default=40, help="timed calls per backend at batch 64")
    parser.add_argument("--retrain", action="store_true", help="ignore cached runs in benchmarks/results/cache/")
    parser.add_argument("--out", type=Path, default=RESULTS / "tflite_vs_pytorch.json")
    args = parser.parse_args()
    console = Console(
        width=None if sys.stdout.isatty() else 180
    )  # piped output: do not squeeze the tables to 80 columns
    started = time.perf_counter()
    data = load_dataset("digits")
    rows = []
    default_threads = torch.get_num_threads()
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        console.print(f"[bold]{name} {args.bits}[/]: train (or reuse the cache), write the .tflite, measure")
        torch.set_num_threads(default_threads)  # training may use every core; measure_model times on one
        rows.append(measure_model(name, args.bits, args.epochs, data, args, console))
    print_tables(rows, console)
    console.print(f"total {time.perf_counter() - started:.0f} s (litert num_threads=1, torch threads=1)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"threads": 1, "batches": list(BATCHES), "dataset": "digits", "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
