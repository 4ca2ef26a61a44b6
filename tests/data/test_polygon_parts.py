"""A polygon part under 3 points dropped from a multi-polygon mask is said, with ids, not dropped in silence."""

from __future__ import annotations

from pathlib import Path

from bmbench.data.annotations import EMPTY_MASK, check_coco

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]  # a valid part: 4 points


def coco(*segmentations: list) -> dict:
    annotations = [
        {
            "id": i,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10.0, 10.0, 20.0, 20.0],
            "area": 400.0,
            "segmentation": segm,
        }
        for i, segm in enumerate(segmentations, start=1)
    ]
    return {
        "images": [{"id": 1, "width": 64, "height": 64, "file_name": "1.png"}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": annotations,
    }


def test_a_five_number_part_of_a_multi_polygon_is_dropped_and_said() -> None:
    path = Path("instances_val.json")
    cleaned, check = check_coco(
        coco([SQUARE, [40.0, 40.0, 50.0, 40.0, 45.0]], [SQUARE], [[1.0, 2.0, 3.0, 4.0, 5.0]]), path
    )
    assert check.dropped_parts == (1,)  # the clean one (2) is not counted; the one with no part left (3) is skipped
    assert check.skipped[EMPTY_MASK] == (3,)
    assert [ann["segmentation"] for ann in cleaned["annotations"]] == [[SQUARE], [SQUARE]]
    message = check.message()
    assert (
        "dropped the polygon parts of under 3 points (or an odd count of numbers) from 1 annotation, keeping the "
        "rest of its mask: id 1" in message
    )


def test_a_clean_file_says_nothing() -> None:
    _, check = check_coco(coco([SQUARE], [SQUARE, SQUARE]), Path("instances_val.json"))
    assert check.dropped_parts == () and check.message() == ""
