"""targets/finn/rtl_guard.py: what Verilator may compile. Each construct that reaches outside the simulation is
refused naming the file and line; finn-rtllib's files of the simulated layers pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.errors import SimulationError
from targets.finn.rtl_guard import check_hdl, check_identifier

MODULE = "module m (input clk);\n{body}\nendmodule\n"


def _file(tmp_path: Path, body: str, name: str = "m.sv") -> Path:
    path = tmp_path / name
    path.write_text(MODULE.format(body=body))
    return path


@pytest.mark.parametrize(
    "body, says",
    [
        ('initial $system("id");', "$system"),
        ('initial $c("system(\\"id\\");");', "$c"),
        ('initial $c32("x");', "$c32"),
        ('initial $cpure("x");', "$cpure"),
        ('integer f; initial f = $fopen("out.txt", "w");', "$fopen"),
        ('initial $fwrite(1, "x");', "$fwrite"),
        ('initial $writememh("mem.dat", x);', "$writememh"),
        ('initial $dumpfile("x.vcd");', "$dumpfile"),
        ('import "DPI-C" function int system(input string s);', "DPI"),
        ('export "DPI-C" function f;', "DPI"),
        ("`systemc_header\n#include <cstdlib>\n`verilog", "`systemc_header"),
        ("`verilator_config\nlint_off", "`verilator_config"),
        ('`include "/etc/passwd"', "include"),
        ('`include "../other.vh"', "include"),
        ('`include "missing.vh"', "include"),
        ('reg [7:0] mem [0:3]; initial $readmemh("/etc/shadow", mem);', "outside the build"),
        ('reg [7:0] mem [0:3]; initial $readmemh("../../secret.dat", mem);', "outside the build"),
        ('parameter P = "~/.ssh/id_rsa";', "outside the build"),
        ('`define S(a) $sys``a\ninitial `S(tem)("id");', "``"),
    ],
)
def test_a_construct_that_reaches_outside_is_refused_naming_file_and_line(tmp_path, body, says):
    path = _file(tmp_path, body)
    with pytest.raises(SimulationError) as info:
        check_hdl([path], lambda p: f"sources/L/{p.name}", "L")
    assert says in info.value.what and "sources/L/m.sv" in info.value.what, info.value.what
    assert "line " in info.value.what and "sources/L/m.sv (layer L)" == info.value.where


@pytest.mark.parametrize(
    "body",
    [
        '// $system in a comment\n/* $c("x") */',
        'initial $display("$system is only text here: %d", $clog2(8));',
        'parameter THRESHOLDS_PATH = "./L_";\nreg [7:0] t [0:3];\n'
        'initial $readmemh($sformatf("%sthreshs_0.dat", THRESHOLDS_PATH), t);',
        "`ifdef VERILATOR\n`define W 8\nwire [`W-1:0] w;\n`endif",
        'parameter RAM_STYLE = "auto";\n(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *) wire c;',
    ],
)
def test_what_finn_generates_passes(tmp_path, body):
    check_hdl([_file(tmp_path, body)])


def test_an_absolute_path_inside_the_build_passes(tmp_path):
    """FINN's code generation writes its output folder's absolute path (INIT_FILE, THRESHOLDS_PATH)."""
    check_hdl([_file(tmp_path, f'parameter INIT_FILE = "{tmp_path}/memblock.dat";')])
    with pytest.raises(SimulationError, match="outside the build"):
        check_hdl([_file(tmp_path, f'parameter INIT_FILE = "{tmp_path.parent}/memblock.dat";')])


def test_an_include_of_a_file_of_the_build_passes(tmp_path):
    (tmp_path / "defs.vh").write_text("`define W 8\n")
    check_hdl([tmp_path / "defs.vh", _file(tmp_path, '`include "defs.vh"\nwire [`W-1:0] w;')])


def test_finn_rtllib_files_of_the_simulated_layers_pass():
    """Every HDL file of finn-rtllib except the templates (filled in by FINN first) and the simulation-only
    testbenches and gauges (which write logs)."""
    import finn

    root = Path(finn.__file__).parent / "finn-rtllib"
    files = [
        p
        for ext in ("sv", "v")
        for p in root.rglob(f"*.{ext}")
        if "template" not in p.name
        and "/sim/" not in p.as_posix()
        and not p.stem.endswith(("_tb", "gauge"))
        and "$" not in p.read_text(errors="replace").split("module", 1)[-1].split("(", 1)[0]
    ]
    assert len(files) > 20
    check_hdl(files)


@pytest.mark.parametrize("name", ['x; system("id"); //', "../../etc", "a b", "", "é", "a" * 200])
def test_names_in_generated_code_are_identifiers(name):
    with pytest.raises(SimulationError, match="not a plain identifier"):
        check_identifier(name, "The layer name", "here")
