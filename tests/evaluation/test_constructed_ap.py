"""Exact AP on constructed cases: Boundary IoU of a shifted square (by hand), subset AP with the rest ignored,
per-class AP, and the max_dets cap and its warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from bmbench.evaluation.boundary import boundary_mask, boundary_rles, boundary_width
from bmbench.evaluation.scoring import encode_masks, score_detections

EXACT = 1e-12  # COCOeval's precision is tp / (tp + fp + eps): "exact" means to this
SIDE = 100  # image side: diagonal 141.4, so the boundary width d = round(0.02 × 141.4) = 3


def _square(x: int, y: int, side: int, size: int = SIDE) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y : y + side, x : x + side] = True
    return mask


def _write_gt(path: Path, objects: list[dict], *, images: int = 1, categories: tuple[str, ...] = ("a",)) -> Path:
    """A COCO json of SIDE×SIDE images; each object: image, mask, optional category (1-based), subsets, iscrowd."""
    annotations = []
    for ann_id, obj in enumerate(objects, start=1):
        rle = encode_masks(obj["mask"][None])[0]
        x, y, w, h = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist()
        annotations.append(
            {
                "id": ann_id,
                "image_id": obj.get("image", 1),
                "category_id": obj.get("category", 1),
                "segmentation": rle,
                "area": int(obj["mask"].sum()),
                "bbox": [x, y, w, h],
                "iscrowd": obj.get("iscrowd", 0),
            }
            | ({"subsets": obj["subsets"]} if "subsets" in obj else {})
        )
    data = {
        "images": [{"id": i, "width": SIDE, "height": SIDE, "file_name": f"{i}.png"} for i in range(1, images + 1)],
        "categories": [{"id": i, "name": name} for i, name in enumerate(categories, start=1)],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


def _det(mask: torch.Tensor, score: float, image: int = 1, category: int = 1) -> dict:
    return {"image_id": image, "category_id": category, "score": score, "segmentation": encode_masks(mask[None])[0]}


def test_boundary_of_a_square_by_hand() -> None:
    assert boundary_width(SIDE, SIDE) == 3
    square = _square(20, 20, 60)
    edge = torch.from_numpy(boundary_mask(square.numpy(), 3))
    assert int(edge.sum()) == 60 * 60 - 54 * 54  # the 3-px frame inside the square
    assert not edge[23:77, 23:77].any() and edge[20:23, 20:80].all()
    full = boundary_mask(np.ones((10, 10), dtype=bool), 2)  # the image border counts as contour
    assert int(full.sum()) == 100 - 36
    ring = np.zeros((20, 20), dtype=bool)
    ring[2:18, 2:18], ring[8:12, 8:12] = True, False  # a hole is contour too
    assert boundary_mask(ring, 2).sum() == 16 * 16 - 12 * 12 + (8 * 8 - 4 * 4) and not boundary_mask(ring[:0], 1).size


def test_one_pixel_shift_barely_moves_mask_iou_but_lowers_boundary_iou() -> None:
    a, b = _square(20, 20, 60), _square(21, 20, 60)
    rles = encode_masks(torch.stack([a, b]))
    rles = [{"size": r["size"], "counts": r["counts"].encode()} for r in rles]
    mask_iou = mask_utils.iou([rles[1]], [rles[0]], [0])[0, 0]
    # Overlap 59 × 60 of union 61 × 60.
    assert mask_iou == pytest.approx(59 / 61, abs=EXACT)
    edges = boundary_rles(rles)
    boundary_iou = mask_utils.iou([edges[1]], [edges[0]], [0])[0, 0]
    # Frames of 684 px; overlap: 6 full rows of 59 + 54 rows of 2 + 2 = 570; union 684 + 684 - 570 = 798.
    assert boundary_iou == pytest.approx(570 / 798, abs=EXACT) and 570 / 798 == pytest.approx(5 / 7)


@pytest.mark.parametrize("evaluator", ["pycocotools", "faster"])
def test_boundary_ap_of_a_shifted_square(tmp_path: Path, evaluator: str) -> None:
    if evaluator == "faster":
        pytest.importorskip("faster_coco_eval")
    gt = _write_gt(tmp_path / "gt.json", [{"mask": _square(20, 20, 60)}])
    metrics = score_detections(gt, [_det(_square(21, 20, 60), 0.9)], iou_types=("segm",), evaluator=evaluator)
    assert metrics["mask_AP"] == pytest.approx(1.0, abs=EXACT)  # IoU 0.967 clears every threshold up to 0.95
    # min(mask IoU, boundary IoU) = 5/7 = 0.714 clears 0.50 … 0.70: 5 of the 10 thresholds.
    assert metrics["boundary_AP"] == pytest.approx(0.5, abs=EXACT)
    assert metrics["boundary_AP50"] == pytest.approx(1.0, abs=EXACT) and metrics["boundary_AP75"] == 0.0


def _four_squares() -> list[torch.Tensor]:
    return [_square(x, y, 30) for x, y in ((5, 5), (55, 5), (5, 55), (55, 55))]


def _subset_gt(tmp_path: Path) -> Path:
    """Four squares; the first two are `touching`, the last `thin` as well as the others `rest`."""
    tags = [["touching"], ["touching"], [], ["thin"]]
    return _write_gt(
        tmp_path / "gt.json", [{"mask": m, "subsets": t} for m, t in zip(_four_squares(), tags, strict=True)]
    )


def test_perfect_subset_with_a_wrong_rest(tmp_path: Path) -> None:
    gt = _subset_gt(tmp_path)
    squares = _four_squares()
    far = _square(40, 40, 10)  # overlaps no ground truth
    dets = [_det(squares[0], 0.9), _det(squares[1], 0.8), _det(far, 0.3), _det(far, 0.2)]
    metrics = score_detections(gt, dets, iou_types=("segm",))
    # touching: both found above the two false positives: precision 1 up to recall 1.
    assert metrics["mask_AP_touching"] == pytest.approx(1.0, abs=EXACT)
    # All four: recall reaches 1/2 at precision 1: 51 of the 101 recall thresholds.
    assert metrics["mask_AP"] == pytest.approx(51 / 101, abs=EXACT)
    # thin: its one instance is missed; the touching hits are ignored, the two false positives remain.
    assert metrics["mask_AP_thin"] == 0.0
    # The same rest, scored above the subset: hits at ranks 3 and 4 give precision 1/3, 1/2, enveloped to 1/2.
    dets = [_det(squares[0], 0.5), _det(squares[1], 0.4), _det(far, 0.9), _det(far, 0.8)]
    assert score_detections(gt, dets, iou_types=("segm",))["mask_AP_touching"] == pytest.approx(0.5, abs=EXACT)


def test_wrong_subset_with_a_perfect_rest(tmp_path: Path) -> None:
    gt = _subset_gt(tmp_path)
    squares = _four_squares()
    dets = [_det(squares[2], 0.9), _det(squares[3], 0.8)]  # the rest (and thin) perfect, touching missed
    metrics = score_detections(gt, dets, iou_types=("segm",))
    assert metrics["mask_AP_touching"] == 0.0  # the hits on the rest are ignored, not false positives
    assert metrics["mask_AP_thin"] == pytest.approx(1.0, abs=EXACT)
    assert metrics["mask_AP"] == pytest.approx(51 / 101, abs=EXACT)
    # Touching detected, but 5 px off (IoU 25·30/35·30 = 0.714): hits at 0.50 … 0.70 only.
    dets += [_det(_square(10, 5, 30), 0.7), _det(_square(60, 5, 30), 0.6)]
    assert score_detections(gt, dets, iou_types=("segm",))["mask_AP_touching"] == pytest.approx(0.5, abs=EXACT)


def test_per_class_ap(tmp_path: Path) -> None:
    squares = _four_squares()
    objects = [{"mask": m, "category": 1 + i % 2} for i, m in enumerate(squares)]
    gt = _write_gt(tmp_path / "gt.json", objects, categories=("disc", "teddy bear"))
    dets = [_det(squares[0], 0.9, category=1), _det(squares[2], 0.8, category=1), _det(squares[1], 0.7, category=1)]
    metrics = score_detections(gt, dets, iou_types=("segm",))
    assert metrics["mask_AP_disc"] == pytest.approx(
        1.0, abs=EXACT
    )  # both discs found; the wrong-class detection is a disc false positive last
    assert metrics["mask_AP_teddy_bear"] == 0.0
    assert metrics["mask_AP"] == pytest.approx(0.5, abs=EXACT)  # the mean over the two classes


def test_max_dets_caps_scoring_and_warns(tmp_path: Path) -> None:
    masks = [_square(10 * (i % 8), 10 * (i // 8) + 10, 9) for i in range(12)]
    gt = _write_gt(tmp_path / "gt.json", [{"mask": m} for m in masks])
    dets = [_det(m, 1.0 - i / 100) for i, m in enumerate(masks)]
    with pytest.warns(UserWarning, match=r"1 image\(s\) have more ground-truth instances than max_dets=10 \(most: 12"):
        capped = score_detections(gt, dets, iou_types=("segm",), max_dets=10)
    # 10 of the 12 found at precision 1: recall thresholds 0 … 0.83, i.e. 84 of 101.
    assert capped["mask_AP"] == pytest.approx(84 / 101, abs=EXACT) and "mask_AR10" in capped
    assert score_detections(gt, dets, iou_types=("segm",), max_dets=12)["mask_AP"] == pytest.approx(1.0, abs=EXACT)


def test_boundary_rles_keep_order_across_sizes() -> None:
    small, large = encode_masks(_square(2, 2, 5, size=16)[None])[0], encode_masks(_square(20, 20, 60)[None])[0]
    out = boundary_rles([large, small, large])
    assert [list(r["size"]) for r in out] == [[SIDE, SIDE], [16, 16], [SIDE, SIDE]]
    assert np.array_equal(mask_utils.decode(out[0]), mask_utils.decode(out[2]))
