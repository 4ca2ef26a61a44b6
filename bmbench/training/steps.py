"""The losses of the three kinds of training step (trunk, joint, mask head), and the training-only auxiliary
semantic head.

Letters: B images per step, as in bmbench.models.losses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bmbench.models.backbone import TRUNKS
from bmbench.models.fcos import level_points
from bmbench.models.losses import (
    assign_fcos_targets,
    fcos_losses,
    level_size_ranges,
    mask_head_loss,
    select_mask_positives,
    semantic_ce_loss,
    semantic_class_targets,
    semantic_loss,
    semantic_targets,
)
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.training.config import TrainConfig
from bmbench.training.loop import StepLoss

SEMANTIC_STRIDES = {"p3": 8, "p2": 4}  # the FPN levels the auxiliary semantic head may read (TrainConfig)


class SemanticHead(nn.Sequential):
    """Training-only auxiliary head on one FPN level, P3 by default (3x3 conv, ReLU, 1x1 to logits), discarded after
    training: per-class foreground logits for the BCE loss, or C + 1 class logits (background first) for AdelaiDet's
    cross-entropy."""

    def __init__(self, *, in_channels: int, num_classes: int, cross_entropy: bool = False, level: str = "p3") -> None:
        out_channels = num_classes + 1 if cross_entropy else num_classes
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 1)
        )
        self.cross_entropy = cross_entropy  # which loss its logits are for
        self.level, self.stride = level, SEMANTIC_STRIDES[level]  # where it reads


def build_semantic_head(
    *, in_channels: int, num_classes: int, cross_entropy: bool = False, level: str = "p3"
) -> SemanticHead:
    """The auxiliary semantic head (see SemanticHead)."""
    return SemanticHead(in_channels=in_channels, num_classes=num_classes, cross_entropy=cross_entropy, level=level)


def semantic_head_parts(
    config: TrainConfig, num_classes: int, device: torch.device
) -> tuple[nn.Module | None, list[nn.Parameter]]:
    """The auxiliary head when the config asks for one (else None), and the parameters it adds to the optimiser."""
    if not config.semantic_aux:
        return None, []
    head = build_semantic_head(
        in_channels=TRUNKS[config.trunk].fpn_channels,
        num_classes=num_classes,
        cross_entropy=config.semantic_loss == "ce",
        level=config.semantic_level,
    ).to(device)
    return head, list(head.parameters())


def _semantic_term(
    head: SemanticHead, features: dict[str, Tensor], targets: list[dict[str, Any]], size: tuple[int, int]
) -> Tensor:
    stride = head.stride
    logits = head(features[head.level])  # (B, C, H/s, W/s), or (B, C + 1, H/s, W/s) for cross-entropy
    if head.cross_entropy:
        goal = semantic_class_targets(targets, num_classes=logits.shape[1] - 1, size=size, stride=stride)
        return semantic_ce_loss(logits, goal)
    return semantic_loss(logits, semantic_targets(targets, num_classes=logits.shape[1], size=size, stride=stride))


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
