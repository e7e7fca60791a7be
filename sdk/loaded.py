"""`sdk.load(package)`: a deployment package verified once and its artifact made ready, for any number of runs.

`sdk.simulate(package, x)` is the one-shot form: it verifies the package (every file's sha256 against the
manifest), reads its card and graphs and prepares the flow's plan on every call, which a test or a host loop
feeding one sample at a time pays each time. A LoadedPackage pays it once, in `load_package`; its calls then read
no file: the flow's `load` (targets.base.Target) holds what it runs in memory (FINN: the parent graph's host ops and
the prepared simulator plan; TFLite, TFLite Micro, Ethos-U: the parsed file for the golden model and the runtime's
interpreter).

What a LoadedPackage runs is what was verified when it was loaded: a package changed on disk afterwards is not
re-checked (nor read) by its calls; load it again to run the new files.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk.errors import ConfigError, PackageError, SDKError
from sdk.package import MANIFEST_NAME, verify_package
from targets.registry import FLOWS, get_target, set_options, simulate_options

if TYPE_CHECKING:
    from sdk.input_map import InputMap
    from targets.base import LoadedArtifact, SimulatedOutputs


@dataclass(frozen=True)
class LoadedPackage:
    """A verified package with its artifact in memory: `pkg(x)` is `sdk.simulate(package, x)`, without its file I/O.

    x: what the model's forward takes, in its input layout, as for sdk.simulate; codes=True: the device's integer
    codes. Calls share the artifact's buffers: call from one thread at a time."""

    path: Path
    flow: str
    manifest: dict[str, Any] = field(repr=False)
    card: dict[str, Any] = field(repr=False)
    artifact: LoadedArtifact = field(repr=False)
    input_map: InputMap = field(repr=False)  # the card's, read once

    def __call__(self, x: Any, codes: bool = False) -> np.ndarray:
        return self.simulate(x, codes)

    def simulate(self, x: Any, codes: bool = False) -> np.ndarray:
        """The packaged artifact's final outputs on x (float, batch first), exactly as sdk.simulate gives them."""
        return self.run(x, codes, agreement=False).outputs

    def run(self, x: Any, codes: bool = False, agreement: bool = True) -> SimulatedOutputs:
        """The outputs and the flow's own figures of the run (`sdk simulate`'s); agreement=False leaves out the
        checks no simulate option asked for (a TFLite package's runtime beside its golden model)."""
        from sdk.deployment import model_batch

        if not isinstance(codes, bool):
            raise ConfigError(f"codes must be True or False, got {codes!r}.", where="codes", fix="codes=True")
        return self.artifact.run(model_batch(x, self.card, codes=codes, mapping=self.input_map), agreement)


def load_package(
    package: Path | str, options: dict[str, Any] | None = None, threads: int | None = None
) -> LoadedPackage:
    """Verify the package (manifest, every file's sha256, the deploy fields; a PackageError names what is wrong),
    read its card, and make its artifact ready with the flow's simulate options (e.g. {"rtlsim": True}); threads:
    the most the runs use (None: the runtime's default)."""
    package = Path(package)
    manifest = read_manifest(package)
    parsed = simulate_options_of(manifest["flow"], options or {})
    card = read_card(package)
    import sdk.deployment  # noqa: F401  model_batch's module, imported now: a call then opens no file
    from sdk.model_card import input_map_of

    target = get_target(manifest["flow"])
    if not callable(getattr(target, "load", None)):  # a flow written for an SDK before sdk.load
        raise SDKError(
            f"The flow {manifest['flow']!r} of this package cannot load it: its adapter "
            f"({type(target).__module__}) has no load method (targets.base.Target.load).",
            where=str(package),
            fix="update the package that provides the flow (it was written for an older SDK)",
        )
    artifact = target.load(package, card, parsed, threads)
    return LoadedPackage(package, manifest["flow"], manifest, card, artifact, input_map_of(card))


_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _field_problem(manifest: dict) -> tuple[str, str] | None:
    """(field, what is wrong) for the first deploy field a reader uses that is missing or malformed."""
    board = manifest.get("board")
    listed = {entry["path"] for entry in manifest["files"]}
    clock = manifest.get("clock_mhz")
    checks = [
        ("flow", manifest.get("flow") in FLOWS, f"is not one of {', '.join(FLOWS)}"),
        ("board", isinstance(board, dict), "is not an object"),
        ("board.name", isinstance(board, dict) and isinstance(board.get("name"), str) and board["name"], "is not text"),
        (
            "board.part",
            isinstance(board, dict)
            and (board.get("part") is None or _PART.fullmatch(str(board["part"])) is not None)
            and (not _needs_part(manifest.get("flow")) or isinstance(board.get("part"), str)),
            "is not a part name (letters, digits, '_', '.', '-'; an FPGA package needs one)",
        ),
        ("artifact", manifest.get("artifact") in listed, "does not name a file the manifest lists"),
        ("verified", isinstance(manifest.get("verified"), bool), "is not true or false"),
        (
            "clock_mhz",
            clock is None
            or (isinstance(clock, int | float) and not isinstance(clock, bool) and math.isfinite(clock) and clock > 0),
            "is not a positive number of MHz",
        ),
    ]
    return next(((name, what) for name, ok, what in checks if not ok), None)


def _needs_part(flow: object) -> bool:
    """The flow's packages name the board's part (its simulate reads it)."""
    return isinstance(flow, str) and flow in FLOWS and FLOWS[flow].needs_part


def read_manifest(package: Path) -> dict:
    """The package's manifest, after verify_package: a changed, added or missing file is refused before it runs,
    and so is a manifest whose deploy fields are missing or malformed, naming the field."""
    manifest = verify_package(package)
    problem = _field_problem(manifest)
    if problem is not None:
        name, what = problem
        raise PackageError(
            f"{MANIFEST_NAME} does not describe a deployment package: its field {name} {what}.",
            where=f"{package / MANIFEST_NAME} (field {name})",
            fix="deploy again; packages are written whole",
        )
    return manifest


def read_card(package: Path) -> dict:
    path = package / "model.qonnx.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError(
            "The package lacks model.qonnx.json.", where=str(package), fix="deploy again; packages are written whole"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"model.qonnx.json is corrupt: {exc}", where=str(path), fix="deploy again") from exc


def simulate_options_of(flow: str, given: dict[str, Any]) -> Any:
    """The simulate options the user set, as the package's flow's typed options (another flow's are refused)."""
    from targets.base import parse_simulate_options

    return parse_simulate_options(flow, set_options(given, simulate_options()))
