"""The TensorFlow Lite Micro flow's own errors."""

from __future__ import annotations

from sdk.errors import SDKError


class TflmError(SDKError):
    """TensorFlow Lite Micro refused or failed on a model."""
