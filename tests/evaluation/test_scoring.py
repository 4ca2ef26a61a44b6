"""COCO scoring: ground truth scores 1, perturbations score lower, empty scores as COCOeval would, bad files and
malformed entries are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchError
from bmbench.evaluation.scoring import STAT_NAMES, detections_to_coco, encode_masks, metrics_frame, score_detections


@pytest.fixture(scope="module")
def gt_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synthetic_dataset(tmp_path_factory.mktemp("scoring") / "ds", num_images=8, size=128, seed=4)
    return root / "annotations" / "instances_train.json"


def _gt(gt_json: Path) -> dict:
    return json.loads(gt_json.read_text())


def _subset_columns(gt_json: Path) -> set[str]:
    return {f"mask_AP_{name}" for ann in _gt(gt_json)["annotations"] for name in ann.get("subsets", [])}


def _perfect(gt_json: Path) -> list[dict]:
    return [
        {k: ann[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
        for ann in _gt(gt_json)["annotations"]
    ]


def test_encode_masks_round_trips() -> None:
    masks = torch.rand(3, 20, 30) > 0.5
    rles = encode_masks(masks)
    assert all(isinstance(rle["counts"], str) and rle["size"] == [20, 30] for rle in rles)
    decoded = np.stack([mask_utils.decode(rle) for rle in rles])
    assert np.array_equal(decoded, masks.numpy()) and encode_masks(masks[:0]) == []


def test_ground_truth_as_detections_scores_exactly_one(gt_json: Path, capsys: pytest.CaptureFixture) -> None:
    summary: list[str] = []
    metrics = score_detections(gt_json, _perfect(gt_json), summary=summary)
    for key in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP50", "box_AP75"):
        assert metrics[key] == 1.0, key
    stats = {f"{prefix}_{name}" for prefix in ("mask", "box") for name in STAT_NAMES}
    classes = {f"mask_AP_{cat['name']}" for cat in _gt(gt_json)["categories"]}
    assert set(metrics) == stats | {"boundary_AP", "boundary_AP50", "boundary_AP75"} | classes | _subset_columns(
        gt_json
    )
    assert metrics["boundary_AP"] == 1.0 and all(metrics[name] == pytest.approx(1.0, abs=1e-12) for name in classes)
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in metrics.values())
    assert capsys.readouterr().out == ""  # COCOeval's tables are captured, not printed
    assert len(summary) == 2 and "Average Precision" in summary[0] and "maxDets=100 ] = 1.000" in summary[0]


def test_detections_built_from_tensors_score_one(gt_json: Path) -> None:
    gt = _gt(gt_json)
    label_to_category_id = [cat["id"] for cat in gt["categories"]]
    detections = []
    for image in gt["images"]:
        anns = [ann for ann in gt["annotations"] if ann["image_id"] == image["id"]]
        masks = torch.from_numpy(np.stack([mask_utils.decode(ann["segmentation"]) for ann in anns])).bool()
        boxes = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float64)
        boxes[:, 2:] += boxes[:, :2]
        labels = torch.tensor([label_to_category_id.index(ann["category_id"]) for ann in anns])
        detections += detections_to_coco(
            image["id"],
            scores=torch.linspace(1.0, 0.5, len(anns)),
            labels=labels,
            boxes=boxes,
            masks=masks,
            label_to_category_id=label_to_category_id,
        )
    metrics = score_detections(gt_json, detections)
    assert metrics["mask_AP"] == 1.0 and metrics["box_AP"] == 1.0


def test_perturbed_detections_score_strictly_lower(gt_json: Path) -> None:
    detections = _perfect(gt_json)
    eroded, shifted = [], []
    for det in detections:
        mask = torch.from_numpy(mask_utils.decode(det["segmentation"])).float()[None, None]
        inner = 1 - F.max_pool2d(1 - mask, kernel_size=3, stride=1, padding=1)  # 1-px erosion
        eroded.append(det | {"segmentation": encode_masks(inner[0].bool())[0]})
        x, y, w, h = det["bbox"]
        shifted.append(det | {"bbox": [x + 0.15 * w, y + 0.15 * h, w, h]})
    mask_ap = score_detections(gt_json, eroded, iou_types=("segm",))["mask_AP"]
    box_ap = score_detections(gt_json, shifted, iou_types=("bbox",))["box_AP"]
    assert 0.0 < mask_ap < 1.0 and 0.0 < box_ap < 1.0


def test_empty_detections_score_as_cocoeval_scores_detections_that_miss_everything(gt_json: Path) -> None:
    """0 where there is ground truth to miss, NaN where there is none (an area range without instances): the same
    numbers as one detection that matches nothing, which COCOeval itself scores."""
    missed = _perfect(gt_json)[:1]
    missed[0] = missed[0] | {"bbox": [0, 0, 1, 1], "segmentation": _empty_rle(missed[0]["segmentation"]["size"])}
    metrics, reference = score_detections(gt_json, []), score_detections(gt_json, missed)
    assert metrics.keys() == reference.keys()
    for name, value in metrics.items():
        assert value == reference[name] or (math.isnan(value) and math.isnan(reference[name])), name
    assert metrics["mask_AP"] == 0.0 and metrics["box_AP"] == 0.0
    assert any(math.isnan(value) for value in metrics.values())  # the synthetic set has no large instances


def _empty_rle(size: list[int]) -> dict:
    return encode_masks(torch.zeros(1, *size, dtype=torch.bool))[0]


def test_scores_only_the_types_present(gt_json: Path) -> None:
    segm_only = [{k: v for k, v in det.items() if k != "bbox"} for det in _perfect(gt_json)]
    bbox_only = [{k: v for k, v in det.items() if k != "segmentation"} for det in _perfect(gt_json)]
    segm = score_detections(gt_json, segm_only, boundary=False, breakdown=False)
    assert set(segm) == {f"mask_{name}" for name in STAT_NAMES}
    box = score_detections(gt_json, bbox_only)
    assert set(box) == {f"box_{name}" for name in STAT_NAMES} and box["box_AP"] == 1.0
    with pytest.raises(BmbenchError, match="none of the requested iou types"):
        score_detections(gt_json, bbox_only, iou_types=("segm",))


def test_image_ids_restrict_scoring(gt_json: Path, tmp_path: Path) -> None:
    first = _gt(gt_json)["images"][0]["id"]
    some = [det for det in _perfect(gt_json) if det["image_id"] == first]
    assert score_detections(gt_json, some)["mask_AP"] < 1.0  # the other images' instances are missed
    assert score_detections(gt_json, some, image_ids=[first])["mask_AP"] == pytest.approx(1.0, abs=1e-12)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(some))
    assert score_detections(gt_json, path, image_ids=[first])["box_AP"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(BmbenchError, match=r"image ids \[12345\] are not in the ground truth"):
        score_detections(gt_json, some, image_ids=[12345])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"image_id": 1,', r"dets\.json: malformed JSON at line 1 column 17"),
        ('{"image_id": 1}', r"dets\.json: expected a JSON list of detections, got dict"),
        ("unknown_image", r"dets\.json: entry 1 refers to unknown image_id 999"),
        ("unknown_category", r"dets\.json: entry 1 refers to unknown category_id 77"),
        ("wrong_size", r"dets\.json: entry 1 segmentation size \[10, 10\] differs from image"),
        ("no_score", r"dets\.json: entry 1 has no finite score"),
        ("not_object", r"dets\.json: entry 1 is not an object"),
        ("no_bbox", r"dets\.json: entry 1 lacks 'bbox', which entry 0 has"),
        (
            "bad_bbox",
            r"dets\.json: entry 1 has a malformed bbox \(want \[x, y, w, h\], finite, w and h >= 0\): \[1, 2\]$",
        ),
        ("negative_width", r"dets\.json: entry 1 has a malformed bbox \(want .*\): \[1, 2, -3, 4\]$"),
        ("nan_bbox", r"dets\.json: entry 1 has a malformed bbox \(want .*\): \[1, 2, nan, 4\]$"),
        ("bool_bbox", r"dets\.json: entry 1 has a malformed bbox \(want .*\): \[1, 2, True, 4\]$"),
        ("bad_rle", r"dets\.json: entry 1 segmentation is not an RLE with compressed counts"),
    ],
)
def test_bad_detection_files_name_the_file_and_entry(gt_json: Path, tmp_path: Path, content: str, message: str) -> None:
    detections = _perfect(gt_json)[:3]
    if content == "unknown_image":
        detections[1]["image_id"] = 999
    elif content == "unknown_category":
        detections[1]["category_id"] = 77
    elif content == "wrong_size":
        detections[1]["segmentation"] = encode_masks(torch.ones(1, 10, 10, dtype=torch.bool))[0]
    elif content == "no_score":
        del detections[1]["score"]
    elif content == "not_object":
        detections[1] = [1, 2]
    elif content == "no_bbox":
        del detections[1]["bbox"]
    elif content == "bad_bbox":
        detections[1]["bbox"] = [1, 2]
    elif content == "negative_width":
        detections[1]["bbox"] = [1, 2, -3, 4]
    elif content == "nan_bbox":
        detections[1]["bbox"] = [1, 2, math.nan, 4]  # json.dumps writes NaN, which json.loads reads back
    elif content == "bool_bbox":
        detections[1]["bbox"] = [1, 2, True, 4]
    elif content == "bad_rle":
        detections[1]["segmentation"] = [[0, 0, 4, 0, 4, 4]]
    path = tmp_path / "dets.json"
    path.write_text(content if content.startswith(("[", "{")) else json.dumps(detections))
    with pytest.raises(BmbenchError, match=message):
        score_detections(gt_json, path)


def test_metrics_frame_is_tidy(gt_json: Path) -> None:
    frame = metrics_frame(score_detections(gt_json, _perfect(gt_json), breakdown=False))
    assert list(frame.columns) == ["iou_type", "metric", "value"]
    assert len(frame) == 2 * len(STAT_NAMES) + 3 and set(frame["iou_type"]) == {"segm", "bbox", "boundary"}
    assert frame.set_index(["iou_type", "metric"]).loc[("segm", "AP"), "value"] == 1.0
