"""`bmbench data synth`: write the procedurally generated shapes dataset in COCO layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bmbench.cli.console import console
from bmbench.data.scenes import CATEGORIES, DEFAULT_DIFFICULTY, DIFFICULTIES
from bmbench.data.synth import describe_dataset, write_synthetic_dataset
from bmbench.results import check_out_dir

data_app = typer.Typer(help="Datasets: generate the synthetic shapes dataset (COCO layout).", no_args_is_help=True)


@data_app.command("synth")
def synth_cli(
    out: Annotated[Path, typer.Option("--out", help="Folder to write; must be absent or empty.")],
    images: Annotated[int, typer.Option("--images", help="Number of images, train and val together.")] = 400,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; equal seeds give identical files.")] = 0,
    difficulty: Annotated[
        str,
        typer.Option(
            "--difficulty",
            help=f"Scenes: {' | '.join(DIFFICULTIES)} (light: 2-4 instances on a flat background, which a CPU "
            "learns; hard: 3-9 instances, wider size range, textured backgrounds).",
        ),
    ] = DEFAULT_DIFFICULTY,
) -> None:
    """Write a synthetic instance-segmentation dataset (rings, combs, crescents, stars) in COCO-2017 layout.

    Each annotation lists its subsets (touching, thin) in a "subsets" field that pycocotools ignores."""
    check_out_dir(out)  # a parent that is a file: one line, before anything is drawn
    root = write_synthetic_dataset(out, num_images=images, size=size, seed=seed, difficulty=difficulty)
    counts = describe_dataset(root)
    console().print(
        f"wrote {counts['images']} {difficulty} images, {counts['instances']} instances "
        f"({counts['touching']} touching, {counts['thin']} thin), "
        f"{counts['classes']} classes ({', '.join(CATEGORIES)}) to {root}",
        soft_wrap=True,
    )
