"""The COCOeval implementations that bmbench scores with, behind one function, with the same numbers.

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
from bmbench.evaluation.boundary import BoundaryMatching, pycocotools_pair_anns

EVALUATORS = ("pycocotools", "faster")  # what --evaluator takes
MAX_DETS = 100  # detections per image kept and scored, as COCO
COCO_IOU_TYPES = ("segm", "bbox", "boundary")  # what run_cocoeval scores
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

    def load_results(self, results: list[dict]) -> Any:
        """COCO results (dicts, written into by loadRes) as this evaluator's detection index."""
        with contextlib.redirect_stdout(io.StringIO()):
            return (self._faster or self.coco).loadRes(results)

    def build(self, results: list[dict], iou_type: str) -> Any:
        """An un-run COCOeval of this evaluator for `iou_type` (segm, bbox or boundary)."""
        if iou_type not in COCO_IOU_TYPES:
            raise BmbenchError(f"unknown iou type {iou_type!r} (known: {', '.join(COCO_IOU_TYPES)})")
        dt = self.load_results(results)
        if self.evaluator == "faster":
            plain, boundary = _faster_classes()
            if iou_type == "boundary":
                return boundary(self._faster, dt, iouType="segm")
            return plain(self._faster, dt, iouType=iou_type)
        if iou_type == "boundary":
            return _IgnoringBoundaryCOCOeval(self.coco, dt, iouType="segm")
        return _IgnoringCOCOeval(self.coco, dt, iouType=iou_type)


class _Ignoring:
    """COCOeval mixin: ground truth whose id is in `ignore_ids` is set to ignore after _prepare (which sets
    ignore from iscrowd), so it counts as neither a hit nor a miss and detections matched to it are ignored.

    `known_ious`: the ``ious`` of an earlier run of the same type on the same detections, reused instead of
    recomputed (the IoUs do not depend on the ignore flags; matching sorts by them afterwards)."""

    ignore_ids: Collection[int] = frozenset()
    known_ious: dict | None = None

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802 - COCOeval's name
        if self.known_ious is not None:
            return self.known_ious[imgId, catId]
        return super().computeIoU(imgId, catId)

    def _ignored(self, anns: Any) -> None:
        if self.ignore_ids:
            for ann in anns:
                if ann["id"] in self.ignore_ids:
                    ann["ignore"] = 1


class _IgnoringCOCOeval(_Ignoring, COCOeval):
    def _prepare(self) -> None:
        super()._prepare()
        self._ignored(g for group in self._gts.values() for g in group)


class _IgnoringBoundaryCOCOeval(BoundaryMatching, _IgnoringCOCOeval):
    def _pair_anns(self, imgId: int, catId: int) -> tuple[list[dict], list[dict]]:  # noqa: N803
        return pycocotools_pair_anns(self, imgId, catId)


_FASTER_CLASSES: tuple[Any, Any] | None = None


def _faster_classes() -> tuple[Any, Any]:
    """faster-coco-eval's COCOeval_faster with the ignore mixin (its annotation dicts are live after _prepare),
    and the same for Boundary AP with :class:`BoundaryMatching` (its boundaries equal faster-coco-eval's own
    iouType "boundary" ones; tested)."""
    global _FASTER_CLASSES
    if _FASTER_CLASSES is None:
        from faster_coco_eval import COCOeval_faster

        class _IgnoringFasterCOCOeval(_Ignoring, COCOeval_faster):
            def _prepare(self) -> None:
                super()._prepare()
                self._ignored(self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=self.params.imgIds)))

        class _IgnoringFasterBoundaryCOCOeval(BoundaryMatching, _IgnoringFasterCOCOeval):
            def _pair_anns(self, imgId: int, catId: int) -> tuple[list[dict], list[dict]]:  # noqa: N803
                p = self.params
                cats = [catId] if p.useCats else p.catIds
                gt = self.gt_dataset.get_instances([imgId], cats, bool(p.useCats))[0][0]
                dt = self.dt_dataset.get_instances([imgId], cats, bool(p.useCats))[0][0]
                order = np.argsort([-d["score"] for d in dt], kind="mergesort")
                return gt, [dt[i] for i in order][: p.maxDets[-1]]

            def _mask_rle(self, ann: dict) -> dict:
                return ann["rle"]

        _FASTER_CLASSES = (_IgnoringFasterCOCOeval, _IgnoringFasterBoundaryCOCOeval)
    return _FASTER_CLASSES


def run_cocoeval(
    gt: GroundTruth,
    results: list[dict],
    iou_type: str,
    *,
    image_ids: Sequence[int] | None = None,
    max_dets: int = MAX_DETS,
    ignore_ids: Collection[int] = frozenset(),
    known_ious: dict | None = None,
) -> dict[str, Any]:
    """Run COCOeval (evaluate + accumulate) of `results` against `gt` and return its ``eval`` dict:
    ``precision`` ndarray[T, R, K, A, M] and ``recall`` ndarray[T, K, A, M] (-1 where nothing was scored), and
    ``cat_ids`` (the K category ids in order).

    `image_ids` restricts scoring to those images; `max_dets` caps the detections per image and category as
    COCOeval does; ground truth with an id in `ignore_ids` is ignored (see :class:`_Ignoring`). The ``ious`` it
    returns may be passed back as `known_ious` to a run of the same type, detections, images and max_dets.
    """
    check_max_dets(max_dets)
    evaluator = gt.build(results, iou_type)
    evaluator.ignore_ids = frozenset(ignore_ids)
    evaluator.known_ious = known_ious
    evaluator.params.maxDets = max_dets_settings(max_dets)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(set(image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return {
        "precision": np.asarray(evaluator.eval["precision"]),
        "recall": np.asarray(evaluator.eval["recall"]),
        "cat_ids": list(evaluator.params.catIds),
        "ious": evaluator.ious,
    }


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
