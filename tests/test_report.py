import json
import struct
from pathlib import Path

import numpy as np
import pytest

from sdk.package import PackageBuilder
from sdk.report import Report, Table, bar_plot, format_value, utilisation_plot, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("cycles.png", "util.png")


def _report() -> Report:
    return Report(
        title="TFC w2a2 on Pynq-Z2",
        summary={"board": "Pynq-Z2", "accuracy %": 0.9712, "throughput": 123456.789, "layers": 4},
        tables=[
            Table(
                title="Layers",
                columns=["layer", "cycles", "time", "LUT %"],
                rows=[["fc0", 12345, 0.123456, 0.4312], ["fc1", 7, 2.5, 0.05], ["fc|out", None, 1e-6, 1]],
            )
        ],
        notes=["fc0 is the bottleneck.", "Synthesis estimates only."],
        data={"layers": {"fc0": {"cycles": 12345}}, "fps": 1234.5},
    )


def _write(final: Path) -> Path:
    report = _report()
    with PackageBuilder(final) as pkg:
        bar_plot(
            pkg,
            report,
            "cycles.png",
            ["fc0", "fc1", "fc_out"],
            [12345, 7, 300],
            title="Cycles per layer",
            ylabel="cycles",
            highlight=0,
        )
        utilisation_plot(
            pkg,
            report,
            "util.png",
            used={"LUT": 23000, "BRAM": 30, "URAM": 0},
            capacity={"LUT": 53200, "BRAM": 140, "URAM": 0},
            cap_fraction=0.7,
        )
        write_report(pkg, report)
        return pkg.commit({"title": report.title})


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("report") / "pkg")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _count_colour(png: Path, rgb: tuple[float, float, float]) -> int:
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) < 0.02).sum())


def _tab(name: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(name)


def test_markdown_has_summary_tables_notes_and_images(package):
    md = (package / "report.md").read_text()
    assert md.startswith("# TFC w2a2 on Pynq-Z2\n")
    assert "| board | Pynq-Z2 |" in md
    assert "| accuracy % | 97.12% |" in md
    assert "| throughput | 123,457 |" in md
    assert "## Layers" in md
    assert "| layer | cycles | time | LUT % |" in md
    assert "| fc0 | 12,345 | 0.1235 | 43.12% |" in md
    assert "| fc1 | 7 | 2.5 | 5.00% |" in md
    assert "| fc\\|out | - | 1e-06 | 100.00% |" in md
    assert "- fc0 is the bottleneck.\n- Synthesis estimates only.\n" in md
    assert "![Cycles per layer](cycles.png)" in md
    assert "![Resource utilisation (dashed line: cap at 70%)](util.png)" in md
    assert md.endswith("\n") and not md.endswith("\n\n")


def test_json_holds_the_whole_report(package):
    data = json.loads((package / "report.json").read_text())
    assert data["title"] == "TFC w2a2 on Pynq-Z2"
    assert data["summary"]["throughput"] == 123456.789
    assert data["tables"][0]["rows"][0] == ["fc0", 12345, 0.123456, 0.4312]
    assert data["tables"][0]["columns"] == ["layer", "cycles", "time", "LUT %"]
    assert data["notes"] == ["fc0 is the bottleneck.", "Synthesis estimates only."]
    assert data["plots"] == [
        ["cycles.png", "Cycles per layer"],
        ["util.png", "Resource utilisation (dashed line: cap at 70%)"],
    ]
    assert data["data"] == {"layers": {"fc0": {"cycles": 12345}}, "fps": 1234.5}


def test_plots_are_valid_pngs_listed_in_manifest(package):
    manifest = json.loads((package / "manifest.json").read_text())
    listed = {entry["path"] for entry in manifest["files"]}
    assert {"report.md", "report.json", *PLOTS} <= listed
    for name in PLOTS:
        data = (package / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 5_000
        assert _png_size(data) == (800, 450)
        assert b"Software" not in data and b"matplotlib" not in data


def test_bar_plot_highlights_one_bar(package, tmp_path):
    assert _count_colour(package / "cycles.png", _tab("tab:red")) > 100
    assert _count_colour(package / "cycles.png", _tab("tab:blue")) > 100
    report = Report(title="t")
    with PackageBuilder(tmp_path / "pkg") as pkg:
        bar_plot(pkg, report, "plain.png", ["a", "b"], [1.0, 2.0], title="t", ylabel="y")
        assert _count_colour(pkg.path("plain.png"), _tab("tab:red")) == 0
        with pytest.raises(ValueError):
            bar_plot(pkg, report, "bad.png", ["a", "b"], [1.0, 2.0], title="t", ylabel="y", highlight=2)
    assert report.plots == [("plain.png", "t")]


def test_utilisation_plot_draws_cap_line(tmp_path):
    report = Report(title="t")
    args = dict(used={"LUT": 23000, "BRAM": 30}, capacity={"LUT": 53200, "BRAM": 140})
    with PackageBuilder(tmp_path / "pkg") as pkg:
        utilisation_plot(pkg, report, "cap.png", cap_fraction=0.7, **args)
        utilisation_plot(pkg, report, "nocap.png", cap_fraction=None, **args)
        with pytest.raises(ValueError):
            utilisation_plot(pkg, report, "bad.png", used={"DSP": 3}, capacity={"LUT": 10}, cap_fraction=None)
        assert pkg.path("cap.png").read_bytes() != pkg.path("nocap.png").read_bytes()
    assert [caption for _, caption in report.plots] == [
        "Resource utilisation (dashed line: cap at 70%)",
        "Resource utilisation",
    ]


def test_same_inputs_give_identical_files(package, tmp_path):
    again = _write(tmp_path / "pkg")
    for name in ("report.md", "report.json", "manifest.json", *PLOTS):
        assert (again / name).read_bytes() == (package / name).read_bytes(), name


@pytest.mark.parametrize(
    "value, percent, text",
    [
        (1234567, False, "1,234,567"),
        (np.int64(4096), False, "4,096"),
        (0.123456, False, "0.1235"),
        (np.float32(2.5), False, "2.5"),
        (98765.4, False, "98,765"),
        (0.25, True, "25.00%"),
        (None, False, "-"),
        (True, False, "yes"),
        (float("nan"), False, "nan"),
        ("fc0", False, "fc0"),
    ],
)
def test_format_value(value, percent, text):
    assert format_value(value, percent) == text


def test_rows_must_match_columns(tmp_path):
    report = Report(title="t", tables=[Table(title="x", columns=["a", "b"], rows=[[1]])])
    with PackageBuilder(tmp_path / "pkg") as pkg:
        with pytest.raises(ValueError):
            write_report(pkg, report)
    assert not (tmp_path / "pkg").exists()


def test_step_times_name_every_step_and_add_up_to_the_total():
    from sdk.step_times import StepClock

    clock = StepClock()
    sum(range(10_000))  # before the first step: "other"
    for name in ("load", "build", "load", "write"):  # a name may recur, each time its own row
        clock.start(name)
        sum(range(10_000))
    table = clock.finish()
    assert [name for name, _ in table.steps] == ["load", "build", "load", "write"]
    ms = [round(seconds * 1000) for _, seconds in table.steps]
    assert all(m >= 0 for m in ms) and table.other >= 0
    assert sum(ms) + round(table.other * 1000) == round(table.total * 1000)  # exactly: rounded on whole ms
    assert table.rows() == [*[[n, s] for n, s in table.steps], ["other", table.other], ["total", table.total]]
    assert table.to_list() == [{"step": n, "seconds": s} for n, s in table.steps]
