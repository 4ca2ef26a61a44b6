"""How a model trains: TrainConfig (stored in its checkpoint), the protocol names and the config's checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS

PROTOCOLS = ("joint", "shared-trunk")


@dataclass(frozen=True)
class TrainConfig:
    """How a model trains; stored in its checkpoint."""

    protocol: str = "shared-trunk"  # joint | shared-trunk
    iters: int = 200  # optimiser steps (shared-trunk: of the mask head)
    batch_size: int = 8  # images per step
    lr: float = 2e-3  # AdamW peak learning rate (after warm-up, then cosine decay to 0)
    seed: int = 0  # model initialisation, data order, flips and mask-positive sampling
    trunk: str = "small"  # a key of bmbench.models.backbone.TRUNKS
    image_size: int = 256  # longer image side after resizing
    trunk_iters: int = 1000  # shared-trunk: steps of the trunk's one-time training (861 s on a 2-core CPU)
    trunk_lr: float = 2e-3  # shared-trunk: the trunk's peak learning rate
    warmup_iters: int = 50  # linear warm-up from lr/1000
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    clip_norm: float = 5.0  # gradient norm clipping
    max_mask_positives: int = 64  # positives per step that the mask loss uses (sampled with a seeded generator)
    flip: bool = True  # random horizontal flips (seeded per epoch and image)
    semantic_aux: bool = True  # train the trunk's P3 on an auxiliary semantic loss too (a training-only head)


def _loop_options(config: TrainConfig) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "warmup_iters": config.warmup_iters,
        "weight_decay": config.weight_decay,
        "clip_norm": config.clip_norm,
    }


def _check_config(config: TrainConfig) -> None:
    if config.protocol not in PROTOCOLS:
        raise BmbenchError(f"unknown protocol {config.protocol!r} (use {' or '.join(PROTOCOLS)})")
    if config.trunk not in TRUNKS:
        raise BmbenchError(f"unknown trunk {config.trunk!r} (known: {', '.join(TRUNKS)})")
    for name in ("iters", "batch_size", "trunk_iters", "max_mask_positives"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise BmbenchError(f"{name} must be a positive integer, got {value!r}")
    for name in ("lr", "trunk_lr"):
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise BmbenchError(f"{name} must be a positive number, got {value!r}")
    if config.seed < 0:
        raise BmbenchError(f"seed must be non-negative, got {config.seed}")
    if config.image_size < 32 or config.image_size % 32:
        raise BmbenchError(f"image size must be a multiple of 32 (at least 32), got {config.image_size}")
