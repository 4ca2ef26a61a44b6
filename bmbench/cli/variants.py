"""`bmbench variants`: the presets (or given specs) with K, M, R, parameters and analytic FLOPs per stage."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bmbench.bench.cost import REFERENCE_IMAGE, REFERENCE_INSTANCES, describe
from bmbench.cli.console import console
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.variants import PRESETS, parse_specs


def variants_cli(
    specs: Annotated[
        list[str] | None,
        typer.Argument(help="Specs or presets to describe, e.g. blendmask:K=1,M=7,R=28. Default: all presets."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    trunk: Annotated[str, typer.Option(help=f"Trunk widths for parameters and FLOPs: {', '.join(TRUNKS)}.")] = "r50",
) -> None:
    """List the variant presets with K, M, R, mask-branch parameters and analytic GFLOPs of each stage
    (800x1088 image, N=100, COCO's 80 classes)."""
    if trunk not in TRUNKS:
        raise BmbenchError(f"unknown trunk {trunk!r} (known: {', '.join(TRUNKS)})")
    chosen = [spec for text in specs for spec in parse_specs(text)] if specs else list(PRESETS.values())
    rows = describe(chosen, trunk=trunk)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    H, W = REFERENCE_IMAGE
    table = Table(title=f"Mask-head variants — GFLOPs at {W}x{H}, N={REFERENCE_INSTANCES}, trunk {trunk}")
    for column in (
        "variant",
        "spec",
        "K",
        "M",
        "R",
        "S",
        "params",
        "bottom",
        "top",
        "merge",
        "paste",
        "total",
    ):
        table.add_column(column, justify="left" if column in ("variant", "spec") else "right")
    for row in rows:
        dash = lambda v: "–" if v is None else str(v)  # noqa: E731
        table.add_row(
            str(row["variant"]),
            str(row["spec"]),
            *(dash(row[key]) for key in ("K", "M", "R", "S")),
            f"{row['mask_params'] / 1e6:.2f}M",
            *(f"{row[f'{stage}_gflops']:.2f}" for stage in ("bottom", "top", "merge", "paste", "total")),
        )
    console().print(table)
