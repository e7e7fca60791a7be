"""Start-up: `sdk --help`, `sdk boards`, `sdk check` and `sdk simulate` load neither torch nor Brevitas nor onnxscript.

Each command runs in a new process that reports, after the command, which of those modules it imported; its
exit code is checked too, so a command that fails early cannot pass by importing nothing. FINN's HW op package
(finn.custom_op.fpgadataflow) imports torch in its __init__ (layernorm.py, `import torch` at module level, for
LayerNorm's python execution), and every FINN op class and every transformation that makes HW layers lives in
that package. So `sdk simulate` of an FPGA package reads its MVAUs through targets.finn.op_view, without FINN's
op package: a package whose layers are all MVAUs (an MLP: TFC, LFC) loads no torch. A package with other FINN
layers (a CNV's window generators and pooling) still gets FINN's op objects for them, and with them torch; and
`sdk check` of an FPGA board runs FINN's own transformations (streamlining, conversion to HW layers, layer
specialisation), which import FINN's op package, torch and (the RTL ops') onnxscript: those say so below.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "brevitas", "onnxscript")

RUN = """
import sys
from sdk.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code or 0
print("EXIT", code)
print("LOADED", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def loaded(*args: str, code: int = 0) -> set[str]:
    """Which of HEAVY the `sdk` command imported in a new process (its exit code checked first)."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("EXIT ", "LOADED ")))
    assert lines.get("EXIT") == str(code), proc.stdout[-3000:] + proc.stderr[-3000:]
    return set(filter(None, lines["LOADED"].split(",")))


@pytest.fixture(scope="module")
def packages(tfc_run, tmp_path_factory) -> dict[str, Path]:
    """The committed TFC run deployed to tflite and pynq-z2 (this also fills the run's export cache)."""
    import sdk

    out = tmp_path_factory.mktemp("startup")
    built = {}
    for target in ("tflite", "pynq-z2"):
        result = sdk.deploy(str(tfc_run), target, out=str(out / target), samples=20)
        built[target] = Path(result.package)
    return built


def test_help_and_boards_load_nothing_heavy():
    for args in (["--help"], ["boards"], ["boards", "pynq-z2", "--json"], ["boards", "--kind", "fpga"]):
        assert loaded(*args) == set(), args


@pytest.mark.parametrize("target", ["tflite", "stm32f746g-disco", "ethos-u55-128"])
def test_check_of_a_qonnx_file_for_the_tflite_family_loads_nothing_heavy(tfc_export, target):
    assert loaded("check", "--target", target, "--model", str(tfc_export)) == set()


def test_check_of_a_run_whose_export_is_cached_loads_nothing_heavy(tfc_run, packages):
    """A run exported before (the cache is filled by the deploys of `packages`) needs no Brevitas to be checked."""
    assert loaded("check", "--target", "tflite", "--model", str(tfc_run)) == set()


def test_simulate_of_a_tflite_package_loads_nothing_heavy(packages):
    assert loaded("simulate", str(packages["tflite"]), "--limit", "50") == set()


def test_simulate_of_an_mlp_fpga_package_loads_nothing_heavy(packages):
    """Its layers are all MVAUs (MVAU_hls): read through targets.finn.op_view, not FINN's op package."""
    assert loaded("simulate", str(packages["pynq-z2"]), "--limit", "50") == set()


def test_fpga_check_loads_no_brevitas(tfc_export):
    """FINN's transformations load torch and onnxscript (see the module docstring); the SDK adds nothing."""
    assert "brevitas" not in loaded("check", "--target", "pynq-z2", "--model", str(tfc_export))
