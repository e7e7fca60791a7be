"""What someone with write access to a package does to get an edited file past the manifest: recompute the changed
files' entries and the identity over them. No signature stops that; the readers' own checks (graphs, regenerated RTL)
must. One helper for every test that tampers this way."""

from __future__ import annotations

import json
from pathlib import Path

from sdk.package import MANIFEST_NAME, dumps_json, identity_sha256
from sdk.package_check import file_mode, sha256_file


def recompute_manifest(package: Path, only: str | None = None) -> None:
    """Every file entry's sha256, size and mode as the file now is (only the entry of `only`, if given, which
    is cheaper where a fuzz loop edits one file), then identity_sha256 over the manifest."""
    manifest = json.loads((package / MANIFEST_NAME).read_text())
    for entry in manifest["files"]:
        if only is None or entry["path"] == only:
            path = package / entry["path"]
            entry.update(sha256=sha256_file(path), bytes=path.stat().st_size, mode=file_mode(path))
    manifest["identity_sha256"] = identity_sha256(manifest)
    (package / MANIFEST_NAME).write_text(dumps_json(manifest))
