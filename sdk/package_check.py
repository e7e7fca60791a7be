"""A package checked against its manifest, with the Python standard library only.

One implementation for two readers: `sdk.package.verify_package` (every SDK reader) and the packaged
`finish_bitfile.py`, which carries this module's text so it can check its package on a Vivado machine
where the SDK is not installed. So: no imports beyond the standard library, no `from __future__`, and
annotations a Vivado machine's older Python (3.8) evaluates too (typing's List, Optional).

The manifest cannot switch its own checks off: each field the check reads is required and well-formed
(a missing `identity_sha256` is a refusal, not a skipped check). What it protects against: a file
changed, added, removed or made executable by accident, a partial copy, a manifest edited by hand. What it
cannot catch without a signature: someone who edits files and then recomputes the whole manifest.
"""

# ruff: noqa: UP006, UP035, UP045 -- typing's List / Optional: this text also runs on a Vivado machine's Python 3.8
import hashlib
import json
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import List, Optional, Tuple

PACKAGE_FORMAT = "sdk-package/2"  # /2: every file entry records its mode
MANIFEST_NAME = "manifest.json"
MODES = ("0644", "0755")  # what the writer sets: a file is executable or not, readable by all, written by its owner
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ManifestProblem(Exception):
    """The package does not match its manifest: `what` is wrong with `rel` (a path in the package, or
    manifest.json), `field` names the manifest field where the manifest itself is at fault."""

    def __init__(self, what: str, rel: str = MANIFEST_NAME, field: Optional[str] = None):
        super().__init__(what)
        self.what, self.rel, self.field = what, rel, field


def dumps_json(obj, default=None) -> str:
    """The one JSON layout of a package: sorted keys, indent 2, trailing newline, so equal data is equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large bitstreams don't fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_mode(path: Path) -> str:
    """The mode the manifest records: "0755" if the owner may execute the file, else "0644"."""
    return "0755" if os.lstat(path).st_mode & stat.S_IXUSR else "0644"


def is_under(rel: str, entries) -> bool:
    """rel is one of entries, or inside one of them (entries may name folders)."""
    return any(rel == entry or rel.startswith(entry.rstrip("/") + "/") for entry in entries)


def identity_sha256(manifest: dict) -> str:
    """Hash of what the inputs determine: every manifest field, every file's entry except measured (volatile)
    files, which count by name only. Two deploys of the same inputs agree on it; their timings may differ."""
    volatile = manifest.get("volatile", [])
    view = {key: value for key, value in manifest.items() if key not in ("files", "identity_sha256")}
    view["files"] = [
        {"path": entry["path"]} if is_under(entry["path"], volatile) else entry for entry in manifest.get("files", [])
    ]
    return hashlib.sha256(dumps_json(view).encode()).hexdigest()


def is_relative(rel: str) -> bool:
    """A package path: relative, POSIX, normalised, staying inside the package."""
    posix = PurePosixPath(rel)
    return (
        bool(rel)
        and not posix.is_absolute()
        and ".." not in posix.parts
        and str(posix) == rel
        and rel not in (".", MANIFEST_NAME)
        and "\\" not in rel
        and "\x00" not in rel
    )


def walk(root: Path) -> Tuple[List[str], List[str]]:
    """(regular files, everything else that is not a folder: symlinks, sockets, ...) under root, as POSIX paths.

    Symlinked folders are not followed: a package never holds links, so they count as foreign entries."""
    files, others = [], []
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in dirs:
            if (base / name).is_symlink():
                others.append((base / name).relative_to(root).as_posix())
        for name in names:
            path = base / name
            rel = path.relative_to(root).as_posix()
            (files if path.is_file() and not path.is_symlink() else others).append(rel)
    return sorted(files), sorted(others)


def _entry_problem(entry) -> Optional[str]:
    if not isinstance(entry, dict):
        return "is not an object"
    if set(entry) != {"path", "sha256", "bytes", "mode"}:
        return f"has the keys {sorted(entry)}, not bytes, mode, path, sha256"
    if not isinstance(entry["path"], str) or not is_relative(entry["path"]):
        return "has a path that is not a relative path inside the package"
    if not isinstance(entry["sha256"], str) or not _HEX64.fullmatch(entry["sha256"]):
        return "has a sha256 that is not 64 hex digits"
    if isinstance(entry["bytes"], bool) or not isinstance(entry["bytes"], int) or entry["bytes"] < 0:
        return "has a size (bytes) that is not a non-negative integer"
    if entry["mode"] not in MODES:
        return f"has a mode that is not one of {', '.join(MODES)}"
    return None


def _string_list(manifest: dict, key: str) -> list:
    value = manifest.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and is_relative(v.rstrip("/")) for v in value):
        raise ManifestProblem(
            f"{MANIFEST_NAME} has a malformed '{key}' field (not a list of package paths).", field=key
        )
    return value


def load_manifest(path: Path) -> dict:
    """The manifest, if every field the check reads is present and well-formed; ManifestProblem otherwise
    (FileNotFoundError if there is none)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestProblem(f"{MANIFEST_NAME} is corrupt (not JSON): {exc}") from exc
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("sdk-package/"):
        raise ManifestProblem(
            f"{MANIFEST_NAME} is not a deployment package manifest (no '{PACKAGE_FORMAT}' format field).",
            field="format",
        )
    if manifest["format"] != PACKAGE_FORMAT:
        raise ManifestProblem(
            f"{MANIFEST_NAME} has the format {str(manifest['format'])[:40]!r}; this SDK reads {PACKAGE_FORMAT!r} "
            "(older packages record no file modes).",
            field="format",
        )
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ManifestProblem(f"{MANIFEST_NAME} has no file list.", field="files")
    seen: set[str] = set()
    for index, entry in enumerate(files):
        problem = _entry_problem(entry)
        if problem is None and entry["path"] in seen:
            problem = "lists a path twice"
        if problem:
            shown = json.dumps(entry)[:120]
            raise ManifestProblem(
                f"{MANIFEST_NAME} has a malformed file entry {shown}: it {problem}.", field=f"files[{index}]"
            )
        seen.add(entry["path"])
    volatile = _string_list(manifest, "volatile")
    _string_list(manifest, "unlisted_allowed")
    if not all(any(is_under(rel, [v]) for rel in seen) for v in volatile):
        raise ManifestProblem(f"{MANIFEST_NAME} names volatile files it does not list.", field="volatile")
    identity = manifest.get("identity_sha256")
    if identity is None:
        raise ManifestProblem(
            f"{MANIFEST_NAME} has no identity_sha256 (a manifest always has one).", field="identity_sha256"
        )
    if not isinstance(identity, str) or not _HEX64.fullmatch(identity):
        raise ManifestProblem(
            f"{MANIFEST_NAME} has an identity_sha256 that is not 64 hex digits.", field="identity_sha256"
        )
    return manifest


def file_problems(package: Path, manifest: dict) -> List[Tuple[str, str]]:
    """(path, what is wrong) for every listed file that is missing, changed or of another mode, and every file
    added outside the folders the manifest leaves to scripts (e.g. a bitfile's)."""
    problems: list[tuple[str, str]] = []
    listed = set()
    for entry in manifest["files"]:
        rel = entry["path"]
        listed.add(rel)
        file = package.joinpath(*PurePosixPath(rel).parts)
        if file.is_symlink() or (file.exists() and not file.is_file()):
            problems.append((rel, "is no longer the regular file the SDK wrote"))
        elif not file.exists():
            problems.append((rel, "is missing"))
        elif file.stat().st_size != entry["bytes"]:
            problems.append((rel, f"was changed ({file.stat().st_size} bytes, the manifest says {entry['bytes']})"))
        elif sha256_file(file) != entry["sha256"]:
            problems.append((rel, "was changed (its sha256 differs from the manifest's)"))
        else:
            mode = os.lstat(file).st_mode
            if file_mode(file) != entry["mode"]:
                problems.append((rel, f"has another mode (it is {file_mode(file)}, the manifest says {entry['mode']})"))
            elif mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH):
                problems.append((rel, f"has the mode {stat.S_IMODE(mode):04o} (set-id, sticky or writable by all)"))
    allowed = [folder for folder in manifest.get("unlisted_allowed", []) if folder.strip("/.")]
    files, others = walk(package)
    for rel in files + others:
        if rel != MANIFEST_NAME and rel not in listed and not is_under(rel, allowed):
            problems.append((rel, "was added: the manifest does not list it"))
    return problems


def check_identity(manifest: dict) -> None:
    if manifest["identity_sha256"] != identity_sha256(manifest):
        raise ManifestProblem(
            f"{MANIFEST_NAME} was edited: its identity_sha256 does not match its fields.", field="identity_sha256"
        )
