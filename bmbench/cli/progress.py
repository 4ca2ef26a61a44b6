"""Draws the library's progress events (bmbench.results.Event) with rich: one bar per stage, named after it, and
the notes a one-time stage sends before it starts (what it is, its step count, its estimated time)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from bmbench.cli.console import console
from bmbench.results import Event

STAGE_NAMES = {  # what the bar says is running
    "trunk": "shared trunk (one-time)",
    "pretrain": "pretraining (one-time)",
    "mask": "mask head",
    "joint": "joint training",
    "finetune": "fine-tuning",
    "evaluate": "evaluating",
}


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed or 0.0:.2f} it/s")


class RichEvents:
    """An EventHook that draws on stderr; use as a context manager around the library call."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.console = console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichEvents:
        return self  # the bar starts with the first stage: a failure before any leaves no blank line behind

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event.kind == "note":
            self.progress.console.print(f"[cyan]{escape(event.message)}[/]")
            return
        if not self.tasks:
            self.progress.start()
        if event.kind == "start" or event.stage not in self.tasks:
            name = STAGE_NAMES.get(event.stage, event.stage)
            self.tasks[event.stage] = self.progress.add_task(name, total=event.total, detail="")
        task = self.tasks[event.stage]
        if event.kind == "advance":
            loss = event.data.get("loss")
            detail = f"loss {loss:.3f}" if isinstance(loss, float) else ""
            self.progress.update(task, completed=event.completed, total=event.total, detail=detail)
        elif event.kind == "end":
            self.progress.update(task, completed=event.completed, total=event.total)
