"""Reference masks: idealised predictions built from the ground truth and scored like any detections.

They say what a mask AP means on a dataset. For every (non-crowd) ground-truth instance, on its ground-truth box,
with score 1, each reference predicts the best mask that a head with one kind of knowledge could produce:

- ``box``: the filled box (no knowledge of shape);
- ``foreground``: every instance's pixels inside the box, i.e. a perfect class-agnostic foreground map cut by the
  box (what identical bases, or one global saliency map without a local shape, give at best);
- ``class-foreground``: the pixels of the instance's class inside the box, i.e. a perfect per-class semantic map
  cut by the box (what class-specialised bases give at best, before any separation of same-class neighbours);
- ``roi-28`` / ``roi-56``: the instance's mask as an R×R RoI of its box holds it (RoIAlign, aligned=True, as the
  heads sample), pasted back bilinearly and thresholded at 0.5: about the best a head with R×R output can do (the
  resolution that the grid's R varies);
- ``stride-4``: the instance's mask as a stride-4 map holds it (averaged over 4×4 cells: the resolution of the
  bases and of P2, which every head reads), sampled at R=56 in its box and pasted like ``roi-56``: about the best a
  head can do whose masks are smooth at the stride of its features (thin parts narrower than a cell vanish).
  "About": other values at the same cells could place a boundary a little better; these are bounds to read a model
  against, not proofs.

The ground truth itself scores mask AP 1. The gap between a reference and 1 is what instance separation inside
the box is worth on the dataset; a model scored with oracle boxes (``bmbench evaluate --boxes oracle``) is compared
with these. The first three are computed on run-length encodings by pycocotools (box RLEs, unions and
intersections); the resolution references resample decoded masks with torchvision's roi_align and bmbench's paste.

Letters: G instances of an image, H×W the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision.ops import roi_align

from bmbench.data.coco import load_coco
from bmbench.errors import BmbenchError
from bmbench.evaluation.cocoeval import MAX_DETS
from bmbench.evaluation.scoring import encode_masks, score_detections
from bmbench.models.paste import paste_roi_masks

# kind -> (R, stride) for the references that resample the ground truth; the others are set operations on RLEs
RESAMPLED = {"roi-28": (28, 1), "roi-56": (56, 1), "stride-4": (56, 4)}
REFERENCES = ("box", "foreground", "class-foreground", *RESAMPLED)


def check_reference(kind: str) -> None:
    """Raise BmbenchError unless `kind` is one of REFERENCES."""
    if kind not in REFERENCES:
        raise BmbenchError(f"unknown reference {kind!r} (known: {', '.join(REFERENCES)})")


def reference_detections(gt: COCO, kind: str, ann_ids: set[int] | None = None) -> list[dict]:
    """COCO result dicts (segmentation only, score 1) of reference `kind` for every non-crowd instance of `gt`
    (of those in `ann_ids`, when given)."""
    check_reference(kind)
    results = []
    for image_id in sorted(gt.imgs):
        image = gt.imgs[image_id]
        height, width = image["height"], image["width"]
        anns = [
            ann
            for ann in gt.loadAnns(gt.getAnnIds(imgIds=image_id))
            if not ann.get("iscrowd", 0) and (ann_ids is None or ann["id"] in ann_ids)
        ]
        if not anns:
            continue
        rles = [gt.annToRLE(ann) for ann in anns]  # (G,) whatever the annotation's form: polygons or RLE
        xywh = np.array([ann["bbox"] for ann in anns], dtype=np.float64).reshape(-1, 4)  # (G, 4)
        if kind in RESAMPLED:
            masks = resampled_masks(mask_utils.decode(rles), xywh, *RESAMPLED[kind])
            for ann, rle in zip(anns, encode_masks(masks), strict=True):
                results.append(
                    {"image_id": image_id, "category_id": ann["category_id"], "score": 1.0, "segmentation": rle}
                )
            continue
        boxes = mask_utils.frPyObjects(xywh, height, width)  # (G,) filled boxes
        everyone = mask_utils.merge(rles, intersect=False)  # union of the image's instances
        for ann, box in zip(anns, boxes, strict=True):
            if kind == "box":
                mask = box
            else:
                union = everyone
                if kind == "class-foreground":
                    same = [
                        rle for rle, other in zip(rles, anns, strict=True) if other["category_id"] == ann["category_id"]
                    ]
                    union = mask_utils.merge(same, intersect=False)
                mask = mask_utils.merge([union, box], intersect=True)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": ann["category_id"],
                    "score": 1.0,
                    "segmentation": {"size": [height, width], "counts": mask["counts"].decode("ascii")},
                }
            )
    return results


def resampled_masks(masks: np.ndarray, xywh: np.ndarray, R: int, stride: int) -> torch.Tensor:
    """``masks: ndarray[H, W, G]`` (0/1) averaged over stride×stride cells, sampled as an R×R RoI of each box
    ``xywh: ndarray[G, 4]`` (RoIAlign, aligned=True, 2 samples a bin), then pasted into the image and thresholded
    at 0.5 -> ``Tensor[G, H, W]`` bool."""
    maps = torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1))).float()[:, None]  # (G, 1, H, W)
    if stride > 1:
        maps = F.avg_pool2d(maps, stride, ceil_mode=True)  # (G, 1, H/s, W/s)
    boxes = torch.from_numpy(xywh).float()
    boxes[:, 2:] += boxes[:, :2]  # (G, 4) x0, y0, x1, y1
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], dim=1)
    inside = roi_align(maps, rois, (R, R), spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)[:, 0]
    return paste_roi_masks(inside - 0.5, boxes, tuple(masks.shape[:2]))  # (G, H, W)


def score_reference(
    gt_json: Path, kind: str, *, evaluator: str = "pycocotools", max_dets: int = MAX_DETS
) -> dict[str, float]:
    """Mask metrics (``mask_AP``, ``mask_AP50``, …) of reference `kind` against the ground truth `gt_json`, scored
    with `evaluator` and `max_dets` (COCOeval's maxDets), which a suite sets in its ``eval:`` section: the bounds
    that cells are read against are scored under the cells' own rules.

    The ground truth is read by the checked reader every other reader uses (bmbench.data.coco.read_coco): a
    malformed entry raises BmbenchError naming the file and the annotation; the entries it skips (empty masks,
    boxes under a pixel) are out of the ground truth, so they get no reference and are not scored either.
    """
    gt = load_coco(Path(gt_json))
    detections = reference_detections(gt, kind)
    if not detections:
        raise BmbenchError(f"{gt_json}: no non-crowd instances to build {kind!r} references from")
    return score_detections(gt_json, detections, iou_types=("segm",), evaluator=evaluator, max_dets=max_dets)
