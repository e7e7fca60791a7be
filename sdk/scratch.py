"""Scratch folders that a killed process does not leave behind for good, and that only the SDK's own.

A deploy works in a temporary folder; `kill -9` gives it no chance to remove
it. Each folder's name carries the owner's process id and a random token
(`sdk-<kind>-<pid>-<token>`), and the folder holds a marker file written at
creation with the same token. Every new scratch folder first removes the
folders of processes that are gone, but only those whose marker is there and
matches their name: a user's folder named like one (`sdk-release-2024-final`,
or even a copied name) has no marker and is never touched, nor is a folder of
a live process.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARKER = ".sdk-scratch"  # the file in each scratch folder that says the SDK made it
_MARKER_FORMAT = "sdk-scratch/1"
_NAME = re.compile(r"^\.?sdk-[a-z-]+-(\d+)-([0-9a-f]{32})$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's live process; a number no pid can be
        return True
    return True


def _marked(folder: Path, token: str) -> bool:
    """The folder is a real folder of this user holding the marker (a regular file, not a link) with `token`."""
    try:
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        marker = folder / MARKER
        if not stat.S_ISREG(marker.lstat().st_mode):
            return False
        with open(marker, "rb") as handle:
            return handle.read(128) == f"{_MARKER_FORMAT} {token}\n".encode()
    except OSError:
        return False


def sweep(folder: Path | str | None = None) -> list[Path]:
    """Remove the SDK scratch folders in `folder` (default: the temp folder) whose process is gone.

    Only folders this SDK made go: the name's token must match the marker file inside."""
    removed = []
    root = Path(folder or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match:
            continue
        pid, token = int(match.group(1)), match.group(2)
        if pid == os.getpid() or _alive(pid) or not _marked(entry, token):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _make(kind: str, folder: Path | str | None, hidden: bool) -> Path:
    """A new, empty scratch folder (mode 0700) with its marker file; never an existing folder."""
    root = Path(folder or tempfile.gettempdir())
    while True:
        token = secrets.token_hex(16)
        path = root / f"{'.' if hidden else ''}sdk-{kind}-{os.getpid()}-{token}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # 128 random bits: not in practice, but never reuse a folder
            continue
        break
    try:
        fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(f"{_MARKER_FORMAT} {token}\n".encode())
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


@contextlib.contextmanager
def scratch_dir(kind: str, folder: Path | str | None = None, hidden: bool = False) -> Iterator[str]:
    """A temporary folder named after this process, removed on exit; stale ones of dead processes go first.

    `folder` is for the SDK's own folders (its cache); never pass a folder the user named: nothing is swept
    or left there."""
    sweep(folder)
    path = _make(kind, folder, hidden)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)  # made by this call (a folder renamed away is simply gone)


def clear_scratch(path: Path) -> None:
    """Empty a scratch folder of this process before its `scratch_dir` block ends (its marker stays): a deploy
    removes its files before the report that times it is written."""
    for entry in Path(path).iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
