"""Training targets and losses, as free functions beside the modules: FCOS assignment and losses, mask targets and
the mask loss of each family.

Letters: B images, P locations over all detector levels P3–P7 (concatenated level by level, row-major inside a
level), G ground-truth instances, C classes, N positives chosen for the mask loss, R mask side, h×w the stride-4
map. Boxes are (x0, y0, x1, y1) in image pixels of the (resized, padded) batch.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, roi_align, sigmoid_focal_loss

from bmbench.models.fcos import DetectorOutputs
from bmbench.models.heads.base import MAP_STRIDE

LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3–P7
# FCOS's per-level ranges of the largest regression distance, (64, 128, 256, 512) for ~800 px COCO images; we
# scale them with the training image side, relative to 512 px, so that at 256 px objects of the synthetic data
# (sides ~30–200 px) spread over P3–P5.
REFERENCE_SIZE_BOUNDS = (64.0, 128.0, 256.0, 512.0)
REFERENCE_IMAGE_SIDE = 512.0
CENTER_RADIUS = 1.5  # FCOS centre sampling: positives lie within 1.5 strides of the box centre


def level_size_ranges(image_size: int) -> list[tuple[float, float]]:
    """Per level P3–P7, the (low, high] range of the largest regression distance a positive may have."""
    scale = image_size / REFERENCE_IMAGE_SIDE
    bounds = [0.0, *(b * scale for b in REFERENCE_SIZE_BOUNDS), math.inf]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def flatten_levels(maps: list[Tensor]) -> Tensor:
    """``[Tensor[B, X, H_l, W_l]]`` per level -> ``Tensor[B, P, X]``, in the order of `level_points`."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)  # (B, P, X)


def decode_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """``points: Tensor[P, 2]`` (x, y), ``ltrb: Tensor[..., P, 4]`` distances -> boxes ``Tensor[..., P, 4]``."""
    x, y = points[:, 0], points[:, 1]
    return torch.stack((x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]), dim=-1)


class FCOSTargets(NamedTuple):
    """What each location of each image is assigned."""

    labels: Tensor  # Tensor[B, P] int64: the matched instance's class, -1 for background
    matched: Tensor  # Tensor[B, P] int64: index of the matched instance within its image, -1 for background
    boxes: Tensor  # Tensor[B, P, 4]: the matched instance's box (zeros for background)
    centerness: Tensor  # Tensor[B, P]: FCOS centerness target of the location (0 for background)

    @property
    def positive(self) -> Tensor:
        """``Tensor[B, P]`` bool."""
        return self.labels >= 0


def location_levels(points: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(stride, level index) of every location, each ``Tensor[P]``."""
    strides = torch.cat([torch.full((len(p),), float(LEVEL_STRIDES[i]), device=p.device) for i, p in enumerate(points)])
    levels = torch.cat([torch.full((len(p),), i, dtype=torch.int64, device=p.device) for i, p in enumerate(points)])
    return strides, levels


def assign_fcos_targets(
    points: list[Tensor],
    targets: list[dict[str, Any]],
    *,
    size_ranges: list[tuple[float, float]],
    center_radius: float | None = CENTER_RADIUS,
    ensure_positive: bool = True,
) -> FCOSTargets:
    """FCOS assignment: a location is positive for an instance when it lies inside the box (and, with
    `center_radius`, within that many strides of the box centre) and its largest distance to the box sides lies in
    its level's range; a location that several instances claim goes to the smallest box.

    With `ensure_positive`, an instance that no location qualifies for (its size falls between the levels'
    ranges, which happens on small images, or it is smaller than a stride) gets the location nearest its centre on
    the level its half longer side maps to, unless a smaller box holds it: every instance is then trained.

    ``points``: per level ``Tensor[P_l, 2]`` (see `level_points`); ``targets``: per image ``boxes: Tensor[G, 4]``
    and ``labels: Tensor[G]``.
    """
    all_points = torch.cat(points)  # (P, 2)
    strides, levels = location_levels(points)
    low = torch.tensor([r[0] for r in size_ranges], device=all_points.device)[levels]  # (P,)
    high = torch.tensor([r[1] for r in size_ranges], device=all_points.device)[levels]  # (P,)
    P = len(all_points)
    labels, matched, boxes, centerness = [], [], [], []
    for target in targets:
        gt = target["boxes"].to(all_points.device, torch.float32)  # (G, 4)
        gt_labels = target["labels"].to(all_points.device)
        if len(gt) == 0:
            labels.append(torch.full((P,), -1, dtype=torch.int64, device=all_points.device))
            matched.append(torch.full((P,), -1, dtype=torch.int64, device=all_points.device))
            boxes.append(all_points.new_zeros((P, 4)))
            centerness.append(all_points.new_zeros(P))
            continue
        x, y = all_points[:, 0, None], all_points[:, 1, None]  # (P, 1)
        ltrb = torch.stack((x - gt[:, 0], y - gt[:, 1], gt[:, 2] - x, gt[:, 3] - y), dim=2)  # (P, G, 4)
        allowed = ltrb.min(dim=2).values > 0  # inside the box
        if center_radius is not None:
            cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2  # (G,)
            reach = strides[:, None] * center_radius  # (P, 1)
            # The centre region, clipped to the box.
            x0, x1 = torch.maximum(cx - reach, gt[:, 0]), torch.minimum(cx + reach, gt[:, 2])  # (P, G)
            y0, y1 = torch.maximum(cy - reach, gt[:, 1]), torch.minimum(cy + reach, gt[:, 3])
            allowed &= (x > x0) & (x < x1) & (y > y0) & (y < y1)
        largest = ltrb.max(dim=2).values  # (P, G)
        allowed &= (largest > low[:, None]) & (largest <= high[:, None])
        area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])  # (G,)
        cost = torch.where(allowed, area[None].expand(P, -1), torch.full_like(largest, math.inf))  # (P, G)
        best_cost, best = cost.min(dim=1)  # (P,)
        positive = torch.isfinite(best_cost)
        if ensure_positive:
            _add_missing_positives(gt, points, size_ranges, best, positive)
        dist = ltrb[torch.arange(P, device=all_points.device), best]  # (P, 4)
        lr, tb = dist[:, 0::2], dist[:, 1::2]  # (P, 2) each
        ctr = (lr.min(1).values / lr.max(1).values.clamp(min=1e-6)) * (
            tb.min(1).values / tb.max(1).values.clamp(min=1e-6)
        )
        labels.append(torch.where(positive, gt_labels[best], -1))
        matched.append(torch.where(positive, best, -1))
        boxes.append(torch.where(positive[:, None], gt[best], 0.0))
        centerness.append(torch.where(positive, ctr.clamp(min=0).sqrt(), 0.0))
    return FCOSTargets(torch.stack(labels), torch.stack(matched), torch.stack(boxes), torch.stack(centerness))


def _add_missing_positives(
    gt: Tensor, points: list[Tensor], size_ranges: list[tuple[float, float]], best: Tensor, positive: Tensor
) -> None:
    """Give each box of ``gt: Tensor[G, 4]`` without a positive the background location nearest its centre on its
    level; updates ``best, positive: Tensor[P]`` in place."""
    has = torch.zeros(len(gt), dtype=torch.bool, device=gt.device)
    has[best[positive]] = True
    missing = (~has).nonzero().squeeze(1).tolist()
    if not missing:
        return
    highs = torch.tensor([high for _, high in size_ranges[:-1]], device=gt.device)
    offsets = [0]
    for level_points_ in points:
        offsets.append(offsets[-1] + len(level_points_))
    for g in missing:
        box = gt[g]
        half_side = torch.maximum(box[2] - box[0], box[3] - box[1]) / 2
        level = int(torch.bucketize(half_side, highs))
        centre = (box[:2] + box[2:]) / 2
        location = offsets[level] + int(((points[level] - centre) ** 2).sum(dim=1).argmin())
        if not positive[location]:
            best[location], positive[location] = g, True


def fcos_losses(outputs: DetectorOutputs, points: list[Tensor], assigned: FCOSTargets) -> dict[str, Tensor]:
    """FCOS losses: sigmoid focal loss over all locations, GIoU on positives weighted by their centerness target,
    and BCE on the centerness logits of positives. Normalised by the number of positives (at least 1)."""
    class_logits = flatten_levels(outputs.class_logits)  # (B, P, C)
    regression = flatten_levels(outputs.box_regression)  # (B, P, 4)
    ctr_logits = flatten_levels(outputs.centerness)[..., 0]  # (B, P)
    positive = assigned.positive
    num_pos = max(float(positive.sum()), 1.0)
    onehot = torch.zeros_like(class_logits)
    onehot[positive] = F.one_hot(assigned.labels[positive], class_logits.shape[-1]).to(onehot.dtype)
    cls = sigmoid_focal_loss(class_logits.float(), onehot.float(), alpha=0.25, gamma=2.0, reduction="sum") / num_pos
    pred_boxes = decode_boxes(torch.cat(points), regression.float())[positive]  # (N_pos, 4)
    weight = assigned.centerness[positive]
    if len(weight):
        giou = generalized_box_iou_loss(pred_boxes, assigned.boxes[positive], reduction="none")
        box = (giou * weight).sum() / weight.sum().clamp(min=1e-6)
        ctr = F.binary_cross_entropy_with_logits(ctr_logits[positive].float(), weight, reduction="sum") / num_pos
    else:
        box = ctr = regression.sum() * 0.0
    return {"cls": cls, "box": box, "ctr": ctr}


def select_mask_positives(
    assigned: FCOSTargets, max_positives: int | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Positives the mask loss is computed on: all of them (``max_positives`` None or <= 0, AdelaiDet's choice), or
    at most `max_positives` drawn without replacement by `generator` (on the CPU, so the draw is the same on any
    device). Returns (image index, location index), each ``Tensor[N]``, sorted."""
    index = assigned.positive.flatten().nonzero().squeeze(1)  # (N_pos,) into B*P
    if max_positives is not None and 0 < max_positives < len(index):
        keep = torch.randperm(len(index), generator=generator)[:max_positives].sort().values
        index = index[keep.to(index.device)]
    P = assigned.labels.shape[1]
    return index // P, index % P


def roi_mask_targets(masks: Tensor, boxes: Tensor, R: int) -> Tensor:
    """RoI-form targets: ``masks: Tensor[G, H, W]`` (0/1) cropped on their own ``boxes: Tensor[G, 4]`` and resampled
    to R×R as the heads sample (RoIAlign, aligned=True), then binarised at 0.5 -> ``Tensor[G, R, R]`` float."""
    if len(masks) == 0:
        return masks.new_zeros((0, R, R), dtype=torch.float32)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    pooled = roi_align(masks[:, None].float(), rois.float(), (R, R), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return (pooled[:, 0] >= 0.5).float()  # (G, R, R)


def full_mask_targets(masks: Tensor) -> Tensor:
    """Full-map targets (YOLACT): ``masks: Tensor[G, H, W]`` averaged over 4×4 cells to the stride-4 map and
    binarised -> ``Tensor[G, H/4, W/4]`` float. The box crop is applied by the loss."""
    if len(masks) == 0:
        return masks.new_zeros((0, masks.shape[-2] // MAP_STRIDE, masks.shape[-1] // MAP_STRIDE), dtype=torch.float32)
    return (F.avg_pool2d(masks[:, None].float(), MAP_STRIDE)[:, 0] >= 0.5).float()


def box_cells(boxes: Tensor, size: tuple[int, int], stride: int = MAP_STRIDE) -> Tensor:
    """Which stride-4 cells have their centre inside each box, as YOLACT's crop decides: ``Tensor[N, h, w]`` bool."""
    h, w = size
    ys = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    x0, y0, x1, y1 = boxes.float().unbind(1)
    inside_y = (ys[None] >= y0[:, None]) & (ys[None] <= y1[:, None])  # (N, h)
    inside_x = (xs[None] >= x0[:, None]) & (xs[None] <= x1[:, None])  # (N, w)
    return inside_y[:, :, None] & inside_x[:, None, :]


def mask_targets(masks: Tensor, boxes: Tensor, *, mask_form: str, R: int | None) -> Tensor:
    """Targets of one family's mask form for instances ``masks: Tensor[G, H, W]`` with ``boxes: Tensor[G, 4]``:
    ``Tensor[G, R, R]`` (roi) or ``Tensor[G, h, w]`` (full)."""
    if mask_form == "roi":
        if R is None:
            raise ValueError("roi-form mask targets need R")
        return roi_mask_targets(masks, boxes, R)
    return full_mask_targets(masks)


def mask_loss(logits: Tensor, targets: Tensor, weights: Tensor, *, mask_form: str, boxes: Tensor) -> Tensor:
    """Per-instance mean BCE-with-logits, averaged over instances with `weights` (FCOS's centerness targets).

    ``logits, targets: Tensor[N, R, R]`` (roi) or ``Tensor[N, h, w]`` (full: the mean is taken over the cells
    inside the box, as YOLACT normalises by box area); ``weights: Tensor[N]``; ``boxes: Tensor[N, 4]``.
    """
    if len(logits) == 0:
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")  # (N, R, R) / (N, h, w)
    if mask_form == "roi":
        per_instance = bce.flatten(1).mean(dim=1)
    else:
        inside = box_cells(boxes, tuple(logits.shape[-2:])).float()  # (N, h, w)
        per_instance = (bce * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1.0)
    return (per_instance * weights).sum() / weights.sum().clamp(min=1e-6)


def first_of_each(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``keys: Tensor[N]`` -> (the index of each distinct key's first occurrence ``Tensor[G]``, and for every element
    the position of its key among them ``Tensor[N]``), so that ``keys[first][inverse] == keys``."""
    unique, inverse = keys.unique(return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(unique),), len(keys), device=keys.device, dtype=positions.dtype)
    return first.scatter_reduce(0, inverse, positions, reduce="amin"), inverse


def mask_head_loss(
    head: Any,
    bottom: Any,
    params: list[Tensor],
    targets: list[dict[str, Any]],
    assigned: FCOSTargets,
    image_index: Tensor,
    location_index: Tensor,
) -> Tensor:
    """The mask loss of any family on the chosen positives (``image_index, location_index: Tensor[N]``).

    Each positive's instance parameters are read at its location, its RoI is its matched ground-truth box (as
    BlendMask trains), Mask R-CNN's merge picks the ground-truth class channel, and the loss is weighted by the
    positive's centerness target, unless the head declares its own ``mask_loss`` (CondInst: dice). ``head`` is a
    :class:`bmbench.models.heads.base.MaskHead`.
    """
    inst_params = flatten_levels(params)[image_index, location_index]  # (N, D)
    gt_index = assigned.matched[image_index, location_index]  # (N,)
    boxes = assigned.boxes[image_index, location_index]  # (N, 4)
    labels = assigned.labels[image_index, location_index]  # (N,)
    weights = assigned.centerness[image_index, location_index]  # (N,)
    rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)  # (N, 5)
    if head.merge_uses_params or len(gt_index) == 0:
        logits = head.merge(bottom, inst_params, rois, labels)  # (N, R, R) or (N, h, w)
    else:  # the merge sees only (RoI, label), the same for every positive of one instance: once per instance
        first, inverse = first_of_each(image_index * (int(gt_index.max()) + 1) + gt_index)
        logits = head.merge(bottom, inst_params[first], rois[first], labels[first])[inverse]
    goal = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    R = logits.shape[-1] if head.mask_form == "roi" else None
    for b in image_index.unique().tolist():
        chosen = image_index == b
        unique, inverse = gt_index[chosen].unique(return_inverse=True)
        gt_masks = targets[b]["masks"][unique.to(targets[b]["masks"].device)].to(logits.device)
        gt_boxes = targets[b]["boxes"][unique.to(targets[b]["boxes"].device)].to(logits.device)
        goal[chosen] = mask_targets(gt_masks, gt_boxes, mask_form=head.mask_form, R=R)[inverse]
    if head.mask_loss is not None:  # the head's own loss (CondInst's dice)
        return head.mask_loss(logits, goal, weights, boxes)
    return mask_loss(logits, goal, weights, mask_form=head.mask_form, boxes=boxes)


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1e-5) -> Tensor:
    """CondInst's mask loss (AdelaiDet's ``dice_coefficient``, then the mean over instances): per instance
    1 - 2·Σ p·t / (Σ p² + Σ t² + eps) with p = sigmoid(logits), over every cell of ``logits, targets: Tensor[N, ...]``.
    Unlike the BCE it is not weighted by centerness and sees the whole map, not the box."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    p = torch.sigmoid(logits.float()).flatten(1)  # (N, cells)
    t = targets.float().flatten(1)
    intersection = (p * t).sum(dim=1)
    union = (p * p).sum(dim=1) + (t * t).sum(dim=1) + eps
    return (1.0 - 2.0 * intersection / union).mean()


SEMANTIC_WEIGHT = 0.3  # AdelaiDet's weight of the auxiliary semantic loss (MODEL.BASIS_MODULE.LOSS_WEIGHT)


def semantic_targets(targets: list[dict[str, Any]], *, num_classes: int, size: tuple[int, int], stride: int) -> Tensor:
    """Per-class foreground of each image at `stride`: ``Tensor[B, C, H/stride, W/stride]`` in 0..1, the fraction
    of each cell covered by an instance of that class (the union of its masks)."""
    out = []
    for target in targets:
        masks, labels = target["masks"], target["labels"]
        union = torch.zeros((num_classes, *size), dtype=torch.float32, device=masks.device)
        for label in labels.unique().tolist():
            union[label] = masks[labels == label].amax(dim=0)  # (H, W)
        out.append(F.avg_pool2d(union[None], stride)[0])
    return torch.stack(out)


def semantic_class_targets(
    targets: list[dict[str, Any]], *, num_classes: int, size: tuple[int, int], stride: int
) -> Tensor:
    """The class of each cell at `stride`, as AdelaiDet's semantic branch is trained: ``Tensor[B, H/stride,
    W/stride]`` int64, 0 for background and c + 1 for class c: the label (background included) that covers most of
    the cell (ties go to background, then to the lower class)."""
    cover = semantic_targets(targets, num_classes=num_classes, size=size, stride=stride)  # (B, C, h, w)
    background = 1.0 - cover.sum(dim=1, keepdim=True).clamp(max=1.0)  # (B, 1, h, w); masks never overlap
    return torch.cat([background, cover], dim=1).argmax(dim=1)


def semantic_loss(logits: Tensor, goal: Tensor) -> Tensor:
    """Auxiliary semantic segmentation loss (BlendMask's and YOLACT's auxiliary task): BCE-with-logits per class and
    cell, ``logits, goal: Tensor[B, C, h, w]``."""
    return F.binary_cross_entropy_with_logits(logits.float(), goal)


def semantic_ce_loss(logits: Tensor, goal: Tensor, *, weight: float = SEMANTIC_WEIGHT) -> Tensor:
    """AdelaiDet's auxiliary semantic loss: `weight` x cross-entropy over C + 1 classes (background first) per cell,
    ``logits: Tensor[B, C + 1, h, w]``, ``goal: Tensor[B, h, w]`` int64 from `semantic_class_targets`."""
    return weight * F.cross_entropy(logits.float(), goal)
