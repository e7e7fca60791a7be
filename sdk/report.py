"""A deployment report inside a package: report.md for people, report.json for tools.

Backends fill a `Report` (summary lines, tables, notes, free-form data), draw
plots into the package with the helpers below, then call `write_report`. Equal
inputs give byte-identical files, PNGs included, so packages can be diffed and
their manifests compared.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from sdk.package import PackageBuilder

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
PLOT_DPI = 100
BAR_COLOUR = "tab:blue"
HIGHLIGHT_COLOUR = "tab:red"
PLOTS_STEP = "draw plots"  # the deploy step (a row of its time table) in which a flow draws its report's plots


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]  # values in a column whose name ends with '%' are fractions: 0.25 -> 25.00%


@dataclass
class Report:
    title: str
    summary: dict[str, object] = field(default_factory=dict)  # ordered key/value lines
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (filename, caption), filled by the plot helpers
    data: dict = field(default_factory=dict)  # free-form machine-readable payload, report.json only


def format_value(value: object, percent: bool = False) -> str:
    """One table cell: 12,345 / 0.1235 / 25.00% (percent: value is a fraction) / - for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real) and not math.isfinite(float(value)):
        return str(float(value))
    if percent and isinstance(value, numbers.Real):
        return f"{100 * float(value):,.2f}%"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        # .4g switches to exponents from 10,000 up; past that, a grouped integer reads better.
        return f"{round(value):,}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    percent = [str(column).endswith("%") for column in columns]
    lines = ["| " + " | ".join(_cell(str(c)) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"table row {row!r} has {len(row)} cells, expected {len(columns)} ({columns})")
        cells = (format_value(value, pct) for value, pct in zip(row, percent))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    if report.summary:
        rows = [[key, format_value(value, str(key).endswith("%"))] for key, value in report.summary.items()]
        lines += ["## Summary", "", *_markdown_table(["Item", "Value"], rows), ""]
    for table in report.tables:
        lines += [f"## {table.title}", "", *_markdown_table(table.columns, table.rows), ""]
    if report.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in report.notes), ""]
    if report.plots:
        lines += ["## Plots", ""]
        for filename, caption in report.plots:
            lines += [f"![{caption}]({filename})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def kib(size: int | None) -> str:
    """A byte count as KiB for tables; '-' where there is none."""
    return "-" if size is None else f"{size / 1024:,.1f} KiB"


def percent(fraction: float | None) -> str:
    """A fraction as a percentage for tables; '-' where there is none."""
    return "-" if fraction is None else f"{fraction:.1%}"


def verification_table(verification) -> Table:
    """Every check of a flow's exactness rule, one row each (the same table in every flow's report)."""
    return Table(
        "Verification",
        ["check", "passed", "samples", "first difference", "mismatch %", "ties", "detail"],
        [
            [c.name, c.passed, c.samples, c.first_difference, c.mismatch_rate, c.ties, c.detail]
            for c in verification.checks
        ],
    )


def add_failure(report: Report, failure: dict | None) -> None:
    """A failed rule's reason and fix as summary lines, right after the verdict (report.json has it under data)."""
    if failure is None:
        return
    from sdk.verify import describe_failure

    reason, fix = describe_failure(failure)
    lines = list(report.summary.items())
    at = next((i + 1 for i, (key, _) in enumerate(lines) if key == "verification"), len(lines))
    lines[at:at] = [("why it failed", reason), ("fix", fix.removeprefix("fix: "))]
    report.summary = dict(lines)


def write_report(pkg: PackageBuilder, report: Report) -> None:
    """Write report.json and report.md into the package. Draw the plots first: they are listed here."""
    pkg.write_json(REPORT_JSON, asdict(report))
    pkg.write_text(REPORT_MD, render_markdown(report))


def _pyplot():
    """pyplot on the Agg backend: no display needed, and pixel output is reproducible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(pkg: PackageBuilder, report: Report, plt, fig, filename: str, caption: str) -> None:
    try:
        fig.tight_layout()
        # No "Software" text chunk: it carries the matplotlib version, not the data.
        fig.savefig(pkg.path(filename), format="png", dpi=PLOT_DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    report.plots.append((filename, caption))


def bar_plot(
    pkg: PackageBuilder,
    report: Report,
    filename: str,
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    ylabel: str,
    highlight: int | None = None,
) -> None:
    """Vertical bars, one per label; bar `highlight` (e.g. the bottleneck layer) in another colour."""
    if len(labels) != len(values):
        raise ValueError(f"bar_plot: {len(labels)} labels but {len(values)} values")
    if highlight is not None and not 0 <= highlight < len(values):
        raise ValueError(f"bar_plot: highlight index {highlight} is outside 0..{len(values) - 1}")
    plt = _pyplot()
    colours = [HIGHLIGHT_COLOUR if i == highlight else BAR_COLOUR for i in range(len(values))]
    with plt.style.context("default"):  # ignore the user's matplotlibrc: same bytes everywhere
        fig, ax = plt.subplots(figsize=(8.0, 4.5))
        ax.bar(range(len(values)), [float(v) for v in values], color=colours)
        ax.set_xticks(
            range(len(values)),
            [str(label) for label in labels],
            rotation=45 if len(labels) > 6 else 0,
            ha="right" if len(labels) > 6 else "center",
        )
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        _save(pkg, report, plt, fig, filename, title)


def _utilisation_percent(used: dict[str, float], capacity: dict[str, float]) -> dict[str, float]:
    """Percent of capacity per resource; resources the device lacks and the design doesn't use are left out."""
    percent = {}
    for name, amount in used.items():
        if name not in capacity:
            raise ValueError(f"utilisation_plot: no capacity given for resource {name!r}")
        if capacity[name] > 0:
            percent[name] = 100.0 * float(amount) / float(capacity[name])
        elif amount > 0:
            raise ValueError(f"utilisation_plot: {name} uses {amount} but the capacity is {capacity[name]}")
    return percent


def utilisation_plot(
    pkg: PackageBuilder,
    report: Report,
    filename: str,
    used: dict[str, float],
    capacity: dict[str, float],
    cap_fraction: float | None,
    title: str = "Resource utilisation",
) -> None:
    """Horizontal bars of used/capacity in percent per resource, a dashed line at the cap if given."""
    percent = _utilisation_percent(used, capacity)
    limit = 100.0 * cap_fraction if cap_fraction is not None else 100.0
    names, values = list(percent), list(percent.values())
    plt = _pyplot()
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(8.0, 4.5))
        colours = [HIGHLIGHT_COLOUR if v > limit else BAR_COLOUR for v in values]
        ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), names)
        ax.invert_yaxis()  # first resource on top
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.1f}%", va="center")
        if cap_fraction is not None:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1.2, label=f"cap {limit:g}%")
            ax.legend(loc="lower right")
        ax.set_xlim(0, max([100.0, limit, *values]) * 1.15)
        ax.set_xlabel("% of capacity")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        caption = title if cap_fraction is None else f"{title} (dashed line: cap at {limit:g}%)"
        _save(pkg, report, plt, fig, filename, caption)
