"""Shared fixtures: tiny sizes so the whole suite stays well inside CI's time on 2 cores."""

from __future__ import annotations

import pytest
import torch
import typer


@pytest.fixture(scope="package")  # wide enough for the module-scoped fixtures that train once
def cli_app() -> typer.Typer:
    """The real `bmbench` app, as the console script runs it: each command is resolved by name through
    bmbench.cli.load_command (its module imported then), inside the group that turns a BmbenchError into one line and
    exit code 2. CLI tests invoke it with typer's CliRunner instead of wrapping a command function themselves."""
    from bmbench.cli import app

    return app


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
