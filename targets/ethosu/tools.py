"""The Ethos-U flow's tools as `sdk doctor` shows them: Vela's command line."""

from __future__ import annotations

import os
import shutil
import sys

from sdk.doctor import Check, command_version


def doctor_checks() -> list[dict]:
    vela = shutil.which("vela") or shutil.which("vela", path=os.path.dirname(sys.executable))
    version = command_version([vela, "--version"]) if vela else None
    return [Check("vela (CLI)", bool(vela), version, vela or "not on PATH", "Ethos-U compilation").to_dict()]
