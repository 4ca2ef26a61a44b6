"""Reference masks: exact AP on a constructed case, the order box ≤ foreground ≤ class-foreground on synthetic
data, crowds ignored, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchError
from bmbench.evaluation.reference_masks import REFERENCES, reference_detections, score_reference

SIZE = 64


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}


def _annotation(ann_id: int, category_id: int, mask: np.ndarray, *, iscrowd: int = 0) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {
        "id": ann_id,
        "image_id": 1,
        "category_id": category_id,
        "segmentation": _rle(mask),
        "area": int(mask.sum()),
        "bbox": bbox,
        "iscrowd": iscrowd,
    }


def _one_image_set(path: Path, annotations: list[dict], names: list[str]) -> Path:
    """A ground-truth file of one SIZE×SIZE image with `annotations` and categories 1.. named `names`."""
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": SIZE, "width": SIZE}],
        "annotations": annotations,
        "categories": [{"id": index, "name": name} for index, name in enumerate(names, start=1)],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def constructed(tmp_path: Path) -> Path:
    """One 64×64 image. A (class 1): an L of 700 px in a 40×40 box. B (class 2): a 20×20 square inside A's box,
    filling its own box. A crowd region (class 1) lies apart from both."""
    a = np.zeros((SIZE, SIZE), dtype=bool)
    a[0:40, 0:10] = True
    a[30:40, 0:40] = True
    b = np.zeros_like(a)
    b[0:20, 20:40] = True
    crowd = np.zeros_like(a)
    crowd[50:60, 50:60] = True
    annotations = [_annotation(1, 1, a), _annotation(2, 2, b), _annotation(3, 1, crowd, iscrowd=1)]
    return _one_image_set(tmp_path / "instances_val.json", annotations, ["ell", "square"])


# Per class, AP@[.5:.95] with one instance is the share of the ten IoU thresholds its IoU reaches.
# box: A's IoU 700/1600 = 0.44 -> 0; B's box is B -> 1. foreground: A's box also holds B, IoU 700/1100 = 0.64
# -> 0.5, 0.55, 0.6 pass -> 0.3; B -> 1. class-foreground: A's class union is A -> 1; B -> 1.
@pytest.mark.parametrize(("kind", "expected"), [("box", 0.5), ("foreground", 0.65), ("class-foreground", 1.0)])
def test_exact_ap_on_a_constructed_case(constructed: Path, kind: str, expected: float) -> None:
    metrics = score_reference(constructed, kind)
    assert metrics["mask_AP"] == pytest.approx(expected, abs=1e-9)
    assert not [key for key in metrics if key.startswith("box_")]  # segm only: box AP would be 1


@pytest.fixture
def resolution_case(tmp_path: Path) -> Path:
    """One 64×64 image. A (class 1): a 20×20 square on the 4-pixel grid, filling its box. B (class 2): a line one
    pixel wide and 40 tall, filling its 1×40 box."""
    square = np.zeros((SIZE, SIZE), dtype=bool)
    square[8:28, 8:28] = True
    line = np.zeros_like(square)
    line[10:50, 45] = True
    annotations = [_annotation(1, 1, square), _annotation(2, 2, line)]
    return _one_image_set(tmp_path / "instances_val.json", annotations, ["square", "line"])


# An R×R RoI of a mask that fills its box is all ones, so both come back whole at either R: AP 1. At stride 4 the
# square's cells are whole, so it comes back whole (IoU 1), but the line fills a quarter of each 4×4 cell it
# crosses: averaged to 0.25 everywhere, below 0.5, so its mask is empty (IoU 0): mask AP (1 + 0) / 2.
@pytest.mark.parametrize(("kind", "expected"), [("roi-28", 1.0), ("roi-56", 1.0), ("stride-4", 0.5)])
def test_resolution_references_exact_ap(resolution_case: Path, kind: str, expected: float) -> None:
    metrics = score_reference(resolution_case, kind)
    assert metrics["mask_AP"] == pytest.approx(expected, abs=1e-9)
    assert metrics["mask_AP_square"] == pytest.approx(1.0, abs=1e-9)


def test_resolution_references_lose_what_their_resolution_cannot_hold(tmp_path: Path) -> None:
    """On synthetic scenes (thin parts, holes): a 56×56 RoI holds at least as much of a mask as a 28×28 one, the
    stride-4 map least (at 128 px a 28×28 RoI may already hold every mask to IoU 0.95)."""
    root = write_synthetic_dataset(tmp_path / "ds", num_images=12, size=128, seed=3)
    ann_file = root / "annotations" / "instances_train.json"
    ap = {kind: score_reference(ann_file, kind)["mask_AP"] for kind in ("stride-4", "roi-28", "roi-56")}
    assert ap["stride-4"] < ap["roi-28"] <= ap["roi-56"] <= 1.0, ap


def test_crowds_get_no_reference_and_stay_out_of_the_foreground(constructed: Path) -> None:
    from bmbench.data.coco import load_coco

    detections = reference_detections(load_coco(constructed), "foreground")
    assert len(detections) == 2 and all(det["score"] == 1.0 for det in detections)
    union = np.logical_or.reduce([mask_utils.decode(det["segmentation"]).astype(bool) for det in detections])
    assert not union[50:60, 50:60].any()


def test_references_are_ordered_on_synthetic_data(tmp_path: Path) -> None:
    """Per instance, fg∩box ⊆ box and class-fg∩box ⊆ fg∩box, all containing the instance: IoU, hence AP, can only
    rise from box to foreground to class-foreground."""
    root = write_synthetic_dataset(tmp_path / "ds", num_images=12, size=96, seed=3)
    ann_file = root / "annotations" / "instances_train.json"
    ap = [score_reference(ann_file, kind)["mask_AP"] for kind in REFERENCES]
    assert ap[0] <= ap[1] <= ap[2] <= 1.0
    assert ap[0] < ap[2]  # synthetic shapes are far from their boxes


def test_unknown_reference_is_refused(constructed: Path) -> None:
    with pytest.raises(BmbenchError, match="unknown reference 'psychic'"):
        score_reference(constructed, "psychic")


def test_cli_prints_and_writes_the_table(cli_app: typer.Typer, tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", num_images=8, size=96, seed=1)
    out = tmp_path / "ref"
    result = CliRunner().invoke(
        cli_app, ["evaluate", "--reference", "foreground", "--data", str(root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "reference masks 'foreground'" in result.output
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["reference"]) == {"foreground"} and set(table["split"]) == {"val"}
    ap = table.loc[(table["iou_type"] == "segm") & (table["metric"] == "AP"), "value"].item()
    assert ap == pytest.approx(score_reference(root / "annotations" / "instances_val.json", "foreground")["mask_AP"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("segmentation", [["not", "numbers"], 3], "malformed polygon"),
        ("bbox", [1, 2], "no valid bbox"),
        ("category_id", 99, "unknown category_id 99"),
    ],
)
def test_malformed_ground_truth_is_named(constructed: Path, field: str, value: object, message: str) -> None:
    data = json.loads(constructed.read_text())
    data["annotations"][0][field] = value
    constructed.write_text(json.dumps(data))
    with pytest.raises(BmbenchError, match=f"{constructed.name}: annotation 1 .*{message}"):
        score_reference(constructed, "foreground")


def test_cli_skips_an_empty_segmentation_with_one_tidy_warning(cli_app: typer.Typer, tmp_path: Path) -> None:
    """`segmentation: []` once gave a pycocotools IndexError traceback (exit 1); the ground truth is now read
    twice (references, then scoring) and the skip is said once, as one line with its count and no source line."""
    root = write_synthetic_dataset(tmp_path / "ds", num_images=8, size=96, seed=1)
    ann_file = root / "annotations" / "instances_val.json"
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["segmentation"] = []
    ann_file.write_text(json.dumps(data))
    ann_id, total = data["annotations"][0]["id"], len(data["annotations"])
    out = tmp_path / "ref"
    result = CliRunner().invoke(cli_app, ["evaluate", "--reference", "box", "--data", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {ann_file}: skipped 1 of {total} annotations (1 with an empty mask: id {ann_id})"
    ]
    assert (out / "metrics.csv").is_file()


@pytest.mark.parametrize("kind", ["image", "annotation"])
def test_cli_refuses_duplicate_ids_in_one_line_and_writes_nothing(
    cli_app: typer.Typer, tmp_path: Path, kind: str
) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", num_images=8, size=96, seed=1)
    ann_file = root / "annotations" / "instances_val.json"
    data = json.loads(ann_file.read_text())
    key = f"{kind}s"
    taken = data[key][0]["id"]
    data[key].append({**data[key][-1], "id": taken})
    ann_file.write_text(json.dumps(data))
    out = tmp_path / "ref"
    result = CliRunner().invoke(cli_app, ["evaluate", "--reference", "box", "--data", str(root), "--out", str(out)])
    assert result.exit_code == 2
    last = len(data[key]) - 1
    assert result.stderr.splitlines() == [f"error: {ann_file}: duplicate {kind} id {taken} ({key}[0], {key}[{last}])"]
    assert not out.exists()
