"""The seams of the SDK: the core reaches flows only through the registry, and each target owns its flow."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from sdk.errors import ConfigError
from targets.base import parse_options
from targets.registry import FLOWS, get_target

ROOT = Path(__file__).resolve().parent.parent
FLOW_IMPORT = re.compile(r"targets\.(finn|tflite|tflm|ethosu)")


def test_the_core_never_names_a_flow_module():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "sdk").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FLOW_IMPORT.search(line)
    ]
    assert not offenders, "sdk/ must reach flows only through targets.registry:\n" + "\n".join(offenders)


@pytest.mark.parametrize("flow", list(FLOWS))
def test_every_target_carries_what_the_core_asks_of_it(flow):
    target = get_target(flow)
    assert target.flow == flow
    for attribute in ("rule_name", "rule_text", "artifact_name"):
        assert isinstance(getattr(target, attribute), str) and getattr(target, attribute)
    assert target.tool_packages and all(isinstance(p, str) for p in target.tool_packages)
    assert fields(target.Options), "each flow declares its options as a dataclass"
    for method in ("validate_board", "check", "build", "simulate", "comparison_cells"):
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
