"""The ``--plugin MODULE`` option that every command taking variants has, and the loading it triggers."""

from __future__ import annotations

from typing import Annotated

import typer

from bmbench.variants import load_plugins

PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        metavar="MODULE",
        help="Import MODULE and register the head families of its BMBENCH_HEADS dict (repeatable); installed "
        "packages' bmbench.heads entry points load without it. See docs/plugins.md.",
    ),
]


def load_plugin_options(modules: list[str] | None) -> None:
    """Register the entry points' families and those of each --plugin module (BmbenchError when one fails)."""
    load_plugins(modules or ())
