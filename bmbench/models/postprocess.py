"""Inference post-processing as free functions: FCOS decoding, score threshold, top-k and NMS, instance parameters
at the kept locations, the mask head's merge, and paste back into the original image.

Letters: B images, P locations over P3–P7 (as in bmbench.models.losses), C classes, D instance parameters per
location, N detections, R mask side, h×w the stride-4 map, H×W the model's (resized, padded) image, H0×W0 the
original image.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from bmbench.models.fcos import DetectorOutputs
from bmbench.models.losses import assign_fcos_targets, decode_boxes, flatten_levels, level_size_ranges
from bmbench.models.paste import paste_roi_masks

# FCOS inference as AdelaiDet has it (adet/modeling/fcos/fcos_outputs.py, forward_for_single_feature_map and
# select_over_all_levels, MODEL.FCOS.*_TEST defaults).
SCORE_THRESHOLD = 0.05  # INFERENCE_TH_TEST: on the class probability (or on class × centerness, see detect)
PRE_NMS_TOP_K = 1000  # PRE_NMS_TOPK_TEST: candidates kept per FPN level and image, by class × centerness
NMS_THRESHOLD = 0.6  # NMS_TH_TEST: IoU above which a same-class box is suppressed
MAX_DETECTIONS = 100  # POST_NMS_TOPK_TEST: per image, after NMS (evaluation's max_dets)


class Detections(NamedTuple):
    """One image's detections, in the model's image pixels."""

    boxes: Tensor  # Tensor[N, 4] x0, y0, x1, y1
    scores: Tensor  # Tensor[N]: sqrt(class probability × centerness probability)
    labels: Tensor  # Tensor[N] int64, 0..C-1
    params: Tensor  # Tensor[N, D]: the mask head's instance parameters at each detection's location
    locations: Tensor  # Tensor[N] int64: the location index (0..P-1) the detection comes from


def detect(
    outputs: DetectorOutputs,
    params: list[Tensor],
    points: list[Tensor],
    image_sizes: list[tuple[int, int]],
    *,
    score_threshold: float = SCORE_THRESHOLD,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
    nms_threshold: float = NMS_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    threshold_with_centerness: bool = False,
) -> list[Detections]:
    """FCOS inference for a batch, as AdelaiDet's FCOSOutputs: on each FPN level, the (location, class) candidates
    whose class probability exceeds `score_threshold` (class × centerness with `threshold_with_centerness`,
    AdelaiDet's THRESH_WITH_CTR), the best `pre_nms_top_k` of them by class × centerness; then over all levels,
    score sqrt(class × centerness), boxes clipped to each image's ``(h, w)`` (before padding), class-wise NMS, and
    the best `max_detections` per image.

    ``outputs``: per level ``Tensor[B, C, H_l, W_l]`` class logits (and centerness, box regression); ``params``: per
    level ``Tensor[B, D, H_l, W_l]``; ``points``: per level ``Tensor[H_l*W_l, 2]``.
    """
    class_prob = flatten_levels(outputs.class_logits).float().sigmoid()  # (B, P, C)
    ctr_prob = flatten_levels(outputs.centerness).float().sigmoid()  # (B, P, 1)
    regression = flatten_levels(outputs.box_regression).float()  # (B, P, 4)
    inst_params = flatten_levels(params)  # (B, P, D)
    all_points = torch.cat(points)  # (P, 2)
    level_sizes = [x.shape[-2] * x.shape[-1] for x in outputs.class_logits]
    results = []
    for b, (h, w) in enumerate(image_sizes):
        quality = class_prob[b] * ctr_prob[b]  # (P, C): what the top-k ranks and the score is the root of
        gated = (quality if threshold_with_centerness else class_prob[b]) > score_threshold  # (P, C)
        kept_locations, kept_labels = [], []
        starts = [0, *accumulate(level_sizes)][:-1]  # the index in P of each level's first location
        for first, gate in zip(starts, gated.split(level_sizes), strict=True):
            candidates = gate.nonzero()  # (n, 2): location within the level, class
            location, label = candidates[:, 0] + first, candidates[:, 1]
            if len(location) > pre_nms_top_k:
                top = quality[location, label].topk(pre_nms_top_k).indices
                location, label = location[top], label[top]
            kept_locations.append(location)
            kept_labels.append(label)
        location, label = torch.cat(kept_locations), torch.cat(kept_labels)
        scores = quality[location, label].sqrt()
        boxes = decode_boxes(all_points[location], regression[b, location])  # (n, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, location, label = boxes[valid], scores[valid], location[valid], label[valid]
        keep = batched_nms(boxes, scores, label, nms_threshold)[:max_detections]  # sorted by score
        location = location[keep]
        results.append(Detections(boxes[keep], scores[keep], label[keep], inst_params[b, location], location))
    return results


def oracle_locations(boxes: Tensor, points: list[Tensor], image_size: int) -> Tensor:
    """The location whose instance parameters an oracle box reads: among the locations that FCOS training assigns
    to the box (the same rules and the same competing boxes), the one with the highest centerness target. A box
    with no positive (smaller than a stride) falls back to the P3 location nearest its centre.

    ``boxes: Tensor[G, 4]`` (all of one image's instances), ``points``: per level ``Tensor[P_l, 2]`` ->
    ``Tensor[G]`` indices into P.
    """
    G = len(boxes)
    labels = torch.zeros(G, dtype=torch.int64, device=boxes.device)
    assigned = assign_fcos_targets(
        points, [{"boxes": boxes, "labels": labels}], size_ranges=level_size_ranges(image_size)
    )
    own = assigned.matched[0][None] == torch.arange(G, device=boxes.device)[:, None]  # (G, P)
    best = torch.where(own, assigned.centerness[0][None] + 1, 0).argmax(dim=1)  # +1: a positive beats the rest
    p3 = points[0]  # (P_3, 2)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
    nearest = torch.cdist(centres.float(), p3.float()).argmin(dim=1)  # (G,)
    return torch.where(own.any(dim=1), best, nearest)


def resample_full_logits(logits: Tensor, orig_size: tuple[int, int], scale: float, stride: int = 4) -> Tensor:
    """Full-map logits ``Tensor[N, h, w]`` (stride 4 in the model's image) -> ``Tensor[N, H0, W0]`` sampled
    bilinearly at the original image's pixel centres (model pixel = original pixel × scale)."""
    H0, W0 = orig_size
    h, w = logits.shape[-2:]
    ys = ((torch.arange(H0, device=logits.device, dtype=torch.float32) + 0.5) * scale / stride) / h * 2 - 1
    xs = ((torch.arange(W0, device=logits.device, dtype=torch.float32) + 0.5) * scale / stride) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)  # (H0, W0, 2) as (x, y)
    out = []
    step = max(1, (1 << 24) // max(H0 * W0, 1))  # bound the chunk's memory as paste does
    for start in range(0, len(logits), step):
        part = logits[start : start + step, None].float()  # (n, 1, h, w)
        sampled = F.grid_sample(part, grid[None].expand(len(part), -1, -1, -1), align_corners=False)
        out.append(sampled[:, 0])  # (n, H0, W0)
    return torch.cat(out) if out else logits.new_zeros((0, H0, W0))


def paste_in_original(
    logits: Tensor, boxes: Tensor, *, mask_form: str, orig_size: tuple[int, int], scale: float
) -> Tensor:
    """Mask logits of one image's instances -> binary masks ``Tensor[N, H0, W0]`` in the original image.

    ``boxes: Tensor[N, 4]`` are in the model's pixels; roi-form logits are pasted on the boxes scaled back by
    `scale`; full-form logits are resampled to the original pixels and cropped by the scaled boxes.
    """
    orig_boxes = boxes.float() / scale
    if mask_form == "roi":
        return paste_roi_masks(logits, orig_boxes, orig_size)
    H0, W0 = orig_size
    full = resample_full_logits(logits, orig_size, scale) > 0  # (N, H0, W0)
    ys = torch.arange(H0, device=logits.device, dtype=torch.float32) + 0.5
    xs = torch.arange(W0, device=logits.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = orig_boxes.unbind(1)
    inside_y = (ys[None] >= y0[:, None]) & (ys[None] <= y1[:, None])  # (N, H0)
    inside_x = (xs[None] >= x0[:, None]) & (xs[None] <= x1[:, None])  # (N, W0)
    return full & inside_y[:, :, None] & inside_x[:, None, :]


def merge_detections(head: Any, bottom: Any, detections: list[Detections]) -> list[Tensor]:
    """Run the mask head's merge once over the whole batch's detections: per image ``Tensor[N_b, R, R]`` or
    ``Tensor[N_b, h, w]`` logits. ``head`` is a :class:`bmbench.models.heads.base.MaskHead`."""
    counts = [len(d.boxes) for d in detections]
    if sum(counts) == 0:
        return [d.boxes.new_zeros((0, 1, 1)) for d in detections]
    batch = torch.cat(
        [torch.full((n,), b, device=d.boxes.device) for b, (n, d) in enumerate(zip(counts, detections, strict=True))]
    )
    rois = torch.cat([batch[:, None].float(), torch.cat([d.boxes for d in detections]).float()], dim=1)  # (N, 5)
    params = torch.cat([d.params for d in detections])  # (N, D)
    labels = torch.cat([d.labels for d in detections])  # (N,)
    logits = head.merge(bottom, params, rois, labels)
    return list(logits.split(counts))
