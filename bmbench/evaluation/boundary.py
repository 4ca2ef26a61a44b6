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

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

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
    near = sliding_window_view(background, k, axis=1).max(axis=-1)  # (h + 2d, w)
    near = sliding_window_view(near, k, axis=0).max(axis=-1)  # (h, w)
    out[y0:y1, x0:x1] = crop & near
    return out


def boundary_rles(rles: list[dict], dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> list[dict]:
    """Boundary-region RLEs (bytes counts, as pycocotools' iou takes them) of mask RLEs, in order."""
    out = []
    for rle in rles:
        height, width = (int(v) for v in rle["size"])
        edge = boundary_mask(mask_utils.decode(rle), boundary_width(height, width, dilation_ratio))
        out.append(mask_utils.encode(np.asfortranarray(edge.astype(np.uint8))))
    return out


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
