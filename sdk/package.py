"""Deployment package writer: build in a hidden sibling folder, then swap it in.

A package is a folder with a `manifest.json` listing every other file with its
sha256 and size. Nothing appears at the final path until the package is
complete, so a crash or a failed build never leaves a
half-written package behind, and an older package at that path survives it.

The writer is generic: backends (FINN, LiteRT, ...) add files and pass their own
manifest fields to `commit`.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import secrets
import shutil
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

PACKAGE_FORMAT = "sdk-package/1"
MANIFEST_NAME = "manifest.json"
_RESERVED_FIELDS = ("format", "files")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large bitstreams don't fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tool_versions(packages: list[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None where missing), for the manifest."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _json_default(value: Any) -> Any:
    """Numpy scalars become plain numbers (they are registered as numbers.*); the rest, e.g. Paths, str."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def dumps_json(obj: Any) -> str:
    """The one JSON layout of a package: sorted keys, indent 2, trailing newline, so equal data is equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def _sibling(final_dir: Path, tag: str) -> Path:
    """A fresh hidden name next to final_dir: same file system, so renames are atomic."""
    return final_dir.parent / f".{final_dir.name}.{tag}-{secrets.token_hex(4)}"


def _make_temp_dir(final_dir: Path) -> Path:
    # os.mkdir (not mkdtemp) so the folder gets the usual umask permissions, not 0700.
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = _sibling(final_dir, "tmp")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _relative(rel: str | Path) -> PurePosixPath:
    """Check that `rel` stays inside the package: no absolute paths, no '..'."""
    posix = PurePosixPath(Path(rel).as_posix())
    if posix.is_absolute() or Path(rel).is_absolute() or ".." in posix.parts or str(posix) in ("", "."):
        raise ValueError(f"package paths must be relative and stay inside the package, got {str(rel)!r}")
    return posix


class PackageBuilder:
    """Build a package in a temporary sibling of `final_dir`; `commit` swaps it in.

    with PackageBuilder(out) as pkg:
        pkg.write_text("README.md", "...")
        pkg.commit({"board": "Pynq-Z2"})

    Leaving the block by an exception, or without commit(), deletes the temporary
    folder and leaves `final_dir` exactly as it was.
    """

    def __init__(self, final_dir: Path | str):
        self.final_dir = Path(final_dir).absolute()
        self._temp_dir: Path | None = None
        self._committed = False

    def __enter__(self) -> PackageBuilder:
        if self._temp_dir is not None or self._committed:
            raise RuntimeError("a PackageBuilder can be entered only once")
        self._refuse_foreign_folder()
        self._temp_dir = _make_temp_dir(self.final_dir)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @property
    def temp_dir(self) -> Path:
        """The folder being built; only valid inside the `with` block, before commit."""
        if self._temp_dir is None:
            raise RuntimeError(
                "PackageBuilder is not open: use it as `with PackageBuilder(...) as pkg`, before commit()"
            )
        return self._temp_dir

    def path(self, rel: str | Path) -> Path:
        """Absolute path of `rel` inside the package being built; parent folders are created."""
        posix = _relative(rel)
        if str(posix) == MANIFEST_NAME:
            raise ValueError(f"{MANIFEST_NAME} is written by commit(); pass its fields to commit() instead")
        target = self.temp_dir.joinpath(*posix.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_file(self, rel: str | Path, src: Path) -> Path:
        target = self.path(rel)
        shutil.copy(src, target)  # content and mode (keeps scripts executable)
        return target

    def add_tree(self, rel: str | Path, src_dir: Path) -> Path:
        target = self.path(rel)
        shutil.copytree(src_dir, target, dirs_exist_ok=True)
        return target

    def write_text(self, rel: str | Path, text: str) -> Path:
        target = self.path(rel)
        target.write_text(text, encoding="utf-8", newline="\n")
        return target

    def write_json(self, rel: str | Path, obj: Any) -> Path:
        return self.write_text(rel, dumps_json(obj))

    def file_entries(self) -> list[dict[str, Any]]:
        """Every file in the package except the manifest, sorted by POSIX path."""
        root = self.temp_dir
        entries = []
        for file in root.rglob("*"):
            rel = file.relative_to(root).as_posix()
            if file.is_file() and rel != MANIFEST_NAME:
                entries.append({"path": rel, "sha256": sha256_file(file), "bytes": file.stat().st_size})
        return sorted(entries, key=lambda entry: entry["path"])

    def commit(self, fields: dict[str, Any]) -> Path:
        """Write manifest.json (fields + format + file list), then swap the package into final_dir."""
        clash = [key for key in _RESERVED_FIELDS if key in fields]
        if clash:
            raise ValueError(f"manifest fields {clash} are reserved: commit() fills them in")
        manifest = {**fields, "format": PACKAGE_FORMAT, "files": self.file_entries()}
        (self.temp_dir / MANIFEST_NAME).write_text(dumps_json(manifest), encoding="utf-8", newline="\n")
        self._swap_in(self.temp_dir)
        self._temp_dir = None
        self._committed = True
        return self.final_dir

    def _refuse_foreign_folder(self) -> None:
        """Only an old package (or an empty folder) may be replaced: never a folder of the user's other files."""
        from sdk.errors import ConfigError

        target = self.final_dir
        if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
            raise ConfigError(
                f"{target} holds files that are not a deployment package; a deploy would replace the whole folder.",
                where=f"--out {target}",
                fix="pick a new or empty folder for the package (e.g. --out deploy/<board>)",
            )

    def _swap_in(self, built: Path) -> None:
        """Rename any old package aside, rename the new one in, then delete the old one."""
        old = None
        if self.final_dir.exists() or self.final_dir.is_symlink():
            old = _sibling(self.final_dir, "old")
            os.rename(self.final_dir, old)
        try:
            os.rename(built, self.final_dir)
        except BaseException:
            if old is not None:
                os.rename(old, self.final_dir)
            raise
        if old is not None:
            _remove(old)
