"""COCO scoring of instance-segmentation detections with pycocotools' COCOeval (segm and bbox).

Detections are COCO result dicts: {image_id, category_id, score, bbox: [x, y, w, h], segmentation: RLE with str
counts}, in the original image's pixels. Metrics come back flat, e.g. mask_AP, mask_AP50, box_APs, in 0..1;
NaN where COCOeval has nothing to score (its -1).

Letters: N detections, H x W the original image.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from bmbench.data.coco import load_coco, read_json
from bmbench.errors import BmbenchError

IOU_TYPES = {"segm": "mask", "bbox": "box"}  # COCOeval iouType -> metric-name prefix
FIELDS = {"segm": "segmentation", "bbox": "bbox"}  # COCOeval iouType -> result-dict field
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def encode_masks(masks: Tensor) -> list[dict]:
    """RLEs with str counts (JSON-ready) of binary masks Tensor[N, H, W] (bool or 0/1)."""
    if masks.ndim != 3:
        raise ValueError(f"expected masks Tensor[N, H, W], got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    array = np.asfortranarray(masks.detach().cpu().permute(1, 2, 0).numpy().astype(np.uint8))  # (H, W, N)
    rles = mask_utils.encode(array)
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def detections_to_coco(
    image_id: int,
    *,
    scores: Tensor,
    labels: Tensor,
    boxes: Tensor | None = None,
    masks: Tensor | None = None,
    label_to_category_id: Sequence[int] | None = None,
) -> list[dict]:
    """COCO result dicts of one image's detections.

    scores: Tensor[N]; labels: Tensor[N] contiguous labels (mapped through `label_to_category_id`, or used as
    category ids when it is None); boxes: Tensor[N, 4] xyxy and masks: Tensor[N, H, W] bool, both in the
    original image's pixels. At least one of boxes and masks must be given.
    """
    if boxes is None and masks is None:
        raise ValueError("detections_to_coco needs boxes, masks or both")
    results = [
        {
            "image_id": int(image_id),
            "category_id": int(label_to_category_id[label] if label_to_category_id is not None else label),
            "score": float(score),
        }
        for label, score in zip(labels.tolist(), scores.tolist(), strict=True)
    ]
    if boxes is not None:
        for result, (x0, y0, x1, y1) in zip(results, boxes.tolist(), strict=True):
            result["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    if masks is not None:
        for result, rle in zip(results, encode_masks(masks), strict=True):
            result["segmentation"] = rle
    return results


def _check_detections(detections: list, gt: COCO, source: str) -> list[str]:
    """Validate every entry against the ground truth; return the iou types that the entries carry."""
    if detections and not isinstance(detections[0], dict):
        raise BmbenchError(f"{source}: entry 0 is not an object")
    present = [iou for iou, field in FIELDS.items() if detections and field in detections[0]]
    if detections and not present:
        raise BmbenchError(f"{source}: entry 0 has neither a bbox nor a segmentation")
    for index, det in enumerate(detections):
        where = f"{source}: entry {index}"
        if not isinstance(det, dict):
            raise BmbenchError(f"{where} is not an object")
        image = gt.imgs.get(det.get("image_id"))
        if image is None:
            raise BmbenchError(f"{where} refers to unknown image_id {det.get('image_id')!r}")
        if det.get("category_id") not in gt.cats:
            raise BmbenchError(f"{where} refers to unknown category_id {det.get('category_id')!r}")
        score = det.get("score")
        if not isinstance(score, int | float) or not math.isfinite(score):
            raise BmbenchError(f"{where} has no finite score: {score!r}")
        for iou in present:
            if FIELDS[iou] not in det:
                raise BmbenchError(f"{where} lacks {FIELDS[iou]!r}, which entry 0 has")
        bbox = det.get("bbox")
        if "bbox" in present and not (
            isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)
        ):
            raise BmbenchError(f"{where} has a malformed bbox (want [x, y, w, h]): {bbox!r}")
        segm = det.get("segmentation")
        if "segm" in present:
            size = [image["height"], image["width"]]
            if not (isinstance(segm, dict) and isinstance(segm.get("counts"), str | bytes)):
                raise BmbenchError(f"{where} segmentation is not an RLE with compressed counts")
            if list(segm.get("size", [])) != size:
                raise BmbenchError(
                    f"{where} segmentation size {segm.get('size')} differs from image {image['id']}'s {size}"
                )
    return present


def _evaluate(gt: COCO, detections: list[dict], iou_type: str, image_ids: list[int] | None) -> tuple[list, str]:
    """COCOeval stats (12 numbers) and the text it printed."""
    field = FIELDS[iou_type]
    # Keep only this type's field: loadRes takes `area` from the bbox whenever one is present, which would put
    # masks in the wrong COCO size range; it also writes into the dicts, hence the copies.
    keep = ("image_id", "category_id", "score", field)
    results = [{key: det[key] for key in keep} for det in detections]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluator = COCOeval(gt, gt.loadRes(results), iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats), printed.getvalue()


def score_detections(
    gt_json: Path,
    detections: list[dict] | Path,
    *,
    iou_types: Sequence[str] = ("segm", "bbox"),
    image_ids: Sequence[int] | None = None,
    summary: list[str] | None = None,
) -> dict[str, float]:
    """COCO metrics of `detections` (result dicts or a JSON file of them) against the ground truth `gt_json`.

    Scores each of `iou_types` that the detections carry (a segm-only or bbox-only list scores only that type).
    Returns e.g. {"mask_AP": ..., "mask_AP50": ..., "box_APl": ..., "box_AR100": ...}; no detections give all
    zeros. `image_ids` restricts scoring to those images. COCOeval's printed tables are appended to `summary`
    when it is given.
    """
    unknown = [iou for iou in iou_types if iou not in IOU_TYPES]
    if unknown:
        raise BmbenchError(f"unknown iou type(s) {unknown} (known: {', '.join(IOU_TYPES)})")
    gt = load_coco(Path(gt_json))
    if isinstance(detections, str | Path):
        source = str(detections)
        detections = read_json(Path(detections))
        if not isinstance(detections, list):
            raise BmbenchError(f"{source}: expected a JSON list of detections, got {type(detections).__name__}")
    else:
        source = "detections"
    if image_ids is not None:
        missing = sorted(set(image_ids) - set(gt.imgs))
        if missing:
            raise BmbenchError(f"{gt_json}: image ids {missing[:5]} are not in the ground truth")
    present = _check_detections(detections, gt, source)
    if not detections:
        return {f"{IOU_TYPES[iou]}_{name}": 0.0 for iou in iou_types for name in STAT_NAMES}
    if not set(iou_types) & set(present):
        raise BmbenchError(f"{source}: the detections carry none of the requested iou types {list(iou_types)}")
    metrics: dict[str, float] = {}
    for iou in iou_types:
        if iou not in present:
            continue
        stats, text = _evaluate(gt, detections, iou, None if image_ids is None else list(image_ids))
        if summary is not None:
            summary.append(text)
        for name, value in zip(STAT_NAMES, stats, strict=True):
            metrics[f"{IOU_TYPES[iou]}_{name}"] = float("nan") if value < 0 else float(value)
    return metrics


def metrics_frame(metrics: dict[str, float]) -> pd.DataFrame:
    """A tidy table of `score_detections` output: one row per metric, columns iou_type, metric, value."""
    by_prefix = {prefix: iou for iou, prefix in IOU_TYPES.items()}
    rows = []
    for key, value in metrics.items():
        prefix, _, name = key.partition("_")
        rows.append({"iou_type": by_prefix.get(prefix, prefix), "metric": name, "value": value})
    return pd.DataFrame(rows, columns=["iou_type", "metric", "value"])
