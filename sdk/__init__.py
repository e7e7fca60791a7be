"""Edge QNN SDK: train low-bit networks with Brevitas, deploy them to FPGAs, NPUs, MCUs and CPUs.

The stable Python API:

    import sdk
    run = sdk.train(sdk.TrainConfig(model="tfc", bits="w2a2", dataset="digits"), "run/")
    exported = sdk.export_run("run/", "model.qonnx.onnx")
    board = sdk.get_board("pynq-z2")
    sdk.check("run/", "pynq-z2")                       # raises an SDKError naming every unmappable layer
    result = sdk.deploy("run/", "pynq-z2", data="my_samples.npz")   # or a QONNX file, or an nn.Module
    outputs = sdk.simulate(result.package, x)          # the packaged artifact's outputs on x
    pkg = sdk.load(result.package)                     # verified once: pkg(x) gives the same, reading no file

Nothing here draws or prints: long jobs report through `progress=` (a callable taking an sdk.ProgressEvent);
`progress=sdk.ProgressBars()` draws them on stderr as the `sdk` command does.

Heavy imports (torch, brevitas, FINN) happen on first use, so `import sdk` is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "check": "sdk.api",
    "deploy": "sdk.api",
    "simulate": "sdk.api",
    "load": "sdk.api",
    "LoadedPackage": "sdk.loaded",
    "DeployConfig": "sdk.deployment",
    "DeployResult": "sdk.deployment",
    "deploy_many": "sdk.deployment",
    "comparison_rows": "sdk.deployment",
    "COMPARISON_COLUMNS": "sdk.deployment",
    "print_comparison": "sdk.cli",
    "ProgressEvent": "sdk.progress",
    "ProgressBars": "sdk.cli",
    "quiet_libraries": "sdk.quiet:quiet",  # sdk.quiet is the module
    "hush_stdout": "sdk.quiet",
    "export_module": "sdk.export",
    "SDKError": "sdk.errors",
    "InternalError": "sdk.errors",
    "UnsupportedLayersError": "sdk.errors",
    "PackageError": "sdk.errors",
    "BoardError": "sdk.errors",
    "DatasetError": "sdk.errors",
    "ConfigError": "sdk.errors",
    "CheckpointError": "sdk.errors",
    "ExportError": "sdk.errors",
    "Board": "sdk.boards",
    "get_board": "sdk.boards",
    "load_boards": "sdk.boards",
    "Dataset": "sdk.data",
    "load_dataset": "sdk.data",
    "TrainConfig": "sdk.train_config",
    "TrainResult": "sdk.qat",
    "train": "sdk.qat",
    "load_checkpoint": "sdk.qat",
    "ExportResult": "sdk.model_card",
    "export_run": "sdk.export",
    "read_card": "sdk.model_card",
    "run_qonnx": "sdk.graph_run",
    "build_model": "sdk.zoo",
    "parse_bits": "sdk.zoo",
    "ZOO": "sdk.zoo",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, _, attribute = _API[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")
