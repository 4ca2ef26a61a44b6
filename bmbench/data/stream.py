"""Training scenes as a stream: endless seeded batches of new synthetic scenes, so that no training scene repeats.

Scene i of a stream draws from its own `numpy` Generator seeded with (seed, i, STREAM_TAG): the same seed gives the
same batches whatever the batch size, another seed gives others, and no scene is one of the images that
`bmbench.data.synth.write_synthetic_dataset` writes (those are seeded with (seed, i)), so the val split on disk stays
unseen.

A batch is exactly what `bmbench.training.loop.training_batches` yields for a COCO dataset: the scene is drawn at
`render_size`, resized to `image_size`, made into an item by `bmbench.data.coco.build_item` as a COCO dataset's
are, and collated by `bmbench.data.coco.collate`. There are no flips: fresh scenes are already mirror-symmetric in
distribution.

Letters: B images per batch, N instances of an image, H x W the padded image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bmbench.data.coco import SIZE_DIVISOR, build_item, collate
from bmbench.data.scenes import CATEGORIES, DEFAULT_DIFFICULTY, get_difficulty, render_image
from bmbench.data.synth import synthetic_info
from bmbench.errors import BmbenchError

STREAM_TAG = 0x5354524D  # "STRM": a last seed word no dataset image uses (numpy ignores trailing zero words)
NUM_CLASSES = len(CATEGORIES)


def scene_sample(
    seed: int, index: int, *, image_size: int, render_size: int | None = None, difficulty: str = DEFAULT_DIFFICULTY
) -> tuple[Tensor, dict[str, Any]]:
    """Scene `index` of stream `seed` as one dataset item: (image: Tensor[3, H, W] normalised, target).

    The target has the fields of `CocoInstanceDataset` items: boxes Tensor[N, 4] xyxy (the masks' extent),
    labels Tensor[N] int64 in 0..3, masks Tensor[N, H, W] uint8, iscrowd Tensor[N] uint8 (zeros), image_id
    (= index), orig_size, size and scale. The scene is drawn at `render_size` (default: `image_size`).
    """
    render_size = image_size if render_size is None else render_size
    pixels, instances = render_image(np.random.default_rng([seed, index, STREAM_TAG]), render_size, difficulty)
    scale = image_size / render_size
    image = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)  # (3, h, w)
    if instances:
        masks = torch.from_numpy(np.stack([mask for _, mask in instances])).to(torch.uint8)  # (N, h, w)
    else:
        masks = torch.zeros((0, render_size, render_size), dtype=torch.uint8)
    labels = torch.tensor([kind for kind, _ in instances], dtype=torch.int64)
    if render_size != image_size:  # as CocoInstanceDataset resizes
        image = F.interpolate(image[None], size=(image_size, image_size), mode="bilinear", antialias=True)[0]
        if len(masks):
            resized = F.interpolate(
                masks[:, None].float(), size=(image_size, image_size), mode="bilinear", antialias=scale < 1
            )[:, 0]
            masks = (resized >= 0.5).to(torch.uint8)
        else:
            masks = torch.zeros((0, image_size, image_size), dtype=torch.uint8)
    iscrowd = torch.zeros(len(labels), dtype=torch.uint8)
    orig_size = (render_size, render_size)
    return build_item(image, masks, labels, iscrowd, image_id=index, orig_size=orig_size, scale=scale)


def synthetic_batches(
    *,
    batch_size: int,
    image_size: int,
    seed: int,
    render_size: int | None = None,
    difficulty: str = DEFAULT_DIFFICULTY,
    start: int = 0,
) -> Iterator[tuple[Tensor, list[dict[str, Any]]]]:
    """Endless batches (images: Tensor[B, 3, H, W], targets) of new scenes: batch s holds scenes
    ``start + s*B .. start + (s+1)*B - 1`` of stream `seed` (see `scene_sample`). Bad arguments raise BmbenchError
    when the generator is made, before the first batch is drawn."""
    if batch_size < 1:
        raise BmbenchError(f"batch size must be positive, got {batch_size}")
    if image_size < SIZE_DIVISOR:
        raise BmbenchError(f"image_size must be at least {SIZE_DIVISOR}, got {image_size}")
    if render_size is not None and render_size < 64:
        raise BmbenchError(f"render size must be at least 64 px, got {render_size}")
    if seed < 0 or start < 0:
        raise BmbenchError(f"seed and start must be non-negative, got {seed} and {start}")
    get_difficulty(difficulty)
    return _batches(batch_size, image_size, seed, render_size, difficulty, start)


def dataset_stream(
    root: Path, *, batch_size: int, image_size: int, seed: int
) -> Iterator[tuple[Tensor, list[dict[str, Any]]]] | None:
    """The stream that replaces the train split of the synthetic dataset under `root`: its difficulty, drawn at its
    size and resized to `image_size`, as its val split is read. None when `root` is not a dataset that
    `write_synthetic_dataset` wrote (a COCO-format dataset trains on its train split as before)."""
    info = synthetic_info(root)
    if info is None:
        return None
    return synthetic_batches(
        batch_size=batch_size, image_size=image_size, seed=seed, render_size=info.size, difficulty=info.difficulty
    )


def _batches(
    batch_size: int, image_size: int, seed: int, render_size: int | None, difficulty: str, start: int
) -> Iterator[tuple[Tensor, list[dict[str, Any]]]]:
    index = start
    while True:
        items = [
            scene_sample(seed, i, image_size=image_size, render_size=render_size, difficulty=difficulty)
            for i in range(index, index + batch_size)
        ]
        index += batch_size
        yield collate(items)
