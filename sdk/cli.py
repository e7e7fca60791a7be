"""The `sdk` command.

Exit codes: 0 success, 1 a verification failed, 2 a user error (an SDKError, or
click's own usage error), 3 a bug in the SDK (any other exception), 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sdk import __version__
from sdk.datasets import DEFAULT as DEFAULT_DATASET
from sdk.datasets import names_text
from sdk.errors import ConfigError, InternalError, SDKError
from sdk.quiet import hush_stdout, quiet

out = Console()
err = Console(stderr=True)

# Keys in click's ctx.meta (shared by the group's and the command's contexts).
JSON_KEY = "sdk.json"  # set by a command's --json flag: errors are printed as JSON on stdout
VERBOSE_KEY = "sdk.verbose"  # set by -v/--verbose, on the group or the command
VERBOSE_HELP = "Show tracebacks, the causes of errors and the libraries' own warnings and log lines."


class ProgressBars:
    """The library's progress events (sdk.progress) drawn with rich on stderr, as `sdk deploy` and `sdk train` show
    them: a spinner line per board while it deploys, a bar of epochs while training. One live display per job,
    closed by the job's last event. Pass it as `progress=` to sdk.deploy, sdk.deploy_many or sdk.train."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, event) -> None:
        if event.finished:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            return
        if self._bar is None:
            self._bar, self._task = self._start(event)
        if event.stage == "train":
            self._bar.update(self._task, completed=event.done, **event.metrics)
        else:
            self._bar.update(self._task, description=event.message)

    @staticmethod
    def _start(event) -> tuple[Any, Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        if event.stage == "train":
            columns = (
                TextColumn("[bold]train {task.fields[name]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs"),
                TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]:.2%}  best {task.fields[best]:.2%}"),
                TimeElapsedColumn(),
            )
            bar = Progress(*columns, console=Console(stderr=True))
            bar.start()
            return bar, bar.add_task("train", total=event.total, name=event.subject, **event.metrics)
        bar = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=Console(stderr=True)
        )
        bar.start()
        return bar, bar.add_task(event.message)


def _emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _remember(key: str, then: Callable | None = None) -> Callable:
    """An option callback that records a set flag in ctx.meta (then runs the option's own callback)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value:
            ctx.meta[key] = True
        return then(ctx, param, value) if then else value

    return callback


class SDKCommand(click.Command):
    """Every `sdk` command: its --json flag sets the output format in the click context, it takes
    -v/--verbose after its name too, and it runs with third-party output quiet unless verbose."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if "--json" in getattr(param, "opts", ()):
                param.callback = _remember(JSON_KEY, param.callback)
        if not any("--verbose" in getattr(param, "opts", ()) for param in self.params):
            self.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    is_flag=True,
                    expose_value=False,
                    callback=_remember(VERBOSE_KEY),
                    help=VERBOSE_HELP,
                )
            )

    def invoke(self, ctx: click.Context) -> Any:
        with quiet(verbose=ctx.meta.get(VERBOSE_KEY, False)):
            return super().invoke(ctx)


class SDKGroup(click.Group):
    """Turns an SDKError into one clear block (exit 2), a crash into a bug report (exit 3), Ctrl-C into 130.

    The format comes from the click context (a command's --json), never from
    sys.argv: the CLI is also invoked in-process (tests, scripts calling main()).
    """

    command_class = SDKCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors exit 2, --help and ctx.exit() pass through
        except SDKError as exc:
            _fail(ctx, exc)
        except KeyboardInterrupt:
            ctx.exit(130)
        except Exception as exc:  # anything else is a bug, and is reported as one
            _fail(ctx, InternalError.from_crash(exc), crash=exc)


def _fail(ctx: click.Context, exc: SDKError, crash: BaseException | None = None) -> NoReturn:
    """One block on stderr (or the error's JSON alone on stdout), then exit with the error's code."""
    verbose = ctx.meta.get(VERBOSE_KEY, False)
    if crash is not None and verbose:
        sys.stderr.write("".join(traceback.format_exception(crash)))
        sys.stderr.flush()
    if ctx.meta.get(JSON_KEY):
        payload = {**exc.to_dict(), "exit_code": exc.exit_code}
        if verbose:
            payload["causes"] = exc.causes()
        _emit_json(payload)
    else:
        text = Text(exc.render_verbose() if verbose else exc.render())  # Text: brackets in messages are not markup
        err.print(Panel(text, title=f"[bold red]{type(exc).__name__}", border_style="red", expand=False))
    ctx.exit(exc.exit_code)


class LazyChoice(click.Choice):
    """A choice among names read on first use (the registered flows, the board schema's kinds), so that the
    command line loads no registry before a command needs it."""

    def __init__(self, names: Callable[[], Any]):
        self._names = names
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())


def _board_kinds() -> tuple[str, ...]:
    from sdk.boards import known_kinds

    return known_kinds()


def _flow_names() -> tuple[str, ...]:
    from targets.registry import FLOWS

    return tuple(FLOWS)


def _option_flag(spec) -> click.Option:
    """A flow's declared option (targets.registry.OptionSpec) as a flag: its name, type, default and help."""
    if spec.type is bool:
        names = [spec.flag] if not spec.default else [f"{spec.flag}/--no-{spec.flag[2:]}"]
        return click.Option(names, is_flag=True, default=spec.default, help=spec.help)
    kind = click.Choice(spec.choices) if spec.choices is not None else spec.type
    return click.Option([spec.flag], type=kind, default=spec.default, show_default=True, help=spec.help)


def _deploy_flags() -> dict:
    from targets.registry import deploy_options

    return deploy_options()


def _simulate_flags() -> dict:
    from targets.registry import simulate_options

    return simulate_options()


class FlowOptionsCommand(SDKCommand):
    """A command that also takes the registered flows' own options (each flow declares them next to its code):
    their flags are generated on first use, after the parameter named `after`."""

    def __init__(self, *args, flow_options: Callable[[], dict], after: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._flow_options, self._after, self._generated = flow_options, after, False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._generated:
            at = next(i for i, param in enumerate(self.params) if param.name == self._after) + 1
            specs = self._flow_options().values()
            own = {opt for param in self.params for opt in getattr(param, "opts", ())} | {"--help"}
            for spec in specs:
                if spec.flag in own:
                    raise ConfigError(
                        f"The flow(s) {', '.join(spec.flows)} declare the option {spec.flag}, which is "
                        f"`sdk {self.name}`'s own.",
                        where=spec.flag,
                        fix="give the flow's option another name",
                    )
            self.params[at:at] = [_option_flag(spec) for spec in specs]
            self._generated = True
        return super().get_params(ctx)


def _set_options(given: dict[str, Any], specs: Callable[[], dict]) -> dict[str, Any]:
    """The flow options the user set on the command line (those differing from their defaults)."""
    from targets.registry import set_options

    return set_options(given, specs())


@click.group(cls=SDKGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sdk")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    callback=_remember(VERBOSE_KEY),
    help=VERBOSE_HELP,
)
def main() -> None:
    """Put quantized neural networks on FPGAs, NPUs, microcontrollers and CPUs.

    \b
    Typical flow:
      sdk train tfc --bits w2a2 --dataset digits --out run/
      sdk export run/ --out model.qonnx.onnx
      sdk boards                      # where it can go
      sdk doctor                      # what this machine has

    \b
    Exit codes:
      0    success
      1    a verification failed (the package and its report.md say where)
      2    a user error: one block says what, where and the fix (with --json: JSON on stdout)
      3    a bug in the SDK; please report it (-v shows the traceback)
      130  interrupted

    Third-party warnings and log lines show only with -v/--verbose.
    """


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--kind", type=LazyChoice(_board_kinds), help="Only boards of this kind.")
@click.option("--flow", type=LazyChoice(_flow_names), help="Only boards serving this flow.")
@click.option("--markdown", is_flag=True, help="Print the list as a Markdown table (the README's board table).")
def boards(name: str | None, as_json: bool, kind: str | None, flow: str | None, markdown: bool) -> None:
    """List the known boards, or show one (NAME)."""
    from rich.markup import escape

    from sdk.boards import TABLE_COLUMNS, get_board, load_boards, markdown_table, sorted_boards, table_row

    registry = load_boards()
    if name:
        board = get_board(name, registry, where="sdk boards NAME")
        if as_json:
            return _emit_json(board.to_dict())
        table = Table(show_header=False, title=escape(board.display_name), title_justify="left")
        for key, value in board.to_dict().items():
            if key == "sections":  # one row per flow section: "finn  board=Pynq-Z2, shell=zynq"
                for section, settings in value.items():
                    table.add_row(section, escape(", ".join(f"{k}={v}" for k, v in settings.items()) or "-"))
                continue
            if isinstance(value, dict):
                text = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
            elif isinstance(value, list):
                text = ", ".join(map(str, value))
            else:
                text = str(value)
            table.add_row(key, escape(text))
        return out.print(table)
    selected = sorted_boards(
        b for b in registry.values() if (kind is None or b.kind == kind) and (flow is None or flow in b.flows)
    )
    if as_json:
        return _emit_json([b.to_dict() for b in selected])
    if markdown:
        return click.echo(markdown_table({b.name: b for b in selected}))
    table = Table(title=f"{len(selected)} boards")
    for column in TABLE_COLUMNS:
        table.add_column(column, no_wrap=column in ("board", "lifecycle"))
    for b in selected:
        *cells, lifecycle = (escape(cell) for cell in table_row(b, compact=True))
        style = {"legacy": "yellow", "retired": "red"}.get(b.lifecycle, "")
        table.add_row(*cells, f"[{style}]{lifecycle}" if style else lifecycle)
    out.print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def targets(as_json: bool) -> None:
    """List the compilation flows, their toolchains and boards."""
    from sdk.boards import load_boards
    from targets.registry import FLOWS

    registry = load_boards()
    rows = []
    for info in FLOWS.values():
        rows.append(
            {
                "flow": info.flow,
                "kind": info.kinds[0],
                "description": info.description,
                "status": "available",
                "python_package": info.python_package,
                "version": info.package_version(),
                "vendor_tools": info.vendor_tools,
                "boards": [b.name for b in registry.values() if info.flow in b.flows],
            }
        )
    if as_json:
        return _emit_json(rows)
    table = Table(title="targets")
    for column in ("flow", "kind", "status", "toolchain", "vendor tools", "boards"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["flow"],
            r["kind"],
            r["status"],
            f"{r['python_package']} {r['version'] or '(missing)'}",
            r["vendor_tools"],
            str(len(r["boards"])),
        )
    out.print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def models(as_json: bool) -> None:
    """List the model zoo and the layer names usable in --layer-bits."""
    from sdk.zoo import PRESETS, ZOO

    rows = [{"name": s.name, "description": s.description, "layers": s.layer_names()} for s in ZOO.values()]
    if as_json:
        return _emit_json({"models": rows, "presets": list(PRESETS)})
    table = Table(title=f"model zoo (presets: {', '.join(PRESETS)})")
    for column in ("name", "description", "layers"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["description"], " ".join(r["layers"]))
    out.print(table)


@main.command()
@click.argument("model")
@click.option(
    "--bits", default="w2a2", show_default=True, help="Preset: w1a1, w1a2, w2a2, w4a4, w8a8 (any wXaY with 1..8 bits)."
)
@click.option("--layer-bits", default="", help="Per-layer overrides, e.g. 'fc0=w8a8,fc_out=w4' (see `sdk models`).")
@click.option(
    "--dataset", default=DEFAULT_DATASET, show_default=True, help=f"{names_text()}, an idx folder, or an .npz file."
)
@click.option("--image-size", type=int, default=None, help="Resize images to this side.")
@click.option("--epochs", type=int, default=60, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Adam learning rate (cosine schedule).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-augment", is_flag=True, help="No random pixel shifts for image models.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(
    model, bits, layer_bits, dataset, image_size, epochs, batch_size, lr, seed, no_augment, out_dir, as_json
) -> None:
    """Quantization-aware training of a zoo MODEL; keeps the best checkpoint."""
    from sdk.train_config import TrainConfig

    config = TrainConfig(
        model=model,
        bits=bits,
        layer_bits=layer_bits,
        dataset=dataset,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=not no_augment,
    )
    config.validate()  # a typo is answered before torch and Brevitas load (seconds)
    from sdk.qat import train as run_training

    with hush_stdout():
        result = run_training(config, out_dir, progress=None if as_json else ProgressBars())
    if as_json:
        data = result.to_dict()
        data.pop("history")
        return _emit_json(data)
    out.print(
        f"[green]trained[/] {model} {bits}: test accuracy [bold]{result.test_accuracy:.2%}[/] "
        f"(best epoch {result.best_epoch}, {result.seconds:.1f} s) -> {out_dir}"
    )


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    required=True,
    help="QONNX file to write (model card beside it).",
)
@click.option("--force", is_flag=True, help="Replace an existing --out file and the model card (.json) beside it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(run_dir: Path, out_path: Path, force: bool, as_json: bool) -> None:
    """Export a training run to QONNX plus a model card, checked against Brevitas.

    An existing --out file or card is not replaced without --force."""
    from sdk.export import export_run

    with hush_stdout():  # torch.onnx and qonnx print; stdout is for the result
        result = export_run(run_dir, out_path, force=force)
    if as_json:
        return _emit_json(result.to_dict())
    check = result.card["check"]
    out.print(
        f"[green]exported[/] {result.onnx_path} + {result.card_path.name}: qonnx equals Brevitas on "
        f"{check['samples']} samples (max relative diff {check['max_rel_diff']:.1e})"
    )


def _deploy_options(func):
    options = [
        click.option("--target", required=True, help="Board name (sdk boards); deploy: several, comma-separated."),
        click.option(
            "--model",
            required=True,
            help="A training run folder, or a QONNX file (a model card beside it is optional).",
        ),
        click.option(
            "--input-scale",
            type=float,
            default=None,
            help="A QONNX file with a float input: the model receives pixel * S (1/255 for pixels / 255).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command(cls=FlowOptionsCommand, flow_options=_deploy_flags, after="samples")
@_deploy_options
@click.option("--out", default=None, help="Package folder (default: deploy/<board>; several targets: <out>/<board>).")
@click.option("--clock-mhz", type=float, default=None, help="Override the board's clock.")
@click.option(
    "--data",
    default=None,
    help="Your verification samples: an .npz (x in the model's input layout, y optional) or an MNIST idx folder, "
    "used whole. Default: the model card's data set's test split, else random inputs.",
)
@click.option(
    "--samples",
    type=int,
    default=None,
    help="At most this many verification samples (default: all of --data, 100 of the card's data set).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def deploy(target, model, input_scale, out, clock_mhz, data, samples, as_json, **options):
    """Build, verify and package MODEL for one board or several.

    Exit 1 when a verification fails, 2 on a user error, 3 on a bug in the SDK.
    """
    from sdk.deployment import DeployConfig, deploy_many

    config = DeployConfig(
        target=target,
        model=model,
        out=out,
        clock_mhz=clock_mhz,
        input_scale=input_scale,
        data=data,
        samples=samples,
        options=_set_options(options, _deploy_flags),
    )
    with hush_stdout():
        results = deploy_many(config, progress=None if as_json else ProgressBars())
    if as_json:
        payload = results[0].to_dict() if len(results) == 1 else {"results": [r.to_dict() for r in results]}
        _emit_json(payload)
    elif len(results) == 1:
        _print_deploy(results[0])
    else:
        print_comparison(results)
    sys.exit(max(r.exit_code for r in results))


def print_comparison(results) -> None:
    """One row per board: accuracy, exactness rule and result, speed, resources, artifact size."""
    from sdk.deployment import COMPARISON_COLUMNS, comparison_rows

    table = Table(title="one model, several targets")
    for column in COMPARISON_COLUMNS:
        table.add_column(column)
    for row in comparison_rows(results):
        colour = {"PASSED": "green", "FAILED": "red", "ERROR": "red"}.get(row[4], "white")
        table.add_row(*row[:4], f"[{colour}]{row[4]}[/]", *row[5:])
    (out if out.is_terminal else Console(width=170)).print(table)  # logs and CI: one line per board
    measured_on = sorted({r.summary["accuracy_on"] for r in results if r.summary.get("accuracy_on")})
    if measured_on:
        out.print(f"accuracy measured on {'; '.join(measured_on)}")
    for r in results:
        if r.error:
            out.print(f"[red]{r.board}:[/] {r.error}")
        else:
            out.print(f"[dim]{r.board}: {r.package}[/]")
            _print_failure(r, prefix=f"{r.board}: ")


def _print_failure(result, prefix: str = "") -> None:
    """A failed rule's reason (check, layer, what differs, by how much) and its fix, below the summary."""
    from rich.markup import escape

    from sdk.verify import describe_failure

    if result.failure:
        reason, fix = describe_failure(result.failure)
        out.print(f"[red]{prefix}FAILED[/] {escape(reason)}")
        out.print(f"{prefix}{escape(fix)}")


def _print_deploy(result) -> None:
    from rich.markup import escape

    s = result.summary
    table = Table(title=f"deployed to {result.board} -> {result.package}", show_header=False)
    where = f" at {escape(str(result.failure['layer']))}" if result.failure and result.failure["layer"] else ""
    table.add_row("verification", "[green]PASSED[/]" if result.verified else f"[red]FAILED[/]{where} (reason below)")
    for key, value in s.items():
        if key == "verified":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k.upper()} {v:.1%}" for k, v in value.items())
        elif value is None and key.endswith("accuracy"):
            value = "not measured (no labels)"
        elif isinstance(value, float) and (key.endswith("accuracy") or key.endswith("_used")):
            value = f"{value:.2%}"
        elif isinstance(value, float):
            value = f"{value:,.1f}"
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)
    _print_failure(result)
    for message in result.messages:
        out.print(f"[yellow]note:[/] {message}")


@main.command()
@_deploy_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check(target, model, input_scale, as_json) -> None:
    """Can MODEL run on the board? Names every unsupported layer and the fix (exit 2), fast."""
    from sdk.deployment import DeployConfig
    from sdk.deployment import check as run_check

    with hush_stdout():
        run_check(DeployConfig(target=target, model=model, samples=1, input_scale=input_scale))
    if as_json:
        return _emit_json({"target": target, "model": model, "supported": True})
    out.print(f"[green]supported:[/] every layer of {model} maps to {target}")


@main.command(cls=FlowOptionsCommand, flow_options=_simulate_flags, after="limit")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--data", default=None, help="Data set (default: the one the model was trained on).")
@click.option("--limit", type=int, default=None, help="Only the first N test samples.")
@click.option(
    "--codes", is_flag=True, help="--data holds the device's integer codes, not what the model's forward takes."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def simulate(package: Path, data: str | None, limit: int | None, codes: bool, as_json: bool, **options: Any) -> None:
    """Run a deployment PACKAGE in the simulator: accuracy and agreement with the QAT model.

    Exit 1 when a check of the run fails (with --rtlsim: an RTL layer differs from the simulator)."""
    from sdk.simulation import simulate_package
    from sdk.verify import share

    with hush_stdout():
        report = simulate_package(package, data, limit, codes, **_set_options(options, _simulate_flags))
    if as_json:
        _emit_json(report.to_dict())
        sys.exit(1 if report.failures else 0)
    identical = "" if report.identical_outputs is None else f", identical output on {report.identical_outputs:.2%}"
    out.print(
        f"{report.board}: {report.samples} samples of {report.data}: accuracy [bold]{share(report.accuracy)}[/] "
        f"(QAT model {share(report.qat_accuracy)}); same class as the QAT model on {report.agreement:.2%}{identical}"
    )
    for what, fraction in report.runtime_agreement.items():
        out.print(f"{what} on {fraction:.2%} of the samples")
    from rich.markup import escape

    for failure in report.failures:  # text from the package's report: printed as it is, never as markup
        out.print(f"[red]FAILED[/] {escape(failure)}")
    sys.exit(1 if report.failures else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def doctor(as_json: bool) -> None:
    """Show which tools this machine has and what each is needed for."""
    from sdk.doctor import run_checks

    checks = run_checks()
    if as_json:
        return _emit_json([c.to_dict() for c in checks])
    table = Table(title="sdk doctor")
    for column in ("tool", "", "version", "detail", "needed for"):
        table.add_column(column)
    for c in checks:
        table.add_row(c.name, "[green]yes" if c.present else "[yellow]no", c.version or "", c.detail, c.needed_for)
    out.print(table)


if __name__ == "__main__":
    main()
