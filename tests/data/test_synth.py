"""The synthetic shapes dataset: determinism, valid COCO, mask/box/area agreement, content, difficulties, subsets,
cache, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from typer.testing import CliRunner

from bmbench.data import scenes, synth
from bmbench.data.scenes import CATEGORIES, DEFAULT_DIFFICULTY, render_image
from bmbench.data.synth import (
    default_dataset_dir,
    ensure_default_dataset,
    instance_subsets,
    is_thin,
    opened_fraction,
    thin_radius,
    touching_pairs,
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
    # The scenes of bmbench 0.1.0 (now the `hard` difficulty): crowds, all COCO size ranges.
    root = tmp_path_factory.mktemp("synth") / "ds"
    return write_synthetic_dataset(root, num_images=24, size=256, seed=1, difficulty="hard")


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", num_images=40, size=128, seed=0)


def _grown(mask: np.ndarray) -> np.ndarray:
    grown = mask.copy()  # 4-neighbour dilation by one pixel
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


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
        assert ann["area"] == int(mask.sum()) >= scenes.MIN_VISIBLE_AREA
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
            grown = _grown(masks[i])
            touching += sum(
                group[i]["category_id"] == group[j]["category_id"] and (grown & masks[j]).any()
                for j in range(i + 1, len(group))
            )
    assert touching >= 3


def test_default_is_light_with_few_instances_a_flat_background_and_both_subsets(light: Path) -> None:
    assert DEFAULT_DIFFICULTY == "light"
    anns = _annotations(light)
    counts = np.bincount([ann["image_id"] for ann in anns], minlength=41)[1:]
    assert counts.min() >= 1 and counts.max() <= 4 and 2.5 <= counts.mean() <= 4
    assert {ann["category_id"] for ann in anns} == set(range(1, len(CATEGORIES) + 1))
    names = [name for ann in anns for name in ann["subsets"]]
    assert set(names) == {"touching", "thin"}
    assert 0.2 <= names.count("touching") / len(anns) <= 0.8 and 0.05 <= names.count("thin") / len(anns) <= 0.4
    pixels, instances = render_image(np.random.default_rng([0, 0]), 128)  # flat: off the instances, one colour
    covered = np.any([mask for _, mask in instances], axis=0)
    assert len(np.unique(pixels[~covered].reshape(-1, 3), axis=0)) == 1


def test_subsets_field_matches_the_touching_and_thin_definitions(light: Path) -> None:
    coco = COCO(str(light / "annotations" / "instances_val.json"))  # pycocotools reads the extra field fine
    for split in ("train", "val"):
        data = json.loads((light / "annotations" / f"instances_{split}.json").read_text())
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for group in by_image.values():
            masks = [mask_utils.decode(ann["segmentation"]).astype(bool) for ann in group]
            for i, ann in enumerate(group):
                assert isinstance(ann["subsets"], list) and set(ann["subsets"]) <= {"touching", "thin"}
                touches = any(
                    j != i and group[j]["category_id"] == ann["category_id"] and (_grown(masks[i]) & masks[j]).any()
                    for j in range(len(group))
                )
                assert ("touching" in ann["subsets"]) == touches
                assert ("thin" in ann["subsets"]) == (opened_fraction(masks[i], thin_radius(128)) > synth.THIN_FRACTION)
    assert coco.anns


def test_thin_test_on_constructed_masks() -> None:
    assert thin_radius(128) == 2 and thin_radius(256) == 4 and thin_radius(64) == 1
    square = np.zeros((40, 40), dtype=bool)
    square[5:25, 5:25] = True
    # The 13-px digital disk of radius 2 fits everywhere but in the corners: 3 px lost at each of the 4.
    assert opened_fraction(square, 2) == 12 / 400 and not is_thin(square, 2)
    line = np.zeros((40, 40), dtype=bool)
    line[10, 2:38] = True
    assert opened_fraction(line, 1) == 1.0 and is_thin(line, 1)
    comb = square.copy()
    comb[25:35, 6:9] = comb[25:35, 12:15] = comb[25:35, 18:21] = True  # three 3-px teeth: 90 of 490 px
    # The teeth go but for their roots that disks inside the bar reach, and so do the bar's top corners.
    assert opened_fraction(comb, 2) == 87 / 490 and not is_thin(comb, 2)
    assert is_thin(comb, 2, fraction=0.15)
    edge = np.zeros((40, 40), dtype=bool)
    edge[:, :3] = True  # a 3-px strip cut by the image border is not thin: the border counts as inside
    assert opened_fraction(edge, 2) == 0.0
    assert opened_fraction(np.zeros((8, 8), dtype=bool), 2) == 0.0


def test_touching_pairs_need_the_same_class_and_a_shared_edge() -> None:
    a, b, c = (np.zeros((20, 20), dtype=bool) for _ in range(3))
    a[2:9, 2:9] = True
    b[2:9, 9:16] = True  # shares an edge with a
    c[10:17, 9:16] = True  # one empty row below b
    assert touching_pairs([0, 0, 0], [a, b, c]) == [True, True, False]
    assert touching_pairs([0, 1, 1], [a, b, c]) == [False, False, False]
    corner = np.zeros((20, 20), dtype=bool)
    corner[9, 9] = True  # touches a only diagonally (8-neighbour): not touching
    assert touching_pairs([0, 0], [a, corner]) == [False, False]
    assert instance_subsets([(0, a), (0, b)]) == [["touching"], ["touching"]]
    assert instance_subsets([]) == []


def test_hard_scenes_are_the_scenes_of_before_issue_12() -> None:
    pixels, instances = render_image(np.random.default_rng([3, 1]), 96, "hard")
    digest = hashlib.sha256(pixels.tobytes() + b"".join(np.packbits(m).tobytes() for _, m in instances))
    assert [kind for kind, _ in instances] == [1, 2, 2, 2, 1]
    assert digest.hexdigest() == "a082fefe60742f4f694017695abf5ee6ca630e7e4a689874a3339ada490a7e52"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 1}, "at least 2 images"),
        ({"size": 32}, "at least 64 px"),
        ({"val_fraction": 1.0}, ""),
        ({"difficulty": "easy"}, "unknown difficulty 'easy' \\(known: light, hard\\)"),
    ],
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
    assert path == tmp_path / "cache" / "synth-light-3-64-s2"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["synth-light-3-64-s2"]  # no scratch left over

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synth, "write_synthetic_dataset", fail)
    assert ensure_default_dataset(num_images=3, size=64, seed=2) == path
    with pytest.raises(AssertionError, match="regenerated"):  # another difficulty is another dataset
        ensure_default_dataset(num_images=3, size=64, seed=2, difficulty="hard")


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(out: Path, **kwargs: object) -> None:
        (Path(out) / "annotations").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_synthetic_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_dataset(tmp_path, num_images=3, size=64)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset(cli_app: typer.Typer, tmp_path: Path) -> None:
    args = ["data", "synth", "--out", str(tmp_path / "ds"), "--images", "3", "--size", "64"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "3 light images" in result.output and "4 classes" in result.output and "touching" in result.output
    assert (tmp_path / "ds" / "annotations" / "instances_val.json").is_file()
    args = ["data", "synth", "--out", str(tmp_path / "hard"), "--images", "2", "--size", "64", "--difficulty", "hard"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "2 hard images" in result.output


@pytest.mark.parametrize(("option", "value"), [("--images", "1"), ("--size", "48"), ("--difficulty", "medium")])
def test_cli_rejects_bad_values_in_one_line(cli_app: typer.Typer, tmp_path: Path, option: str, value: str) -> None:
    result = CliRunner().invoke(cli_app, ["data", "synth", "--out", str(tmp_path / "ds"), option, value])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and value in lines[0]
    assert not (tmp_path / "ds").exists()
