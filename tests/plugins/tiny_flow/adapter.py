"""The tiny flow's target: the package's artifact is the QONNX graph (with the user's stamp), and the rule is that
qonnx's execution of the packaged file equals the source model's outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sdk.boards import Board
from sdk.errors import SDKError
from sdk.graph_run import run_qonnx
from sdk.package import PackageBuilder
from sdk.report import Report
from sdk.verify import Check, Verification, accuracy
from targets.base import BuildOutcome, BuildRequest, ComparisonCells, SimulatedOutputs

ARTIFACT = "tiny_model.onnx"


class LoadedTiny:
    """The packaged graph, run by qonnx from its file on each call (a flow may keep its artifact on disk)."""

    def __init__(self, path: Path, flat: bool, repeat: int):
        self.path, self.flat, self.repeat = path, flat, repeat

    def run(self, x: np.ndarray, agreement: bool = True) -> SimulatedOutputs:
        runs = [run_qonnx(self.path, x, self.flat) for _ in range(self.repeat)]
        return SimulatedOutputs(runs[-1], bit_exact=True, agreement={"runs": float(len(runs))})


class TinyTarget:
    flow = "tiny"
    rule_name = "qonnx = source"
    rule_text = "the packaged graph, run by qonnx, returns the source model's outputs exactly"
    artifact_name = ARTIFACT
    tool_packages = ("qonnx",)

    def validate_board(self, board: Board) -> None:
        """Any board that lists the flow."""

    def check(self, model_path: Path, board: Board, workdir: Path, qat_model: Any = None) -> None:
        if not onnx.load(str(model_path)).graph.node:
            raise SDKError("The graph has no nodes.", where="--model", fix="export a model with layers")

    def build(self, request: BuildRequest, pkg: PackageBuilder, progress: Callable[[str], None]) -> BuildOutcome:
        progress("write the graph")
        model = onnx.load(str(request.model_path))
        model.doc_string = request.options.tiny_stamp
        path = pkg.path(ARTIFACT)
        onnx.save(model, str(path))
        progress("run it with qonnx")
        outputs = run_qonnx(path, request.x, request.card["input"]["flatten"])
        same = np.array_equal(outputs, request.reference)
        check = Check("qonnx = source model", bool(same), len(request.x), "outputs compared exactly")
        verification = Verification(self.rule_text, [check])
        summary = {"accuracy": accuracy(outputs, request.y), "stamp": request.options.tiny_stamp}
        return BuildOutcome(Report("tiny flow", summary=dict(summary)), verification, summary)

    def load(self, package: Path, card: dict[str, Any], options: Any, threads: int | None = None) -> LoadedTiny:
        return LoadedTiny(package / ARTIFACT, card["input"]["flatten"], options.tiny_repeat)

    def comparison_cells(self, summary: dict[str, Any]) -> ComparisonCells:
        return ComparisonCells("-", "-")
