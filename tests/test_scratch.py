"""Scratch folders: the SDK removes only the folders it made (a marker file with the token of the folder's name)
of processes that are gone; a user's folder named like one, and the folders of live processes, are never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sdk.scratch import MARKER, scratch_dir, sweep

ROOT = Path(__file__).resolve().parent.parent


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _killed_scratch(folder: Path, *kinds: str) -> list[Path]:
    """The scratch folders of an SDK process that died inside them (os._exit: no clean-up, as after kill -9);
    a kind starting with '.' makes a hidden one."""
    code = (
        "import os, sys; from sdk.scratch import scratch_dir\n"
        f"cms = [scratch_dir(k.lstrip('.'), {str(folder)!r}, hidden=k[0] == '.') for k in {list(kinds)!r}]\n"
        "for cm in cms:\n"
        "    tmp = cm.__enter__(); open(os.path.join(tmp, 'work.bin'), 'wb').write(b'x'); print(tmp)\n"
        "sys.stdout.flush(); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    paths = [Path(line) for line in out.stdout.split()]
    assert len(paths) == len(kinds) and all(p.parent == folder and (p / MARKER).is_file() for p in paths)
    return paths


def _lookalikes(folder: Path, stale: Path) -> list[Path]:
    """Users' folders named exactly like scratch folders, some holding a copy or a link of a real marker."""
    dead = _dead_pid()
    token = stale.name.rsplit("-", 1)[1]
    other = "0123456789abcdef" * 2
    folders = [
        folder / "sdk-release-2024-final",
        folder / f"sdk-deploy-{dead}-abc123",  # the old scheme's name
        folder / f".sdk-export-{dead}-x_y",
        folder / f"sdk-deploy-{dead}-{token}",  # a copied name, no marker
        folder / f"sdk-check-{dead}-{other}",  # a copied marker whose token is not this name's
        folder / f"sdk-sim-{dead}-{token}x",
    ]
    for path in folders:
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "thesis.tex").write_text("years of work")
    shutil.copyfile(stale / MARKER, folders[4] / MARKER)
    linked = folder / f"sdk-tflite-{dead}-{token}"  # the marker a link to a real one
    (linked / "sub").mkdir(parents=True)
    (linked / "sub" / "thesis.tex").write_text("years of work")
    (linked / MARKER).symlink_to(stale / MARKER)
    return [*folders, linked]


def test_only_marked_folders_of_dead_processes_are_swept(tmp_path):
    stale, stale_hidden = _killed_scratch(tmp_path, "deploy", ".export")
    user = _lookalikes(tmp_path, stale)
    with scratch_dir("deploy", tmp_path) as running:  # this process's own: live
        assert sorted(sweep(tmp_path)) == []  # the stale ones went when `running` was made
        assert not stale.exists() and not stale_hidden.exists()
        assert Path(running).is_dir() and all((path / "sub").is_dir() for path in user)
    assert all((path / "sub" / "thesis.tex").read_text() == "years of work" for path in user)


def test_the_folder_of_a_live_process_is_kept(tmp_path):
    (stale,) = _killed_scratch(tmp_path, "deploy")
    live = tmp_path / stale.name.replace(stale.name.split("-")[2], str(os.getppid()))
    stale.rename(live)  # its marker still matches: only the process is alive
    assert sweep(tmp_path) == [] and live.is_dir()


def test_a_scratch_folder_carries_the_pid_and_a_marker_and_is_removed_on_exit(tmp_path):
    (stale,) = _killed_scratch(tmp_path, "deploy")
    with scratch_dir("deploy", tmp_path) as tmp:
        assert os.path.basename(tmp).startswith(f"sdk-deploy-{os.getpid()}-")
        assert (Path(tmp) / MARKER).is_file() and oct((Path(tmp)).stat().st_mode & 0o777) == "0o700"
        assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(tmp)]  # the stale one went first
        assert not stale.exists()
    assert list(tmp_path.iterdir()) == []


def test_user_folders_in_a_monkeypatched_tmpdir_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    (stale,) = _killed_scratch(tmp_path, "check")
    user = _lookalikes(tmp_path, stale)
    with scratch_dir("check") as tmp:
        assert Path(tmp).parent == tmp_path
    assert not stale.exists() and sorted(tmp_path.iterdir()) == sorted(user)
    assert all((path / "sub" / "thesis.tex").read_text() == "years of work" for path in user)


def test_sdk_commands_keep_user_folders_in_tmpdir(tmp_path, tfc_export):
    """A real `sdk check` with TMPDIR set: the user's look-alike folders survive, the dead SDK's scratch goes."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (stale,) = _killed_scratch(scratch, "check")
    user = _lookalikes(scratch, stale)
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run(
        [sys.executable, "-m", "sdk", "check", "--model", str(tfc_export), "--target", "tflite"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stale.exists()
    assert sorted(scratch.iterdir()) == sorted(user)
    assert all((path / "sub" / "thesis.tex").read_text() == "years of work" for path in user)
