"""The `bmbench` command: one Typer sub-command a file, joined here.

Every command body parses its options and calls library functions. A `BmbenchError` raised anywhere becomes one
line on stderr and exit code 2, with no traceback (also under `typer.testing.CliRunner`); a `BmbenchWarning`
becomes one ``warning: ...`` line on stderr (bmbench.cli.console.one_line_warnings).
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from bmbench.cli.ablate import ablate_cli
from bmbench.cli.console import one_line_warnings
from bmbench.cli.data import data_app
from bmbench.cli.evaluate import evaluate_cli
from bmbench.cli.report import report_cli
from bmbench.cli.speed import speed_cli
from bmbench.cli.train import train_cli
from bmbench.cli.variants import variants_cli
from bmbench.errors import BmbenchError


class _Group(TyperGroup):
    """Turns `BmbenchError` into a one-line message and exit code 2, Ctrl-C into one line and exit code 130, and
    prints `BmbenchWarning`s as one line."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            with one_line_warnings():
                return super().invoke(ctx)
        except BmbenchError as err:
            typer.secho(f"error: {err}", err=True, fg="red")
            ctx.exit(2)
        except KeyboardInterrupt:  # commands that keep partial work (ablate) say what and how to resume first
            typer.secho("interrupted: results are written atomically, so nothing half-written was left", err=True)
            ctx.exit(130)


app = typer.Typer(
    name="bmbench",
    cls=_Group,
    help="Benchmark and ablate instance-segmentation mask heads: BlendMask, YOLACT, CenterMask, Mask R-CNN.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Benchmark and ablate instance-segmentation mask heads: BlendMask, YOLACT, CenterMask, Mask R-CNN."""


app.command("variants")(variants_cli)
app.command("speed")(speed_cli)
app.add_typer(data_app, name="data")
app.command("train")(train_cli)
app.command("evaluate")(evaluate_cli)
app.command("ablate")(ablate_cli)
app.command("report")(report_cli)


def main() -> None:
    """Console-script entry point."""
    app()
