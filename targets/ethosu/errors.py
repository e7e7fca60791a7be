"""The Ethos-U flow's own errors."""

from __future__ import annotations

from sdk.errors import SDKError


class VelaError(SDKError):
    """Vela failed to compile a model for an Ethos-U accelerator."""
