"""Errors a user can cause. Each says what went wrong, where, and what to do.

The CLI prints an SDKError as one block and exits 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class SDKError(Exception):
    """Base of every user-facing error: `what` happened, `where`, and the `fix`."""

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "what": self.what, "where": self.where, "fix": self.fix}


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
