"""The rich console the commands print to: wide enough for our tables when output is not a terminal."""

from __future__ import annotations

from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A Console; when not writing to a terminal (pipes, CI, CliRunner) it is 160 columns wide, not 80."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=160)
