"""`bmbench ablate` end to end on real photographs: the committed set in tests/data/photos (crops of scikit-image's
coins and Hubble deep field photos, 12 to 42 instances a val image, sides such as 381x153 that are not multiples
of 32), through the real CLI, with two cells of a few steps each (about 10 s on 2 cores).

Oracle boxes, so that each val instance gets exactly one mask: the detections can then be counted against the
annotations, image by image, and each must be pasted back at its image's own odd size."""

from __future__ import annotations

import json
import math
import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"
SUITE = """
name: photos
dataset: {{kind: coco, root: {root}, train: train, val: val}}
train: {{protocol: shared-trunk, iters: 4, trunk_iters: 3, batch_size: 2, image_size: 224}}
eval: {{boxes: oracle, curve: [100]}}
grid:
  - {{family: blendmask, K: 2, M: 2, R: 8}}
variants: ["maskrcnn:R=8"]
speed: {{instances: [1, 5], image_size: 224x160, trunk: small, budget_s: 0.01}}
"""


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under root."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_a_tiny_ablation_on_the_real_photos_through_the_cli(cli_app: typer.Typer, tmp_path: Path) -> None:
    val = json.loads((PHOTOS / "annotations" / "instances_val.json").read_text(encoding="utf-8"))
    images = {image["id"]: image for image in val["images"]}
    instances = Counter(ann["image_id"] for ann in val["annotations"])
    assert max(instances.values()) >= 10 and all(image["width"] % 32 for image in images.values())

    suite = tmp_path / "photos.yaml"
    suite.write_text(textwrap.dedent(SUITE.format(root=json.dumps(str(PHOTOS)))))
    before, out = tree(PHOTOS), tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["ablate", str(suite), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # the set passes the dataset check cleanly, under the default max_dets
    assert tree(PHOTOS) == before  # nothing is written beside the committed set

    suite_dir = out / "photos"
    summary = pd.read_csv(suite_dir / "summary.csv")
    assert list(summary["spec"]) == ["blendmask:K=2,M=2,R=8", "maskrcnn:R=8"]
    assert list(summary["status"]) == ["ok", "ok"]
    for column in ("mask_AP", "mask_AP50", "mask_AP_coin", "mask_AP_galaxy", "boundary_AP", "box_AP"):
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in summary[column]), (column, list(summary[column]))
    assert (summary["mask_AP"] > 0).all()  # masks on the oracle boxes overlap the instances: a real score, not 0
    assert set(summary["dataset_root"]) == {str(PHOTOS)}

    for cell_id in summary["cell_id"]:
        detections = json.loads((suite_dir / cell_id / "eval" / "detections.json").read_text())
        assert Counter(d["image_id"] for d in detections) == instances  # one mask per annotated instance
        for detection in detections:  # pasted at the image's own size, e.g. 153 x 381, not a padded one
            image = images[detection["image_id"]]
            assert detection["segmentation"]["size"] == [image["height"], image["width"]]
            x, y, w, h = detection["bbox"]
            assert 0 <= x and 0 <= y and x + w <= image["width"] + 0.5 and y + h <= image["height"] + 0.5

    # the reference masks, scored first on the same val split: masks from the ground truth score as they should
    references = pd.read_csv(suite_dir / "references.csv").set_index("reference")
    assert set(references["split"]) == {"val"}
    assert references.loc["roi-56", "mask_AP"] == pytest.approx(1.0, abs=0.02)
    assert references.loc["box", "mask_AP"] < references.loc["foreground", "mask_AP"] <= 1
