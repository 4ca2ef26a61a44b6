"""The `bmbench` command: one Typer sub-command a file, joined here.

Every command body parses its options and calls library functions. A `BmbenchError` raised anywhere becomes one
line on stderr and exit code 2, with no traceback (also under `typer.testing.CliRunner`), and so does an OSError of
a full, read-only or forbidden disk; a `BmbenchWarning` becomes one ``warning: ...`` line on stderr
(bmbench.cli.console.one_line_warnings).
"""

from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup

from bmbench.cli.console import one_line_warnings
from bmbench.errors import DISK_ERRNOS, KEPT_FILES, BmbenchError, is_disk_error

# name -> (module, its command function or Typer app, the line `bmbench --help` lists). A command's module (and with
# it torch, torchvision, pandas) is imported only when that command runs or prints its own help, so that `bmbench
# --help` starts in well under a second instead of 5-20 s.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "variants": ("bmbench.cli.variants", "variants_cli", "List the variants with K, M, R, parameters and GFLOPs."),
    "speed": ("bmbench.cli.speed", "speed_cli", "Time each mask head's stages against R, K or M and N."),
    "data": ("bmbench.cli.data", "data_app", "Datasets: generate the synthetic shapes dataset (COCO layout)."),
    "train": ("bmbench.cli.train", "train_cli", "Train a variant and write its checkpoint and train log."),
    "evaluate": ("bmbench.cli.evaluate", "evaluate_cli", "Mask and box AP of a checkpoint, detections or references."),
    "ablate": ("bmbench.cli.ablate", "ablate_cli", "Run a suite's grid of cells: train, evaluate, time; resumable."),
    "report": ("bmbench.cli.report", "report_cli", "Write the markdown report and a verdict on each finding."),
    "check-head": (
        "bmbench.cli.check_head",
        "check_head_cli",
        "Check that a mask head keeps the contract.",
    ),
}


class _Group(TyperGroup):
    """Turns `BmbenchError` (and an OSError of a write the disk refused) into a one-line message and exit code 2,
    Ctrl-C into one line and exit code 130, and prints `BmbenchWarning`s as one line."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            with one_line_warnings():
                return super().invoke(ctx)
        except BmbenchError as err:  # a DiskError too: the writers name the file, the cause and what was kept
            typer.secho(f"error: {err}", err=True, fg="red")
            ctx.exit(2)
        except OSError as err:
            if not is_disk_error(err):
                raise
            # raised outside the results writers (a bare mkdir, say), so perhaps not by a write: the OSError's path
            typer.secho(
                f"error: {err.filename or 'a file'}: {DISK_ERRNOS[err.errno]}; {KEPT_FILES}", err=True, fg="red"
            )
            ctx.exit(2)
        except KeyboardInterrupt:  # commands that keep partial work (ablate) say what and how to resume first
            typer.secho("interrupted: results are written atomically, so nothing half-written was left", err=True)
            ctx.exit(130)


def load_command(name: str) -> click.Command:
    """The click command of COMMANDS[name], its module imported now."""
    module, attribute, line = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    holder.callback()(lambda: None)  # a group with a callback never collapses into its one command
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    command = typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]
    command.short_help = line
    return command


class _LazyGroup(_Group):
    """The `bmbench` group: COMMANDS listed from their lines, each loaded when resolved (see COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        loaded = super().get_command(ctx, cmd_name)
        if loaded is not None or cmd_name not in COMMANDS:
            return loaded
        return click.Command(cmd_name, short_help=COMMANDS[cmd_name][2])  # the group's help lists it, nothing more

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        if args and args[0] in COMMANDS and args[0] not in self.commands:
            self.add_command(load_command(args[0]))
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="bmbench",
    cls=_LazyGroup,
    help="Benchmark and ablate instance-segmentation mask heads: BlendMask, YOLACT, CenterMask, Mask R-CNN.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Benchmark and ablate instance-segmentation mask heads: BlendMask, YOLACT, CenterMask, Mask R-CNN."""


def main() -> None:
    """Console-script entry point."""
    app()
