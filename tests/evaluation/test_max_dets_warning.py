"""The max_dets warning says what COCOeval does: it scores the best max_dets detections per image and class, so
oracle boxes of two classes in a crowded image are all scored, while one class beyond max_dets is not."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from test_constructed_ap import _det, _square, _write_gt

from bmbench.errors import BmbenchWarning
from bmbench.evaluation.scoring import score_detections


def _warning(gt: Path, dets: list[dict], max_dets: int) -> tuple[str, dict[str, float]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = score_detections(gt, dets, iou_types=("segm",), max_dets=max_dets, boundary=False)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, BmbenchWarning)]
    return message, metrics


@pytest.mark.parametrize(("classes", "unscored"), [(1, 2), (2, 0)])
def test_the_warning_counts_the_detections_cocoeval_leaves_unscored(
    tmp_path: Path, classes: int, unscored: int
) -> None:
    masks = [_square(10 * (i % 8), 10 * (i // 8) + 10, 9) for i in range(12)]
    objects = [{"mask": m, "category": 1 + i % classes} for i, m in enumerate(masks)]
    gt = _write_gt(tmp_path / "gt.json", objects, categories=("a", "b")[:classes])
    oracle = [_det(m, 1.0, category=o["category"]) for m, o in zip(masks, objects, strict=True)]  # every instance
    message, metrics = _warning(gt, oracle, max_dets=10)
    assert message.startswith("1 image(s) have more ground-truth instances than max_dets=10 (most: 12 in image 1)")
    assert f"leaves {unscored} of the 12 detections in those images unscored" in message
    assert "per image are kept" not in message  # what the old line claimed, whatever COCOeval did
    assert (metrics["mask_AP"] == pytest.approx(1.0)) == (unscored == 0)  # all scored: every instance found
