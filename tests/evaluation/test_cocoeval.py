"""pycocotools and faster-coco-eval give the same numbers (to 1e-6) on ground truth as detections, perturbed
detections, crowds and images without detections; bmbench's summary equals COCOeval's own; bad choices fail in
one line."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from bmbench.data.coco import load_coco
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchError
from bmbench.evaluation.cocoeval import GroundTruth, check_evaluator, run_cocoeval, stat_names, summarize
from bmbench.evaluation.scoring import encode_masks, score_detections

COMPARED = [f"{prefix}_{name}" for prefix in ("mask", "box") for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
COMPARED += ["boundary_AP", "boundary_AP50", "boundary_AP75"]


@pytest.fixture(scope="module")
def gt_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic split with two of its instances turned into crowd regions."""
    root = write_synthetic_dataset(tmp_path_factory.mktemp("evaluators") / "ds", num_images=6, size=128, seed=7)
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    for ann in data["annotations"][::9]:
        ann["iscrowd"] = 1
    path.write_text(json.dumps(data))
    return path


def _detections(gt_json: Path, how: str) -> list[dict]:
    data = json.loads(gt_json.read_text())
    rng = np.random.default_rng(3)
    out = []
    for ann in data["annotations"]:
        if how == "some_images" and ann["image_id"] % 2 == 0:
            continue  # these images get no detections
        det = {k: ann[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
        if how in ("perturbed", "some_images"):
            mask = torch.from_numpy(mask_utils.decode(ann["segmentation"])).float()[None, None]
            kind = int(rng.integers(3))
            if kind == 1:
                mask = 1 - F.max_pool2d(1 - mask, kernel_size=3, stride=1, padding=1)  # 1-px erosion
            elif kind == 2:
                mask = torch.roll(mask, shifts=2, dims=3)
            x, y, w, h = ann["bbox"]
            det |= {
                "segmentation": encode_masks(mask[0].bool())[0],
                "bbox": [x + rng.normal(0, 1), y + rng.normal(0, 1), w, h],
                "score": float(rng.random()),
            }
        out.append(det)
    return out


@pytest.mark.parametrize("how", ["ground_truth", "perturbed", "some_images"])
def test_faster_gives_the_same_numbers(gt_json: Path, how: str) -> None:
    pytest.importorskip("faster_coco_eval")
    detections = _detections(gt_json, how)
    ours = score_detections(gt_json, detections, evaluator="pycocotools")
    theirs = score_detections(gt_json, detections, evaluator="faster")
    assert set(ours) == set(theirs)
    for key in COMPARED + [k for k in ours if k.startswith("mask_AP_")]:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6, nan_ok=True), key
    if how == "ground_truth":
        assert ours["mask_AP"] == pytest.approx(1.0, abs=1e-12) and ours["boundary_AP"] == pytest.approx(1.0, abs=1e-12)
    else:
        # Boundary IoU is min(mask IoU, boundary IoU), and equal to the mask IoU on masks thinner than 2d.
        assert 0.0 < ours["mask_AP"] < 1.0 and 0.0 < ours["boundary_AP"] <= ours["mask_AP"]


def test_faster_gives_the_same_numbers_at_another_max_dets(gt_json: Path) -> None:
    pytest.importorskip("faster_coco_eval")
    detections = _detections(gt_json, "perturbed")
    kwargs = {"iou_types": ("segm",), "max_dets": 2, "breakdown": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # images with more than 2 instances
        ours = score_detections(gt_json, detections, evaluator="pycocotools", **kwargs)
        theirs = score_detections(gt_json, detections, evaluator="faster", **kwargs)
    assert "mask_AR2" in ours and "mask_AR100" not in ours and ours["mask_AP"] < 1.0
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("how", ["perturbed", "some_images"])
def test_boundary_ap_equals_faster_coco_evals_own_boundary_iou_type(gt_json: Path, how: str) -> None:
    """bmbench computes boundary IoU only where the mask IoU reaches 0.5; faster-coco-eval for every pair."""
    faster_coco_eval = pytest.importorskip("faster_coco_eval")
    detections = _detections(gt_json, how)
    coco = faster_coco_eval.COCO(json.loads(gt_json.read_text()))
    keep = ("image_id", "category_id", "score", "segmentation")
    native = faster_coco_eval.COCOeval_faster(
        coco, coco.loadRes([{k: d[k] for k in keep} for d in detections]), "boundary"
    )
    native.evaluate()
    native.accumulate()
    native.summarize()
    for evaluator in ("pycocotools", "faster"):
        ours = score_detections(gt_json, detections, iou_types=("segm",), evaluator=evaluator, breakdown=False)
        got = [ours["boundary_AP"], ours["boundary_AP50"], ours["boundary_AP75"]]
        assert got == pytest.approx(list(native.stats[:3]), abs=1e-12), evaluator


def test_summary_equals_cocoevals_own(gt_json: Path) -> None:
    coco = load_coco(gt_json)
    detections = [
        {k: d[k] for k in ("image_id", "category_id", "score", "segmentation")}
        for d in _detections(gt_json, "perturbed")
    ]
    ours = summarize(run_cocoeval(GroundTruth(coco), [dict(d) for d in detections], "segm"))
    reference = COCOeval(coco, coco.loadRes([dict(d) for d in detections]), iouType="segm")
    with contextlib.redirect_stdout(io.StringIO()):
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    expected = [float("nan") if v < 0 else v for v in reference.stats]
    assert list(ours) == list(stat_names()) and list(ours.values()) == pytest.approx(expected, nan_ok=True)


def test_unknown_evaluator_and_bad_max_dets_fail_in_one_line(gt_json: Path) -> None:
    with pytest.raises(BmbenchError, match=r"^unknown evaluator 'bogus' \(use pycocotools or faster\)$"):
        score_detections(gt_json, [], evaluator="bogus")
    with pytest.raises(BmbenchError, match=r"^max_dets must be a positive integer, got 0$"):
        score_detections(gt_json, [], max_dets=0)


def test_faster_requested_but_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import now raises ImportError
    with pytest.raises(
        BmbenchError, match=r"faster-coco-eval, which is not installed: pip install 'bmbench\[faster\]'"
    ):
        check_evaluator("faster")
    check_evaluator("pycocotools")
