"""Scratch folders: those of dead processes are removed by the next SDK run, those of live ones never."""

from __future__ import annotations

import os
import subprocess
import sys

from sdk.scratch import scratch_dir, sweep


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_folders_of_dead_processes_are_swept(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    stale = tmp_path / f"sdk-deploy-{dead}-abc123"
    stale_hidden = tmp_path / f".sdk-export-{dead}-x_y"
    running = tmp_path / f"sdk-deploy-{live}-def456"
    mine = tmp_path / f"sdk-check-{os.getpid()}-ghi789"
    foreign = tmp_path / f"project-{dead}-keep"
    for folder in (stale, stale_hidden, running, mine, foreign):
        (folder / "sub").mkdir(parents=True)
    assert sorted(sweep(tmp_path)) == sorted([stale, stale_hidden])
    assert not stale.exists() and not stale_hidden.exists()
    assert running.exists() and mine.exists() and foreign.exists()


def test_a_scratch_folder_carries_the_pid_and_is_removed_on_exit(tmp_path):
    (tmp_path / f"sdk-deploy-{_dead_pid()}-old").mkdir()
    with scratch_dir("deploy", tmp_path) as tmp:
        assert os.path.basename(tmp).startswith(f"sdk-deploy-{os.getpid()}-")
        assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(tmp)]  # the stale one went first
    assert list(tmp_path.iterdir()) == []
