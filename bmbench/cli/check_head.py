"""`bmbench check-head SPEC`: run the mask-head contract (bmbench.ablation.contract) and print one line a check."""

from __future__ import annotations

from typing import Annotated

import typer

from bmbench.ablation.contract import CHECKS, run_contract
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.variants import family_origin, parse_spec


def check_head_cli(
    spec: Annotated[str, typer.Argument(help="Preset or spec of the head to check, e.g. condinst or mine:R=28.")],
    plugin: PluginOption = None,
    trunk: Annotated[str, typer.Option(help=f"Trunk widths: {', '.join(TRUNKS)}.")] = "small",
) -> None:
    """Check that a head keeps the contract: shapes and dtypes at N = 0, 1, 100; device and dtype follow the
    inputs; a gradient reaches every parameter; 30 training steps lower its mask loss; one speed point and one
    evaluation run; the same seed gives the same outputs. Exit code 1 when a check fails."""
    load_plugin_options(plugin)
    if trunk not in TRUNKS:
        raise BmbenchError(f"unknown trunk {trunk!r} (known: {', '.join(TRUNKS)})")
    chosen = parse_spec(spec)
    typer.echo(f"{chosen} from {family_origin(chosen.family)}, trunk {trunk}: {len(CHECKS)} checks")
    results = run_contract(chosen, trunk=trunk)
    for result in results:
        typer.secho(result.line(), fg=None if result.ok else "red")
    failed = [result.name for result in results if not result.ok]
    seconds = sum(result.seconds for result in results)
    if failed:
        typer.secho(f"{len(failed)} of {len(results)} checks failed ({', '.join(failed)}) in {seconds:.0f} s", fg="red")
        raise typer.Exit(1)
    typer.echo(f"all {len(results)} checks passed in {seconds:.0f} s")
