"""Errors a user can cause. Each says what went wrong, where, and what to do.

The CLI prints an SDKError as one block and exits with its exit_code (2; with
--verbose the chained causes follow, one line each). Anything else is a bug:
the CLI wraps it in an InternalError (exit 3) and shows the traceback only
with --verbose.
"""

from __future__ import annotations


class SDKError(Exception):
    """Base of every user-facing error: `what` happened, `where`, and the `fix`."""

    exit_code = 2
    # The name of a flow that may deploy the model instead: a fix names it only after that flow's own check accepted
    # the model (sdk/advice.py), so no advice sends the user to a target that refuses the same model.
    alternative: str | None = None
    alternative_check: dict | None = None  # what that check answered: {"target", "accepts", "reason"}

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def amend_fix(self, fix: str) -> None:
        """Replace the fix (and the rendered message) once more is known, e.g. whether another flow takes the model."""
        self.fix = fix
        self.args = (self.render(),)

    def render(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        found = {"error": type(self).__name__, "what": self.what, "where": self.where, "fix": self.fix}
        return found | ({"alternative": self.alternative_check} if self.alternative_check else {})

    def causes(self) -> list[str]:
        """The exceptions this one was raised from (`raise ... from`, or during handling), one line each."""
        lines, seen, exc = [], {id(self)}, self
        while True:
            exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
            if exc is None or id(exc) in seen:
                return lines
            seen.add(id(exc))
            text = (exc.what if isinstance(exc, SDKError) else str(exc)).strip()
            name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
            lines.append(f"{name}: {text.splitlines()[0]}" if text else name)

    def render_verbose(self) -> str:
        """render() plus the cause chain: what --verbose prints (the plain block stays what/where/fix)."""
        return "\n".join([self.render(), *(f"  caused by: {line}" for line in self.causes())])


class BoardError(SDKError):
    """A board file is malformed or a board name is unknown."""


class DatasetError(SDKError):
    """A data set is missing or not in a format the SDK reads."""


class ConfigError(SDKError):
    """An option value is out of range or inconsistent (bits, layer names, ...)."""


class CheckpointError(SDKError):
    """A training run folder or checkpoint is missing, corrupt or incompatible."""


class ExportError(SDKError):
    """A model could not be exported to QONNX."""


class PackageError(SDKError):
    """A deployment package is missing, incomplete, tampered with or corrupt."""


class SimulationError(SDKError):
    """A compiled graph holds a node the simulator cannot compute, or the input does not fit the graph."""


class UnsupportedLayersError(SDKError):
    """Layers a flow cannot map to its hardware or runtime; listed before any long work starts.

    `layers` are objects with name, op_type, why, fix and to_dict() (one per layer); `alternative`: the flow that
    may take the model instead, named in the fix only once its check accepts the model (sdk/advice.py).
    """

    def __init__(self, layers: list, board_name: str, alternative: str | None = None):
        self.layers = layers
        self.alternative = alternative
        lines = [f"{u.name} ({u.op_type}): {u.why}; fix: {u.fix}" for u in layers]
        super().__init__(
            f"{len(layers)} layer(s) of the model cannot be mapped correctly to {board_name}:\n  " + "\n  ".join(lines),
            where=f"--model -> --target {board_name}",
            fix="change the model as suggested",
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "layers": [u.to_dict() for u in self.layers]}


class ModelTooLargeError(SDKError):
    """The network does not fit the board (FPGA resources even fully folded, or MCU / NPU memory)."""


BUG_MESSAGE = "this is a bug in the SDK; please report it"


class InternalError(SDKError):
    """A state the SDK's own code calls impossible, or a crash: a bug, not the user's doing (exit 3).

    Exit 1 means "verification failed" and 2 "user error"; a script must be able
    to tell a bug from both.
    """

    exit_code = 3

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        super().__init__(what, where, f"{BUG_MESSAGE} ({fix})" if fix else BUG_MESSAGE)

    @classmethod
    def from_crash(cls, exc: BaseException) -> InternalError:
        """Wrap an uncaught non-SDK exception; `where` is the innermost frame that raised it."""
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error = cls(
            f"Unexpected {type(exc).__name__}" + (f": {message}" if message else ""),
            where=where,
            fix="rerun with --verbose for the traceback and the libraries' own messages",
        )
        error.__cause__ = exc
        return error


class UnsupportedModelError(SDKError):
    """A flow's own transformations cannot process the model (a pattern they do not handle), found before the
    artifact exists: the model is refused, naming the step and, where known, the node."""
