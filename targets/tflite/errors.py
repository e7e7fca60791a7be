"""The TFLite family's own errors (each an SDKError: what, where, fix; exit 2)."""

from __future__ import annotations

from sdk.errors import SDKError


class TfliteConversionError(SDKError):
    """The model cannot be written as an int8 .tflite (an op, a quantizer or a shape TFLite cannot express)."""


class GoldenModelError(SDKError):
    """A compiled file holds something the numpy golden model of its runtime cannot compute exactly."""


class TfliteFileError(SDKError):
    """A .tflite file is missing, corrupt, or refused by LiteRT."""
