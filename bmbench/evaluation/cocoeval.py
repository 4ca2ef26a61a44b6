"""The COCOeval back-ends that bmbench scores with, behind one function, with the same numbers.

- ``pycocotools``: the reference (default).
- ``faster``: faster-coco-eval (``pip install 'bmbench[faster]'``), C++ matching and accumulation, several times
  faster on large sets; its own boundary IoU for Boundary AP.

:func:`run_cocoeval` returns COCOeval's accumulated ``precision`` and ``recall`` arrays; the summary numbers are
read from them here (:func:`summarize`), not from either library's ``summarize()``, so that both evaluators and
any ``max_dets`` give the same names and values (pycocotools' summarize reads AP at maxDets=100 whatever the
parameters say).

Letters: T IoU thresholds (10), R recall thresholds (101), K categories, A area ranges (all, small, medium,
large), M max-detection settings (3).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bmbench.errors import BmbenchError
from bmbench.evaluation.boundary import BOUNDARY_DILATION_RATIO, boundary_rles, combined_ious

EVALUATORS = ("pycocotools", "faster")  # what --evaluator takes
MAX_DETS = 100  # detections per image kept and scored, as COCO
COCO_IOU_TYPES = ("segm", "bbox")  # what run_cocoeval scores (Boundary AP: boundary_run of a segm run)
_FASTER_HINT = "pip install 'bmbench[faster]' (or pip install faster-coco-eval)"


def check_evaluator(name: str) -> None:
    """Raise a one-line BmbenchError unless `name` is a known evaluator whose library is installed."""
    if name not in EVALUATORS:
        raise BmbenchError(f"unknown evaluator {name!r} (use {' or '.join(EVALUATORS)})")
    if name == "faster":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError as err:
            raise BmbenchError(
                f"--evaluator faster needs faster-coco-eval, which is not installed: {_FASTER_HINT}"
            ) from err


def check_max_dets(max_dets: int) -> None:
    """Raise a one-line BmbenchError unless `max_dets` is a positive integer."""
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
        raise BmbenchError(f"max_dets must be a positive integer, got {max_dets!r}")


def max_dets_settings(max_dets: int) -> list[int]:
    """COCOeval's maxDets for a cap of `max_dets` detections per image: [1, 10, max_dets] (clipped to the cap)."""
    return [min(1, max_dets), min(10, max_dets), max_dets]


def stat_names(max_dets: int = MAX_DETS) -> tuple[str, ...]:
    """The 12 COCO summary names; the recall ones name their maxDets (AR1, AR10, AR100 at the default)."""
    ar = [f"AR{m}" for m in max_dets_settings(max_dets)]
    return ("AP", "AP50", "AP75", "APs", "APm", "APl", *ar, "ARs", "ARm", "ARl")


class GroundTruth:
    """A ground-truth index for one evaluator: `coco` (pycocotools) and, for ``faster``, faster-coco-eval's own
    index over the same annotation dicts."""

    def __init__(self, coco: COCO, evaluator: str = "pycocotools") -> None:
        check_evaluator(evaluator)
        self.coco = coco
        self.evaluator = evaluator
        self._faster: Any = None
        if evaluator == "faster":
            import faster_coco_eval

            self._faster = faster_coco_eval.COCO(coco.dataset)

    def build(self, results: list[dict], iou_type: str) -> Any:
        """An un-run COCOeval of this evaluator for `iou_type` (segm or bbox) on COCO results (dicts, written into
        by loadRes)."""
        if iou_type not in COCO_IOU_TYPES:
            raise BmbenchError(f"unknown iou type {iou_type!r} (known: {', '.join(COCO_IOU_TYPES)})")
        with contextlib.redirect_stdout(io.StringIO()):
            if self.evaluator == "faster":
                from faster_coco_eval import COCOeval_faster

                return COCOeval_faster(self._faster, self._faster.loadRes(results), iouType=iou_type)
            return COCOeval(self.coco, self.coco.loadRes(results), iouType=iou_type)


def run_cocoeval(
    gt: GroundTruth,
    results: list[dict],
    iou_type: str,
    *,
    image_ids: Sequence[int] | None = None,
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """Run COCOeval (evaluate + accumulate) of `results` against `gt` and return ``precision`` ndarray[T, R, K, A, M]
    and ``recall`` ndarray[T, K, A, M] (-1 where nothing was scored), ``cat_ids`` (the K category ids in order),
    ``ious`` ({(image id, category id): ndarray[D, G]}) and ``evaluator`` (the COCOeval, for :func:`rematch`).

    `image_ids` restricts scoring to those images; `max_dets` caps the detections per image and category, as
    COCOeval does.
    """
    check_max_dets(max_dets)
    evaluator = gt.build(results, iou_type)
    evaluator.params.maxDets = max_dets_settings(max_dets)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(set(image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return _accumulated(evaluator) | {"ious": evaluator.ious, "evaluator": evaluator}


def _accumulated(evaluator: Any) -> dict[str, Any]:
    return {
        "precision": np.array(evaluator.eval["precision"]),
        "recall": np.array(evaluator.eval["recall"]),
        "cat_ids": list(evaluator.params.catIds),
    }


def rematch(run: dict[str, Any], *, ious: dict | None = None, ignore_ids: Collection[int] = frozenset()) -> dict:
    """Match and accumulate a :func:`run_cocoeval` run again, with other IoUs (e.g. Boundary IoU) or with the ground
    truth whose id is in `ignore_ids` set to ignore (as COCOeval ignores crowd regions: neither hit nor miss, and a
    detection matched to it is ignored too). The detections, their IoUs and their order are the run's: nothing is
    loaded or computed again. Returns ``precision``, ``recall`` and ``cat_ids`` as run_cocoeval does."""
    evaluator = run["evaluator"]
    p = evaluator.params
    cat_ids = p.catIds if p.useCats else [-1]
    table = run["ious"] if ious is None else ious
    anns = _gt_anns(evaluator)
    for ann in anns:  # both libraries read the flag when matching, from the dicts _prepare indexed
        ann["ignore"] = int(bool(ann.get("iscrowd", 0)) or ann["id"] in ignore_ids)
    try:
        if hasattr(evaluator, "gt_dataset"):  # faster-coco-eval: its C++ matching and accumulation
            import faster_coco_eval.faster_eval_api_cpp as faster_cpp

            rows = [[table[image, cat] for cat in cat_ids] for image in p.imgIds]
            args = (rows, evaluator.gt_dataset, evaluator.dt_dataset, p.imgIds, p.catIds, bool(p.useCats))
            evaluator.eval = faster_cpp.COCOevalEvaluateAccumulate(evaluator._paramsEval, *args)
        else:  # pycocotools: COCOeval.evaluate's matching loop, then accumulate
            kept, evaluator.ious = evaluator.ious, table
            evaluator.evalImgs = [
                evaluator.evaluateImg(image, cat, area, p.maxDets[-1])
                for cat in cat_ids
                for area in p.areaRng
                for image in p.imgIds
            ]
            evaluator.ious = kept
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.accumulate()
        return _accumulated(evaluator)
    finally:
        for ann in anns:
            ann["ignore"] = int(bool(ann.get("iscrowd", 0)))


def _gt_anns(evaluator: Any) -> list[dict]:
    if hasattr(evaluator, "gt_dataset"):
        return evaluator.cocoGt.loadAnns(evaluator.cocoGt.getAnnIds(imgIds=evaluator.params.imgIds))
    return [ann for group in evaluator._gts.values() for ann in group]


def _pair_anns(evaluator: Any, image: int, cat: int) -> tuple[list[dict], list[dict]]:
    """The ground truth and the score-sorted, truncated detections that the evaluator's computeIoU paired."""
    p = evaluator.params
    cats = [cat] if p.useCats else p.catIds
    if hasattr(evaluator, "gt_dataset"):
        gt = evaluator.gt_dataset.get_instances([image], cats, bool(p.useCats))[0][0]
        dt = evaluator.dt_dataset.get_instances([image], cats, bool(p.useCats))[0][0]
    else:
        gt = [g for c in cats for g in evaluator._gts[image, c]]
        dt = [d for c in cats for d in evaluator._dts[image, c]]
    order = np.argsort([-d["score"] for d in dt], kind="mergesort")
    return gt, [dt[i] for i in order][: p.maxDets[-1]]


def boundary_run(run: dict[str, Any], dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> dict[str, Any]:
    """Boundary AP's accumulation of a segm :func:`run_cocoeval` run: matched again on min(mask IoU, boundary IoU)
    (bmbench.evaluation.boundary). faster-coco-eval's own boundary regions with ``faster``, bmbench's (the same
    pixels; tested) with pycocotools."""
    evaluator = run["evaluator"]
    if hasattr(evaluator, "gt_dataset"):
        import faster_coco_eval.mask_api_new_cpp as faster_mask

        def mask_rle(ann: dict) -> dict:
            return ann["rle"]

        def boundaries(rles: list[dict]) -> list[dict]:
            return faster_mask.toBoundary(rles, dilation_ratio)
    else:

        def mask_rle(ann: dict) -> dict:
            return ann["segmentation"]

        def boundaries(rles: list[dict]) -> list[dict]:
            return boundary_rles(rles, dilation_ratio)

    ious = combined_ious(
        run["ious"],
        lambda image, cat: _pair_anns(evaluator, image, cat),
        mask_rle=mask_rle,
        boundaries=boundaries,
        min_iou=float(np.min(evaluator.params.iouThrs)),
    )
    return rematch(run, ious=ious)


def _mean(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(np.mean(values)) if values.size else float("nan")


def summarize(run: dict[str, Any], max_dets: int = MAX_DETS) -> dict[str, float]:
    """COCOeval's 12 summary numbers from :func:`run_cocoeval` output, named by :func:`stat_names`; NaN where
    COCOeval has nothing to score (its -1). AP at IoU 0.5 and 0.75 are thresholds 0 and 5 of 0.50:0.05:0.95."""
    precision, recall = run["precision"], run["recall"]  # (T, R, K, A, M), (T, K, A, M)
    values = [
        _mean(precision[:, :, :, 0, -1]),
        _mean(precision[0, :, :, 0, -1]),
        _mean(precision[5, :, :, 0, -1]),
        *(_mean(precision[:, :, :, a, -1]) for a in (1, 2, 3)),
        *(_mean(recall[:, :, 0, m]) for m in range(3)),
        *(_mean(recall[:, :, a, -1]) for a in (1, 2, 3)),
    ]
    return dict(zip(stat_names(max_dets), values, strict=True))


def per_category_ap(run: dict[str, Any]) -> dict[int, float]:
    """AP (IoU 0.50:0.95, all areas, the last maxDets) of each category id, as detectron2's COCOEvaluator reads
    it from ``precision[:, :, k, 0, -1]``; NaN for a category with no ground truth in the scored images."""
    precision = run["precision"]  # (T, R, K, A, M)
    return {cat: _mean(precision[:, :, k, 0, -1]) for k, cat in enumerate(run["cat_ids"])}
