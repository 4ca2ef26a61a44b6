"""`bmbench report`: turn everything under a results folder into one markdown report with figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bmbench.cli.console import console
from bmbench.report.findings import FAILS, HOLDS
from bmbench.report.render import build_report
from bmbench.results import check_out_dir

VERDICT_STYLES = {HOLDS: "green", FAILS: "red"}


DEFAULT_RESULTS = Path("results")
DEFAULT_OUT = Path("results") / "report.md"


def report_cli(
    results: Annotated[Path, typer.Option(help="Folder of speed runs and ablation suites.")] = DEFAULT_RESULTS,
    out: Annotated[Path, typer.Option(help="Report to write; figures go to <stem>_figures/ beside it.")] = DEFAULT_OUT,
) -> None:
    """Write a markdown report (tables, seaborn figures, and a verdict on each of the BlendMask paper's findings)
    from the speed runs and ablation suites under --results."""
    check_out_dir(out, file=True)  # before any work: a parent that is a file fails here, not after the figures
    report = build_report(results, out)
    table = Table(title=f"Findings — {escape(str(report.path))}")
    for column in ("#", "verdict", "from", "environment"):
        table.add_column(column)
    for verdict in report.verdicts:
        style = VERDICT_STYLES.get(verdict.verdict, "yellow")
        table.add_row(
            str(verdict.finding.id),
            f"[{style}]{verdict.verdict}[/]",
            escape(verdict.scope),
            escape(verdict.environment),
        )
    out_console = console()
    out_console.print(table)
    drawn = [f for f in report.figures if f.path is not None]
    out_console.print(
        f"{len(report.environments)} environment(s), {len(drawn)} figure(s) drawn, "
        f"{len(report.figures) - len(drawn)} skipped; report: {escape(str(report.path))}"
    )
