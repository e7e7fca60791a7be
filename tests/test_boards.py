import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from sdk.boards import (
    BUILTIN_BOARDS_DIR,
    PARTS_DIRNAME,
    README_BEGIN,
    README_END,
    README_PATH,
    flow_kinds,
    flow_section,
    get_board,
    known_flows,
    known_kinds,
    load_boards,
    load_parts,
    load_schema,
    markdown_table,
    parse_board,
    parse_part,
    readme_section,
    table_row,
)
from sdk.errors import BoardError
from targets.finn.board_checks import FINN_SHELL_MAPS, finn_part_maps
from targets.registry import FLOWS, FlowInfo

ETHOS = {"ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256"}


# ---------------------------------------------------------------------------------------------------------------------
# The built-in registry


def test_all_builtin_boards_load():
    """Expected sets come from the registry, the schema and FINN's own maps: a new board file breaks nothing."""
    boards = load_boards()
    kinds = {b.kind for b in boards.values()}
    assert kinds == set(known_kinds())  # every kind has a built-in board
    # every board FINN knows (its Zynq and Alveo maps) has a board file
    finn_boards = {name for m in FINN_SHELL_MAPS.values() for name in finn_part_maps()[m]}
    assert {b.section("finn")["board"] for b in boards.values() if "finn" in b.flows} == finn_boards
    assert sum(b.kind == "mcu" for b in boards.values()) >= 2
    assert ETHOS | {"tflite"} <= set(boards)
    assert known_flows() == tuple(FLOWS)
    for board in boards.values():
        # each flow serves the board's kind, and the default one is the flow made for the kind (Ethos-U boards
        # default to Vela); Ethos-U boards have a Cortex-M host, so they also serve TFLite Micro.
        assert all(board.kind in flow_kinds(flow) for flow in board.flows), board.name
        assert flow_kinds(board.flow)[0] == board.kind and board.flow == board.flows[0], board.name
        assert board.kind != "npu" or board.flows == ("ethosu", "tflm"), board.name
        assert board.name == board.name.lower() and board.path.stem == board.name
        assert math.isfinite(board.clock_mhz) and board.clock_mhz > 0
        assert (board.chip is None) == (board.name == "tflite"), board.name


def test_fpga_parts_match_finn():
    from finn.util.basic import alveo_default_platform, alveo_part_map, pynq_part_map

    for board in load_boards().values():
        if board.kind != "fpga":
            continue
        finn = board.section("finn")
        if finn["shell"] == "alveo":
            assert alveo_part_map[finn["board"]] == board.part, board.name
            assert alveo_default_platform[finn["board"]] == finn["platform"], board.name
        else:
            assert pynq_part_map[finn["board"]] == board.part, board.name
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
            vela_config_files=[str(ini)],
            accelerator_config=board.section("ethosu")["accelerator_config"],
            system_config=board.section("ethosu")["system_config"],
            memory_mode=board.section("ethosu")["memory_mode"],
            max_blockdep=3,
            verbose_config=False,
            arena_cache_size=None,
        )
        assert arch.core_clock == pytest.approx(board.clock_mhz * 1e6), board.name


def test_boards_sharing_a_chip_share_one_part_file():
    boards = load_boards()
    for a, b in [("pynq-z1", "pynq-z2"), ("rfsoc2x2", "zcu111"), ("ethos-u55-128", "ethos-u65-256")]:
        assert boards[a].chip == boards[b].chip and boards[a].chip_spec is boards[b].chip_spec
    assert boards["pynq-z1"].chip_spec.path == BUILTIN_BOARDS_DIR / PARTS_DIRNAME / "xc7z020clg400-1.yaml"
    assert boards["nrf52840-dk"].chip_spec is boards["arduino-nano-33-ble-sense"].chip_spec
    assert boards["ethos-u85-256"].core == "Cortex-M85" and boards["ethos-u55-128"].core == "Cortex-M55"
    # Every part file is some board's chip, and a caller changing a board's capacity changes no other board.
    assert {b.chip for b in boards.values() if b.chip} == set(load_parts([BUILTIN_BOARDS_DIR]))
    boards["pynq-z1"].capacity["lut"] = 1
    assert boards["pynq-z2"].capacity["lut"] == 53200


def test_board_properties_and_sections():
    """The default flow, part, core and capacity are properties over flows, chip and part file; a flow reads its
    own settings with section(flow)."""
    z2, u250, u55, tfl = (get_board(n) for n in ("pynq-z2", "alveo-u250", "ethos-u55-128", "tflite"))
    finn = z2.section("finn")
    assert (z2.flow, z2.part, z2.core, finn.get("board"), finn.get("shell"), finn.get("platform")) == (
        "finn",
        "xc7z020clg400-1",
        None,
        "Pynq-Z2",
        "zynq",
        None,
    )
    assert z2.section("ethosu") == {}
    assert u250.section("finn")["shell"] == "alveo"
    assert u250.section("finn")["platform"] == "xilinx_u250_gen3x16_xdma_4_1_202210_1"
    assert u55.section("ethosu") == {
        "accelerator_config": "ethos-u55-128",
        "system_config": "Ethos_U55_High_End_Embedded",
        "memory_mode": "Shared_Sram",
    }
    assert u55.section("tflm") == {} and u55.part is None
    assert u55.capacity == {"sram_bytes": 2097152, "flash_bytes": 8388608} and u55.core == "Cortex-M55"
    assert tfl.chip is None and tfl.capacity == {} and tfl.core == "Arm64 or x86-64 application processor"
    faster = dataclasses.replace(u55, clock_mhz=250)
    assert faster.clock_mhz == 250 and faster.section("ethosu") == u55.section("ethosu")
    assert faster.capacity == u55.capacity
    data = z2.to_dict()
    assert data["flows"] == ["finn"] and data["chip"] == data["part"] == "xc7z020clg400-1"
    assert data["sections"] == {"finn": {"board": "Pynq-Z2", "shell": "zynq"}} and data["capacity"]["bram18"] == 280
    assert "DS190" in data["capacity_source"] and "DS190" not in data["source"]


def test_unknown_board_suggests_closest():
    with pytest.raises(BoardError) as info:
        get_board("pynq-z3")
    assert "pynq-z2" in info.value.fix and "pynq-z3" in info.value.what


@pytest.mark.parametrize("name", [None, 3, "", "  ", ["pynq-z2"]])
def test_board_name_must_be_a_string(name):
    with pytest.raises(BoardError, match="non-empty string"):
        get_board(name)


def test_board_names_match_case_insensitively():
    assert get_board(" PYNQ-Z2 ").name == "pynq-z2"


# ---------------------------------------------------------------------------------------------------------------------
# Schema refusals


def _write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _builtin(name: str, parts: bool = False) -> dict:
    folder = BUILTIN_BOARDS_DIR / PARTS_DIRNAME if parts else BUILTIN_BOARDS_DIR
    return yaml.safe_load((folder / f"{name}.yaml").read_text())


def _board(base: str = "pynq-z2", **changes) -> dict:
    """A copy of a built-in board named my-board; a change to None removes the field."""
    data = _builtin(base)
    data["name"] = "my-board"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def _refused(tmp_path: Path, data, name: str = "my-board") -> BoardError:
    with pytest.raises(BoardError) as info:
        parse_board(_write(tmp_path, name, data))
    assert str(tmp_path) in info.value.where
    return info.value


def test_malformed_yaml_names_file_and_line(tmp_path):
    error = _refused(tmp_path, "name: my-board\nkind: [fpga\n")
    assert "line" in error.where


def test_unknown_field_is_named(tmp_path):
    error = _refused(tmp_path, _board(clock_mzh=100))
    assert "clock_mzh" in error.what and "clock_mhz" in error.fix


def test_unknown_field_in_a_section_is_named(tmp_path):
    error = _refused(tmp_path, _board(finn={"board": "Pynq-Z2", "shell": "zynq", "shel": "zynq"}))
    assert "finn.shel" in error.where and "finn.shell" in error.fix


def test_old_layout_field_says_where_it_moved(tmp_path):
    for field, moved in [("part", "chip"), ("vela", "ethosu"), ("flow", "flows"), ("capacity", "parts")]:
        error = _refused(tmp_path, _board(**{field: "x"}))
        assert f"'{field}'" in error.where and "earlier board layout" in error.what and moved in error.fix, field


def test_missing_field_is_named(tmp_path):
    error = _refused(tmp_path, _board(display_name=None))
    assert "'display_name'" in error.what


def test_missing_section_for_a_flow_that_needs_one(tmp_path):
    error = _refused(tmp_path, _board(finn=None))
    assert "'finn'" in error.where and "no 'finn' section" in error.what and "shell" in error.fix
    error = _refused(tmp_path, _board("ethos-u55-128", ethosu=None))
    assert "'ethosu'" in error.where and "accelerator_config" in error.fix
    error = _refused(tmp_path, _board("ethos-u55-128", ethosu={"accelerator_config": "ethos-u55-128"}))
    assert "ethosu.system_config" in error.what


def test_sections_optional_for_tflm_and_tflite(tmp_path):
    board = parse_board(_write(tmp_path, "my-board", _board("nrf52840-dk", tflm={})))
    assert board.flows == ("tflm",) and board.section("tflm") == {}
    board = parse_board(_write(tmp_path, "my-board", "\n".join([yaml.safe_dump(_board("tflite")), "tflite:\n"])))
    assert board.section("tflite") == {}


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"flows": ["fin"]}, "flows", "Unknown flow 'fin'"),
        ({"flows": "finn"}, "flows", "must be a list"),
        ({"flows": []}, "flows", "non-empty list"),
        ({"flows": ["finn", "finn"]}, "flows", "twice"),
        ({"flows": ["tflite"]}, "flows", "serves the finn flow"),
        ({"flows": ["finn", "tflm"]}, "flows", "tflm flow is for boards of kind"),
        ({"ethosu": {"accelerator_config": "a", "system_config": "b", "memory_mode": "c"}}, "ethosu", "does not serve"),
        ({"chip": "xc7z020clg400-2"}, "chip", "Unknown chip"),
        ({"chip": "nrf52840"}, "chip", "mcu part"),
        ({"chip": None}, "chip", "Missing required field 'chip'"),
        ({"core": "Cortex-A9"}, "core", "part file"),
        ({"clock_mhz": 0}, "clock_mhz", "finite number above 0"),
        ({"clock_mhz": -100}, "clock_mhz", "finite number above 0"),
        ({"clock_mhz": float("nan")}, "clock_mhz", "finite number above 0"),
        ({"clock_mhz": float("inf")}, "clock_mhz", "finite number above 0"),
        ({"clock_mhz": True}, "clock_mhz", "finite number above 0"),
        ({"clock_mhz": "100"}, "clock_mhz", "finite number above 0"),
        ({"kind": "gpu"}, "kind", "one of fpga"),
        ({"kind": None}, "kind", "Missing required field 'kind'"),
        ({"lifecycle": "eol"}, "lifecycle", "one of active"),
        ({"name": "other"}, "name", "my-board.yaml"),
        ({"display_name": 42}, "display_name", "non-empty text"),
        ({"finn": {"board": "Pynq-Z2", "shell": "vivado"}}, "finn.shell", "one of zynq, alveo"),
        ({"finn": {"board": "Pynq-Z2", "shell": "zynq", "platform": "xilinx_u50"}}, "finn.platform", "Alveo"),
        ({"finn": {"board": "U250", "shell": "alveo"}}, "finn.platform", "Vitis platform"),
        ({"finn": "Pynq-Z2"}, "finn", "mapping"),
    ],
)
def test_bad_values_rejected(tmp_path, changes, field, words):
    error = _refused(tmp_path, _board(**changes))
    assert f"'{field}'" in error.where and words in error.what + error.fix, (changes, error)


def test_board_must_serve_a_flow_of_its_kind(tmp_path):
    data = _board(flows=["tflite"], finn=None)
    error = _refused(tmp_path, data)
    assert "kind 'fpga' serves the finn flow" in error.what


@pytest.fixture
def tiny_flow(tmp_path, monkeypatch):
    """A flow registered by the test, serving FPGA boards, with its own board section (a YAML file beside its
    code): the kind of a board decides none of its flows."""
    package = tmp_path / "tiny_fpga_flow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "board_section.yaml").write_text(
        "section: required\nfields:\n  device: {type: choice, values: [small, large], required: true}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    section = "tiny_fpga_flow:board_section.yaml"
    info = FlowInfo("tiny", ("fpga",), "a test flow", "pytest", "none", "no.adapter:Here", board_section=section)
    monkeypatch.setitem(FLOWS, "tiny", info)
    return info


def test_an_fpga_board_may_serve_only_another_flow(tmp_path, tiny_flow):
    boards = tmp_path / "boards"
    board = parse_board(_write(boards, "my-board", _board(flows=["tiny"], finn=None, tiny={"device": "small"})))
    assert board.flows == ("tiny",) and board.section("tiny") == {"device": "small"} and board.section("finn") == {}
    assert board.part == "xc7z020clg400-1" and board.capacity["lut"] == 53200
    assert "tiny" in known_flows() and flow_section("tiny")["fields"]["device"]["required"]
    # the flow's own section is checked by the same validator, with the same messages
    error = _refused(boards, _board(flows=["tiny"], finn=None))
    assert "no 'tiny' section" in error.what and "device" in error.fix
    error = _refused(boards, _board(flows=["tiny"], finn=None, tiny={"device": "huge"}))
    assert "'tiny.device'" in error.where and "one of small, large" in error.what
    # and the finn section of a board that does not serve FINN is refused as before
    error = _refused(boards, _board(flows=["tiny"], tiny={"device": "small"}))
    assert "'finn'" in error.where and "does not serve" in error.what
    both = parse_board(_write(boards, "my-board", _board(flows=["finn", "tiny"], tiny={"device": "large"})))
    assert both.flows == ("finn", "tiny") and both.section("finn")["board"] == "Pynq-Z2"


def test_schema_kinds_registry_flows_and_sections_agree():
    """Every kind of the schema is served by a registered flow and every flow serves kinds of the schema; every
    flow's board section loads; every registered flow is served by a built-in board."""
    kinds = set(known_kinds())
    served = {kind for flow in known_flows() for kind in flow_kinds(flow)}
    assert served == kinds
    assert not set(known_flows()) & set(load_schema()["board"]["fields"])  # a section is named after its flow
    boards = load_boards([BUILTIN_BOARDS_DIR])
    for flow in known_flows():
        section = flow_section(flow)
        assert section["section"] in ("required", "optional") and isinstance(section["fields"], dict), flow
        assert not set(section["renamed"]) & set(load_schema()["board"]["fields"]), flow
        assert any(flow in board.flows for board in boards.values()), f"no built-in board serves {flow}"
        if section["section"] == "required":
            assert all(board.section(flow) for board in boards.values() if flow in board.flows), flow


def test_part_file_refusals(tmp_path):
    parts = tmp_path / PARTS_DIRNAME
    good = _builtin("xc7z020clg400-1", parts=True)
    assert parse_part(_write(parts, "xc7z020clg400-1", good)).capacity["uram"] == 0  # uram may be 0, nothing else
    for capacity, field, words in [
        ({"lut": 0}, "capacity.lut", "positive integer"),
        ({"lut": float("nan")}, "capacity.lut", "positive integer"),
        ({"dsp": 220.0}, "capacity.dsp", "positive integer"),
        ({"uram": -1}, "capacity.uram", "integer >= 0"),
        ({"luts": 1}, "capacity.luts", "did you mean 'capacity.lut'"),
    ]:
        data = dict(good, capacity=good["capacity"] | capacity)
        with pytest.raises(BoardError) as info:
            parse_part(_write(parts, "xc7z020clg400-1", data))
        assert f"'{field}'" in info.value.where and words in info.value.what + info.value.fix, capacity
    missing = dict(good, capacity={k: v for k, v in good["capacity"].items() if k != "dsp"})
    with pytest.raises(BoardError, match="capacity.dsp"):
        parse_part(_write(parts, "xc7z020clg400-1", missing))
    mcu = _builtin("nrf52840", parts=True)
    with pytest.raises(BoardError, match="'core'"):
        parse_part(_write(parts, "nrf52840", {k: v for k, v in mcu.items() if k != "core"}))


# ---------------------------------------------------------------------------------------------------------------------
# Hostile or broken files: always a BoardError naming the file, never a traceback


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


def test_yaml_alias_bomb_is_refused(tmp_path):
    error = _refused(tmp_path, BILLION_LAUGHS)
    assert "alias" in error.what and "line 2" in error.where
    with pytest.raises(BoardError, match="alias"):
        parse_part(_write(tmp_path / PARTS_DIRNAME, "bomb", BILLION_LAUGHS))


def test_even_a_small_alias_is_refused(tmp_path):
    text = yaml.safe_dump(_board(finn=None)) + "finn: &f {board: Pynq-Z2, shell: zynq}\nnotes: *f\n"
    assert "alias" in _refused(tmp_path, text).what


def test_duplicate_field_is_refused(tmp_path):
    text = yaml.safe_dump(_board()) + "clock_mhz: 250\n"
    error = _refused(tmp_path, text)
    assert "'clock_mhz' twice" in error.what


def test_non_utf8_file_is_refused(tmp_path):
    text = yaml.safe_dump(_board(description="Caf\u00e9 board"), allow_unicode=True).encode("latin-1")
    error = _refused(tmp_path, text)
    assert "UTF-8" in error.what


def test_python_tags_are_refused(tmp_path):
    assert "not valid YAML" in _refused(tmp_path, "name: !!python/object/apply:os.system ['true']\n").what


def test_folder_named_yaml_is_refused(tmp_path, monkeypatch):
    (tmp_path / "x.yaml").mkdir()
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path))
    with pytest.raises(BoardError) as info:
        load_boards()
    assert "x.yaml" in info.value.where and "folder" in info.value.what
    (tmp_path / "x.yaml").rmdir()
    (tmp_path / PARTS_DIRNAME / "y.yaml").mkdir(parents=True)
    with pytest.raises(BoardError) as info:
        load_boards()
    assert "y.yaml" in info.value.where


def test_capital_letters_in_a_board_name_are_refused_with_the_fix(tmp_path):
    """--target matches names case-insensitively, so a name must be lower case to be selectable at all."""
    error = _refused(tmp_path, _board(name="My-Board"), name="My-Board")
    assert "lower case" in error.what and "my-board.yaml" in error.fix and "name: my-board" in error.fix
    error = _refused(tmp_path, _board(name="my-board"), name="My-Board")
    assert "My-Board.yaml" in error.what and "name the file my-board.yaml" in error.fix


# ---------------------------------------------------------------------------------------------------------------------
# User board folders (SDK_BOARDS_PATH)


def test_adding_a_board_is_one_yaml_file(tmp_path, monkeypatch):
    """A board on a chip the registry knows: one file, no code."""
    text = """\
name: my-zynq
display_name: "My Zynq-7020 board"
vendor: Me
kind: fpga
flows: [finn]
lifecycle: active
clock_mhz: 125
description: "A custom board on the PYNQ-Z2's chip."
source: "my schematic"
chip: xc7z020clg400-1
finn: {board: Pynq-Z2, shell: zynq}
"""
    _write(tmp_path, "my-zynq", text)
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path))
    board = get_board("My-Zynq")
    assert board.part == "xc7z020clg400-1" and board.capacity["lut"] == 53200 and board.clock_mhz == 125
    assert board.path == tmp_path / "my-zynq.yaml" and "my-zynq" in load_boards()
    # boards are parsed once per process, but an edited file is read again, and a broken one is refused
    _write(tmp_path, "my-zynq", text.replace("clock_mhz: 125", "clock_mhz: 100"))
    assert get_board("my-zynq").clock_mhz == 100
    _write(tmp_path, "my-zynq", text.replace("clock_mhz: 125", "clock_mhz: fast"))
    with pytest.raises(BoardError, match="clock_mhz"):
        get_board("my-zynq")
    (tmp_path / "my-zynq.yaml").unlink()
    assert "my-zynq" not in load_boards()


def test_user_part_file_in_the_folders_parts(tmp_path, monkeypatch):
    part = _builtin("nrf52840", parts=True) | {
        "name": "tiny-chip",
        "capacity": {"sram_bytes": 1024, "flash_bytes": 4096},
    }
    _write(tmp_path / PARTS_DIRNAME, "tiny-chip", part)
    _write(tmp_path, "tiny-mcu", _board("nrf52840-dk", name="tiny-mcu", chip="tiny-chip"))
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path))
    board = get_board("tiny-mcu")
    assert board.capacity == {"sram_bytes": 1024, "flash_bytes": 4096} and board.core == "Cortex-M4F"
    assert parse_board(tmp_path / "tiny-mcu.yaml").chip_spec.path == tmp_path / PARTS_DIRNAME / "tiny-chip.yaml"
    _write(tmp_path / PARTS_DIRNAME, "nrf52840", _builtin("nrf52840", parts=True))
    with pytest.raises(BoardError, match="already defined"):
        load_boards()


def test_user_board_may_not_redefine_a_builtin(tmp_path, monkeypatch):
    _write(tmp_path, "my-board", _board())
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path))
    assert get_board("my-board").part == "xc7z020clg400-1"
    _write(tmp_path, "pynq-z2", _board(name="pynq-z2"))
    with pytest.raises(BoardError) as info:
        load_boards()
    assert "already defined" in info.value.what


def test_missing_user_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(BoardError, match="does not exist"):
        load_boards()


# ---------------------------------------------------------------------------------------------------------------------
# The README table and the CLI


def test_readme_board_table_is_generated():
    section = readme_section(README_PATH.read_text(encoding="utf-8"))
    assert section is not None, f"README.md lacks the markers {README_BEGIN} / {README_END}"
    assert section.strip() == markdown_table().strip(), (
        "README board table is out of date; regenerate it with\n"
        "  .venv/bin/python -c 'import sdk.boards as b; b.update_readme()'\n"
        "(or paste the output of `.venv/bin/python -m sdk boards --markdown` between the markers)"
    )
    assert all(f"`{name}`" in section for name in load_boards([BUILTIN_BOARDS_DIR]))


def test_cli_lists_flows_and_prints_markdown():
    from click.testing import CliRunner

    from sdk.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["boards", "--markdown"], env={"SDK_BOARDS_PATH": ""})
    assert result.exit_code == 0 and result.output.strip() == markdown_table().strip()
    result = runner.invoke(main, ["boards", "--flow", "tflm", "--markdown"], env={"SDK_BOARDS_PATH": ""})
    assert "ethos-u55-128" in result.output and "pynq-z2" not in result.output
    result = runner.invoke(main, ["boards", "--kind", "npu"], env={"SDK_BOARDS_PATH": ""})
    npu = sum(board.kind == "npu" for board in load_boards([BUILTIN_BOARDS_DIR]).values())
    assert result.exit_code == 0 and "flows" in result.output and f"{npu} boards" in result.output
    assert table_row(get_board("ethos-u55-128"))[:4] == (
        "ethos-u55-128",
        "npu",
        "ethosu, tflm",
        "corstone-300 (Cortex-M55)",
    )


# ---------------------------------------------------------------------------------------------------------------------
# FPGA parts and FINN board names: the ones the SDK and FINN know


def test_finn_maps_are_read_from_finn_without_importing_it():
    import subprocess
    import sys

    from finn.util.basic import alveo_part_map, part_map, pynq_part_map

    from targets.finn.board_checks import known_fpga_parts

    maps = finn_part_maps()
    assert maps["pynq_part_map"] == pynq_part_map and maps["alveo_part_map"] == alveo_part_map
    assert maps["part_map"] == part_map
    assert set(part_map.values()) <= known_fpga_parts() and "xc7z020clg400-1" in known_fpga_parts()
    assert "nrf52840" not in known_fpga_parts()  # an MCU part file is not an FPGA part
    code = (
        "import sys; from targets.finn.board_checks import finn_part_maps; assert finn_part_maps(); "
        "print('finn' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_part_file_for_an_unknown_fpga_part_is_refused(tmp_path, monkeypatch):
    part = _builtin("xc7z020clg400-1", parts=True) | {"name": "xc7z999xyz"}
    path = _write(tmp_path / PARTS_DIRNAME, "xc7z999xyz", part)
    _write(tmp_path, "my-board", _board(chip="xc7z999xyz"))
    monkeypatch.setenv("SDK_BOARDS_PATH", str(tmp_path))
    for attempt in (lambda: parse_part(path), lambda: get_board("my-board"), load_boards):
        with pytest.raises(BoardError) as info:
            attempt()
        assert info.value.where == f"{path}, field 'name'" and "Unknown FPGA part 'xc7z999xyz'" in info.value.what
        assert "the closest known: xc7z020clg400-1" in info.value.fix
    # a part FINN knows though the SDK ships no file for it is a part a user may describe
    versal = part | {"name": "xcve2802-vsvh1760-2MP-e-S"}
    assert parse_part(_write(tmp_path / "more", "xcve2802-vsvh1760-2MP-e-S", versal)).name == versal["name"]
    # a misspelt one gets the name it is closest to
    typo = part | {"name": "xc7z020clg400-2"}
    with pytest.raises(BoardError, match="did you mean xc7z020clg400-1"):
        parse_part(_write(tmp_path / "typo", "xc7z020clg400-2", typo))


@pytest.mark.parametrize(
    "finn, chip, field, message, fix",
    [
        ({"board": "Nonsense", "shell": "zynq"}, None, "finn.board", "Unknown FINN board name 'Nonsense'", "closest"),
        ({"board": "pynq-z2", "shell": "zynq"}, None, "finn.board", "Unknown FINN board", "did you mean Pynq-Z2"),
        ({"board": "U250", "shell": "zynq"}, None, "finn.board", "not a board of FINN's zynq", "finn.shell: alveo"),
        ({"board": "ZCU104", "shell": "zynq"}, None, "chip", "for part xczu7ev-ffvc1156-2-e", "Pynq-Z1 or Pynq-Z2"),
        ({"board": "Pynq-Z2", "shell": "zynq"}, "xczu7ev-ffvc1156-2-e", "chip", "for part xc7z020clg400-1", "ZCU104"),
    ],
)
def test_finn_board_names_are_finns_and_match_the_chip(tmp_path, finn, chip, field, message, fix):
    error = _refused(tmp_path, _board(finn=finn, **({"chip": chip} if chip else {})))
    assert error.where.endswith(f"my-board.yaml, field '{field}'") and message in error.what and fix in error.fix


def test_a_custom_board_with_an_unknown_finn_board_does_not_deploy(tmp_path, tfc_export):
    """The issue's case: `sdk deploy` to a board file naming FINN board "Nonsense" stops before any work."""
    import json
    import subprocess
    import sys

    boards = tmp_path / "boards"
    _write(boards, "my-board", _board(finn={"board": "Nonsense", "shell": "zynq"}))
    out = tmp_path / "pkg"
    command = ["deploy", "--target", "my-board", "--model", str(tfc_export), "--out", str(out), "--json"]
    env = {**__import__("os").environ, "SDK_BOARDS_PATH": str(boards)}
    proc = subprocess.run([sys.executable, "-m", "sdk", *command], capture_output=True, text=True, env=env)
    error = json.loads(proc.stdout)
    assert proc.returncode == 2 and error["error"] == "BoardError" and "'finn.board'" in error["where"]
    assert "my-board.yaml" in error["where"] and not out.exists()
