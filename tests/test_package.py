import hashlib
import json
from pathlib import Path

import pytest

from sdk.errors import ConfigError
from sdk.package import PACKAGE_FORMAT, PackageBuilder, sha256_file, tool_versions


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
    (final / "sub").mkdir(parents=True)
    (final / "old.txt").write_text("old\n")
    (final / "sub" / "keep.bin").write_bytes(b"\x00\x01")
    (final / "manifest.json").write_text("{}\n")  # an earlier package
    before = _tree(final)
    with pytest.raises(Boom):
        with PackageBuilder(final) as pkg:
            pkg.write_text("old.txt", "new\n")
            pkg.write_text("new.txt", "new\n")
            raise Boom()
    assert _tree(final) == before
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_commit_replaces_existing_final_dir(tmp_path):
    final = tmp_path / "pkg"
    final.mkdir()
    (final / "stale.txt").write_text("stale\n")
    (final / "manifest.json").write_text("{}\n")  # an earlier package
    with PackageBuilder(final) as pkg:
        pkg.write_text("fresh.txt", "fresh\n")
        assert (final / "stale.txt").exists()  # untouched until commit
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
