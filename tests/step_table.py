"""The step table every deploy's report holds (sdk/step_times.py): the checks the flows' deploy tests share."""

from __future__ import annotations

import json
from pathlib import Path

from sdk.deployment import CLEAN_STEP, PREPARE_STEP
from sdk.report import PLOTS_STEP, format_value


def report_steps(package: Path) -> list[str]:
    """The step names of a package's report, in order, after checking what holds for every deploy: each stage of
    the deploy named (the checks before any work first, the plots, the report and the commit last), the rows and
    "other" adding up to the total exactly (whole milliseconds), and report.md showing report.json's figures."""
    data = json.loads((package / "report.json").read_text())["data"]
    steps, seconds = data["deploy_steps"], data["deploy_seconds"]
    names = [s["step"] for s in steps]
    assert names[0] == PREPARE_STEP and names[1] == "load model and samples"
    assert names[-3:] == ["write report", "commit package", CLEAN_STEP] and names.count(PLOTS_STEP) == 1
    assert names.index(PLOTS_STEP) < names.index("write report")
    assert all(s["seconds"] >= 0 for s in steps) and seconds["other"] >= 0
    ms = [round(s["seconds"] * 1000) for s in steps]
    assert sum(ms) <= round(seconds["total"] * 1000)
    assert sum(ms) + round(seconds["other"] * 1000) == round(seconds["total"] * 1000)
    markdown = (package / "report.md").read_text()
    section = markdown.split("## Time per step (seconds)\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    rows = [line.strip("|").split(" | ") for line in section]
    assert [row[0].strip() for row in rows] == [*names, "other", "total"]
    assert [row[1].strip() for row in rows[-2:]] == [format_value(seconds["other"]), format_value(seconds["total"])]
    return names
