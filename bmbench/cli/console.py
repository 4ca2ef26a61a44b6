"""The rich console the commands print to (wide enough for our tables when output is not a terminal), and the
one-line form of bmbench's warnings."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TextIO

import typer
from rich.console import Console

from bmbench.errors import BmbenchWarning


def console(stderr: bool = False) -> Console:
    """A Console; when not writing to a terminal (pipes, CI, CliRunner) it is 160 columns wide, not 80."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=160)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """While inside, a `BmbenchWarning` prints as ``warning: <message>`` on stderr, one line, each distinct message
    once (two readers of one file report it once); other warnings print as Python prints them. The library
    reports through `warnings.warn(..., BmbenchWarning)` and never draws; this is the one place that formats it."""
    shown: set[str] = set()
    python_show = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, BmbenchWarning):
            python_show(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())  # one line, whatever the message holds
        if text not in shown:
            shown.add(text)
            typer.secho(f"warning: {text}", err=True, fg="yellow")

    with warnings.catch_warnings():
        warnings.simplefilter("always", BmbenchWarning)  # dedup is ours, per command, not Python's per process
        warnings.showwarning = show
        yield
