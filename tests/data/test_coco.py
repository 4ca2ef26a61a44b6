"""The COCO-format reader: layouts, polygon/RLE/crowd handling, validation messages, transforms, collate."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from bmbench.data.coco import CocoInstanceDataset, check_coco, collate, find_split
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchError, BmbenchWarning
from bmbench.evaluation.reference_masks import score_reference
from bmbench.evaluation.scoring import score_detections

W, H = 80, 60  # hand-written images are landscape, so resizing has to keep the aspect


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major mask, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] + counts) if flat[0] else counts}


def _box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _annotations() -> list[dict]:
    return [
        {  # a polygon: a right triangle
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "segmentation": [[10.0, 10.0, 40.0, 10.0, 10.0, 40.0]],
            "bbox": [10.0, 10.0, 30.0, 30.0],
            "area": 450.0,
            "iscrowd": 0,
        },
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": _rle(_box_mask(50, 20, 70, 50))}
        | {"bbox": [50, 20, 20, 30], "area": 600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "segmentation": _uncompressed(_box_mask(5, 5, 25, 15))}
        | {"bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 7, "segmentation": _uncompressed(_box_mask(30, 30, 70, 55))}
        | {"bbox": [30, 30, 40, 25], "area": 1000, "iscrowd": 1},
    ]


def _write(root: Path, split_dir: str, ann_name: str, annotations: list[dict], images: int = 2) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split_dir).mkdir(parents=True, exist_ok=True)
    infos = [{"id": i, "file_name": f"img{i}.png", "height": H, "width": W} for i in range(1, images + 1)]
    rng = np.random.default_rng(0)
    for info in infos:
        Image.fromarray(rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)).save(root / split_dir / info["file_name"])
    cats = [{"id": 3, "name": "box"}, {"id": 7, "name": "triangle"}]
    data = {"images": infos, "annotations": annotations, "categories": cats}
    ann_file = root / "annotations" / ann_name
    ann_file.write_text(json.dumps(data))
    return ann_file


@pytest.fixture
def hand(tmp_path: Path) -> Path:
    _write(tmp_path, "val2017", "instances_val2017.json", _annotations())
    return tmp_path


def test_find_split_both_layouts_and_explicit_names(tmp_path: Path) -> None:
    long, short = tmp_path / "long", tmp_path / "short"
    _write(long, "train2017", "instances_train2017.json", [])
    _write(short, "val", "instances_val.json", [])
    _write(short, "minival", "instances_minival.json", [])
    assert find_split(long, "train") == (long / "annotations/instances_train2017.json", long / "train2017")
    assert find_split(long, "train2017")[1] == long / "train2017"
    assert find_split(short, "val") == (short / "annotations/instances_val.json", short / "val")
    assert find_split(short, "minival")[1] == short / "minival"
    with pytest.raises(BmbenchError, match="instances_val2017.json.*instances_val.json"):
        find_split(long, "val")


def test_reads_polygon_and_rle_with_contiguous_labels(hand: Path) -> None:
    dataset = CocoInstanceDataset(hand, "val", image_size=W)  # scale 1: masks must equal the annotations
    assert len(dataset) == 2 and dataset.num_classes == 2
    assert dataset.label_to_category_id == [3, 7] and dataset.class_names == ["box", "triangle"]
    image, target = dataset[0]
    assert image.shape == (3, 64, 96) and image.dtype == torch.float32  # 60x80 padded to multiples of 32
    assert target["image_id"] == 1 and target["orig_size"] == (H, W) and target["size"] == (H, W)
    assert target["scale"] == 1.0
    assert target["labels"].tolist() == [1, 0]
    assert target["masks"].shape == (2, 64, 96) and target["masks"].dtype == torch.uint8
    triangle, box = target["masks"][0].bool(), target["masks"][1].bool()
    assert abs(int(triangle.sum()) - 450) < 40 and not triangle[:, 41:].any() and triangle[12, 12]
    assert torch.equal(box[:H, :W], torch.from_numpy(_box_mask(50, 20, 70, 50)))
    ys, xs = torch.nonzero(triangle, as_tuple=True)
    assert target["boxes"].tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [50, 20, 70, 50]]
    assert (image[:, H:, :] == 0).all() and (image[:, :, W:] == 0).all()


def test_crowd_annotations_are_left_out_of_targets(hand: Path) -> None:
    _, target = CocoInstanceDataset(hand, "val", image_size=W)[1]
    assert target["labels"].tolist() == [0] and target["iscrowd"].tolist() == [0]
    assert torch.equal(target["masks"][0, :H, :W].bool(), torch.from_numpy(_box_mask(5, 5, 25, 15)))
    _, with_crowd = CocoInstanceDataset(hand, "val", image_size=W, skip_crowd=False)[1]
    assert with_crowd["iscrowd"].tolist() == [0, 1]
    assert torch.equal(with_crowd["masks"][1, :H, :W].bool(), torch.from_numpy(_box_mask(30, 30, 70, 55)))


def test_malformed_json_names_file_and_position(hand: Path) -> None:
    ann_file = hand / "annotations" / "instances_val2017.json"
    ann_file.write_text('{"images": [1, 2,, 3]}')
    with pytest.raises(BmbenchError, match=r"instances_val2017\.json: malformed JSON at line 1 column 18"):
        CocoInstanceDataset(hand, "val")


def test_missing_image_names_image_and_annotation_file(hand: Path) -> None:
    (hand / "val2017" / "img2.png").unlink()
    expected = r"split 'val': \S*img2\.png \(image id 2\) is missing, listed in \S*instances_val2017\.json$"
    with pytest.raises(BmbenchError, match=expected):
        CocoInstanceDataset(hand, "val")


def test_annotation_entirely_outside_its_image_is_an_error(tmp_path: Path) -> None:
    anns = _annotations()
    anns[1]["id"], anns[1]["bbox"] = 42, [W + 5, 10, 10, 10]
    _write(tmp_path, "val", "instances_val.json", anns)
    with pytest.raises(BmbenchError, match="annotation 42 bbox .* entirely outside its image 1"):
        CocoInstanceDataset(tmp_path, "val")


def test_partly_outside_boxes_are_clipped_and_degenerate_ones_skipped_with_one_warning(tmp_path: Path) -> None:
    anns = _annotations()
    anns[1]["bbox"] = [50, 20, 40, 30]  # runs 10 px past the right edge, where its mask ends
    anns[1]["segmentation"] = _rle(_box_mask(50, 20, W, 50))
    anns[2]["bbox"] = [5, 5, 0.5, 10]  # degenerate
    _write(tmp_path, "val", "instances_val.json", anns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoInstanceDataset(tmp_path, "val", image_size=W)
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            BmbenchWarning,
            f"{tmp_path / 'annotations' / 'instances_val.json'}: skipped 1 of 4 annotations "
            "(1 with a box under 1 pixel: id 3), clipped 1 box partly outside its image",
        )
    ]
    assert dataset.num_clipped == 1 and dataset.num_skipped == 1
    assert len(dataset[1][1]["labels"]) == 0 and dataset[1][1]["masks"].shape == (0, 64, 96)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "val", "instances_val.json", [], images=0)
    with pytest.raises(BmbenchError, match=r"instances_val\.json: split 'val' has no images"):
        CocoInstanceDataset(tmp_path, "val")


def test_unknown_category_is_an_error(tmp_path: Path) -> None:
    anns = _annotations()
    anns[0]["category_id"] = 99
    _write(tmp_path, "val", "instances_val.json", anns)
    with pytest.raises(BmbenchError, match="annotation 1 has unknown category_id 99"):
        CocoInstanceDataset(tmp_path, "val")


def _perfect(ann_file: Path) -> list[dict]:
    """Detections equal to the ground truth's non-crowd instances that the reader keeps (ids 1-3 of _annotations)."""
    data = json.loads(ann_file.read_text())
    dets = []
    for ann in data["annotations"]:
        if ann["iscrowd"] or not ann["segmentation"]:
            continue
        segm = ann["segmentation"]
        if isinstance(segm, list):
            segm = mask_utils.merge(mask_utils.frPyObjects(segm, H, W))
        elif isinstance(segm["counts"], list):
            segm = mask_utils.frPyObjects(segm, H, W)
        counts = segm["counts"] if isinstance(segm["counts"], str) else segm["counts"].decode("ascii")
        dets.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0, "bbox": ann["bbox"]}
            | {"segmentation": {"size": [H, W], "counts": counts}}
        )
    return dets


def test_empty_segmentation_is_skipped_alike_by_every_reader(tmp_path: Path) -> None:
    """`segmentation: []` once crashed scoring and references (pycocotools IndexError) while training skipped
    it. Every reader now skips it with the same one counted warning, and scores as if the entry were absent."""
    anns = _annotations()
    anns[1]["segmentation"] = []
    ann_file = _write(tmp_path, "val", "instances_val.json", anns)
    expected = f"{ann_file}: skipped 1 of 4 annotations (1 with an empty mask: id 2)"
    with pytest.warns(BmbenchWarning) as training:
        dataset = CocoInstanceDataset(tmp_path, "val", image_size=W)
    with pytest.warns(BmbenchWarning) as scoring:
        metrics = score_detections(ann_file, _perfect(ann_file))
    with pytest.warns(BmbenchWarning) as references:
        reference = score_reference(ann_file, "class-foreground")
    for caught in (training, scoring, references):
        assert {str(w.message) for w in caught if w.category is BmbenchWarning} == {expected}
    assert dataset.num_skipped == 1 and dataset[0][1]["labels"].tolist() == [1]  # the triangle alone
    assert metrics["mask_AP"] == pytest.approx(1.0) and metrics["box_AP"] == pytest.approx(1.0)
    assert reference["mask_AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["images"].append({**d["images"][0], "file_name": "img2.png"}), "duplicate image id 1 "),
        (lambda d: d["annotations"][3].update(id=2), "duplicate annotation id 2 "),
        (lambda d: d["categories"].append({"id": 3, "name": "again"}), "duplicate category id 3 "),
    ],
    ids=["image", "annotation", "category"],
)
def test_duplicate_ids_are_refused_by_every_reader(tmp_path: Path, edit: object, message: str) -> None:
    ann_file = _write(tmp_path, "val", "instances_val.json", _annotations())
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))
    where = {"image": r"\(images\[0\], images\[2\]\)", "annotation": r"\(annotations\[1\], annotations\[3\]\)"}
    pattern = f"^{re.escape(str(ann_file))}: {message}"
    with pytest.raises(BmbenchError, match=pattern):
        CocoInstanceDataset(tmp_path, "val")
    with pytest.raises(BmbenchError, match=pattern):
        score_detections(ann_file, [])
    with pytest.raises(BmbenchError, match=pattern):
        score_reference(ann_file, "box")
    kind = message.split()[1]
    if kind in where:
        with pytest.raises(BmbenchError, match=where[kind]):
            check_coco(data, ann_file)


def test_duplicate_ids_are_all_named(tmp_path: Path) -> None:
    data = {
        "images": [{"id": i % 3, "width": W, "height": H} for i in range(9)],
        "annotations": [],
        "categories": [{"id": 1}],
    }
    with pytest.raises(BmbenchError, match=r"duplicate image ids 0 \(images\[0\], images\[3\], images\[6\]\); 1 "):
        check_coco(data, tmp_path / "x.json")


def test_renumbered_image_reads_as_a_duplicate_not_a_dangling_reference(tmp_path: Path) -> None:
    anns = _annotations()
    ann_file = _write(tmp_path, "val", "instances_val.json", anns)
    data = json.loads(ann_file.read_text())
    data["images"][0]["id"] = 2  # image 1's annotations now point nowhere, and 2 is taken
    ann_file.write_text(json.dumps(data))
    with pytest.raises(BmbenchError, match=r": duplicate image id 2 \(images\[0\], images\[1\]\)$"):
        CocoInstanceDataset(tmp_path, "val")


def test_check_leaves_its_input_alone_and_fills_in_what_scoring_needs(tmp_path: Path) -> None:
    anns = _annotations()
    anns[1]["bbox"] = [50, 20, 40, 30]  # clipped at the right edge, where its mask ends
    anns[1]["segmentation"] = _rle(_box_mask(50, 20, W, 50))
    del anns[0]["area"], anns[0]["iscrowd"]  # COCOeval needs both (KeyError before)
    data = {"images": [{"id": 1, "width": W, "height": H}, {"id": 2, "width": W, "height": H}], "annotations": anns}
    data["categories"] = [{"id": 3}, {"id": 7}]
    before = json.dumps(data)
    cleaned, check = check_coco(data, tmp_path / "x.json")
    assert json.dumps(data) == before
    assert cleaned["annotations"][0]["iscrowd"] == 0 and cleaned["annotations"][0]["area"] == pytest.approx(450, abs=40)
    assert cleaned["annotations"][1]["bbox"] == [50, 20, 30, 30]
    assert check.clipped == 1 and check.filled_area == 1 and check.num_skipped == 0
    assert check.message() == (
        f"{tmp_path / 'x.json'}: clipped 1 box partly outside its image, took the mask area of 1 annotation without one"
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("shapes") / "ds", num_images=6, size=96, seed=3)


@pytest.mark.parametrize("image_size", [64, 96, 160])
def test_boxes_match_mask_extent_after_resize_and_flip(shapes: Path, image_size: int) -> None:
    dataset = CocoInstanceDataset(shapes, "train", image_size=image_size, flip=True)
    checked = 0
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            _, target = dataset[index]
            for box, mask in zip(target["boxes"], target["masks"], strict=True):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
                assert torch.equal(box, extent), (index, box, extent)
                checked += 1
    assert checked > 10


def test_flip_mirrors_image_masks_and_boxes_and_is_deterministic(shapes: Path) -> None:
    plain = CocoInstanceDataset(shapes, "train", image_size=96)
    flipping = CocoInstanceDataset(shapes, "train", image_size=96, flip=True, seed=5)
    draws = []
    for epoch in range(8):
        flipping.set_epoch(epoch)
        draws.append([flipping._flipped(i) for i in range(len(flipping))])
    assert any(any(row) for row in draws) and not all(all(row) for row in draws)
    again = CocoInstanceDataset(shapes, "train", image_size=96, flip=True, seed=5)
    assert [again._flipped(i) for i in range(len(again))] == draws[0]
    epoch, index = next((e, i) for e, row in enumerate(draws) for i, hit in enumerate(row) if hit)
    flipping.set_epoch(epoch)
    (image, target), (flipped_image, flipped) = plain[index], flipping[index]
    assert torch.equal(flipped_image, image.flip(-1)) and torch.equal(flipped["masks"], target["masks"].flip(-1))
    x0, y0, x1, y1 = target["boxes"].unbind(1)
    assert torch.allclose(flipped["boxes"], torch.stack([96 - x1, y0, 96 - x0, y1], dim=1))


def test_collate_pads_images_and_masks_to_multiples_of_32(hand: Path, shapes: Path) -> None:
    batch = [CocoInstanceDataset(hand, "val", image_size=W)[0], CocoInstanceDataset(shapes, "val", image_size=70)[0]]
    images, targets = collate(batch)
    assert images.shape == (2, 3, 96, 96)
    assert [t["masks"].shape[-2:] for t in targets] == [(96, 96), (96, 96)]
    assert torch.equal(images[0, :, :64, :96], batch[0][0]) and (images[0, :, 64:] == 0).all()
