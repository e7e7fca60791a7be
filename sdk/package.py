"""Deployment packages: written whole or not at all, and refused when changed afterwards.

A package is a folder with a `manifest.json` listing every other file with its
sha256, size and mode, plus an identity hash over what the inputs determine (measured
files such as latency reports are listed but left out of it, so equal inputs
give equal identities). `verify_package` checks a package against its manifest;
every reader calls it first (the check itself is sdk/package_check.py, standard library only, so the
packaged finish_bitfile.py carries it too).

Writing (`PackageBuilder`): build in a hidden sibling folder, then swap it in,
holding an OS lock beside the output so two deploys never write one package.
The swap is renames between sibling names that encode the state (`.<name>.tmp-*`
being built, `.new-*` complete, `.old-*` the old package moved aside), the last
step an atomic exchange of `.new-*` and the package on Linux (renameat2), two
renames elsewhere; after a run killed anywhere in it, the next run into the same
place finishes the swap (or restores the old package) before it removes every
stale sibling. Nothing appears at the final
path until the package is complete, and an older package there survives a
failed or killed build.

The writer is generic: backends (FINN, LiteRT, ...) add files and pass their own
manifest fields to `commit`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import numbers
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType
from typing import Any

from sdk import package_check
from sdk.errors import ConfigError, PackageError
from sdk.package_check import (
    MANIFEST_NAME,
    PACKAGE_FORMAT,
    ManifestProblem,
    check_identity,
    file_mode,
    file_problems,
    identity_sha256,
    is_relative,
    sha256_file,
)
from sdk.package_check import is_under as _is_under
from sdk.package_check import walk as _walk

# Filled in by commit(), never by the caller.
_RESERVED_FIELDS = ("format", "files", "volatile", "unlisted_allowed", "identity_sha256")
# In a folder being built or being deleted, the token of its name: the next run removes a stale sibling only when
# it holds its token, or (a complete package moved aside) the SDK's manifest.
BUILD_MARKER = ".sdk-building"
_SIBLING_KINDS = ("tmp", "new", "old")  # building, complete and waiting for the swap, old package moved aside
_REDEPLOY = "deploy again (`sdk deploy ... --out` this folder); a package is verified whole"


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
    return package_check.dumps_json(obj, default=_json_default)


def _relative(rel: str | Path) -> PurePosixPath:
    """Check that `rel` stays inside the package: no absolute paths, no '..'."""
    posix = PurePosixPath(Path(rel).as_posix())
    if posix.is_absolute() or Path(rel).is_absolute() or ".." in posix.parts or str(posix) in ("", "."):
        raise ValueError(f"package paths must be relative and stay inside the package, got {str(rel)!r}")
    return posix


def _settle_mode(path: Path) -> str:
    """Give a packaged file one of the two modes a manifest records (0755 if its owner could execute it, else
    0644), whatever the umask, so equal inputs give equal manifests; returns that mode."""
    mode = file_mode(path)
    os.chmod(path, int(mode, 8))
    return mode


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def _load_renameat2() -> Any:
    """glibc's renameat2 (Linux 3.15+, glibc 2.28+) through ctypes, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap the entries a and b in one atomic step (renameat2 with RENAME_EXCHANGE). False where the OS or the file
    system has no such call (macOS, other systems, old kernels, some network file systems): the caller then falls
    back to two renames, between which a killed run leaves the package missing until the next run restores it."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sibling(final_dir: Path, kind: str) -> Path:
    """A fresh hidden name next to final_dir: same file system, so renames are atomic; `kind` encodes the state."""
    return final_dir.parent / f".{final_dir.name}.{kind}-{secrets.token_hex(4)}"


def _siblings(final_dir: Path) -> dict[str, list[Path]]:
    """The hidden siblings a build of final_dir leaves while it runs (or when killed), by kind."""
    pattern = re.compile(rf"\.{re.escape(final_dir.name)}\.({'|'.join(_SIBLING_KINDS)})-[0-9a-f]{{8}}")
    found: dict[str, list[Path]] = {kind: [] for kind in _SIBLING_KINDS}
    try:
        entries = list(os.scandir(final_dir.parent))
    except FileNotFoundError:
        return found
    stamped: dict[str, list[tuple[int, Path]]] = {kind: [] for kind in _SIBLING_KINDS}
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match:
            try:
                stamped[match.group(1)].append((entry.stat(follow_symlinks=False).st_mtime_ns, Path(entry.path)))
            except FileNotFoundError:  # removed meanwhile
                continue
    for kind, paths in stamped.items():
        found[kind] = [path for _, path in sorted(paths, key=lambda item: item[0], reverse=True)]  # newest first
    return found


def _lock_path(final_dir: Path) -> Path:
    return final_dir.parent / f".{final_dir.name}.lock"


def _remove(sibling: Path) -> None:
    """Delete a sibling the SDK made so that a kill at any moment leaves it recognisable as the SDK's: its marker
    (its name's token) is written first and removed last, once everything else is gone."""
    if sibling.is_symlink() or not sibling.is_dir():
        sibling.unlink(missing_ok=True)
        return
    marker = sibling / BUILD_MARKER
    try:
        marker.write_text(_token(sibling), encoding="utf-8")
    except OSError:
        pass
    for entry in list(sibling.iterdir()):
        if entry.name == BUILD_MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        sibling.rmdir()


def _token(sibling: Path) -> str:
    """The random token a sibling's name ends in (`.<name>.<kind>-<token>`)."""
    return sibling.name.rpartition("-")[2]


# ---------------------------------------------------------------------------------------------------------------------
# Reading: verify a package against its manifest


def _load_manifest(path: Path) -> dict[str, Any]:
    """The manifest if it is the SDK's, every field the check reads present and well-formed; PackageError naming
    the field otherwise."""
    try:
        return package_check.load_manifest(path)
    except FileNotFoundError:
        raise PackageError(
            f"{path.parent} is not a deployment package (no {MANIFEST_NAME}).",
            where=str(path.parent),
            fix="pass the folder written by `sdk deploy`",
        ) from None
    except ManifestProblem as exc:
        where = str(path) + (f" (field {exc.field})" if exc.field else "")
        raise PackageError(exc.what, where=where, fix=_REDEPLOY) from exc
    except OSError as exc:
        raise PackageError(f"{MANIFEST_NAME} cannot be read: {exc}", where=str(path), fix=_REDEPLOY) from exc


def _missing_package_hint(package: Path) -> str:
    stranded = [p.name for kind in ("new", "old") for p in _siblings(package.absolute())[kind]]
    if stranded:
        return f"a deploy into it was interrupted (left {', '.join(stranded)}); deploy again to finish or undo it"
    return "pass the folder written by `sdk deploy`"


def verify_package(path: Path | str) -> dict[str, Any]:
    """Check a package against its manifest and return the manifest: every listed file present with its size and
    sha256, no file added (outside the folders the manifest leaves to scripts, e.g. a bitfile's), the identity
    consistent. Every reader calls this first, so a changed package is refused (PackageError) before it runs."""
    package = Path(path)
    if not package.is_dir():
        what = "does not exist" if not package.exists() else "is a file, not a package folder"
        raise PackageError(f"{package} {what}.", where=str(package), fix=_missing_package_hint(package))
    manifest = _load_manifest(package / MANIFEST_NAME)
    problems = file_problems(package, manifest)
    if problems:
        shown = "; ".join(f"{rel} {what}" for rel, what in problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise PackageError(
            f"The package is corrupt or was changed after it was written: {shown}{more}.",
            where=str(package / problems[0][0]),
            fix=f"restore the package, or {_REDEPLOY}",
        )
    try:
        check_identity(manifest)
    except ManifestProblem as exc:
        raise PackageError(exc.what, where=f"{package / MANIFEST_NAME} (field {exc.field})", fix=_REDEPLOY) from exc
    return manifest


# ---------------------------------------------------------------------------------------------------------------------
# Writing: the output path, the lock, recovery from a killed run, the builder


def _replaceable_paths(path: Path) -> set[str]:
    """The files a package at --out lists: this SDK's manifest, or an older SDK's (format sdk-package/1, whose
    entries record no mode), so a redeploy after an upgrade replaces the old package; PackageError otherwise."""
    try:
        return {entry["path"] for entry in _load_manifest(path)["files"]}
    except PackageError:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        entries = data.get("files") if isinstance(data, dict) and data.get("format") == "sdk-package/1" else None
        paths = [entry.get("path") for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
        if not entries or len(paths) != len(entries) or not all(isinstance(p, str) and is_relative(p) for p in paths):
            raise
        return set(paths)


def _refuse_replacing(final: Path) -> None:
    """Only a package the SDK wrote (or an empty folder) may be replaced: never a file, a link, a folder of the
    user's other files, or a package holding files the SDK did not write (e.g. a bitfile built since)."""
    where = f"--out {final}"
    if final.is_symlink():
        raise PackageError(
            f"{final} is a symbolic link; a deploy replaces the folder at --out and would not write through it.",
            where=where,
            fix="pass the folder the link points to, or a new folder",
        )
    if final.exists() and not final.is_dir():
        raise PackageError(
            f"{final} is a file, not a package folder; a deploy would replace it.",
            where=where,
            fix="pick a new folder for the package (e.g. --out deploy/<board>), or move the file away",
        )
    if not final.is_dir() or not any(final.iterdir()):
        return
    if not (final / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"{final} holds files that are not a deployment package; a deploy would replace the whole folder.",
            where=where,
            fix="pick a new or empty folder for the package (e.g. --out deploy/<board>)",
        )
    try:
        listed = _replaceable_paths(final / MANIFEST_NAME)
    except PackageError as exc:
        raise PackageError(
            f"{final} holds a {MANIFEST_NAME} the SDK did not write ({exc.what}); a deploy would replace the whole "
            "folder.",
            where=where,
            fix="pick a new folder for the package, or delete this one yourself if it is an old package",
        ) from exc
    files, others = _walk(final)
    foreign = [rel for rel in files + others if rel != MANIFEST_NAME and rel not in listed]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" (and {len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise PackageError(
            f"{final} is a deployment package, but holds files the SDK did not write: {shown}. A deploy replaces "
            "the whole folder and would delete them.",
            where=where,
            fix="move those files out of the package (e.g. a finished bitfile), or deploy to another --out",
        )


def _check_parent(final: Path) -> None:
    """The package's folder must be creatable: its nearest existing ancestor a writable folder."""
    ancestor = final.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PackageError(
            f"{ancestor} is a file, so the package folder {final} cannot be created.",
            where=f"--out {final}",
            fix="pick a --out inside a folder",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PackageError(
            f"The folder {ancestor} is not writable, so the package {final} cannot be written.",
            where=f"--out {final}",
            fix="pick a --out in a folder you can write to, or change that folder's permissions",
        )


def _lock_holder(final: Path) -> str | None:
    """Who holds the lock of final (its pid, as written in the lock file), without taking it; None if nobody."""
    try:
        fd = os.open(_lock_path(final), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return None
    finally:
        os.close(fd)


def _busy_error(final: Path, holder: str) -> PackageError:
    return PackageError(
        f"Another deploy (process {holder}) is writing the package {final}.",
        where=f"--out {final}",
        fix="wait for that deploy to finish, or deploy to another --out; its lock "
        f"({_lock_path(final).name}) is released when it ends, even if it is killed",
    )


def check_output_path(path: Path | str) -> Path:
    """Refuse an output path a deploy must not write, before any long work; writes nothing.

    Refused (exit 2): a file or a symbolic link at `path`; a folder that is not a package the SDK wrote (or that
    holds files the SDK did not write); a path inside another package; names too long for the file system; a
    parent that cannot be created or written; another deploy writing there. Returns the absolute path."""
    return _check_output(path, probe_lock=True)


_SIBLING_EXTRA = len(".") + len(".tmp-") + 8  # what a sibling's name adds to the package folder's name
_PATH_MAX = 4096  # Linux's; a longer --out is refused before any system call sees it


def _check_length(final: Path, path: Path | str) -> None:
    """Names the file system can hold, for the package and its hidden siblings (`.<name>.tmp-xxxxxxxx`); checked
    before any system call sees the path."""
    if len(os.fsencode(final)) + _SIBLING_EXTRA + 256 > _PATH_MAX:  # room for the package's own files below it
        raise PackageError(
            f"--out is {len(os.fsencode(final))} bytes long; with the package's files below it, paths would pass "
            f"the system's limit of {_PATH_MAX} bytes.",
            where=f"--out {str(path)[:60]}...",
            fix="pick a shorter --out",
        )
    name_max = 255
    with contextlib.suppress(OSError, ValueError):
        ancestor = final.parent
        while not ancestor.is_dir() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        name_max = os.pathconf(ancestor, "PC_NAME_MAX")
    longest = max(final.parts[1:], key=lambda part: len(os.fsencode(part)), default="")
    if len(os.fsencode(longest)) + _SIBLING_EXTRA > name_max:
        raise PackageError(
            f"--out has a name of {len(os.fsencode(longest))} bytes ('{longest[:30]}...'); the file system holds "
            f"names of at most {name_max} bytes, and the package's temporary siblings add {_SIBLING_EXTRA}.",
            where=f"--out {str(path)[:60]}...",
            fix=f"pick a --out whose folder names are at most {name_max - _SIBLING_EXTRA} bytes",
        )


def _refuse_nesting(final: Path, path: Path | str) -> None:
    """A package is never written inside another one: that package's check would then fail (an added folder), and
    a redeploy of either would concern the other."""
    for ancestor in final.parents:
        manifest = ancestor / MANIFEST_NAME
        try:
            if not manifest.is_file():
                continue
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and str(data.get("format", "")).startswith("sdk-package/"):
            raise PackageError(
                f"--out {path} is inside the deployment package {ancestor}; a package is never written inside another.",
                where=f"--out {path}",
                fix=f"pick a --out outside {ancestor} (e.g. beside it)",
            )


def _check_output(path: Path | str, probe_lock: bool) -> Path:
    final = Path(os.path.abspath(path))
    if final == final.parent:
        raise PackageError(f"{final} cannot be a package folder.", where=f"--out {path}", fix="e.g. --out deploy/x")
    _check_length(final, path)
    try:
        _refuse_nesting(final, path)
        _refuse_replacing(final)
    except OSError as exc:  # e.g. a folder on the way that cannot be searched
        raise _write_error(final, exc) from exc
    _check_parent(final)
    holder = _lock_holder(final) if probe_lock else None
    if holder is not None:
        raise _busy_error(final, holder)
    return final


class _OutputLock:
    """An exclusive flock on `.<name>.lock` beside the output: the kernel drops it when the process dies, so a
    killed deploy never blocks the next one; the file itself is removed on release."""

    def __init__(self, final: Path):
        self.final = final
        self.path = _lock_path(final)
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise _busy_error(self.final, holder) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have removed the file after we opened it: then this lock guards nothing.
            try:
                current = os.stat(self.path)
                mine = os.fstat(fd)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            current = os.stat(self.path)
            mine = os.fstat(self.fd)
            if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                os.unlink(self.path)  # while still locked: a waiter then sees a new inode and retries
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _recover(final: Path) -> None:
    """Undo what a killed run left (call with the lock held): if the package is gone because a run died between
    the commit's two renames, put the complete new package in place (or else the old one back); then remove
    every stale sibling."""
    stale = _siblings(final)
    if not final.exists() and not final.is_symlink():
        for candidate in stale["new"]:  # complete by construction (renamed from tmp after the manifest); verify
            try:
                verify_package(candidate)
            except PackageError:
                continue
            os.rename(candidate, final)
            break
        else:
            if stale["old"]:
                os.rename(stale["old"][0], final)
    for paths in stale.values():
        for path in paths:
            if _made_by_a_build(path):
                _remove(path)


def _made_by_a_build(sibling: Path) -> bool:
    """Whether a stale sibling is the SDK's: a folder being built carries its name's token in BUILD_MARKER; a
    complete package (new, or the old one moved aside) carries the SDK's manifest; an empty one holds nothing to
    lose. A user's folder that merely looks like a sibling holds files of its own and is never deleted."""
    if sibling.is_symlink() or not sibling.is_dir():
        return False
    marker = sibling / BUILD_MARKER
    try:
        if {entry.name for entry in sibling.iterdir()} <= {BUILD_MARKER}:
            return True  # a run killed between making the folder and writing its marker: nothing in it to lose
        if not marker.is_symlink() and marker.read_text(encoding="utf-8") == _token(sibling):
            return True
    except (OSError, UnicodeDecodeError):
        pass
    try:  # a build that finished its manifest but not its rename, or a complete package (new / old)
        _load_manifest(sibling / MANIFEST_NAME)
    except PackageError:
        return False
    return True


def _write_error(final: Path, exc: OSError) -> PackageError:
    return PackageError(
        f"Cannot write the package {final}: {exc.strerror or exc}"
        + (f" ({exc.filename})" if exc.filename else "")
        + "; any package there is unchanged.",
        where=f"--out {final}",
        fix="pick a --out in a folder you can write to, or check that folder's permissions and free space",
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class PackageBuilder:
    """Build a package in a temporary sibling of `final_dir`; `commit` swaps it in.

    with PackageBuilder(out) as pkg:
        pkg.write_text("README.md", "...")
        pkg.write_json("report.json", {...}, volatile=True)  # measured: hashed, but not part of the identity
        pkg.commit({"board": "Pynq-Z2"})

    Entering checks the output path (check_output_path), takes the lock beside it, and cleans up after a killed
    run. Leaving the block by an exception, SIGTERM/SIGHUP, or without commit(), deletes the temporary folder
    and leaves `final_dir` exactly as it was; the lock is released on every exit path.
    """

    def __init__(self, final_dir: Path | str):
        self.final_dir = Path(os.path.abspath(final_dir))
        self._temp_dir: Path | None = None
        self._committed = False
        self._entered = False
        self._lock = _OutputLock(self.final_dir)
        self._volatile: set[str] = set()
        self._stamps: dict[str, tuple[int, int]] = {}  # file -> (size, mtime) when file_entries hashed it
        self._unlisted_allowed: set[str] = set()
        self._signals: dict[int, Any] = {}

    def __enter__(self) -> PackageBuilder:
        if self._entered:
            raise RuntimeError("a PackageBuilder can be entered only once")
        self._entered = True
        final = _check_output(self.final_dir, probe_lock=False)  # fails before anything is written; then the lock
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise _write_error(final, exc) from exc
        try:
            self._catch_signals()
            _recover(final)
            _refuse_replacing(final)  # again, under the lock: recovery may have put a package back
            self._temp_dir = self._make_temp_dir()
        except BaseException as exc:
            self._restore_signals()
            self._lock.release()
            if isinstance(exc, OSError):
                raise _write_error(final, exc) from exc
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
        finally:
            self._restore_signals()
            self._lock.release()

    def _make_temp_dir(self) -> Path:
        # os.mkdir (not mkdtemp) so the folder gets the usual umask permissions, not 0700.
        while True:
            candidate = _sibling(self.final_dir, "tmp")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            (candidate / BUILD_MARKER).write_text(_token(candidate), encoding="utf-8")
            return candidate

    def _catch_signals(self) -> None:
        """SIGTERM and SIGHUP (where nobody handles them) unwind the `with` block like Ctrl-C, so it cleans up."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                self._signals[sig] = signal.signal(sig, _exit_on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._signals.items():
            signal.signal(sig, handler)
        self._signals.clear()

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
        written = str(posix)  # whatever is written there is hashed again by file_entries
        self._stamps = {rel: stamp for rel, stamp in self._stamps.items() if not _is_under(rel, [written])}
        return target

    def mark_volatile(self, *rels: str | Path) -> None:
        """Files (or whole folders) holding measurements, e.g. timings: listed and hashed in the manifest, but left
        out of its identity."""
        self._volatile.update(str(_relative(rel)) for rel in rels)

    def allow_unlisted(self, folder: str | Path) -> None:
        """A folder a packaged script writes its results into later (e.g. a bitfile): files appearing there do not
        make verify_package refuse the package. A redeploy still refuses to delete them."""
        self._unlisted_allowed.add(str(_relative(folder)))

    def add_file(self, rel: str | Path, src: Path, volatile: bool = False) -> Path:
        target = self.path(rel)
        shutil.copy(src, target)  # content and mode (keeps scripts executable)
        if volatile:
            self.mark_volatile(rel)
        return target

    def add_tree(self, rel: str | Path, src_dir: Path) -> Path:
        target = self.path(rel)
        shutil.copytree(src_dir, target, dirs_exist_ok=True)
        return target

    def write_text(self, rel: str | Path, text: str, volatile: bool = False) -> Path:
        target = self.path(rel)
        target.write_text(text, encoding="utf-8", newline="\n")
        if volatile:
            self.mark_volatile(rel)
        return target

    def write_json(self, rel: str | Path, obj: Any, volatile: bool = False) -> Path:
        return self.write_text(rel, dumps_json(obj), volatile)

    def file_entries(self, hashed: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
        """Every file in the package except the manifest, sorted by POSIX path.

        hashed: entries of an earlier call, reused for a file whose size and modification time are still those
        it was hashed at (anything written since is hashed again)."""
        root = self.temp_dir
        files, others = _walk(root)
        if others:
            raise ValueError(f"a package holds regular files only, not {others}")
        known = {entry["path"]: entry for entry in hashed}
        entries = []
        for rel in files:
            if rel in (MANIFEST_NAME, BUILD_MARKER):
                continue
            stat = (root / rel).stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            entry = known.get(rel)
            if entry is None or self._stamps.get(rel) != stamp:
                entry = {"path": rel, "sha256": sha256_file(root / rel), "bytes": stat.st_size}
                entry["mode"] = _settle_mode(root / rel)
                self._stamps[rel] = stamp
            entries.append(entry)
        return entries

    def commit(
        self, fields: dict[str, Any], volatile: Iterable[str | Path] = (), hashed: Iterable[dict[str, Any]] = ()
    ) -> Path:
        """Write manifest.json (fields, format, file list, identity), then swap the package into final_dir.

        volatile: files holding measurements (as mark_volatile). hashed: file_entries() of the files not written
        since (a deploy hashes the package before it writes the report that times the hashing)."""
        clash = [key for key in _RESERVED_FIELDS if key in fields]
        if clash:
            raise ValueError(f"manifest fields {clash} are reserved: commit() fills them in")
        self.mark_volatile(*volatile)
        entries = self.file_entries(hashed)
        absent = sorted(v for v in self._volatile if not any(_is_under(entry["path"], [v]) for entry in entries))
        if absent:
            raise ValueError(f"volatile files {absent} are not in the package")
        manifest = {**fields, "format": PACKAGE_FORMAT, "files": entries}
        if self._volatile:
            manifest["volatile"] = sorted(self._volatile)
        if self._unlisted_allowed:
            manifest["unlisted_allowed"] = sorted(self._unlisted_allowed)
        manifest = json.loads(dumps_json(manifest))  # the identity is of what readers will parse
        manifest["identity_sha256"] = identity_sha256(manifest)
        (self.temp_dir / MANIFEST_NAME).write_text(dumps_json(manifest), encoding="utf-8", newline="\n")
        # complete now: the manifest vouches for it (a run killed before this line leaves the marker, after it the
        # manifest: either way the next run knows the folder for the SDK's)
        (self.temp_dir / BUILD_MARKER).unlink(missing_ok=True)
        self._swap_in()
        self._committed = True
        return self.final_dir

    def _swap_in(self) -> None:
        """tmp -> new (complete), then new <-> final in one atomic exchange where the OS has one (Linux), so --out
        is never missing, and the old package (now under the sibling's name) deleted. Elsewhere two renames,
        final -> old and new -> final; a run killed between them leaves names that tell the next run what to do
        (see _recover)."""
        new: Path | None = _sibling(self.final_dir, "new")
        old = None
        try:
            os.rename(self.temp_dir, new)
            self._temp_dir = None
            if self.final_dir.exists() or self.final_dir.is_symlink():
                if _exchange(new, self.final_dir):
                    new, old = None, new  # the old package now under the sibling's name
                else:
                    old = _sibling(self.final_dir, "old")
                    os.rename(self.final_dir, old)
            if new is not None:
                os.rename(new, self.final_dir)
        except BaseException as exc:
            if old is not None and not self.final_dir.exists():
                os.rename(old, self.final_dir)
            if new is not None:
                _remove(new)
            if isinstance(exc, OSError):
                raise _write_error(self.final_dir, exc) from exc
            raise
        if old is not None:
            _remove(old)
