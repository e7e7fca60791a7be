"""What Verilator may compile: HDL that cannot reach outside the simulation.

Verilator turns `$system(...)` into a shell call, `$c(...)` and the `systemc_*` directives into C++ of the
testbench, DPI imports into calls of C functions, and `$fopen` / `$fwrite` / `$writememh` into file writes.
None of them belongs in a FINN layer: every file `--rtlsim` compiles (finn-rtllib's, the generated wrappers,
the SDK's stitched tops), at deploy as at `sdk simulate`, is scanned first, and any of them is a refusal
naming the file, the line and the construct. System tasks and compiler directives are allow-listed (those
finn-rtllib's simulated layers use, and their harmless kin); a string literal may name a path only inside the
folders of the compiled files, and an `include` only a file among them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from sdk.errors import SimulationError

# System tasks and functions a layer may use: math, sizes, casts, messages, $readmem (paths checked below).
ALLOWED_SYSTEM_TASKS = frozenset(
    """
    $bits $bitstoreal $bitstoshortreal $ceil $clog2 $countbits $countones $dimensions $exp $floor $high
    $increment $isunknown $itor $left $ln $log10 $low $onehot $onehot0 $pow $realtobits $right $rtoi $shortrealtobits
    $signed $size $sqrt $tanh $unsigned
    $display $write $strobe $monitor $info $warning $error $fatal $finish $stop $time $realtime $stime
    $sformatf $sformat $random $urandom $urandom_range $cast $past $rose $fell $stable
    $readmemh $readmemb
    """.split()
)
# Compiler directives; a macro a scanned file defines may be used too.
ALLOWED_DIRECTIVES = frozenset(
    "`default_nettype `define `undef `ifdef `ifndef `elsif `else `endif `timescale `resetall "
    "`celldefine `endcelldefine `include".split()
)
_BLANKED = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.S)  # comments and string literals
_SYSTEM_TASK = re.compile(r"\$[A-Za-z_][\w$]*")
_DIRECTIVE = re.compile(r"`+[\w\"]*")
_DPI = re.compile(r"\b(import|export)\s*$")  # before a string literal: import "DPI-C" ...
_DEFINE = re.compile(r"`define\s+(\w+)")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _blank(match: re.Match) -> str:
    """The match's text as spaces, its newlines kept: positions and line numbers stay those of the file."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _outside(path_text: str, folders: set[str]) -> bool:
    """A path naming something outside the build: home-relative, climbing out, or absolute and not inside a folder
    of the compiled files (FINN's own code generation writes the absolute path of its output folder)."""
    text = path_text.replace("\\", "/")
    if text.startswith("~") or re.search(r"(^|/)\.\.(/|$)", text) or re.match(r"[A-Za-z]:/", text):
        return True
    if text.startswith("/"):
        return not any(text.startswith(folder.rstrip("/") + "/") for folder in folders)
    return False


def _problems(text: str, macros: set[str], folder_names: set[str], folders: set[str]) -> list[tuple[int, str]]:
    """(line, what) for every construct of `text` that may not be compiled."""
    found: list[tuple[int, str]] = []
    code = _BLANKED.sub(_blank, text)

    def line(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    for match in _SYSTEM_TASK.finditer(code):
        if match.group(0) not in ALLOWED_SYSTEM_TASKS:
            found.append((line(match.start()), f"the system task {match.group(0)}"))
    for match in _DIRECTIVE.finditer(code):
        token = match.group(0)
        if token.startswith("``") or token.startswith('`"') or token == "`":
            found.append((line(match.start()), f"the macro operator {token[:3]}"))
        elif token not in ALLOWED_DIRECTIVES and token[1:] not in macros:
            found.append((line(match.start()), f"the directive {token}"))
    for match in _BLANKED.finditer(text):  # comments and string literals, in order: only the literals count
        if not match.group(0).startswith('"'):
            continue
        value = match.group(0)[1:-1]
        before = code[max(0, match.start() - 40) : match.start()]
        if _DPI.search(before):
            found.append((line(match.start()), f'a DPI import or export ("{value[:20]}")'))
        elif before.rstrip().endswith("`include"):
            if "/" in value or "\\" in value or value not in folder_names:
                found.append((line(match.start()), f'`include "{value[:60]}" (only files of the build itself)'))
        elif _outside(value, folders):
            found.append((line(match.start()), f'the path "{value[:60]}" outside the build'))
    return found


def check_hdl(files: Iterable[Path], shown: Callable[[Path], str] = str, layer: str = "") -> None:
    """Refuse (SimulationError, exit 2) before Verilator sees them: HDL files with a system task, directive or
    path outside the allow-lists. `shown` names a file for the user (e.g. its path in the package)."""
    files = [Path(f) for f in files]
    texts = {path: path.read_text(encoding="utf-8", errors="replace") for path in files}
    macros = {name for text in texts.values() for name in _DEFINE.findall(_BLANKED.sub(_blank, text))}
    names = {path.name for path in files}
    folders = {os.path.normpath(path.parent.absolute()) for path in files}
    for path, text in texts.items():
        problems = _problems(text, macros, names, folders)
        if problems:
            shown_problems = "; ".join(f"line {number}: {what}" for number, what in problems[:5])
            raise SimulationError(
                f"{shown(path)} holds what RTL simulation never compiles ({shown_problems}): it could run commands "
                "or touch files outside the simulation.",
                where=shown(path) + (f" (layer {layer})" if layer else ""),
                fix="FINN's generated RTL has none of these: deploy the model again; if the file is FINN's own, "
                "reinstall finn-plus (make install)",
            )


def check_identifier(value: str, what: str, where: str) -> str:
    """A name that goes into generated Verilog or C++ (a top module, a layer's folder): an identifier only."""
    if not isinstance(value, str) or IDENTIFIER.fullmatch(value) is None:
        raise SimulationError(
            f"{what} {str(value)[:60]!r} is not a plain identifier (letters, digits, '_'; at most 128).",
            where=where,
            fix="deploy the model again; the SDK names layers and modules with identifiers only",
        )
    return value
