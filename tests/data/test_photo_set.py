"""The real-photo set in tests/data/photos (its README.md gives the sources, the licences and how the masks were
made) is whole: its annotations match its image files, bmbench's own dataset check takes it without a word, and it
holds what the tests that use it rely on (many instances an image, sides that are not multiples of 32)."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from bmbench.data.coco import check_split
from bmbench.errors import BmbenchWarning

PHOTOS = Path(__file__).resolve().parent / "photos"
SPLITS = ("train", "val")
MAX_BYTES = 300_000  # the whole folder, script and notes included: a test fixture, not a dataset


def annotations(split: str) -> dict:
    return json.loads((PHOTOS / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))


def instance_counts(split: str) -> dict[str, int]:
    """file name -> instances annotated in it."""
    data = annotations(split)
    per_id = Counter(ann["image_id"] for ann in data["annotations"])
    return {image["file_name"]: per_id[image["id"]] for image in data["images"]}


@pytest.mark.parametrize("split", SPLITS)
def test_the_annotations_list_exactly_the_image_files_at_their_sizes(split: str) -> None:
    data = annotations(split)
    on_disk = sorted(p.name for p in (PHOTOS / split).iterdir())
    assert sorted(image["file_name"] for image in data["images"]) == on_disk
    for image in data["images"]:
        with Image.open(PHOTOS / split / image["file_name"]) as opened:
            assert opened.size == (image["width"], image["height"]), image["file_name"]
            assert opened.mode == ("L" if image["file_name"].endswith(".png") else "RGB")  # grey coins, colour sky


@pytest.mark.parametrize("split", SPLITS)
def test_many_instances_an_image_on_sides_that_are_not_multiples_of_32(split: str) -> None:
    data = annotations(split)
    counts = instance_counts(split)
    assert max(counts.values()) >= 10 and min(counts.values()) >= 5, counts
    assert {ann["category_id"] for ann in data["annotations"]} == {1, 2}  # coins and galaxies in both splits
    assert [c["name"] for c in data["categories"]] == ["coin", "galaxy"]
    for image in data["images"]:
        assert image["width"] % 32 and image["height"] % 32, image


@pytest.mark.parametrize("split", SPLITS)
def test_bmbench_dataset_check_takes_the_set_without_a_word(split: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", BmbenchWarning)  # a skipped, clipped or re-boxed entry would warn
        ann_file, image_dir, coco, check = check_split(PHOTOS, split)
    assert (ann_file.parent, image_dir) == (PHOTOS / "annotations", PHOTOS / split)
    assert check.message() == "" and check.num_skipped == 0 and len(coco.anns) == check.total
    for ann in coco.anns.values():  # each polygon rasterises to the area and box written beside it
        image = coco.imgs[ann["image_id"]]
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"]))
        assert int(mask_utils.area(rle)) == ann["area"] >= 24
        assert np.allclose(mask_utils.toBbox(rle), ann["bbox"], atol=0.01)


def test_the_set_is_small_and_not_ignored_by_git() -> None:
    files = [p for p in PHOTOS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < MAX_BYTES
    root = PHOTOS.parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    names = [str(p.relative_to(root)) for p in files]
    ignored = subprocess.run(["git", "check-ignore", *names], cwd=root, capture_output=True, text=True, check=False)
    assert ignored.stdout == "", ignored.stdout  # a clean clone must hold every file the tests read


def test_the_notes_give_sources_licences_and_how_the_masks_were_made() -> None:
    text = (PHOTOS / "README.md").read_text(encoding="utf-8")
    notes = " ".join(text.split())
    for words in ("coins.png", "No known copyright restrictions", "hubble_deep_field.jpg", "public domain",
                  "Not by human annotators", "classical segmentation"):  # fmt: skip
        assert words in notes, words
    rows = {line.split("|")[2].strip(" `"): line for line in text.splitlines() if line.startswith(("| train", "| val"))}
    for split in SPLITS:  # the table's sizes and counts are the files'
        counts = instance_counts(split)
        for image in annotations(split)["images"]:
            row = rows[image["file_name"]]
            assert row.startswith(f"| {split} |") and f"| {image['width']}×{image['height']} |" in row, row
            assert row.endswith(f"| {counts[image['file_name']]} |"), row
