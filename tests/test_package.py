"""The package writer: all or nothing, never over something that is not a package, one writer at a time, and a
killed run (even between the commit's two renames) repaired by the next one."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdk.errors import ConfigError, PackageError
from sdk.package import (
    BUILD_MARKER,
    PACKAGE_FORMAT,
    PackageBuilder,
    check_output_path,
    identity_sha256,
    sha256_file,
    tool_versions,
    verify_package,
)


class Boom(Exception):
    pass


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _source_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src_tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(bytes(range(256)) * 10)
    (src / "sub" / "b.txt").write_text("nested\n")
    return src


def _old_package(final: Path, text: str = "old\n") -> dict[str, bytes]:
    """An earlier package at `final` (written by the SDK); returns its files."""
    with PackageBuilder(final) as pkg:
        pkg.write_text("version.txt", text)
        pkg.path("sub/keep.bin").write_bytes(b"\x00\x01")
        pkg.commit({"board": "old"})
    return _tree(final)


def _build(final_dir: Path, src_dir: Path) -> Path:
    single = src_dir.parent / "single.txt"
    single.write_text("single file\n")
    with PackageBuilder(final_dir) as pkg:
        pkg.add_file("bin/single.txt", single)
        pkg.add_tree("driver", src_dir)
        pkg.write_text("README.md", "hello\n")
        pkg.write_json("config.json", {"b": 2, "a": Path("x/y"), "c": [1, 2]})
        return pkg.commit({"board": "Pynq-Z2", "tools": {"numpy": "2.0"}, "accuracy": 0.9})


def test_final_dir_appears_only_on_commit(tmp_path):
    final = tmp_path / "out" / "pkg"
    with PackageBuilder(final) as pkg:
        pkg.write_text("a.txt", "a\n")
        temp = pkg.temp_dir
        assert temp.parent == final.parent
        assert temp.name.startswith(".pkg.tmp-")
        assert (temp / "a.txt").read_text() == "a\n"
        assert not final.exists()
        assert pkg.commit({}) == final.absolute()
    assert _tree(final).keys() == {"a.txt", "manifest.json"}
    assert [p.name for p in final.parent.iterdir()] == ["pkg"]  # no temp folder left behind


def test_without_commit_nothing_is_written(tmp_path):
    final = tmp_path / "pkg"
    with PackageBuilder(final) as pkg:
        pkg.write_text("a.txt", "a\n")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_with_leaves_no_temp_and_no_final(tmp_path):
    final = tmp_path / "pkg"
    with pytest.raises(Boom):
        with PackageBuilder(final) as pkg:
            pkg.write_text("a.txt", "a\n")
            raise Boom()
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_existing_final_dir_intact(tmp_path):
    final = tmp_path / "pkg"
    before = _old_package(final)
    with pytest.raises(Boom):
        with PackageBuilder(final) as pkg:
            pkg.write_text("old.txt", "new\n")
            pkg.write_text("new.txt", "new\n")
            raise Boom()
    assert _tree(final) == before
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_commit_replaces_existing_final_dir(tmp_path):
    final = tmp_path / "pkg"
    _old_package(final)
    with PackageBuilder(final) as pkg:
        pkg.write_text("fresh.txt", "fresh\n")
        assert (final / "version.txt").exists()  # untouched until commit
        pkg.commit({})
    assert _tree(final).keys() == {"fresh.txt", "manifest.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # old copy deleted, temp renamed


def test_a_folder_that_is_no_package_is_never_replaced(tmp_path):
    final = tmp_path / "project"
    final.mkdir()
    (final / "train.py").write_text("mine\n")
    with pytest.raises(ConfigError, match="not a deployment package"):
        with PackageBuilder(final):
            pass
    assert _tree(final).keys() == {"train.py"} and [p.name for p in tmp_path.iterdir()] == ["project"]
    (tmp_path / "empty").mkdir()
    with PackageBuilder(tmp_path / "empty") as pkg:  # an empty folder is fine
        pkg.commit({})


def test_exception_after_commit_keeps_committed_package(tmp_path):
    final = tmp_path / "pkg"
    with pytest.raises(Boom):
        with PackageBuilder(final) as pkg:
            pkg.write_text("a.txt", "a\n")
            pkg.commit({})
            raise Boom()
    assert _tree(final).keys() == {"a.txt", "manifest.json"}


def test_manifest_lists_every_file_with_hash_and_size(tmp_path):
    final = _build(tmp_path / "pkg", _source_tree(tmp_path))
    manifest = json.loads((final / "manifest.json").read_text())
    files = _tree(final)
    assert manifest["format"] == PACKAGE_FORMAT
    assert manifest["board"] == "Pynq-Z2" and manifest["tools"] == {"numpy": "2.0"} and manifest["accuracy"] == 0.9
    paths = [entry["path"] for entry in manifest["files"]]
    assert paths == sorted(paths)
    assert set(paths) == set(files) - {"manifest.json"}
    assert set(paths) == {"README.md", "bin/single.txt", "config.json", "driver/a.bin", "driver/sub/b.txt"}
    for entry in manifest["files"]:
        content = files[entry["path"]]
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["bytes"] == len(content)
    assert files["driver/a.bin"] == bytes(range(256)) * 10


def test_manifest_is_deterministic(tmp_path):
    src = _source_tree(tmp_path)
    first = _build(tmp_path / "one" / "pkg", src)
    second = _build(tmp_path / "two" / "pkg", src)
    text = (first / "manifest.json").read_bytes()
    assert text == (second / "manifest.json").read_bytes()
    assert str(tmp_path).encode() not in text and b"tmp-" not in text
    assert text.endswith(b"}\n")
    assert _tree(first) == _tree(second)


def test_write_json_layout(tmp_path):
    with PackageBuilder(tmp_path / "pkg") as pkg:
        target = pkg.write_json("d/x.json", {"b": 1, "a": Path("p/q")})
        assert target.read_text() == '{\n  "a": "p/q",\n  "b": 1\n}\n'
        pkg.commit({})


def test_path_creates_parents_and_rejects_escapes(tmp_path):
    with PackageBuilder(tmp_path / "pkg") as pkg:
        target = pkg.path("deep/er/file.txt")
        assert target.is_absolute() and target.parent.is_dir()
        assert target.is_relative_to(pkg.temp_dir)
        for bad in ("../escape.txt", "a/../../escape.txt", "/abs.txt", "manifest.json"):
            with pytest.raises(ValueError):
                pkg.path(bad)
    assert not (tmp_path / "escape.txt").exists()


def test_reserved_manifest_fields_and_single_commit(tmp_path):
    with PackageBuilder(tmp_path / "pkg") as pkg:
        with pytest.raises(ValueError):
            pkg.commit({"files": []})
        pkg.commit({})
        with pytest.raises(RuntimeError):
            pkg.write_text("late.txt", "too late\n")
        with pytest.raises(RuntimeError):
            pkg.commit({})
    assert not (tmp_path / "pkg" / "late.txt").exists()


def test_sha256_file(tmp_path):
    file = tmp_path / "f.bin"
    file.write_bytes(b"x" * 3_000_000)
    assert sha256_file(file) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_tool_versions():
    import importlib.metadata

    versions = tool_versions(["pytest", "no-such-distribution-xyz"])
    assert list(versions) == ["pytest", "no-such-distribution-xyz"]
    assert versions["pytest"] == importlib.metadata.version("pytest") == pytest.__version__
    assert versions["no-such-distribution-xyz"] is None


# --- identity: measured files do not change it ---------------------------------------------------------------------


def _measured(final: Path, latency: str, weights: bytes = b"w") -> dict:
    with PackageBuilder(final) as pkg:
        pkg.write_text("model.bin", weights.decode())
        pkg.write_json("report.json", {"latency_us": latency}, volatile=True)
        pkg.write_text("report.md", f"latency {latency}\n")
        pkg.commit({"board": "b"}, volatile=["report.md"])
    return json.loads((final / "manifest.json").read_text())


def test_identity_ignores_measured_files_but_not_the_rest(tmp_path):
    one = _measured(tmp_path / "one", "12.5")
    two = _measured(tmp_path / "two", "13.75")
    other = _measured(tmp_path / "three", "12.5", weights=b"v")
    assert one["volatile"] == ["report.json", "report.md"]
    assert one["files"] != two["files"]  # every file is still listed with its own hash: tampering shows
    assert one["identity_sha256"] == two["identity_sha256"] == identity_sha256(two)
    assert other["identity_sha256"] != one["identity_sha256"]
    assert verify_package(tmp_path / "two") == two


def test_a_volatile_folder_covers_the_files_in_it(tmp_path):
    identities = []
    for run, log in enumerate(("built at 10:00\n", "built at 10:05\n")):
        with PackageBuilder(tmp_path / str(run)) as pkg:
            pkg.write_text("hardware/finish.log", log)
            pkg.write_text("hardware.txt", "not in the folder\n")
            pkg.mark_volatile("hardware")
            pkg.commit({})
        identities.append(verify_package(tmp_path / str(run))["identity_sha256"])
    assert identities[0] == identities[1]
    (tmp_path / "0" / "hardware.txt").write_text("changed\n")
    with pytest.raises(PackageError, match="hardware.txt"):
        verify_package(tmp_path / "0")


def test_volatile_files_must_exist_and_reserved_fields_are_refused(tmp_path):
    with PackageBuilder(tmp_path / "pkg") as pkg:
        pkg.write_text("a.txt", "a\n")
        with pytest.raises(ValueError, match="not in the package"):
            pkg.commit({}, volatile=["report.json"])
    for field in ("volatile", "identity_sha256", "unlisted_allowed", "format"):
        with PackageBuilder(tmp_path / "pkg") as pkg:
            with pytest.raises(ValueError, match="reserved"):
                pkg.commit({field: 1})
    assert not (tmp_path / "pkg").exists() and list(tmp_path.iterdir()) == []


# --- --out: only a package the SDK wrote may be replaced, checked before any work ----------------------------------


def _nothing_beside(folder: Path, *keep: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def test_a_file_at_out_is_refused_and_untouched(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("precious\n")
    for attempt in (lambda: check_output_path(target), lambda: PackageBuilder(target).__enter__()):
        with pytest.raises(PackageError, match="is a file, not a package folder") as info:
            attempt()
        assert str(target) in info.value.where and info.value.fix
    assert target.read_text() == "precious\n"
    _nothing_beside(tmp_path, "results.csv")  # no lock file, no temporary folder


def test_a_symlink_at_out_is_refused(tmp_path):
    real = tmp_path / "real"
    _old_package(real)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(PackageError, match="symbolic link"):
        with PackageBuilder(tmp_path / "link"):
            pass
    assert (tmp_path / "link").is_symlink() and verify_package(real)


@pytest.mark.parametrize("manifest", ["{}\n", "not json", '{"name": "my web app", "icons": []}\n'])
def test_a_folder_whose_manifest_the_sdk_did_not_write_is_refused(tmp_path, manifest):
    final = tmp_path / "app"
    final.mkdir()
    (final / "manifest.json").write_text(manifest)
    (final / "index.html").write_text("<html/>\n")
    before = _tree(final)
    with pytest.raises(PackageError, match="did not write"):
        check_output_path(final)
    with pytest.raises(PackageError, match="did not write"):
        with PackageBuilder(final):
            pass
    assert _tree(final) == before
    _nothing_beside(tmp_path, "app")


def test_a_package_of_an_older_sdk_is_replaced(tmp_path):
    """sdk-package/1 (no file modes) is no longer read, but a redeploy into it after an upgrade replaces it."""
    final = tmp_path / "pkg"
    _old_package(final)
    manifest = json.loads((final / "manifest.json").read_text())
    manifest["format"] = "sdk-package/1"
    for entry in manifest["files"]:
        del entry["mode"]
    (final / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="sdk-package/1"):
        verify_package(final)
    with PackageBuilder(final) as pkg:
        pkg.write_text("version.txt", "new\n")
        pkg.commit({})
    assert verify_package(final)["format"] == PACKAGE_FORMAT
    (final / "stray.txt").write_text("x\n")
    manifest["files"].append({"path": "../escape"})
    (final / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="did not write"):
        check_output_path(final)


def test_a_package_holding_files_the_sdk_did_not_write_is_not_replaced(tmp_path):
    final = tmp_path / "pkg"
    _old_package(final)
    (final / "hardware").mkdir()
    (final / "hardware" / "top.bit").write_bytes(b"hours of Vivado")
    before = _tree(final)
    with pytest.raises(PackageError, match="hardware/top.bit") as info:
        with PackageBuilder(final):
            pass
    assert "move those files" in info.value.fix
    assert _tree(final) == before
    _nothing_beside(tmp_path, "pkg")
    (final / "hardware" / "top.bit").unlink()
    (final / "version.txt").write_text("edited by hand\n")  # a file the SDK wrote: replacing it is fine
    with PackageBuilder(final) as pkg:
        pkg.commit({})


def test_a_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackageError, match="is a file, so the package folder"):
        check_output_path(tmp_path / "file" / "deep" / "pkg")
    with pytest.raises(PackageError):
        check_output_path("/")


def _without_root_privileges() -> list[str]:
    """A command prefix that runs Python without the capabilities that let root write anywhere."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder is writable for root")
    probe = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot drop root's capabilities here")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def test_a_read_only_parent_is_refused_before_anything_is_written(tmp_path):
    prefix = _without_root_privileges()
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    script = (
        "import sys\n"
        "from sdk.errors import PackageError\n"
        "from sdk.package import PackageBuilder, check_output_path\n"
        "for attempt in (lambda: check_output_path(sys.argv[1]), lambda: PackageBuilder(sys.argv[1]).__enter__()):\n"
        "    try:\n"
        "        attempt()\n"
        "    except PackageError as exc:\n"
        "        print(exc.what)\n"
    )
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", script, str(read_only / "sub" / "pkg")], capture_output=True, text=True
        )
    finally:
        read_only.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("is not writable") == 2, proc.stdout
    assert list(read_only.iterdir()) == []


# --- the lock: one writer per --out, never stale ---------------------------------------------------------------


def test_a_second_writer_to_the_same_out_is_refused(tmp_path):
    final = tmp_path / "pkg"
    with PackageBuilder(final) as first:
        first.write_text("a.txt", "a\n")
        for attempt in (lambda: check_output_path(final), lambda: PackageBuilder(final).__enter__()):
            with pytest.raises(PackageError, match="Another deploy") as info:
                attempt()
            assert str(final) in info.value.what and f"process {os.getpid()}" in info.value.what
            assert "wait for that deploy to finish" in info.value.fix
        assert first.temp_dir.is_dir()  # the refused writer touched nothing of the first one's
        first.commit({})
    _nothing_beside(tmp_path, "pkg")  # lock file removed on release
    with PackageBuilder(tmp_path / "other"), PackageBuilder(final) as again:  # other folders are independent
        again.commit({})


_HOLD_THE_LOCK = """
import sys, time
from sdk.package import PackageBuilder
with PackageBuilder(sys.argv[1]) as pkg:
    pkg.write_text("half.txt", "half\\n")
    print(pkg.temp_dir, flush=True)
    time.sleep(60)
"""


def _start_holding(final: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_THE_LOCK, str(final)], stdout=subprocess.PIPE, text=True)
    temp = Path(proc.stdout.readline().strip())
    assert temp.is_dir(), "the writer did not start"
    return proc, temp


def test_a_killed_writer_leaves_no_lock_and_the_next_run_removes_its_leftovers(tmp_path):
    final = tmp_path / "pkg"
    before = _old_package(final)
    proc, temp = _start_holding(final)
    with pytest.raises(PackageError, match=f"process {proc.pid}"):
        check_output_path(final)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temp.is_dir() and (tmp_path / ".pkg.lock").exists()  # what kill -9 leaves: a folder, an unheld lock
    assert check_output_path(final) == final and _tree(final) == before
    with PackageBuilder(final) as pkg:
        assert not temp.exists()  # removed on entry
        pkg.write_text("version.txt", "new\n")
        pkg.commit({})
    assert (final / "version.txt").read_text() == "new\n"
    _nothing_beside(tmp_path, "pkg")


def test_sigterm_unwinds_the_writer(tmp_path):
    final = tmp_path / "pkg"
    before = _old_package(final)
    proc, temp = _start_holding(final)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _tree(final) == before
    _nothing_beside(tmp_path, "pkg")


# --- a commit killed between its renames (where the OS has no atomic exchange) -------------------------------------

_KILLED_COMMIT = """
import os, signal, sys
import sdk.package
from sdk.package import PackageBuilder
final, stage = sys.argv[1], sys.argv[2]
sdk.package._exchange = lambda a, b: False  # as on a system without renameat2: two renames
rename = os.rename
def rename_then_die(src, dst):
    rename(src, dst)
    if os.path.basename(str(dst)).startswith(f".{os.path.basename(final)}.{stage}-"):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename_then_die
with PackageBuilder(final) as pkg:
    pkg.write_text("version.txt", "new\\n")
    pkg.commit({"board": "new"})
"""


def _kill_commit(final: Path, stage: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_COMMIT, str(final), stage], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in folder.iterdir() if p.name.startswith("."))


def test_a_commit_killed_between_its_renames_is_completed_by_the_next_run(tmp_path):
    final = tmp_path / "pkg"
    _old_package(final)
    _kill_commit(final, "old")  # the old package moved aside, the new one not yet in place
    assert not final.exists() and _hidden(tmp_path) == [".pkg.lock", ".pkg.new", ".pkg.old"]
    with pytest.raises(PackageError, match="interrupted") as info:
        verify_package(final)
    assert "deploy again" in info.value.fix
    with PackageBuilder(final):  # the next run into the same place: the complete new package is put in place
        assert verify_package(final)["board"] == "new" and (final / "version.txt").read_text() == "new\n"
        assert _hidden(tmp_path) == [".pkg.lock", ".pkg.tmp"]  # only this run's own
    _nothing_beside(tmp_path, "pkg")


def test_a_commit_killed_before_the_old_package_moved_keeps_the_old_one(tmp_path):
    final = tmp_path / "pkg"
    before = _old_package(final)
    _kill_commit(final, "new")  # the new package complete beside the old one
    assert _tree(final) == before and _hidden(tmp_path) == [".pkg.lock", ".pkg.new"]
    with PackageBuilder(final):
        assert _tree(final) == before
    _nothing_beside(tmp_path, "pkg")


def test_a_stranded_old_package_is_restored_when_the_new_one_is_damaged(tmp_path):
    final = tmp_path / "pkg"
    before = _old_package(final)
    _kill_commit(final, "old")
    (new,) = tmp_path.glob(".pkg.new-*")
    (new / "version.txt").write_text("damaged\n")
    with PackageBuilder(final):
        assert _tree(final) == before
    _nothing_beside(tmp_path, "pkg")


def test_only_the_sdk_s_own_stale_siblings_are_removed(tmp_path):
    """A killed build's folder (its marker holds its name's token, or it is still empty) and complete packages moved
    aside go; a user's folders that merely look like siblings are never deleted."""
    final = tmp_path / "pkg"
    _old_package(final)
    ours_tmp = tmp_path / ".pkg.tmp-0123abcd"
    ours_tmp.mkdir()
    (ours_tmp / BUILD_MARKER).write_text("0123abcd")
    shutil.copytree(final, tmp_path / ".pkg.old-0badcafe")  # an SDK package moved aside
    shutil.copytree(final, tmp_path / ".pkg.new-12345678")
    users = [".pkg.tmp-00000000", ".pkg.old-deadbeef", ".pkg.new-87654321", ".pkg.tmp-notmine", ".pkg2.tmp-00000000"]
    for name in users:
        (tmp_path / name).mkdir()
        (tmp_path / name / "thesis.tex").write_text("mine\n")
    forged = tmp_path / ".pkg.tmp-00000000"
    (forged / BUILD_MARKER).write_text("ffffffff")  # a marker that does not match the name's token
    killed_at_birth = tmp_path / ".pkg.tmp-1234abcd"  # made, killed before its marker was written: empty
    killed_at_birth.mkdir()
    time.sleep(0.01)
    with PackageBuilder(final):
        pass
    _nothing_beside(tmp_path, "pkg", *users)
    assert all((tmp_path / name / "thesis.tex").read_text() == "mine\n" for name in users)


def test_a_committed_package_carries_no_build_marker(tmp_path):
    final = tmp_path / "pkg"
    _old_package(final)
    assert not (final / BUILD_MARKER).exists()
    verify_package(final)


# --- the atomic exchange (Linux) ------------------------------------------------------------------------------------

_WATCHED_COMMIT = """
import json, os, signal, sys
import sdk.package
from sdk.package import PackageBuilder
final, kill = sys.argv[1], sys.argv[2] == "kill"
seen = []  # after every rename or exchange: does --out exist?
rename, exchange = os.rename, sdk.package._exchange
def watched_rename(src, dst):
    rename(src, dst)
    seen.append(("rename", os.path.exists(final)))
def watched_exchange(a, b):
    done = exchange(a, b)
    seen.append(("exchange" if done else "no exchange", os.path.exists(final)))
    print(json.dumps(seen), flush=True)
    if done and kill:
        os.kill(os.getpid(), signal.SIGKILL)  # the old package is left under the sibling's name
    return done
os.rename, sdk.package._exchange = watched_rename, watched_exchange
with PackageBuilder(final) as pkg:
    pkg.write_text("version.txt", "new\\n")
    pkg.commit({"board": "new"})
print(json.dumps(seen), flush=True)
"""


def _watched_commit(final: Path, kill: bool) -> tuple[int, list]:
    proc = subprocess.run(
        [sys.executable, "-c", _WATCHED_COMMIT, str(final), "kill" if kill else "run"], capture_output=True, text=True
    )
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_the_commit_exchanges_the_packages_atomically_so_out_is_never_missing(tmp_path):
    final = tmp_path / "pkg"
    _old_package(final)
    code, seen = _watched_commit(final, kill=False)
    assert code == 0 and seen == [["rename", True], ["exchange", True]], seen  # tmp -> new, then one exchange
    assert verify_package(final)["board"] == "new"
    _nothing_beside(tmp_path, "pkg")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_a_commit_killed_right_after_the_exchange_leaves_the_new_package(tmp_path):
    final = tmp_path / "pkg"
    _old_package(final)
    code, seen = _watched_commit(final, kill=True)
    assert code == -signal.SIGKILL and seen[-1] == ["exchange", True]
    assert verify_package(final)["board"] == "new"  # in place at once; the old one waits under a sibling's name
    assert _hidden(tmp_path) == [".pkg.lock", ".pkg.new"]
    with PackageBuilder(final):  # the next run removes it
        assert verify_package(final)["board"] == "new"
    _nothing_beside(tmp_path, "pkg")


def test_without_an_exchange_the_commit_falls_back_to_two_renames(tmp_path, monkeypatch):
    import sdk.package

    final = tmp_path / "pkg"
    _old_package(final)
    monkeypatch.setattr(sdk.package, "_exchange", lambda a, b: False)
    with PackageBuilder(final) as pkg:
        pkg.write_text("version.txt", "new\n")
        pkg.commit({"board": "new"})
    assert verify_package(final)["board"] == "new"
    _nothing_beside(tmp_path, "pkg")


# --- the output path itself ------------------------------------------------------------------------------------------


def test_out_inside_a_package_is_refused(tmp_path):
    _old_package(tmp_path / "pkg")
    for inside in ("pkg/sub", "pkg/new/deeper", "pkg/sub/keep.bin/x"):
        with pytest.raises(PackageError, match="inside the deployment package") as info:
            check_output_path(tmp_path / inside)
        assert "--out" in info.value.where
    assert not (tmp_path / "pkg" / "new").exists()
    check_output_path(tmp_path / "pkg2")  # beside it is fine


@pytest.mark.parametrize(
    "out", ["a" * 5000, "/".join(["abcdefgh"] * 600), "a" * 250], ids=["5000 chars", "600 folders", "250-char name"]
)
def test_an_out_too_long_for_the_file_system_is_refused(tmp_path, out):
    with pytest.raises(PackageError, match="--out") as info:
        check_output_path(tmp_path / out)
    assert info.value.fix and len(info.value.where) < 120


# --- through `sdk deploy` ------------------------------------------------------------------------------------------


def _cli_deploy(prefix: list[str], run: Path, out: Path) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "sdk", "deploy", "--target", "tflite", "--model", str(run)]
        + ["--out", str(out), "--samples", "4", "--json"],
        capture_output=True,
        text=True,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@pytest.mark.slow
def test_deploy_refuses_a_file_at_out_and_a_read_only_parent_with_exit_2(tfc_run, tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("precious\n")
    code, error, stderr = _cli_deploy([], tfc_run, target)
    assert code == 2 and error["error"] == "PackageError" and "is a file" in error["what"], error
    assert "Traceback" not in stderr and target.read_text() == "precious\n"
    _nothing_beside(tmp_path, "results.csv")
    prefix = _without_root_privileges()
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        code, error, stderr = _cli_deploy(prefix, tfc_run, read_only / "pkg")
    finally:
        read_only.chmod(0o755)
    assert code == 2 and error["error"] == "PackageError" and "not writable" in error["what"], error
    assert "Traceback" not in stderr and list(read_only.iterdir()) == []


@pytest.mark.slow
def test_deploy_refuses_an_out_inside_a_package_or_too_long_with_exit_2(tfc_run, tmp_path):
    _old_package(tmp_path / "pkg")
    before = _tree(tmp_path / "pkg")
    for out in (tmp_path / "pkg" / "inner", tmp_path / ("a" * 5000)):
        code, error, stderr = _cli_deploy([], tfc_run, out)
        assert code == 2 and error["error"] in ("PackageError", "ConfigError") and "--out" in error["where"], error
        assert "Traceback" not in stderr
    assert _tree(tmp_path / "pkg") == before


def test_hashes_taken_before_the_commit_are_reused_only_for_files_unchanged_since(tmp_path):
    final = tmp_path / "pkg"
    with PackageBuilder(final) as pkg:
        pkg.write_text("report.md", "first")
        pkg.write_text("model.bin", "weights")
        hashed = pkg.file_entries()
        pkg.write_text("report.md", "other")  # same size, written through the builder
        untouched = pkg.path("model.bin")
        stat = untouched.stat()
        untouched.write_text("WEIGHTS")  # same size, written behind the builder's back, a later mtime
        os.utime(untouched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        pkg.commit({"board": "b"}, hashed=hashed)
    verify_package(final)  # every recorded hash is the file's own: none was reused for changed bytes
