"""How a model trains: TrainConfig (stored in its checkpoint, and a suite's ``train:`` section), the protocol names
and the config's checks.

A field's metadata says what its type alone cannot (choices, minimum, ...); bmbench.ablation.fields.load_dataclass
reads a suite's section from it, and `check_config` checks a config built in code or from CLI options the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_origin, get_type_hints

from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.variants import parse_spec

Protocol = Literal["shared-trunk", "joint", "finetune"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
IMAGE_MULTIPLE = 32  # the coarsest FPN stride: image sides are padded to it
DEFAULT_IMAGE_SIZE = 256  # the image size when neither the config nor the dataset gives one


_PROTOCOL_HELP = (
    f"{' | '.join(PROTOCOLS)}: a cached trunk and the mask head alone; end to end; or a model pretrained once, "
    "then end to end with a fresh head."
)
_INIT_HELP = (
    "Backbone weights: torchvision:<WeightsEnum> (e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2, downloaded) or a "
    "state-dict file. Default: random."
)


def _trunks() -> tuple[str, ...]:
    return tuple(TRUNKS)


@dataclass(frozen=True)
class TrainConfig:
    """How a model trains; stored in its checkpoint. A field whose metadata has a "help" is also an option of
    `bmbench train`, with that help (bmbench.cli.options generates them)."""

    # shared-trunk: a detector trained once, then each mask head on its frozen features; joint: end to end from
    # the init; finetune: a model pretrained jointly once, then each cell end to end with a fresh head of its own.
    # Joint by default: a small explicit request runs no unasked one-time stage.
    protocol: Protocol = field(default="joint", metadata={"help": _PROTOCOL_HELP})
    # optimiser steps (shared-trunk: of the mask head)
    iters: int = field(default=200, metadata={"minimum": 1, "help": "Optimiser steps (shared-trunk: of the head)."})
    batch_size: int = field(default=8, metadata={"minimum": 1, "help": "Images per step."})
    # AdamW peak lr (warm-up, then cosine decay to 0)
    lr: float = field(
        default=2e-3, metadata={"positive": True, "help": "AdamW peak learning rate (warm-up, then cosine decay)."}
    )
    # model initialisation, data order, flips and mask-positive sampling
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, data order and flips."})
    # a key of bmbench.models.backbone.TRUNKS
    trunk: str = field(
        default="small", metadata={"choices": _trunks, "help": f"Backbone + detector widths: {', '.join(TRUNKS)}."}
    )
    # longer image side after resizing, a multiple of 32; None: the dataset's longest side, rounded up to 32
    image_size: int | None = field(
        default=None,
        metadata={
            "minimum": IMAGE_MULTIPLE,
            "multiple": IMAGE_MULTIPLE,
            "help": "Longer image side (multiple of 32). Default: the dataset's own.",
        },
    )
    # shared-trunk / finetune: steps of the one-time training (trunk or pretraining)
    trunk_iters: int = field(
        default=1000, metadata={"minimum": 1, "help": "shared-trunk / finetune: steps of the one-time stage."}
    )
    # its lr; None: lr
    trunk_lr: float | None = field(
        default=None,
        metadata={"positive": True, "help": "shared-trunk / finetune: one-time stage's lr. Default: --lr."},
    )
    # finetune: the mask head the pretraining trains with (then discarded); "none": detection + semantic loss only,
    # the default: measured on the demo, a Mask R-CNN-head pretraining tilts the grid toward the Mask R-CNN cell
    # (25.7 vs 19.9 oracle AP; BlendMask cells within 0.6 AP either way) and costs 7x the time
    pretrain_head: str = "none"
    pretrain_seed: int = 0  # finetune: the pretraining's seed (one pretraining serves every cell seed)
    stream: bool = True  # a synthetic dataset trains on a seeded stream of new scenes, not its train split
    # backbone initialisation: torchvision:<WeightsEnum> or a state-dict file; None: random
    init: str | None = field(default=None, metadata={"help": _INIT_HELP})
    warmup_iters: int = 50  # linear warm-up from lr/1000 (at most a quarter of the steps)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    clip_norm: float = field(default=5.0, metadata={"positive": True})  # gradient norm clipping
    # positives per step that the mask loss uses (sampled with a seeded generator); None: every positive (AdelaiDet).
    # Kept at 64: at 128 px a batch of 8 has 69.5 positives on average (10 stream batches), so the cap keeps 92 %
    # of them; at larger sizes it bounds the mask loss's cost.
    max_mask_positives: int | None = field(default=64, metadata={"minimum": 1})
    flip: bool = True  # random horizontal flips (seeded per epoch and image)
    # train the trunk's P3 on an auxiliary semantic loss too (a training-only head)
    semantic_aux: bool = field(default=True, metadata={"help": "Auxiliary semantic loss on the trunk's FPN."})
    # that loss: ce (AdelaiDet's: C + 1 classes, weight 0.3; measured: 300 joint steps at 128 px on light scenes,
    # 17.3 oracle mask AP against 15.5 with bce, one seed) or bce (per-class foreground, weight 1)
    semantic_loss: Literal["bce", "ce"] = "ce"
    # the FPN level it reads: p3 (stride 8, the default) or p2 (stride 4, where the bases and Mask R-CNN's small RoIs
    # read). Measured (quick suite's cell 56x4x7, its own 2,400-step pretraining, one seed): p2 26.0 oracle mask AP
    # against 25.3, at 884 s against 667 s of pretraining and 118 s against 97 s a cell
    semantic_level: Literal["p3", "p2"] = field(
        default="p3", metadata={"help": "p3 | p2: the FPN level the auxiliary semantic loss reads."}
    )

    def resolved(self, *, image_size: int) -> TrainConfig:
        """This config with the defaults that depend on the run filled in: the image size (given: the dataset's)
        and the trunk's learning rate."""
        return replace(
            self,
            image_size=self.image_size if self.image_size is not None else image_size,
            trunk_lr=self.lr if self.trunk_lr is None else self.trunk_lr,
        )


def image_size_for(longest_side: int | None) -> int:
    """The training image size a dataset implies: its longest side rounded up to a multiple of 32."""
    if longest_side is None:
        return DEFAULT_IMAGE_SIZE
    return max(IMAGE_MULTIPLE, -(-longest_side // IMAGE_MULTIPLE) * IMAGE_MULTIPLE)


def loop_options(config: TrainConfig) -> dict[str, Any]:
    """The config's settings that the optimisation loop takes."""
    return {
        "seed": config.seed,
        "warmup_iters": config.warmup_iters,
        "weight_decay": config.weight_decay,
        "clip_norm": config.clip_norm,
    }


def check_config(config: TrainConfig) -> None:
    """Raise BmbenchError naming the first field whose value its declaration does not allow."""
    if config.protocol not in PROTOCOLS:
        raise BmbenchError(f"unknown protocol {config.protocol!r} (use {' or '.join(PROTOCOLS)})")
    if config.trunk not in TRUNKS:
        raise BmbenchError(f"unknown trunk {config.trunk!r} (known: {', '.join(TRUNKS)})")
    hints = get_type_hints(TrainConfig)
    for item in fields(TrainConfig):
        value, meta = getattr(config, item.name), item.metadata
        if value is None:
            continue
        if get_origin(hints[item.name]) is Literal and value not in get_args(hints[item.name]):
            allowed = " or ".join(get_args(hints[item.name]))
            raise BmbenchError(f"{item.name} must be {allowed}, got {value!r}")
        if "minimum" in meta and item.name != "image_size" and (not isinstance(value, int) or value < meta["minimum"]):
            raise BmbenchError(f"{item.name} must be a positive integer, got {value!r}")
        if meta.get("positive") and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise BmbenchError(f"{item.name} must be a positive number, got {value!r}")
    if config.seed < 0 or config.pretrain_seed < 0:
        raise BmbenchError(f"seeds must be non-negative, got {config.seed} and {config.pretrain_seed}")
    if config.protocol == "finetune" and config.pretrain_head != "none":
        try:
            parse_spec(config.pretrain_head)
        except BmbenchError as err:
            raise BmbenchError(f"pretrain_head: {err}") from None
    size = config.image_size
    if size is not None and (size < IMAGE_MULTIPLE or size % IMAGE_MULTIPLE):
        raise BmbenchError(f"image size must be a multiple of 32 (at least 32), got {size}")
