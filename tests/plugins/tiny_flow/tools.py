"""The tiny flow's row in `sdk doctor`."""

from __future__ import annotations


def doctor_checks() -> list[dict]:
    return [
        {"name": "tiny-tool", "present": True, "version": "1.0", "detail": "always here", "needed_for": "tiny flow"}
    ]
