"""COCO scoring of instance-segmentation detections with pycocotools' COCOeval (segm and bbox).

Detections are COCO result dicts: {image_id, category_id, score, bbox: [x, y, w, h], segmentation: RLE with str
counts}, in the original image's pixels. Metrics come back flat, e.g. mask_AP, mask_AP50, box_APs, in 0..1;
NaN where COCOeval has nothing to score (its -1).

Letters: N detections, H x W the original image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor

from bmbench.data.coco import load_coco, read_json
from bmbench.errors import BmbenchError, BmbenchWarning
from bmbench.evaluation.cocoeval import (
    MAX_DETS,
    GroundTruth,
    boundary_run,
    check_evaluator,
    check_max_dets,
    max_dets_settings,
    per_category_ap,
    rematch,
    run_cocoeval,
    stat_names,
    summarize,
)
from bmbench.schema import SCORE_PREFIXES  # noqa: F401 - re-exported: what score_detections' names start with

IOU_TYPES = {"segm": "mask", "bbox": "box"}  # COCOeval iouType -> metric-name prefix
FIELDS = {"segm": "segmentation", "bbox": "bbox"}  # COCOeval iouType -> result-dict field
STAT_NAMES = stat_names(MAX_DETS)  # AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
BOUNDARY_STATS = ("AP", "AP50", "AP75")  # the Boundary AP numbers reported (boundary_AP, ...)


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
    """Validate every entry against the ground truth; return the iou types that the entries carry.

    One pass with the per-image sizes looked up once (this runs on every scored entry, before either evaluator):
    the message of the first bad entry is built only when there is one."""
    if detections and not isinstance(detections[0], dict):
        raise BmbenchError(f"{source}: entry 0 is not an object")
    present = [iou for iou, field in FIELDS.items() if detections and field in detections[0]]
    if detections and not present:
        raise BmbenchError(f"{source}: entry 0 has neither a bbox nor a segmentation")
    sizes = {image_id: [image["height"], image["width"]] for image_id, image in gt.imgs.items()}
    cats, has_bbox, has_segm = gt.cats, "bbox" in present, "segm" in present
    for index, det in enumerate(detections):
        if not isinstance(det, dict):
            raise BmbenchError(f"{source}: entry {index} is not an object")
        size = sizes.get(det.get("image_id"))
        score = det.get("score")
        bbox = det.get("bbox")
        segm = det.get("segmentation")
        if (
            size is None
            or det.get("category_id") not in cats
            or not (isinstance(score, int | float) and math.isfinite(score))
            or (has_bbox and not _is_bbox(bbox))
            or (has_segm and not (isinstance(segm, dict) and isinstance(segm.get("counts"), str | bytes)))
            or (has_segm and list(segm.get("size", ())) != size)
        ):
            _bad_detection(det, f"{source}: entry {index}", gt, present)
    return present


def _is_bbox(bbox: Any) -> bool:
    """[x, y, w, h] of finite numbers with w, h >= 0: COCOeval scores a negative width or a NaN without a word."""
    return (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        and bbox[2] >= 0
        and bbox[3] >= 0
    )


def _bad_detection(det: dict, where: str, gt: COCO, present: list[str]) -> None:
    """Raise the one-line error that says what is wrong with `det` (which `_check_detections` found bad)."""
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
    if "bbox" in present and not _is_bbox(bbox):
        raise BmbenchError(f"{where} has a malformed bbox (want [x, y, w, h], finite, w and h >= 0): {bbox!r}")
    segm, size = det["segmentation"], [image["height"], image["width"]]
    if not (isinstance(segm, dict) and isinstance(segm.get("counts"), str | bytes)):
        raise BmbenchError(f"{where} segmentation is not an RLE with compressed counts")
    raise BmbenchError(f"{where} segmentation size {segm.get('size')} differs from image {image['id']}'s {size}")


def _gt_counts_over(gt: COCO, image_ids: Sequence[int] | None, max_dets: int, detections: list[dict]) -> None:
    """Warn, with counts, when some image has more (non-crowd) ground-truth instances than `max_dets`, and say how
    many of `detections` COCOeval then leaves unscored (it keeps the best `max_dets` per image and class)."""
    wanted = set(gt.imgs) if image_ids is None else set(image_ids)
    counts: dict[int, int] = {}
    for ann in gt.dataset["annotations"]:
        if ann["image_id"] in wanted and not ann.get("iscrowd", 0):
            counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
    over = {image: n for image, n in counts.items() if n > max_dets}
    if over:
        worst = max(over, key=over.get)
        per_class: dict[tuple[Any, Any], int] = {}
        for det in detections:
            if det.get("image_id") in over:
                key = (det.get("image_id"), det.get("category_id"))
                per_class[key] = per_class.get(key, 0) + 1
        there, unscored = sum(per_class.values()), sum(max(0, n - max_dets) for n in per_class.values())
        warnings.warn(
            f"{len(over)} image(s) have more ground-truth instances than max_dets={max_dets} (most: {over[worst]} in "
            f"image {worst}): COCOeval scores at most {max_dets} detections per image and class, which leaves "
            f"{unscored} of the {there} detections in those images unscored, and a detector that keeps at most "
            f"{max_dets} per image cannot reach full recall there; raise max_dets (--max-dets)",
            BmbenchWarning,
            stacklevel=3,
        )


def subset_ids(gt: COCO, source: str = "ground truth") -> dict[str, set[int]]:
    """{subset name: ids of the annotations tagged with it} from each annotation's optional ``subsets`` field (a
    list of names, e.g. ["touching", "thin"], that pycocotools ignores); a malformed field raises BmbenchError."""
    members: dict[str, set[int]] = {}
    for ann in gt.dataset["annotations"]:
        names = ann.get("subsets", [])
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise BmbenchError(f"{source}: annotation {ann['id']} has a malformed 'subsets' (want a list of names)")
        for name in names:
            members.setdefault(name, set()).add(ann["id"])
    return dict(sorted(members.items()))


def breakdown_names(gt: COCO, source: str = "ground truth") -> dict[str, Any]:
    """The per-subset and per-class column of every subset name and category id: {"subsets": {name: column},
    "classes": {category id: column}}, columns mask_AP_<subset> and mask_AP_<class name> (whitespace as _; a class
    named like a subset becomes mask_AP_class_<name>)."""
    subsets = {name: f"mask_AP_{name}" for name in subset_ids(gt, source)}
    classes = {}
    for cat_id in sorted(gt.cats):
        name = "_".join(str(gt.cats[cat_id].get("name", cat_id)).split())
        column = f"mask_AP_{name}"
        classes[cat_id] = f"mask_AP_class_{name}" if column in subsets.values() else column
    return {"subsets": subsets, "classes": classes}


def _summary_text(prefix: str, stats: dict[str, float], max_dets: int) -> str:
    """COCOeval's summary lines, for the numbers as bmbench read them."""
    rows = [("Precision", "AP", "0.50:0.95", "all", max_dets)]
    rows += [("Precision", "AP", "0.50", "all", max_dets), ("Precision", "AP", "0.75", "all", max_dets)]
    rows += [("Precision", "AP", "0.50:0.95", area, max_dets) for area in ("small", "medium", "large")]
    rows += [("Recall", "AR", "0.50:0.95", "all", m) for m in max_dets_settings(max_dets)]
    rows += [("Recall", "AR", "0.50:0.95", area, max_dets) for area in ("small", "medium", "large")]
    lines = [f"{prefix}:"]
    for (kind, short, iou, area, m), value in zip(rows, [stats[n] for n in stat_names(max_dets)], strict=True):
        shown = -1.0 if math.isnan(value) else value
        lines.append(
            f" Average {kind:<9} ({short}) @[ IoU={iou:<9} | area={area:>6s} | maxDets={m:>3d} ] = {shown:0.3f}"
        )
    return "\n".join(lines) + "\n"


def score_detections(
    gt_json: Path,
    detections: list[dict] | Path,
    *,
    iou_types: Sequence[str] = ("segm", "bbox"),
    image_ids: Sequence[int] | None = None,
    summary: list[str] | None = None,
    evaluator: str = "pycocotools",
    max_dets: int = MAX_DETS,
    boundary: bool = True,
    breakdown: bool = True,
) -> dict[str, float]:
    """COCO metrics of `detections` (result dicts or a JSON file of them) against the ground truth `gt_json`.

    Scores each of `iou_types` that the detections carry (a segm-only or bbox-only list scores only that type).
    Returns e.g. {"mask_AP": ..., "mask_AP50": ..., "box_APl": ..., "box_AR100": ...}; no detections give all
    zeros. With segm scored, also ``boundary_AP``/``_AP50``/``_AP75`` (Boundary AP, Cheng et al. 2021; when
    `boundary`) and, when `breakdown`, ``mask_AP_<subset>`` for every subset name in the ground truth's
    ``subsets`` fields (ground truth outside the subset ignored) and ``mask_AP_<class name>`` per category.

    `evaluator`: "pycocotools" or "faster" (faster-coco-eval; same numbers). `max_dets`: detections per image
    scored (COCOeval's maxDets); a ground truth with more instances in one image warns. `image_ids` restricts
    scoring to those images. Summary tables are appended to `summary` when it is given.
    """
    unknown = [iou for iou in iou_types if iou not in IOU_TYPES]
    if unknown:
        raise BmbenchError(f"unknown iou type(s) {unknown} (known: {', '.join(IOU_TYPES)})")
    check_evaluator(evaluator)
    check_max_dets(max_dets)
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
    columns = breakdown_names(gt, str(gt_json)) if breakdown else {"subsets": {}, "classes": {}}
    _gt_counts_over(gt, image_ids, max_dets, detections)
    if not detections:
        return _empty_metrics(gt, image_ids, iou_types, max_dets, columns, boundary)
    if not set(iou_types) & set(present):
        raise BmbenchError(f"{source}: the detections carry none of the requested iou types {list(iou_types)}")
    index = GroundTruth(gt, evaluator)
    ids = None if image_ids is None else list(image_ids)
    metrics: dict[str, float] = {}
    for iou in iou_types:
        if iou not in present:  # said, not silent: a score missing from the table has a reason
            message = f"{source}: {IOU_TYPES[iou]} AP not scored: the entries carry no {FIELDS[iou]!r}"
            warnings.warn(message, BmbenchWarning, stacklevel=2)
            continue
        results = _results(detections, iou)
        run = run_cocoeval(index, results, iou, image_ids=ids, max_dets=max_dets)
        stats = summarize(run, max_dets)
        metrics |= {f"{IOU_TYPES[iou]}_{name}": value for name, value in stats.items()}
        if summary is not None:
            summary.append(_summary_text(f"{iou} ({evaluator})", stats, max_dets))
        if iou != "segm":
            continue
        if boundary:  # matched again on the segm run's IoUs combined with boundary IoUs
            edge = summarize(boundary_run(run), max_dets)
            metrics |= {f"boundary_{name}": edge[name] for name in BOUNDARY_STATS}
        for cat_id, value in per_category_ap(run).items():
            if cat_id in columns["classes"]:
                metrics[columns["classes"][cat_id]] = value
        members = subset_ids(gt) if columns["subsets"] else {}
        all_ids = {ann["id"] for ann in gt.dataset["annotations"]}
        for name, column in columns["subsets"].items():  # matched again, the rest of the ground truth ignored
            metrics[column] = summarize(rematch(run, ignore_ids=all_ids - members[name]), max_dets)["AP"]
    return metrics


# COCOeval's area ranges of the summary names (inclusive bounds, as its evaluateImg compares them)
_AREA_RANGES = {"": (0.0, 1e10), "s": (0.0, 32.0**2), "m": (32.0**2, 96.0**2), "l": (96.0**2, 1e10)}


def _empty_metrics(
    gt: COCO,
    image_ids: Sequence[int] | None,
    iou_types: Sequence[str],
    max_dets: int,
    columns: dict[str, Any],
    boundary: bool,
) -> dict[str, float]:
    """What COCOeval gives for no detections at all: 0 where there is ground truth to miss, NaN (its -1) where
    there is none (an area range, a class or a subset without non-crowd instances), as with any detections."""
    wanted = set(gt.imgs) if image_ids is None else set(image_ids)
    anns = [a for a in gt.dataset["annotations"] if a["image_id"] in wanted and not a.get("iscrowd", 0)]

    def missed(present: bool) -> float:
        return 0.0 if present else math.nan

    in_range = {key: any(lo <= a["area"] <= hi for a in anns) for key, (lo, hi) in _AREA_RANGES.items()}
    stats = {name: missed(in_range[name[-1] if name[-1] in "sml" else ""]) for name in stat_names(max_dets)}
    metrics = {f"{IOU_TYPES[iou]}_{name}": value for iou in iou_types for name, value in stats.items()}
    if "segm" in iou_types:
        metrics |= {f"boundary_{name}": stats[name] for name in BOUNDARY_STATS if boundary}
        classes = {a["category_id"] for a in anns}
        metrics |= {column: missed(cat in classes) for cat, column in columns["classes"].items()}
        kept = {a["id"] for a in anns}
        members = subset_ids(gt) if columns["subsets"] else {}
        metrics |= {column: missed(bool(members[name] & kept)) for name, column in columns["subsets"].items()}
    return metrics


def _results(detections: list[dict], iou_type: str) -> list[dict]:
    """Copies that keep only this type's field: loadRes takes `area` from the bbox whenever one is present, which
    would put masks in the wrong COCO size range; it also writes into the dicts."""
    keep = ("image_id", "category_id", "score", FIELDS[iou_type])
    return [{key: det[key] for key in keep} for det in detections]


def metrics_frame(metrics: dict[str, float]) -> pd.DataFrame:
    """A tidy table of `score_detections` output: one row per metric, columns iou_type, metric, value."""
    by_prefix = {prefix: iou for iou, prefix in IOU_TYPES.items()} | {"boundary": "boundary"}
    rows = []
    for key, value in metrics.items():
        prefix, _, name = key.partition("_")
        rows.append({"iou_type": by_prefix.get(prefix, prefix), "metric": name, "value": value})
    return pd.DataFrame(rows, columns=["iou_type", "metric", "value"])
