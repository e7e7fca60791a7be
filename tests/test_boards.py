from pathlib import Path

import pytest
import yaml

from sdk.boards import BUILTIN_BOARDS_DIR, get_board, load_boards, parse_board
from sdk.errors import BoardError

FINN_BOARDS = {"Pynq-Z1", "Pynq-Z2", "Ultra96", "Ultra96-V2", "AUP-ZU3_8GB", "ZCU102", "ZCU104", "ZCU111", "RFSoC2x2",
               "RFSoC4x2", "KV260_SOM", "U50", "U200", "U250", "U280", "U55C"}


def test_all_builtin_boards_load():
    boards = load_boards()
    kinds = {b.kind for b in boards.values()}
    assert kinds == {"fpga", "npu", "mcu", "cpu"}
    assert {b.finn_board for b in boards.values() if b.kind == "fpga"} == FINN_BOARDS
    assert sum(b.kind == "mcu" for b in boards.values()) >= 2
    assert {"ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256", "tflite"} <= set(boards)


def test_fpga_parts_match_finn():
    from finn.util.basic import alveo_default_platform, alveo_part_map, pynq_part_map

    for board in load_boards().values():
        if board.kind != "fpga":
            continue
        if board.shell == "alveo":
            assert alveo_part_map[board.finn_board] == board.part, board.name
            assert alveo_default_platform[board.finn_board] == board.platform, board.name
        else:
            assert pynq_part_map[board.finn_board] == board.part, board.name
        cap = board.capacity
        assert cap["lut"] > 0 and cap["ff"] > cap["lut"] and cap["bram18"] > 0 and cap["dsp"] > 0


def test_pynq_boards_are_legacy():
    assert get_board("pynq-z1").lifecycle == "legacy"
    assert get_board("pynq-z2").lifecycle == "legacy"
    assert get_board("zcu104").lifecycle == "active"


def test_npu_boards_name_real_vela_configs():
    """Vela's own config parser must accept every board's accelerator, system config and memory mode."""
    import ethosu.vela
    from ethosu.vela.architecture_features import ArchitectureFeatures

    ini = Path(ethosu.vela.__file__).parent.parent / "config_files" / "Arm" / "vela.ini"
    for board in load_boards().values():
        if board.kind != "npu":
            continue
        arch = ArchitectureFeatures(
            vela_config_files=[str(ini)], accelerator_config=board.vela["accelerator_config"],
            system_config=board.vela["system_config"], memory_mode=board.vela["memory_mode"],
            max_blockdep=3, verbose_config=False, arena_cache_size=None,
        )
        assert arch.core_clock == pytest.approx(board.clock_mhz * 1e6), board.name


def test_unknown_board_suggests_closest():
    with pytest.raises(BoardError) as info:
        get_board("pynq-z3")
    assert "pynq-z2" in info.value.fix and "pynq-z3" in info.value.what


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _pynq(**changes) -> dict:
    data = yaml.safe_load((BUILTIN_BOARDS_DIR / "pynq-z2.yaml").read_text())
    data["name"] = "my-board"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "my-board", "name: my-board\nkind: [fpga\n")
    with pytest.raises(BoardError) as info:
        parse_board(path)
    assert str(path) in info.value.where and "line" in info.value.where


def test_unknown_field_is_named(tmp_path):
    path = _write(tmp_path, "my-board", _pynq(clock_mzh=100))
    with pytest.raises(BoardError) as info:
        parse_board(path)
    assert "clock_mzh" in info.value.what and "clock_mhz" in info.value.fix and str(path) in info.value.where


def test_missing_field_is_named(tmp_path):
    path = _write(tmp_path, "my-board", _pynq(part=None))
    with pytest.raises(BoardError) as info:
        parse_board(path)
    assert "'part'" in info.value.what


def test_missing_capacity_field_is_named(tmp_path):
    data = _pynq()
    del data["capacity"]["dsp"]
    with pytest.raises(BoardError) as info:
        parse_board(_write(tmp_path, "my-board", data))
    assert "capacity.dsp" in info.value.what


def test_bad_values_rejected(tmp_path):
    for changes, field in [({"kind": "gpu"}, "kind"), ({"clock_mhz": "fast"}, "clock_mhz"), ({"lifecycle": "eol"}, "lifecycle"),
                           ({"flow": "tflite"}, "flow"), ({"platform": "xilinx_u50"}, "platform"), ({"name": "other"}, "name")]:
        with pytest.raises(BoardError) as info:
            parse_board(_write(tmp_path, "my-board", _pynq(**changes)))
        assert field in info.value.where, changes


def test_user_board_folder(tmp_path, monkeypatch):
    _write(tmp_path, "my-board", _pynq())
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path))
    assert get_board("my-board").part == "xc7z020clg400-1"
    _write(tmp_path, "pynq-z2", _pynq(name="pynq-z2"))
    with pytest.raises(BoardError) as info:
        load_boards()
    assert "already defined" in info.value.what


def test_readme_lists_every_board():
    readme = (BUILTIN_BOARDS_DIR.parent / "README.md").read_text()
    missing = [name for name in load_boards() if f"`{name}`" not in readme]
    assert not missing, f"README board table lacks {missing}"
