"""References are scored under the rules of the cells they bound: the suite's max_dets, the same dataset check and
the same boxes (a bbox that disagrees with its mask gives way to the mask's extent, for every reader, with a
warning)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from bmbench.ablation.dataset import write_references
from bmbench.ablation.suite import load_suite
from bmbench.data.coco import CocoInstanceDataset
from bmbench.errors import BmbenchError, BmbenchWarning
from bmbench.evaluation.evaluate import evaluate_reference
from bmbench.evaluation.reference_masks import REFERENCES
from bmbench.evaluation.scoring import score_detections
from bmbench.schema import REFERENCES_TABLE

SIDE, CELL, SQUARE = 128, 11, 8  # an 11 x 11 grid of 8 px squares: 121 instances, more than COCO's cap of 100


def _grid(root: Path, *, bad_boxes: tuple[int, ...] = ()) -> Path:
    """A one-image val split holding 121 separate squares (ids 1..121); `bad_boxes` get bbox [0, 0, 5, 5]."""
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(root / "val" / "1.png")
    annotations = []
    for index in range(121):
        y, x = 1 + CELL * (index // 11), 1 + CELL * (index % 11)
        mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
        mask[y : y + SQUARE, x : x + SQUARE] = 1
        rle = mask_utils.encode(np.asfortranarray(mask))
        ann_id = index + 1
        bbox = [0, 0, 5, 5] if ann_id in bad_boxes else [x, y, SQUARE, SQUARE]
        annotations.append(
            {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": bbox, "area": SQUARE * SQUARE, "iscrowd": 0}
            | {"segmentation": {"size": [SIDE, SIDE], "counts": rle["counts"].decode("ascii")}}
        )
    data = {
        "images": [{"id": 1, "file_name": "1.png", "width": SIDE, "height": SIDE}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "square"}],
    }
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return root


def _bmbench_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, BmbenchWarning)]


def test_a_reference_scored_with_a_cap_above_the_instance_count_reaches_one(tmp_path: Path) -> None:
    root = _grid(tmp_path / "grid")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capped = evaluate_reference("roi-56", root)
    assert capped["mask_AP"] < 0.9  # 100 of 121 instances kept: the cap alone costs recall
    assert any("more ground-truth instances than max_dets=100" in m for m in _bmbench_warnings(caught))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate_reference("roi-56", root, max_dets=200)["mask_AP"] == pytest.approx(1.0)
    assert _bmbench_warnings(caught) == []


def test_a_suite_scores_its_references_with_its_own_eval_settings(tmp_path: Path) -> None:
    root = _grid(tmp_path / "grid")
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        f"name: s\ndataset: {{kind: coco, root: {root}, train: train, val: val}}\nvariants: [yolact]\n"
        "eval: {max_dets: 200}\n"
    )
    suite_dir = tmp_path / "out" / "s"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_references(load_suite(suite_file), suite_dir, root)
    assert not [m for m in _bmbench_warnings(caught) if "max_dets" in m]
    table = pd.read_csv(suite_dir / f"{REFERENCES_TABLE.stem}.csv").set_index("reference")
    assert list(table.index) == list(REFERENCES)
    assert table.loc["roi-56", "mask_AP"] == pytest.approx(1.0)  # 100 would have cost it about a fifth
    assert table.loc["box", "mask_AP"] == pytest.approx(1.0)  # squares fill their boxes


def test_the_cli_scores_a_reference_with_max_dets(cli_app: typer.Typer, tmp_path: Path) -> None:
    root = _grid(tmp_path / "grid")
    args = ["evaluate", "--reference", "roi-28", "--data", str(root), "--max-dets", "200", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "max_dets" not in result.stderr
    metrics = pd.read_csv(tmp_path / "o" / "metrics.csv")
    assert metrics.loc[(metrics["iou_type"] == "segm") & (metrics["metric"] == "AP"), "value"].item() == pytest.approx(
        1.0
    )


def test_bboxes_that_disagree_with_their_masks_give_way_to_the_masks_for_every_reader(tmp_path: Path) -> None:
    bad = (40, 77, 121)
    root = _grid(tmp_path / "grid", bad_boxes=bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference = evaluate_reference("roi-56", root, max_dets=200)
        dataset = CocoInstanceDataset(root, "val", image_size=SIDE)
    ann_file = root / "annotations" / "instances_val.json"
    assert set(_bmbench_warnings(caught)) == {
        f"{ann_file}: 3 annotations of 121 had a bbox that disagrees with their mask (IoU with the mask's extent "
        "under 0.9: ids 40, 77, 121); the mask's extent is used as the box"
    }
    assert reference["mask_AP"] == pytest.approx(1.0)  # 0.96 with the three JSON boxes
    _, target = dataset[0]
    training_boxes = target["boxes"].tolist()  # the masks' extents, as training has always used
    gt = json.loads(ann_file.read_text())["annotations"]
    detections = [
        {"image_id": 1, "category_id": 1, "score": 1.0, "bbox": [x0, y0, x1 - x0, y1 - y0]}
        for x0, y0, x1, y1 in training_boxes
    ]
    assert len(detections) == len(gt) == 121
    box_ap = score_detections(ann_file, detections, iou_types=("bbox",), max_dets=200)["box_AP"]
    assert box_ap == pytest.approx(1.0)  # COCOeval's ground-truth boxes are the ones training used


def test_references_refuse_an_image_whose_size_differs_from_its_annotation(tmp_path: Path) -> None:
    root = _grid(tmp_path / "grid")
    Image.new("RGB", (SIDE, SIDE // 2), (10, 20, 30)).save(root / "val" / "1.png")
    with pytest.raises(
        BmbenchError, match=r"^split 'val': .*1\.png \(image id 1\) is 128x64 but annotated as 128x128$"
    ):
        evaluate_reference("box", root)
