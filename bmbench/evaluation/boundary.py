"""Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation", CVPR 2021)
for pycocotools' COCOeval, as faster-coco-eval's ``iouType="boundary"`` computes it.

A mask's boundary region is the set of its pixels within distance d of its contour, d = round(0.02 × the image
diagonal) (at least 1), the image border counting as contour: ``mask & ~erode(mask, (2d+1) × (2d+1) square)``
with zeros outside the image. The IoU that Boundary AP matches with is min(mask IoU, boundary IoU) for every
non-crowd ground truth, as in the authors' boundary-iou-api; crowd regions keep the mask IoU.

Letters: H x W the image, h x w a mask's bounding box, d the boundary width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

BOUNDARY_DILATION_RATIO = 0.02  # of the image diagonal (Cheng et al. 2021)


def boundary_width(height: int, width: int, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """d: the boundary region's width in pixels for an H x W image, round(ratio × diagonal), at least 1."""
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def boundary_mask(mask: np.ndarray, width: int) -> np.ndarray:
    """The boundary region of a binary mask ``ndarray[H, W]``: its pixels within `width` pixels (Chebyshev
    distance) of its contour or of the image border -> ``ndarray[H, W]`` bool.

    Worked on the mask's bounding box only: outside it the mask is empty, as outside the image.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return out
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[y0:y1, x0:x1]  # (h, w)
    background = np.pad(~crop, width, constant_values=True)  # (h + 2d, w + 2d)
    k = 2 * width + 1
    # A square erosion is separable: background within d along the rows, then along the columns.
    near = _window_any(_window_any(background, k, axis=1), k, axis=0)  # (h, w)
    out[y0:y1, x0:x1] = crop & near
    return out


def _window_any(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Logical or over every window of `k` along `axis` (length n -> n - k + 1), by doubling: log2(k) passes."""
    a = np.moveaxis(a, axis, 0)
    span = 1
    while 2 * span <= k:  # windows of 2·span from two of span
        a = a[:-span] | a[span:]
        span *= 2
    if span < k:  # two overlapping windows of span cover one of k
        a = a[: len(a) - (k - span)] | a[k - span :]
    return np.moveaxis(a, 0, axis)


def boundary_rles(rles: list[dict], dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> list[dict]:
    """Boundary-region RLEs (bytes counts, as pycocotools' iou takes them) of mask RLEs, in order."""
    out = []
    for rle in rles:
        height, width = (int(v) for v in rle["size"])
        edge = boundary_mask(mask_utils.decode(rle), boundary_width(height, width, dilation_ratio))
        out.append(mask_utils.encode(np.asfortranarray(edge.astype(np.uint8))))
    return out


def combined_ious(
    mask_ious: dict[tuple[int, int], Any],
    pair_anns: Callable[[int, int], tuple[list[dict], list[dict]]],
    *,
    mask_rle: Callable[[dict], dict],
    boundaries: Callable[[list[dict]], list[dict]] = boundary_rles,
    min_iou: float = 0.5,
) -> dict[tuple[int, int], Any]:
    """The IoUs Boundary AP matches with: min(mask IoU, boundary IoU) for non-crowd ground truth, the mask IoU for
    crowd regions. ``mask_ious``: COCOeval's {(image, category): ndarray[D, G]}; ``pair_anns(image, category)``:
    the (gt, dt) annotations in that matrix's order; ``mask_rle``: an annotation's mask RLE; ``boundaries``: RLEs
    -> their boundary RLEs.

    Only pairs whose mask IoU reaches `min_iou` (COCOeval's lowest threshold) get a boundary IoU: below it a pair
    never matches, and the min is below it too, so AP and AR are unchanged while most pairs (the false positives')
    need no boundary. Each annotation's boundary is computed once.
    """
    cache: dict[tuple[str, int], dict] = {}

    def edges(kind: str, anns: list[dict]) -> list[dict]:
        todo = [ann for ann in anns if (kind, ann["id"]) not in cache]
        for ann, rle in zip(todo, boundaries([mask_rle(a) for a in todo]), strict=True):
            cache[kind, ann["id"]] = rle
        return [cache[kind, ann["id"]] for ann in anns]

    out = {}
    for key, ious in mask_ious.items():
        if len(ious) == 0:
            out[key] = ious
            continue
        gt, dt = pair_anns(*key)
        ious = np.array(ious, dtype=np.float64)  # (D, G), a copy: the mask IoUs stay the segm run's
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gt])
        rows, cols = np.nonzero((ious >= min_iou) & ~crowd[None])
        if len(rows):
            d_index, g_index = np.unique(rows), np.unique(cols)
            d_edges, g_edges = edges("dt", [dt[i] for i in d_index]), edges("gt", [gt[j] for j in g_index])
            edge_ious = np.asarray(mask_utils.iou(d_edges, g_edges, [0] * len(g_edges)))  # (d, g)
            edge = edge_ious[np.searchsorted(d_index, rows), np.searchsorted(g_index, cols)]
            ious[rows, cols] = np.minimum(ious[rows, cols], edge)
        out[key] = ious
    return out
