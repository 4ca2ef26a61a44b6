"""Training for AP: the `joint` and `shared-trunk` protocols, seeded (deterministic on the CPU), with checkpoints.

- `joint`: backbone, FPN, detector and mask head train together on FCOS + mask losses, as the papers do.
- `shared-trunk`: backbone + FPN + detector train once on the FCOS losses; the result is cached under a key of
  everything that changes it (dataset, trunk, image size, steps, lr, batch, seed) and reused by every variant.
  Then only the variant's mask head trains, on the frozen trunk's features (trunk in eval mode, no gradients).

Both protocols add, by default, an auxiliary semantic-segmentation loss on P3 (per-class foreground at stride 8,
through a small training-only head that is then discarded), as BlendMask and YOLACT train with one. Trained from
scratch on a CPU budget, the detection losses alone leave P3 with little pixel-level shape information, and the
mask heads then learn little more than an average shape on the frozen features.

Letters: B images per step, as in bmbench.models.losses.
"""

from __future__ import annotations

import fcntl
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from bmbench.data.coco import CocoInstanceDataset
from bmbench.device import resolve_device
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.models.fcos import level_points
from bmbench.models.losses import (
    assign_fcos_targets,
    fcos_losses,
    level_size_ranges,
    mask_head_loss,
    select_mask_positives,
    semantic_loss,
    semantic_targets,
)
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.results import atomic_path, run_metadata, write_json, write_table
from bmbench.training.loop import StepLoss, optimise, training_batches
from bmbench.training.trunk import TRUNK_FORMAT, data_identity, default_trunk_cache, load_trunk, trunk_key
from bmbench.variants import VariantSpec, build_segmenter, parse_spec

PROTOCOLS = ("joint", "shared-trunk")
CHECKPOINT_FORMAT = "bmbench-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_STEM = "train_log"


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


@dataclass
class TrainResult:
    """What `train` produced."""

    checkpoint: Path  # the checkpoint file
    log: Path  # the train log table (CSV; a Parquet twin sits beside it)
    metrics: dict[str, Any] = field(default_factory=dict)  # timings, throughput, final losses, trunk cache use


# --- losses of the three kinds of step --------------------------------------------------------------------------

SEMANTIC_LEVEL, SEMANTIC_STRIDE = "p3", 8  # where the auxiliary semantic head reads: the finest level the bases use


def build_semantic_head(*, in_channels: int, num_classes: int) -> nn.Module:
    """Training-only auxiliary head on P3 (3x3 conv, ReLU, 1x1 to per-class logits); discarded after training."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(), nn.Conv2d(in_channels, num_classes, 1)
    )


def _semantic_head(
    config: TrainConfig, num_classes: int, device: torch.device
) -> tuple[nn.Module | None, list[nn.Parameter]]:
    """The auxiliary head when the config asks for one (else None), and the parameters it adds to the optimiser."""
    if not config.semantic_aux:
        return None, []
    head = build_semantic_head(in_channels=TRUNKS[config.trunk].fpn_channels, num_classes=num_classes).to(device)
    return head, list(head.parameters())


def _semantic_term(
    head: nn.Module, features: dict[str, Tensor], targets: list[dict[str, Any]], size: tuple[int, int]
) -> Tensor:
    logits = head(features[SEMANTIC_LEVEL])  # (B, C, H/8, W/8)
    return semantic_loss(
        logits, semantic_targets(targets, num_classes=logits.shape[1], size=size, stride=SEMANTIC_STRIDE)
    )


def _loop_options(config: TrainConfig) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "warmup_iters": config.warmup_iters,
        "weight_decay": config.weight_decay,
        "clip_norm": config.clip_norm,
    }


def detector_step(model: InstanceSegmenter, image_size: int, semantic_head: nn.Module | None = None) -> StepLoss:
    """The trunk's training step: FCOS losses, plus the auxiliary semantic loss when `semantic_head` is given."""

    def step(images: Tensor, targets: list[dict[str, Any]], generator: torch.Generator) -> dict[str, Tensor]:
        features = model.backbone(images)
        outputs = model.detector(features)
        points = level_points([tuple(x.shape[-2:]) for x in outputs.class_logits], images.device)
        assigned = assign_fcos_targets(points, targets, size_ranges=level_size_ranges(image_size))
        losses = fcos_losses(outputs, points, assigned)
        if semantic_head is not None:
            losses["semantic"] = _semantic_term(semantic_head, features, targets, tuple(images.shape[-2:]))
        return losses

    return step


def joint_step(
    model: InstanceSegmenter, image_size: int, max_positives: int, semantic_head: nn.Module | None = None
) -> StepLoss:
    """End-to-end step: FCOS losses, the mask loss on sampled positives, and the auxiliary semantic loss when
    `semantic_head` is given."""

    def step(images: Tensor, targets: list[dict[str, Any]], generator: torch.Generator) -> dict[str, Tensor]:
        out = model(images)
        points = level_points([tuple(x.shape[-2:]) for x in out.detections.class_logits], images.device)
        assigned = assign_fcos_targets(points, targets, size_ranges=level_size_ranges(image_size))
        losses = fcos_losses(out.detections, points, assigned)
        if semantic_head is not None:
            losses["semantic"] = _semantic_term(semantic_head, out.features, targets, tuple(images.shape[-2:]))
        chosen = select_mask_positives(assigned, max_positives, generator)
        losses["mask"] = mask_head_loss(model.mask_head, out.bottom, out.params, targets, assigned, *chosen)
        return losses

    return step


def mask_step(model: InstanceSegmenter, image_size: int, max_positives: int) -> StepLoss:
    """Shared-trunk step: the frozen trunk runs without gradients; only the mask head's stages are trained."""

    def step(images: Tensor, targets: list[dict[str, Any]], generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            features = model.backbone(images)
            detections = model.detector(features)
        bottom = model.mask_head.bottom(features, tuple(images.shape[-2:]))
        params = model.mask_head.top(detections.box_tower)
        points = level_points([tuple(x.shape[-2:]) for x in detections.class_logits], images.device)
        assigned = assign_fcos_targets(points, targets, size_ranges=level_size_ranges(image_size))
        chosen = select_mask_positives(assigned, max_positives, generator)
        return {"mask": mask_head_loss(model.mask_head, bottom, params, targets, assigned, *chosen)}

    return step


# --- the shared trunk --------------------------------------------------------------------------------------------


def shared_trunk(
    model: InstanceSegmenter,
    dataset: CocoInstanceDataset,
    *,
    config: TrainConfig,
    data_id: str,
    cache: Path,
    device: torch.device,
    log_every: int,
    progress: bool,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load the cached trunk for this key into `model`, training and caching it first when absent. A file lock
    makes concurrent runs train it once. Returns the trunk's record (key, log, metrics, whether it was reused)."""
    key = trunk_key(data_id, config, dataset.num_classes)
    path = Path(cache) / f"trunk-{config.trunk}-{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reused = path.is_file()
        if not reused:
            model.train()
            batches = training_batches(dataset, batch_size=config.batch_size, seed=config.seed)
            semantic_head, extra = _semantic_head(config, dataset.num_classes, device)
            step = detector_step(model, config.image_size, semantic_head)
            rows, timing = optimise(
                step,
                model.trunk_parameters() + extra,
                batches,
                stage="trunk",
                iters=config.trunk_iters,
                lr=config.trunk_lr,
                device=device,
                **_loop_options(config),
                log_every=log_every,
                progress=progress,
                on_log=on_log,
            )
            record = {
                "format": TRUNK_FORMAT,
                "key": key,
                "config": asdict(config),
                "data_id": data_id,
                "num_classes": dataset.num_classes,
                "backbone": model.backbone.state_dict(),
                "detector": model.detector.state_dict(),
                "log": rows,
                "metrics": {"trunk_train_s": timing["seconds"], "trunk_images_per_s": timing["images_per_s"]},
            }
            with atomic_path(path) as tmp:
                torch.save(record, tmp)
        state = load_trunk(path)
    model.backbone.load_state_dict(state["backbone"])
    model.detector.load_state_dict(state["detector"])
    return {"key": key, "path": path, "reused": reused, "log": state["log"], "metrics": state["metrics"]}


# --- train -------------------------------------------------------------------------------------------------------


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


def train(
    spec: VariantSpec | str,
    data_dir: Path | None = None,
    *,
    out: Path,
    iters: int = TrainConfig.iters,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    protocol: str = TrainConfig.protocol,
    seed: int = TrainConfig.seed,
    device: str = "auto",
    trunk: str = TrainConfig.trunk,
    image_size: int = TrainConfig.image_size,
    trunk_iters: int = TrainConfig.trunk_iters,
    trunk_lr: float | None = None,
    trunk_cache: Path | None = None,
    max_mask_positives: int = TrainConfig.max_mask_positives,
    semantic_aux: bool = TrainConfig.semantic_aux,
    log_every: int = 10,
    progress: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `spec` on the train split of `data_dir` (default: the synthetic default dataset) and write
    ``out/checkpoint.pt``, ``out/train_log.csv`` (+ .parquet) and ``out/meta.json``.

    Every input is checked before anything is written; bad input raises BmbenchError. Returns the checkpoint and
    log paths and metrics: ``train_s``, ``train_images_per_s`` (the mask-head stage under shared-trunk),
    ``trunk_reused``, ``trunk_train_s``, ``trunk_images_per_s``, ``final_loss_*``. `on_log` receives each log
    row as it is made (every `log_every` steps); `progress` draws a rich progress bar on stderr.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    config = TrainConfig(
        protocol=protocol,
        iters=iters,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        trunk=trunk,
        image_size=image_size,
        trunk_iters=trunk_iters,
        trunk_lr=lr if trunk_lr is None else trunk_lr,
        max_mask_positives=max_mask_positives,
        semantic_aux=semantic_aux,
    )
    _check_config(config)
    if not isinstance(log_every, int) or log_every < 1:
        raise BmbenchError(f"log_every must be a positive integer, got {log_every!r}")
    torch_device = resolve_device(device)
    if data_dir is None:
        from bmbench.data.synth import ensure_default_dataset

        data_dir = ensure_default_dataset()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BmbenchError(f"data directory {data_dir} does not exist")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BmbenchError(f"--out {out} exists and is not a directory")
    dataset = CocoInstanceDataset(data_dir, "train", image_size=image_size, flip=config.flip, seed=seed)
    data_id = data_identity(data_dir)

    torch.manual_seed(seed)  # the trunk is built first, so its initialisation is the same for every variant
    model = build_segmenter(spec, trunk=trunk, num_classes=dataset.num_classes).to(torch_device)
    log: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    if config.protocol == "shared-trunk":
        record = shared_trunk(
            model,
            dataset,
            config=config,
            data_id=data_id,
            cache=default_trunk_cache() if trunk_cache is None else Path(trunk_cache),
            device=torch_device,
            log_every=log_every,
            progress=progress,
            on_log=on_log,
        )
        log += record["log"]
        metrics |= {"trunk_reused": record["reused"], "trunk_key": record["key"], **record["metrics"]}
        for parameter in model.trunk_parameters():
            parameter.requires_grad_(False)
        model.backbone.eval()
        model.detector.eval()
        model.mask_head.train()
        step, parameters, stage = (
            mask_step(model, image_size, max_mask_positives),
            list(model.mask_head.parameters()),
            "mask",
        )
    else:
        model.train()
        semantic_head, extra = _semantic_head(config, dataset.num_classes, torch_device)
        step, stage = joint_step(model, image_size, max_mask_positives, semantic_head), "joint"
        parameters = list(model.parameters()) + extra
    batches = training_batches(dataset, batch_size=batch_size, seed=seed + 1)
    rows, timing = optimise(
        step,
        parameters,
        batches,
        stage=stage,
        iters=iters,
        lr=lr,
        device=torch_device,
        **_loop_options(config),
        log_every=log_every,
        progress=progress,
        on_log=on_log,
    )
    log += rows
    last = rows[-1]
    metrics |= {"train_s": timing["seconds"], "train_images_per_s": timing["images_per_s"]}
    metrics |= {f"final_{k}": v for k, v in last.items() if k.startswith("loss_")}

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "spec": str(spec),
        "trunk": trunk,
        "num_classes": dataset.num_classes,
        "label_to_category_id": list(dataset.label_to_category_id),
        "class_names": list(dataset.class_names),
        "config": asdict(config),
        "data_id": data_id,
        "model": model.state_dict(),
        "metrics": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / CHECKPOINT_FILE) as tmp:
        torch.save(checkpoint, tmp)
    write_table(pd.DataFrame(log), out / LOG_STEM)
    meta = run_metadata(device=torch_device, spec=str(spec), data_dir=str(data_dir), config=asdict(config))
    write_json(out / "meta.json", meta | {"metrics": metrics})
    return TrainResult(out / CHECKPOINT_FILE, (out / LOG_STEM).with_suffix(".csv"), metrics)
