"""The Python API for build scripts and tests: check, deploy, simulate and load, taking a path or a Brevitas module.

    import sdk
    sdk.check(model, "pynq-z2", example_input=torch.zeros(1, 1, 28, 28))
    result = sdk.deploy(model, "tflite", example_input=..., data="my_samples.npz", out="build/tflite")
    outputs = sdk.simulate(result.package, x)   # the packaged artifact's outputs on x, in the simulator
    pkg = sdk.load(result.package)              # verified once; pkg(x) then reads no file

`model` is a training run folder, a QONNX file with its model card beside it (`sdk export`), or an `nn.Module`
with `example_input` (one sample, (1, C, H, W), (1, C, T) or (1, F)): the module takes pixels / 255 and is
exported to QONNX, checked against itself, on the way.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConfigError
from sdk.progress import ProgressCallback, progress_callback
from sdk.scratch import scratch_dir


@contextmanager
def _as_model_path(model: Any, example_input: Any, input_scale: float | None = None):
    """A path the deploy can read, and the Brevitas module where the caller handed one."""
    if isinstance(model, str | Path):
        if example_input is not None:
            raise ConfigError(
                "example_input is for a module; this model is a path, whose input shape the SDK reads from it.",
                where="example_input",
                fix="drop example_input, or pass the nn.Module itself",
            )
        yield str(model), None
        return
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model must be a path or a torch nn.Module, got {type(model).__name__}.",
            where="model",
            fix="pass a training run folder, a .onnx file from `sdk export`, or your Brevitas module",
        )
    if example_input is None:
        raise ConfigError(
            f"A module ({type(model).__name__}) needs an example input to be exported.",
            where="example_input",
            fix="pass example_input=torch.zeros(1, C, H, W) (or (1, C, T), (1, F)) shaped like one sample",
        )
    _runs_on_example(model, example_input)
    from sdk.export import export_module

    with scratch_dir("module") as tmp:
        exported = export_module(model, example_input, Path(tmp) / "model.qonnx.onnx", input_scale=input_scale)
        yield str(exported.onnx_path), model


def _module_scale(model: Any, input_scale: Any) -> float | None:
    """input_scale for a module: pixel data, the module receiving pixel * input_scale (checked like the CLI's)."""
    if input_scale is None or isinstance(model, str | Path):
        return None
    from targets.base import finite_positive

    finite_positive(input_scale, "input_scale", "0.00392156862745098")
    return float(input_scale)


def _runs_on_example(model: Any, example_input: Any) -> None:
    """The module's forward on zeros shaped like example_input, once, before the export: a shape within the memory
    budget that the module takes (a mismatch is the caller's, said as one, not a RuntimeError from deep in torch)."""
    import torch

    from sdk.model_card import sample_too_large

    shape = tuple(example_input) if isinstance(example_input, tuple) else tuple(np.shape(example_input))
    positive = all(isinstance(d, int | np.integer) and d > 0 for d in shape)
    if len(shape) not in (2, 3, 4) or shape[0] != 1 or not positive:
        return  # the export names what is wrong with the shape itself
    problem = sample_too_large([int(d) for d in shape[1:]])
    if problem:
        raise ConfigError(f"example_input has shape {shape}: {problem}.", where="example_input", fix="a smaller input")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(*(int(d) for d in shape)))
    except Exception as exc:  # the module's own forward: whatever it raises, the input did not fit it
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ConfigError(
            f"{type(model).__name__} fails on an input shaped like example_input {shape}: {type(exc).__name__}"
            + (f": {reason}" if reason else ""),
            where="example_input",
            fix="pass one sample of the shape the module takes, e.g. torch.zeros(1, C, H, W), (1, C, T) or (1, F)",
        ) from exc


def _check_target(target: Any) -> str:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            f"target must be a board name (a str), got {target!r}.",
            where="target",
            fix='e.g. "pynq-z2", "stm32f746g-disco", or several: "pynq-z2,stm32f746g-disco" (see `sdk boards`)',
        )
    return target


def _check_path(value: Any, name: str, example: str) -> None:
    if value is not None and (not isinstance(value, str | Path) or not str(value)):
        raise ConfigError(f"{name} must be a path (str or Path), got {value!r}.", where=name, fix=f"e.g. {example}")


_SETTINGS = ("clock_mhz", "input_scale")  # DeployConfig's settings sdk.deploy takes as keywords, beside flow options


def _deploy_options(options: dict[str, Any]) -> None:
    """Keyword options are DeployConfig's own settings or a registered flow's options; any other name is a typo,
    said as one."""
    from targets.registry import deploy_options

    known = sorted([*_SETTINGS, *deploy_options()])
    _refuse_unknown(options, known, "sdk.deploy", ["data", "out", "samples", "example_input", "progress", *known])


def _refuse_unknown(options: dict[str, Any], known: Any, call: str, takes: list[str]) -> None:
    """A keyword the call does not take is a typo: refused naming it, with what the call takes."""
    unknown = sorted(name for name in options if name not in known)
    if unknown:
        raise ConfigError(
            f"{call}() got unknown option(s): {', '.join(unknown)}.",
            where=", ".join(unknown),
            fix=f"use the options {call} takes: {', '.join(takes)}",
        )


def check(model: Any, target: str, example_input: Any = None, input_scale: float | None = None) -> None:
    """Raise an SDKError naming every layer `target` cannot run; return quietly when every layer maps."""
    from sdk.deployment import DeployConfig
    from sdk.deployment import check as run_check

    _check_target(target)
    with _as_model_path(model, example_input, _module_scale(model, input_scale)) as (path, module):
        scale = input_scale if module is None else None  # a module's pixel scale is in its export
        run_check(DeployConfig(target=target, model=path, input_scale=scale), qat_model=module)


def deploy(
    model: Any,
    target: str,
    *,
    data: str | None = None,
    out: str | None = None,
    samples: int | None = None,
    example_input: Any = None,
    progress: ProgressCallback | None = None,
    **options: Any,
):
    """Build, verify and package `model` for `target` (a board, or several: "pynq-z2,tflite").

    progress: a callable taking each sdk.ProgressEvent (sdk.ProgressBars() draws them); nothing is drawn without it.
    options: clock_mhz, input_scale and the flow's own (`sdk deploy --help` lists them). Returns a DeployResult
    (a list of them for several boards); `result.verified` is the exactness rule, `result.exit_code` 0/1/2/3."""
    from sdk.deployment import DeployConfig, deploy_many

    _check_target(target)
    _check_path(out, "out", 'out="build/fpga"')
    _check_path(data, "data", 'data="my_samples.npz"')
    _deploy_options(options)
    progress = progress_callback(progress)
    scale = options.pop("input_scale", None)
    clock_mhz = options.pop("clock_mhz", None)
    with _as_model_path(model, example_input, _module_scale(model, scale)) as (path, module):
        config = DeployConfig(
            target=target,
            model=path,
            out=out,
            clock_mhz=clock_mhz,
            input_scale=scale if module is None else None,
            data=data,
            samples=samples,
            options=options,
        )
        results = deploy_many(config, progress=progress, qat_model=module)
    return results if "," in target else results[0]


def _check_package_call(package: Any, codes: Any, options: dict[str, Any], call: str, own: str) -> None:
    """The package argument, codes and the simulate options of sdk.simulate / sdk.load, checked the same way."""
    from targets.registry import simulate_options

    if package is None:
        raise ConfigError("package must be a path, got None.", where="package", fix="e.g. result.package")
    _check_path(package, "package", "result.package")
    if not isinstance(codes, bool):
        raise ConfigError(f"codes must be True or False, got {codes!r}.", where="codes", fix="codes=True")
    known = simulate_options()
    _refuse_unknown(options, known, call, [own, *sorted(known)])


def simulate(package: str | Path, x: np.ndarray, codes: bool = False, **options: Any) -> np.ndarray:
    """The packaged artifact's final outputs on a batch `x`: what the model's forward takes, in its input layout
    ((N, C, H, W); (N, F), (N, H, W) and (N, C, T) for a Conv1d model too), the same x for every target.

    Pixels for a model that takes pixels (uint8, or floats in [0, 1]); the float features for a model that
    quantizes its own input (the package's input map turns them into the device's codes exactly as the model's
    first quantizer does). codes=True: x holds the device's integer codes already. A value the model's first
    quantizer would clip, or that is not a number, is a ConfigError naming x (sdk.deployment.model_batch).

    options: the package's flow's own simulate options (`sdk simulate --help` lists them). Each call verifies and
    loads the package anew: for many calls, load it once (sdk.load)."""
    from sdk.simulation import run_package

    _check_package_call(package, codes, options, "sdk.simulate", "codes")
    return run_package(package, x, codes, options)


def load(package: str | Path, *, threads: int | None = None, **options: Any):
    """The package verified once (its manifest and every file's sha256, as sdk.simulate does, with the same
    errors) and its artifact made ready: `pkg = sdk.load(package)`; `pkg(x)` (or `pkg.simulate(x, codes=False)`)
    then gives exactly what sdk.simulate(package, x) gives, reading no file. A package changed on disk after
    load is not seen by its calls (load it again).

    threads: the most threads a call uses (None: the runtime's default, e.g. one per core for an FPGA package's
    integer GEMM). options: the package's flow's own simulate options, as for sdk.simulate."""
    from sdk.loaded import load_package

    _check_package_call(package, False, options, "sdk.load", "threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}.", where="threads", fix="threads=1")
    return load_package(package, options, threads)
