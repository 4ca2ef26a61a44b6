"""`bmbench ablate`: run a suite YAML's grid of cells (train → evaluate AP → time the mask branch), resumably."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bmbench.ablation.cell import RESULT_FILE, Cell
from bmbench.ablation.dataset import current_data_id
from bmbench.ablation.driver import SuiteOutcome, run_suite
from bmbench.ablation.fields import format_size
from bmbench.ablation.plan import PlannedCell, plan_suite
from bmbench.ablation.suite import SuiteSpec, load_suite
from bmbench.cli.console import console
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.cli.signals import sigterm_as_interrupt, stop_code, stop_word
from bmbench.results import Event


class RichSuiteProgress:
    """An EventHook for run_suite: cells done/total, the cell(s) in flight, and an ETA from the throughput so far
    (cells run per second of wall time, so it accounts for workers running in parallel)."""

    def __init__(self) -> None:
        self.console = console()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]cells"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[current]}"),
            console=self.console,
        )
        self.in_flight: dict[str, float] = {}  # cell id -> start time
        self.durations: list[float] = []
        self.to_run = 0
        self.began = time.perf_counter()

    def __enter__(self) -> RichSuiteProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event.kind == "note":
            self.progress.console.print(f"[cyan]{escape(event.message)}[/]")
        elif event.stage == "suite" and event.kind == "start":
            self.begin(event.data["plan"])
        elif event.stage == "cell" and event.kind == "start":
            self.cell_started(event.data["cell"])
        elif event.stage == "cell" and event.kind == "end":
            self.cell_finished(event.data["cell"], event.data["result"])

    def begin(self, plan: list[PlannedCell]) -> None:
        reused = sum(p.action == "reuse" for p in plan)
        self.to_run = len(plan) - reused
        self.began = time.perf_counter()
        self.task = self.progress.add_task("cells", total=len(plan), completed=reused, eta="?", current="")
        self._refresh()

    def cell_started(self, cell: Cell) -> None:
        self.in_flight[cell.cell_id] = time.perf_counter()
        self._refresh()

    def cell_finished(self, cell: Cell, result: dict[str, Any]) -> None:
        self.durations.append(time.perf_counter() - self.in_flight.pop(cell.cell_id, time.perf_counter()))
        measured = result.get("measured") or {}
        if result.get("status") == "ok":
            ap = measured.get("mask_AP")
            detail = f"mask AP {100 * ap:.1f}" if isinstance(ap, float) else "ok"
            mark = "[green]✓[/]"
        else:
            detail, mark = f"[red]failed: {escape(str(result.get('error')))}[/]", "[red]✗[/]"
        self.console.print(
            f"{mark} {cell.cell_id} {escape(str(cell.spec))} seed {cell.seed}: {detail} ({self.durations[-1]:.0f} s)"
        )
        self.progress.advance(self.task)
        self._refresh()

    def _refresh(self) -> None:
        remaining = self.to_run - len(self.durations)
        if self.durations and remaining > 0:
            seconds = int((time.perf_counter() - self.began) / len(self.durations) * remaining)
            eta = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        else:
            eta = "0:00:00" if remaining <= 0 else "?"
        ids = list(self.in_flight)
        current = ", ".join(ids[:3]) + (f" +{len(ids) - 3}" if len(ids) > 3 else "")
        self.progress.update(self.task, eta=eta, current=f"running {current}" if ids else "")


def print_plan(plan: list[PlannedCell], skipped: tuple[str, ...]) -> None:
    """The expanded grid, one row per cell, with what this run would do with it."""
    table = Table(title="Cells (variant × seed)")
    for column in ("cell", "variant", "spec", "seed", "action", "previous"):
        table.add_column(column)
    for p in plan:
        previous = "" if p.previous is None else str(p.previous.get("status"))
        previous += ", data changed" if p.stale else ""
        action = "[yellow]run[/]" if p.action == "run" else "[green]reuse[/]"
        table.add_row(p.cell.cell_id, p.cell.spec.name, str(p.cell.spec), str(p.cell.seed), action, previous)
    out = console()
    out.print(table)
    for line in skipped:
        out.print(f"skipped (invalid combination): {escape(line)}")


def ablate_cli(
    suite: Annotated[Path, typer.Argument(help="Suite YAML, e.g. suites/quick.yaml.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Results root; the suite writes to OUT/<suite-name>/.")] = Path(
        "results/ablate"
    ),
    force: Annotated[bool, typer.Option("--force", help="Redo every cell, even finished ones.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Redo the cells whose previous run failed.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the expanded grid and what would run; write nothing.")
    ] = False,
    executor: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster).")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local Ray instance).", show_default=False)
    ] = None,
    workers: Annotated[int, typer.Option(help="Local executor: cells run in this many processes.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only this cell id (or unique prefix); repeatable.", show_default=False),
    ] = None,
    plugin: PluginOption = None,
) -> None:
    """Run a suite's grid: each cell (one variant, one seed) trains, is evaluated (mask/box AP) and has its mask
    branch timed at the suite's instance counts. Finished cells are reused; exit status 1 if any cell failed."""
    load_plugin_options(plugin)
    spec = load_suite(suite)
    if dry_run:
        plan = plan_suite(spec, out, force=force, retry_failed=retry_failed, only=only, data_id=current_data_id(spec))
        print_dry_run(spec, plan)
        return
    print_notes(spec, out)
    try:
        with sigterm_as_interrupt(), RichSuiteProgress() as progress:
            outcome = run_suite(
                spec, out=out, device=device, force=force, retry_failed=retry_failed, only=only, executor=executor,
                workers=workers, address=address, events=progress,
            )  # fmt: skip
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated): the same line, its own exit status
        raise stopped(err, out / spec.name) from None  # not KeyboardInterrupt: the group would add its generic line
    print_outcome(spec, outcome)


def stopped(err: KeyboardInterrupt, suite_dir: Path) -> typer.Exit:
    """Say what a stopped run kept and how to resume; the exit to raise (130 for Ctrl-C, 143 for SIGTERM)."""
    kept = sum(not p.parent.name.startswith(".") for p in suite_dir.glob(f"*/{RESULT_FILE}"))
    console(stderr=True).print(
        f"{stop_word(err)}: {kept} finished cells kept in {suite_dir}; run the same command again to resume"
    )
    return typer.Exit(stop_code(err))


def print_dry_run(spec: SuiteSpec, plan: list[PlannedCell]) -> None:
    """The plan, and what running it would do (nothing is written)."""
    print_plan(plan, spec.skipped)
    to_run = sum(p.action == "run" for p in plan)
    console().print(
        f"{spec.name}: {len(plan)} cells, {to_run} to run, {len(plan) - to_run} reused; "
        f"speed at N={list(spec.speed.instances)}, {format_size(spec.speed.image_size)} (dry run: nothing written)"
    )


def print_notes(spec: SuiteSpec, out: Path) -> None:
    """Before a run: the grid's skipped combinations, and the one-time stage the first cell may train."""
    for line in spec.skipped:
        console().print(f"skipped (invalid combination): {escape(line)}")
    if spec.train.protocol in ("finetune", "shared-trunk"):  # the one-time stage runs inside the first cell
        what = "pretraining" if spec.train.protocol == "finetune" else "shared trunk"
        console().print(
            f"[cyan]note: unless cached in {escape(str(out / spec.name / 'trunks'))}, the first cell also trains the "
            f"{what} once ({spec.train.trunk_iters} steps of {spec.train.batch_size} images), for every cell[/]"
        )


def print_outcome(spec: SuiteSpec, outcome: SuiteOutcome) -> None:
    """The counts and the summary's path; exit status 1 when a cell failed."""
    console().print(
        f"{spec.name}: {outcome.total} cells, ran {outcome.ran}, reused {outcome.reused}, "
        f"failed {len(outcome.failed)}; summary: {outcome.suite_dir / 'summary.csv'}"
    )
    if outcome.failed:
        console().print(f"[red]failed cells: {', '.join(outcome.failed)}[/] (rerun with --retry-failed)")
        raise typer.Exit(1)
