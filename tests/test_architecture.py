"""The seams of the SDK: the core reaches flows only through the registry, and each target owns its flow."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from sdk.errors import ConfigError
from targets.base import parse_options
from targets.registry import FLOWS, deploy_options, flow_info, get_target, simulate_options

ROOT = Path(__file__).resolve().parent.parent
FLOW_IMPORT = re.compile(r"targets\.(" + "|".join(map(re.escape, FLOWS)) + r")\b")


def test_the_core_never_names_a_flow_module():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "sdk").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FLOW_IMPORT.search(line)
    ]
    assert not offenders, "sdk/ must reach flows only through targets.registry:\n" + "\n".join(offenders)


# Words of third-party file formats that contain a flow's name but are not the flow: qonnx's tensor annotation key.
FORMAT_WORDS = ("finn_datatype",)


def _flow_words() -> re.Pattern:
    """A registered flow's name or one of its options (deploy or simulate; max_util also as max-util), as a word."""
    words = {*FLOWS, *deploy_options(), *simulate_options()}
    alternatives = sorted((re.escape(word).replace("_", "[-_]") for word in words), key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(alternatives) + r")(?![A-Za-z0-9])")


def _without_format_words(text: str) -> str:
    for word in FORMAT_WORDS:
        text = text.replace(word, "")
    return text


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _names_and_strings(tree: ast.AST):
    """(line, what, text) for every identifier and every string literal but docstrings (comments are not in it)."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield line, "string", node.value
        elif isinstance(node, ast.Name):
            yield line, "name", node.id
        elif isinstance(node, ast.Attribute):
            yield line, "attribute", node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield line, "definition", node.name
        elif isinstance(node, ast.arg):
            yield line, "argument", node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield line, "keyword", node.arg
        elif isinstance(node, ast.alias):
            yield line, "import", node.asname or node.name


def test_the_core_names_no_flow_and_no_flow_option_in_code():
    """Under sdk/, no identifier and no string (docstrings and comments aside) holds a registered flow's name or one
    of the flows' option names as a word: what a flow is and takes comes from its own declaration."""
    words = _flow_words()
    offenders = []
    for path in sorted((ROOT / "sdk").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for line, what, text in _names_and_strings(ast.parse(path.read_text())):
            found = words.search(_without_format_words(text))
            if found:
                offenders.append(f"{relative}:{line}: {what} {text[:80]!r} names {found.group(0)!r}")
    assert not offenders, "sdk/ must not name a flow or a flow option:\n" + "\n".join(offenders)


def test_the_word_check_sees_names_strings_and_flags_but_not_docstrings():
    words = _flow_words()
    tree = ast.parse('''"""A docstring may say tflite."""\nimport io\nflag = "--max-util"\ndef f(fps): return fps\n''')
    seen = {(what, text) for _, what, text in _names_and_strings(tree) if words.search(text)}
    assert seen == {("import", "io"), ("string", "--max-util"), ("argument", "fps"), ("name", "fps")}


def test_registry_schema_and_command_line_agree():
    """The flows the registry finds are the flows board files may name and the CLI offers; the CLI's flow flags are
    the flows' declared options, with their types, defaults and help."""
    import click

    from sdk.boards import known_flows, known_kinds
    from sdk.cli import main

    assert set(known_flows()) == set(FLOWS)
    assert {kind for info in FLOWS.values() for kind in info.kinds} <= set(known_kinds())
    ctx = click.Context(main)
    boards = {p.name: p for p in main.commands["boards"].get_params(ctx)}
    assert boards["flow"].type.choices == tuple(FLOWS) and boards["kind"].type.choices == known_kinds()
    core = {
        "deploy": {"target", "model", "input_scale", "out", "clock_mhz", "data", "samples", "as_json"},
        "simulate": {"package", "data", "limit", "codes", "as_json"},
    }
    for command, declared in (("deploy", deploy_options()), ("simulate", simulate_options())):
        params = {p.name: p for p in main.commands[command].get_params(ctx) if not p.name.startswith("_click")}
        assert set(params) - {"verbose"} == core[command] | set(declared), command
        for name, spec in declared.items():
            param = params[name]
            assert param.opts[0] == spec.flag and param.help == spec.help and param.default == spec.default, name
            assert param.is_flag == (spec.type is bool), name
            if spec.choices is not None:
                assert tuple(param.type.choices) == spec.choices, name
    from click.testing import CliRunner

    listed = [row["flow"] for row in json.loads(CliRunner().invoke(main, ["targets", "--json"]).stdout)]
    assert listed == list(FLOWS)


def test_every_option_is_declared_once_with_its_help():
    """An option several flows declare (io, int4_weights in the TFLite family) is one flag; each has help text."""
    options = deploy_options()
    assert len({spec.flag for spec in options.values()}) == len(options)
    assert all(spec.help and spec.flows for spec in [*options.values(), *simulate_options().values()])
    for info in FLOWS.values():
        assert {f.name for f in fields(info.options)} <= set(options)


def test_flow_declarations_import_nothing_heavy():
    """Listing flows (every targets/*/flow.py and their options) loads no toolchain: `sdk --help`, `sdk targets` and
    a typo in `sdk deploy`'s flags stay fast."""
    code = (
        "import sys\nfrom targets.registry import flows, deploy_options, simulate_options\n"
        "flows(); deploy_options(); simulate_options()\n"
        "heavy = sorted(m for m in ('finn', 'qonnx', 'torch', 'onnx', 'ai_edge_litert', 'tflite_micro', 'ethosu', "
        "'numpy') if m in sys.modules)\nprint(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_every_builtin_flow_is_a_folder_with_its_declaration():
    folders = {path.parent.name for path in (ROOT / "targets").glob("*/flow.py")}
    assert folders <= set(FLOWS)
    for flow in folders:
        assert flow_info(flow).adapter.startswith(f"targets.{flow}.")


@pytest.mark.parametrize("flow", list(FLOWS))
def test_every_target_carries_what_the_core_asks_of_it(flow):
    target = get_target(flow)
    assert target.flow == flow
    for attribute in ("rule_name", "rule_text", "artifact_name"):
        assert isinstance(getattr(target, attribute), str) and getattr(target, attribute)
    assert target.tool_packages and all(isinstance(p, str) for p in target.tool_packages)
    assert fields(flow_info(flow).options), "each flow declares its options as a dataclass"
    for method in ("validate_board", "check", "build", "load", "comparison_cells"):
        assert callable(getattr(target, method))
    cells = target.comparison_cells({})
    assert isinstance(cells.speed, str) and isinstance(cells.resources, str)


def test_a_flow_refuses_the_options_of_another(tmp_path):
    from sdk.boards import get_board

    board = get_board("pynq-z2")
    with pytest.raises(ConfigError, match="--int4-weights does not apply to pynq-z2"):
        parse_options(get_target("finn"), {"int4_weights": True}, board)
    with pytest.raises(ConfigError, match="--fps does not apply"):
        parse_options(get_target("tflite"), {"fps": 1000.0}, get_board("tflite"))
    assert parse_options(get_target("finn"), {"fps": 1000.0}, board).fps == 1000.0


def test_a_package_refuses_the_simulate_options_of_another_flow():
    from targets.base import parse_simulate_options

    assert parse_simulate_options("finn", {"rtlsim": True}).rtlsim is True
    message = "--rtlsim runs an FPGA package's RTL layers in Verilator; this package is for tflite."
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_simulate_options("tflite", {"rtlsim": True})
    assert info.value.where == "--rtlsim" and info.value.fix == "drop --rtlsim for this package"


def test_deploy_options_are_checked_against_the_registry():
    from sdk.deployment import DeployConfig

    with pytest.raises(ConfigError, match="Unknown flow option"):
        DeployConfig(target="tflite", model="m.onnx", options={"fsp": 1.0}).validate()
    with pytest.raises(ConfigError, match="--rtlsim is a switch"):
        DeployConfig(target="pynq-z2", model="m.onnx", options={"rtlsim": "no"}).validate()
    config = DeployConfig(target="pynq-z2", model="m.onnx", options={"fps": 5e4, "rtlsim": False})
    assert config.flow_options() == {"fps": 5e4}  # what the user set: a default is no setting
    assert config.recorded() == {
        "target": "pynq-z2",
        "clock_mhz": None,
        "input_scale": None,
        "data": None,
        "samples": None,
        "fps": 5e4,
        "max_util": 0.8,
        "require_bitfile": False,
        "rtlsim": False,
        "io": None,
        "int4_weights": False,
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -5.0])
def test_flow_options_must_be_finite_and_positive(value):
    from sdk.boards import get_board

    with pytest.raises(ConfigError, match="--fps"):
        parse_options(get_target("finn"), {"fps": value}, get_board("pynq-z2"))


def test_one_finn_table_entry_per_hw_op():
    from targets.finn import kernels, ops

    assert set(ops.SUPPORTED_OPS) == set(ops.HW_OPS)
    for name, op in ops.HW_OPS.items():
        assert callable(op.kernel) and callable(op.knobs), name
    assert ops.hw_op("MVAU_rtl") is ops.HW_OPS["MVAU"] and ops.hw_op("MVAU_hls") is ops.HW_OPS["MVAU"]
    assert kernels.base_op_type("Thresholding_rtl") == "Thresholding"


def test_one_op_spec_per_tflite_op_the_writer_emits():
    from targets.tflite.ops import LAYER_SPECS, OP_SPECS

    for code, spec in OP_SPECS.items():
        assert spec.code == code and callable(spec.check) and callable(spec.golden) and spec.version, spec.name
    assert all(spec.write for spec in LAYER_SPECS.values())


def test_finn_steps_are_named_and_check_stops_before_long_work():
    from targets.finn import steps

    assert len(set(steps.STEP_NAMES)) == len(steps.STEP_NAMES)
    check_at = steps.STEP_NAMES.index(steps.CHECK_STEP)
    assert steps.STEP_NAMES.index("convert_to_hw") < check_at < steps.STEP_NAMES.index("set_folding")


def test_nothing_in_the_repository_cites_a_file_outside_it():
    tracked = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]
    cited = [
        str(p.relative_to(ROOT))
        for p in tracked
        if p.suffix in {".py", ".md", ".toml", ".lock", ".yaml", ""}
        and p.name != "test_architecture.py"
        and re.search(r"DESIGN\.md|\.\./shared", p.read_text(errors="ignore"))
    ]
    assert not cited


def test_a_board_of_several_flows_is_deployed_with_the_one_named():
    from sdk.deployment import choose_target

    default, named = choose_target("ethos-u55-128"), choose_target("ethos-u55-128:tflm")
    assert (default.flow, default.folder) == ("ethosu", "ethos-u55-128")
    assert (named.flow, named.folder) == ("tflm", "ethos-u55-128-tflm")
    with pytest.raises(ConfigError, match="does not serve the flow 'finn'"):
        choose_target("ethos-u55-128:finn")


def test_the_python_api_functions_are_not_shadowed_by_modules():
    import sdk
    import sdk.deployment
    import sdk.simulation

    assert callable(sdk.deploy) and callable(sdk.check) and callable(sdk.simulate)
    assert sdk.deploy.__module__ == "sdk.api"
