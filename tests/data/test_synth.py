"""The synthetic shapes dataset: determinism, valid COCO, mask/box/area agreement, content, cache, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from typer.testing import CliRunner

from bmbench.cli import _Group
from bmbench.cli.data import data_app
from bmbench.data import synth
from bmbench.data.synth import (
    CATEGORIES,
    default_dataset_dir,
    ensure_default_dataset,
    write_synthetic_dataset,
)
from bmbench.errors import BmbenchError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _annotations(root: Path) -> list[dict]:
    anns = []
    for split in ("train", "val"):
        anns += json.loads((root / "annotations" / f"instances_{split}.json").read_text())["annotations"]
    return anns


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", num_images=6, size=96, seed=0)


@pytest.fixture(scope="module")
def modest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", num_images=24, size=256, seed=1)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(small: Path, tmp_path: Path) -> None:
    again = write_synthetic_dataset(tmp_path / "again", num_images=6, size=96, seed=0)
    other = write_synthetic_dataset(tmp_path / "other", num_images=6, size=96, seed=1)
    first = _files(small)
    assert first == _files(again)
    assert len(first) == 2 + 6  # two annotation files, six images
    second = _files(other)
    assert first["annotations/instances_train.json"] != second["annotations/instances_train.json"]
    assert first["train/000000000001.png"] != second["train/000000000001.png"]


def test_layout_and_split(small: Path) -> None:
    train = COCO(str(small / "annotations" / "instances_train.json"))
    val = COCO(str(small / "annotations" / "instances_val.json"))
    assert len(train.imgs) + len(val.imgs) == 6 and len(val.imgs) >= 1
    assert not set(train.imgs) & set(val.imgs)
    assert [c["name"] for c in train.loadCats(train.getCatIds())] == list(CATEGORIES)
    for coco, split in ((train, "train"), (val, "val")):
        for image in coco.imgs.values():
            assert (small / split / image["file_name"]).is_file()


def test_masks_agree_with_bbox_and_area(modest: Path) -> None:
    coco = COCO(str(modest / "annotations" / "instances_train.json"))
    assert coco.anns
    ann_ids = [ann["id"] for ann in _annotations(modest)]
    assert len(ann_ids) == len(set(ann_ids))
    for ann in coco.anns.values():
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == int(mask.sum()) >= synth.MIN_VISIBLE_AREA
        assert ann["iscrowd"] == 0 and ann["category_id"] in coco.cats


def test_content_has_crowds_of_instances_all_size_ranges_and_touching_same_class_pairs(modest: Path) -> None:
    anns = _annotations(modest)
    per_image: dict[int, list[dict]] = {}
    for ann in anns:
        per_image.setdefault(ann["image_id"], []).append(ann)
    assert len(per_image) == 24
    assert np.mean([len(v) for v in per_image.values()]) >= 3
    areas = np.array([ann["area"] for ann in anns])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    assert {ann["category_id"] for ann in anns} == set(range(1, len(CATEGORIES) + 1))
    touching = 0
    for group in per_image.values():
        masks = [mask_utils.decode(ann["segmentation"]).astype(bool) for ann in group]
        for i in range(len(group)):
            assert not any((masks[i] & masks[j]).any() for j in range(i + 1, len(group)))  # visible parts
            grown = masks[i].copy()  # 4-neighbour dilation by one pixel
            grown[1:] |= masks[i][:-1]
            grown[:-1] |= masks[i][1:]
            grown[:, 1:] |= masks[i][:, :-1]
            grown[:, :-1] |= masks[i][:, 1:]
            touching += sum(
                group[i]["category_id"] == group[j]["category_id"] and (grown & masks[j]).any()
                for j in range(i + 1, len(group))
            )
    assert touching >= 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_images": 1}, "at least 2 images"), ({"size": 32}, "at least 64 px"), ({"val_fraction": 1.0}, "")],
)
def test_rejects_bad_parameters(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(BmbenchError, match=message or "val_fraction"):
        write_synthetic_dataset(tmp_path / "ds", **kwargs)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(BmbenchError, match="refusing to overwrite"):
        write_synthetic_dataset(tmp_path, num_images=2, size=64)


def test_ensure_default_dataset_generates_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMBENCH_DATA", str(tmp_path / "cache"))
    assert default_dataset_dir() == tmp_path / "cache"
    path = ensure_default_dataset(num_images=3, size=64, seed=2)
    assert path == tmp_path / "cache" / "synth-3-64-s2"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["synth-3-64-s2"]  # no scratch left over

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synth, "write_synthetic_dataset", fail)
    assert ensure_default_dataset(num_images=3, size=64, seed=2) == path


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(out: Path, **kwargs: object) -> None:
        (Path(out) / "annotations").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_synthetic_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_dataset(tmp_path, num_images=3, size=64)
    assert list(tmp_path.iterdir()) == []


def _cli() -> typer.Typer:
    root = typer.Typer(cls=_Group)  # the real app's group: BmbenchError -> one line, exit code 2
    root.add_typer(data_app, name="data")
    return root


def test_cli_writes_dataset(tmp_path: Path) -> None:
    args = ["data", "synth", "--out", str(tmp_path / "ds"), "--images", "3", "--size", "64"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "3 images" in result.output and "4 classes" in result.output
    assert (tmp_path / "ds" / "annotations" / "instances_val.json").is_file()


@pytest.mark.parametrize(("option", "value"), [("--images", "1"), ("--size", "48")])
def test_cli_rejects_bad_values_in_one_line(tmp_path: Path, option: str, value: str) -> None:
    result = CliRunner().invoke(_cli(), ["data", "synth", "--out", str(tmp_path / "ds"), option, value])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and value in lines[0]
    assert not (tmp_path / "ds").exists()
