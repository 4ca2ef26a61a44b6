"""`bmbench variants`: every family with where it came from, then the presets (or given specs) with K, M, R,
parameters and FLOPs per stage (a closed form; a plugin without one: counted by torch.utils.flop_counter)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bmbench.bench.cost import REFERENCE_IMAGE, REFERENCE_INSTANCES, describe
from bmbench.cli.console import console
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.variants import FAMILIES, PRESETS, VariantSpec, family_origin, parse_specs


def default_specs() -> list[VariantSpec]:
    """The presets, then each family without a preset (a plugin's) at its defaults."""
    specs = list(PRESETS.values())
    preset_families = {spec.family for spec in specs}
    return specs + [VariantSpec(name, **f.defaults) for name, f in FAMILIES.items() if name not in preset_families]


def family_rows() -> list[dict[str, str]]:
    """One row per registered family: name, fields with defaults, fixed fields, origin, summary."""
    return [
        {
            "family": name,
            "fields": ",".join(f"{key}={value}" for key, value in family.defaults.items()),
            "fixed": ",".join(f"{key}={value}" for key, value in family.fixed.items()) or "–",
            "origin": str(family_origin(name)),
            "summary": family.summary,
        }
        for name, family in FAMILIES.items()
    ]


def variants_cli(
    specs: Annotated[
        list[str] | None,
        typer.Argument(help="Specs or presets to describe, e.g. blendmask:K=1,M=7,R=28. Default: all presets."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    trunk: Annotated[str, typer.Option(help=f"Trunk widths for parameters and FLOPs: {', '.join(TRUNKS)}.")] = "r50",
    plugin: PluginOption = None,
) -> None:
    """List the variant presets with K, M, R, mask-branch parameters and analytic GFLOPs of each stage
    (800x1088 image, N=100, COCO's 80 classes)."""
    if trunk not in TRUNKS:
        raise BmbenchError(f"unknown trunk {trunk!r} (known: {', '.join(TRUNKS)})")
    load_plugin_options(plugin)
    chosen = [spec for text in specs for spec in parse_specs(text)] if specs else default_specs()
    rows = describe(chosen, trunk=trunk)
    for row, spec in zip(rows, chosen, strict=True):
        row["origin"] = str(family_origin(spec.family))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    print_families()
    print_variants(rows, trunk=trunk)


def print_families() -> None:
    """One row per registered family (see family_rows)."""
    families = Table(title="Mask-head families")
    for column in ("family", "fields", "fixed", "origin", "summary"):
        families.add_column(column)
    for family in family_rows():
        families.add_row(*family.values())
    console().print(families)


def print_variants(rows: list[dict], *, trunk: str) -> None:
    """One row per variant: K, M, R, S, mask-branch parameters and GFLOPs per stage; then which were counted."""
    H, W = REFERENCE_IMAGE
    table = Table(title=f"Mask-head variants — GFLOPs at {W}x{H}, N={REFERENCE_INSTANCES}, trunk {trunk}")
    stages = ("bottom", "top", "merge", "paste", "total")
    for column in ("variant", "spec", "K", "M", "R", "S", "params", *stages):
        table.add_column(column, justify="left" if column in ("variant", "spec") else "right")
    for row in rows:
        table.add_row(
            str(row["variant"]),
            str(row["spec"]),
            *("–" if row[key] is None else str(row[key]) for key in ("K", "M", "R", "S")),
            f"{row['mask_params'] / 1e6:.2f}M",
            *(f"{row[f'{stage}_gflops']:.2f}" for stage in stages),
        )
    console().print(table)
    counted = sorted({str(row["variant"]) for row in rows if row["flops_from"] == "flop_counter"})
    if counted:
        console().print(
            f"GFLOPs of {', '.join(counted)}: no formula in the plugin, counted with torch.utils.flop_counter on one "
            "run (convolutions and matmuls only)",
            markup=False,
        )
