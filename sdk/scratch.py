"""Scratch folders that a killed process does not leave behind for good.

A deploy works in a temporary folder; `kill -9` gives it no chance to remove
it. Each folder's name carries the owner's process id
(`sdk-<kind>-<pid>-<random>`), and every new one first removes the folders of
processes that are gone. A folder of a live process is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_NAME = re.compile(r"^\.?sdk-[a-z-]+-(\d+)-[A-Za-z0-9_]+$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep(folder: Path | str | None = None) -> list[Path]:
    """Remove the SDK scratch folders in `folder` (default: the temp folder) whose process is gone."""
    removed = []
    root = Path(folder or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def scratch_dir(kind: str, folder: Path | str | None = None, hidden: bool = False) -> Iterator[str]:
    """A temporary folder named after this process, removed on exit; stale ones of dead processes go first."""
    sweep(folder)
    prefix = f"{'.' if hidden else ''}sdk-{kind}-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=folder) as tmp:
        yield tmp
