"""Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation", CVPR 2021)
for pycocotools' COCOeval, as faster-coco-eval's ``iouType="boundary"`` computes it.

A mask's boundary region is the set of its pixels within distance d of its contour, d = round(0.02 × the image
diagonal) (at least 1), the image border counting as contour: ``mask & ~erode(mask, (2d+1) × (2d+1) square)``
with zeros outside the image. The IoU that Boundary AP matches with is min(mask IoU, boundary IoU) for every
non-crowd ground truth, as in the authors' boundary-iou-api; crowd regions keep the mask IoU.

Letters: N masks, H x W the image.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval
from torch import Tensor

BOUNDARY_DILATION_RATIO = 0.02  # of the image diagonal (Cheng et al. 2021)
_CHUNK_PIXELS = 1 << 24  # masks decoded at once are bounded to this many pixels


def boundary_width(height: int, width: int, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """d: the boundary region's width in pixels for an H x W image, round(ratio × diagonal), at least 1."""
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def boundary_masks(masks: Tensor, width: int) -> Tensor:
    """Boundary regions of binary masks ``Tensor[N, H, W]`` (bool): each mask's pixels within `width` pixels
    (Chebyshev distance) of its contour or of the image border -> ``Tensor[N, H, W]`` bool."""
    inverse = (~masks.bool()).float()[:, None]  # (N, 1, H, W): 1 outside the mask
    k = 2 * width + 1
    padded = F.pad(inverse, (width, width, width, width), value=1.0)  # outside the image counts as background
    # A square erosion is separable: max over rows, then over columns, of the background.
    grown = F.max_pool2d(F.max_pool2d(padded, (1, k), stride=1), (k, 1), stride=1)  # (N, 1, H, W)
    return masks.bool() & (grown[:, 0] > 0)


def boundary_rles(rles: list[dict], dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> list[dict]:
    """Boundary-region RLEs (bytes counts, as pycocotools' iou takes them) of mask RLEs, in order."""
    out: list[dict | None] = [None] * len(rles)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, rle in enumerate(rles):
        by_size[tuple(int(s) for s in rle["size"])].append(index)
    for (height, width), indices in by_size.items():
        d = boundary_width(height, width, dilation_ratio)
        step = max(1, _CHUNK_PIXELS // max(height * width, 1))
        for start in range(0, len(indices), step):
            part = indices[start : start + step]
            decoded = mask_utils.decode([rles[i] for i in part])  # (H, W, n)
            masks = torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1))).bool()  # (n, H, W)
            edges = boundary_masks(masks, d).permute(1, 2, 0).numpy().astype(np.uint8)  # (H, W, n)
            for i, rle in zip(part, mask_utils.encode(np.asfortranarray(edges)), strict=True):
                out[i] = rle
    return out  # type: ignore[return-value]


class BoundaryMatching:
    """COCOeval mixin (for an iouType "segm" evaluator) that matches on min(mask IoU, boundary IoU) for non-crowd
    ground truth, the IoU of Boundary AP.

    The boundary IoU is computed only for pairs whose mask IoU reaches the lowest IoU threshold: below it a pair
    never matches, and min(mask IoU, boundary IoU) is below it too, so AP and AR are unchanged while most pairs (the
    false positives') need no boundary. Boundaries are computed once per annotation.

    Subclasses give ``_pair_anns(imgId, catId) -> (gt, dt)`` in their computeIoU's order and ``_mask_rle(ann)``.
    """

    dilation_ratio: float = BOUNDARY_DILATION_RATIO

    def _pair_anns(self, imgId: int, catId: int) -> tuple[list[dict], list[dict]]:  # noqa: N803
        raise NotImplementedError

    def _mask_rle(self, ann: dict) -> dict:
        return ann["segmentation"]

    def _boundaries(self, kind: str, anns: list[dict]) -> list[dict]:
        cache = self.__dict__.setdefault("_boundary_cache", {})
        todo = [ann for ann in anns if (kind, ann["id"]) not in cache]
        for ann, rle in zip(todo, boundary_rles([self._mask_rle(a) for a in todo], self.dilation_ratio), strict=True):
            cache[kind, ann["id"]] = rle
        return [cache[kind, ann["id"]] for ann in anns]

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802, N803 - COCOeval's names
        ious = super().computeIoU(imgId, catId)  # type: ignore[misc]
        if len(ious) == 0:
            return ious
        gt, dt = self._pair_anns(imgId, catId)
        ious = np.array(ious, dtype=np.float64)  # (D, G), a copy: the mask IoUs may be another run's
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gt])
        rows, cols = np.nonzero((ious >= np.min(self.params.iouThrs)) & ~crowd[None])  # type: ignore[attr-defined]
        if len(rows) == 0:
            return ious
        d_index, g_index = np.unique(rows), np.unique(cols)
        d_edges = self._boundaries("dt", [dt[i] for i in d_index])
        g_edges = self._boundaries("gt", [gt[j] for j in g_index])
        edge_ious = np.asarray(mask_utils.iou(d_edges, g_edges, [0] * len(g_edges)))  # (d, g)
        edge = edge_ious[np.searchsorted(d_index, rows), np.searchsorted(g_index, cols)]
        ious[rows, cols] = np.minimum(ious[rows, cols], edge)
        return ious


class BoundaryCOCOeval(BoundaryMatching, COCOeval):
    """pycocotools' COCOeval for Boundary AP: ``BoundaryCOCOeval(gt, dt)`` (iouType "segm")."""

    def __init__(self, cocoGt=None, cocoDt=None, *, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> None:  # noqa: N803
        super().__init__(cocoGt, cocoDt, iouType="segm")
        self.dilation_ratio = dilation_ratio

    def _pair_anns(self, imgId: int, catId: int) -> tuple[list[dict], list[dict]]:  # noqa: N803
        return pycocotools_pair_anns(self, imgId, catId)


def pycocotools_pair_anns(evaluator: COCOeval, imgId: int, catId: int) -> tuple[list[dict], list[dict]]:  # noqa: N803
    """The ground truth and the score-sorted, truncated detections that pycocotools' computeIoU pairs."""
    p = evaluator.params
    if p.useCats:
        gt, dt = evaluator._gts[imgId, catId], evaluator._dts[imgId, catId]
    else:
        gt = [g for c in p.catIds for g in evaluator._gts[imgId, c]]
        dt = [d for c in p.catIds for d in evaluator._dts[imgId, c]]
    order = np.argsort([-d["score"] for d in dt], kind="mergesort")
    return gt, [dt[i] for i in order][: p.maxDets[-1]]
