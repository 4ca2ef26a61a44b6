"""`bmbench data synth`: write the procedurally generated shapes dataset in COCO layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bmbench.cli.console import console
from bmbench.data.synth import CATEGORIES, describe_dataset, write_synthetic_dataset

data_app = typer.Typer(help="Datasets: generate the synthetic shapes dataset (COCO layout).", no_args_is_help=True)


@data_app.command("synth")
def synth_cli(
    out: Annotated[Path, typer.Option("--out", help="Folder to write; must be absent or empty.")],
    images: Annotated[int, typer.Option("--images", help="Number of images, train and val together.")] = 400,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; equal seeds give identical files.")] = 0,
) -> None:
    """Write a synthetic instance-segmentation dataset (rings, combs, crescents, stars) in COCO-2017 layout."""
    root = write_synthetic_dataset(out, num_images=images, size=size, seed=seed)
    counts = describe_dataset(root)
    console().print(
        f"wrote {counts['images']} images, {counts['instances']} instances, "
        f"{counts['classes']} classes ({', '.join(CATEGORIES)}) to {root}",
        soft_wrap=True,
    )
