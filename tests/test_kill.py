"""kill -9 a real `sdk deploy` at several points: --out always holds a whole package (the old or the new one), and
the next deploy into it leaves no hidden folder or lock file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sdk.deployment import DeployConfig, deploy
from sdk.errors import PackageError
from sdk.package import check_output_path, verify_package

pytestmark = pytest.mark.slow

OLD_SAMPLES, NEW_SAMPLES = 4, 8  # tells the old package from the new one (deploy_config in the manifest)


Ready = Callable[[Path, float, int], bool]  # (out, seconds since start, inode of --out at start): kill now?


def _temp(out: Path) -> Path | None:
    return next(out.parent.glob(f".{out.name}.tmp-*"), None)


def _in_temp(name: str) -> Ready:
    def ready(out: Path, elapsed: float, inode: int) -> bool:
        temp = _temp(out)
        return temp is not None and (temp / name).exists()

    return ready


def _replaced(out: Path, elapsed: float, inode: int) -> bool:
    try:
        return out.stat().st_ino != inode
    except OSError:
        return False


# (name, when to kill, which package --out must hold afterwards: "old", "new", or None for either)
KILL_POINTS: list[tuple[str, Ready, str | None]] = [
    # 0.1 s: Python is still importing the SDK (a warm tflite deploy makes its folder at about 0.6 s, commits at 1 s)
    ("after 0.1 s (starting up)", lambda out, elapsed, inode: elapsed >= 0.1, "old"),
    ("temporary folder appears", lambda out, elapsed, inode: _temp(out) is not None, "old"),
    ("artifact written", _in_temp("model.tflite"), "old"),
    ("just after the commit (shutting down)", _replaced, "new"),
    ("just before the commit (report written)", _in_temp("report.md"), None),
]


def _kill_at(
    command: list[str], out: Path, ready: Ready, lock_seen: list[int], scratch: Path, may_finish: bool = False
) -> str | None:
    inode = out.stat().st_ino if out.exists() else -1
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)
    began = time.monotonic()
    try:
        while proc.poll() is None and not ready(out, time.monotonic() - began, inode):
            time.sleep(0.002)
        if proc.poll() is not None:
            if may_finish and proc.returncode == 0:
                return None  # the point's window is shorter than a poll: the deploy committed
            pytest.fail(
                f"the deploy ended (exit {proc.returncode}) before the kill point: {proc.stderr.read()[-2000:]}"
            )
        if _temp(out) is not None and not lock_seen:  # while it writes, a second deploy is refused
            with pytest.raises(PackageError, match=f"Another deploy \\(process {proc.pid}\\)"):
                check_output_path(out)
            lock_seen.append(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return f"{time.monotonic() - began:.2f} s"


def test_a_killed_deploy_leaves_a_whole_package_and_the_next_one_cleans_up(tfc_run, tmp_path, monkeypatch):
    out = tmp_path / "deploys" / "pkg"
    scratch = tmp_path / "scratch"  # the killed deploys' temp folder (TMPDIR)
    scratch.mkdir()
    deploy(DeployConfig(target="tflite", model=str(tfc_run), out=str(out), samples=OLD_SAMPLES), progress=False)
    old_identity = verify_package(out)["identity_sha256"]
    command = [sys.executable, "-m", "sdk", "deploy", "--target", "tflite", "--model", str(tfc_run)]
    command += ["--out", str(out), "--samples", str(NEW_SAMPLES), "--json"]
    lock_seen: list[int] = []
    for name, ready, expected in KILL_POINTS:
        # a point either package may follow can lie in a window of microseconds (the report is written, then the
        # files are already hashed): tried three times, and a deploy that commits first leaves the new package
        for _ in range(3 if expected is None else 1):
            when = _kill_at(command, out, ready, lock_seen, scratch, may_finish=expected is None)
            if when is not None:
                break
        when = when or "not caught (committed first)"
        hidden = {p.name.rsplit("-", 1)[0] for p in out.parent.iterdir() if p.name != out.name}
        print(f"killed {name} at {when}: beside --out {sorted(hidden)}")
        assert hidden <= {".pkg.lock", ".pkg.tmp", ".pkg.new", ".pkg.old"}, (name, hidden)
        if not out.exists():  # killed between the commit's two renames: the next run puts a package back
            assert hidden & {".pkg.new", ".pkg.old"}, (name, hidden)
            continue
        manifest = verify_package(out)  # whole: every file present with its hash, nothing added
        samples = manifest["deploy_config"]["samples"]
        assert samples in (OLD_SAMPLES, NEW_SAMPLES), name
        if expected == "old":
            assert samples == OLD_SAMPLES and manifest["identity_sha256"] == old_identity, (name, when)
        elif expected == "new":
            assert samples == NEW_SAMPLES and manifest["identity_sha256"] != old_identity, (name, when)
    assert lock_seen, "no kill point found the deploy writing"
    assert any(p.name.startswith("sdk-deploy-") for p in scratch.iterdir())  # kill -9 leaves scratch behind
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the next deploy runs with the same TMPDIR
    result = deploy(
        DeployConfig(target="tflite", model=str(tfc_run), out=str(out), samples=NEW_SAMPLES), progress=False
    )
    assert result.verified and verify_package(out)["deploy_config"]["samples"] == NEW_SAMPLES
    assert sorted(p.name for p in out.parent.iterdir()) == ["pkg"]  # no hidden folder, no lock file
    assert list(scratch.iterdir()) == []  # the dead deploys' scratch folders are gone
