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


class BoundaryCOCOeval(COCOeval):
    """pycocotools' COCOeval (iouType "segm") matching on min(mask IoU, boundary IoU) for non-crowd ground truth.

    ``dilation_ratio``: the boundary width as a fraction of the image diagonal.
    """

    def __init__(self, cocoGt=None, cocoDt=None, *, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> None:
        super().__init__(cocoGt, cocoDt, iouType="segm")
        self.dilation_ratio = dilation_ratio
        self._boundaries: dict[tuple[str, int], dict] = {}

    def _prepare(self) -> None:
        super()._prepare()  # every segmentation is an RLE from here on
        self._boundaries = {}
        for kind, groups in (("gt", self._gts), ("dt", self._dts)):
            anns = [ann for group in groups.values() for ann in group]
            for ann, rle in zip(
                anns, boundary_rles([a["segmentation"] for a in anns], self.dilation_ratio), strict=True
            ):
                self._boundaries[kind, ann["id"]] = rle

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802 - pycocotools' name
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        p = self.params
        # The same ground truth and the same score-sorted, truncated detections as COCOeval.computeIoU.
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        crowd = [int(g["iscrowd"]) for g in gt]
        edge_ious = np.asarray(
            mask_utils.iou(
                [self._boundaries["dt", d["id"]] for d in dt], [self._boundaries["gt", g["id"]] for g in gt], crowd
            )
        )
        non_crowd = ~np.asarray(crowd, dtype=bool)
        ious = np.asarray(ious)
        ious[:, non_crowd] = np.minimum(ious[:, non_crowd], edge_ious[:, non_crowd])
        return ious
