"""The check of a COCO annotation dict that every reader shares: what is refused, skipped and repaired, and the
one-line report of it (bmbench.data.coco.read_coco applies it; training, evaluation, scoring and references read
through that).

Refusals are BmbenchErrors naming the file and the entry; skips and repairs are counted in an AnnotationCheck.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from bmbench.errors import BmbenchError

EMPTY_MASK = "an empty mask"  # skip reason: no segmentation, [], only polygons under 3 points, or an RLE of area 0
TINY_BOX = "a box under 1 pixel"  # skip reason: bbox w or h < 1, also after clipping to the image
# A bbox disagrees with its mask when both hold: IoU with the mask's extent under BOX_MIN_IOU, and an edge more than
# BOX_SLACK_PX pixels off (COCO's float boxes of rasterised polygons differ by up to a pixel, which alone would drop a
# 5-pixel box's IoU under 0.9).
BOX_MIN_IOU = 0.9
BOX_SLACK_PX = 2.0
_REQUIRED = {"images": ("id", "width", "height"), "categories": ("id",), "annotations": ("id", "image_id")}
_NOUNS = {"images": "image", "categories": "category", "annotations": "annotation"}


@dataclass(frozen=True)
class AnnotationCheck:
    """What :func:`check_coco` left out of or repaired in an annotation file (all zero when it was clean)."""

    path: Path  # the annotation file
    total: int  # annotations in the file
    skipped: dict[str, tuple[Any, ...]]  # reason (EMPTY_MASK, TINY_BOX) -> ids of the annotations left out
    clipped: int  # kept annotations whose box ran partly outside their image, clipped to it
    filled_area: int  # kept annotations without an area, given their mask's
    reboxed: tuple[Any, ...] = ()  # ids of kept annotations whose bbox disagreed with their mask: the mask's extent
    dropped_parts: tuple[Any, ...] = ()  # ids of kept annotations that lost a polygon part of under 3 points

    @property
    def num_skipped(self) -> int:
        """Annotations left out, whatever the reason."""
        return sum(len(ids) for ids in self.skipped.values())

    def message(self) -> str:
        """The one-line report with counts, e.g. "instances_val.json: skipped 2 of 13 annotations (1 with an empty
        mask: id 21; 1 with a box under 1 pixel: id 7), clipped 1 box partly outside its image"; "" when clean."""
        parts = []
        if self.num_skipped:
            reasons = "; ".join(f"{len(ids)} with {why}: {_ids(ids)}" for why, ids in self.skipped.items() if ids)
            parts.append(f"skipped {self.num_skipped} of {self.total} annotations ({reasons})")
        if self.clipped:
            parts.append(f"clipped {_plural(self.clipped, 'box', 'boxes')} partly outside {_its(self.clipped)} image")
        if self.filled_area:
            parts.append(f"took the mask area of {_plural(self.filled_area, 'annotation', 'annotations')} without one")
        if self.reboxed:
            count = _plural(len(self.reboxed), "annotation", "annotations")
            parts.append(
                f"{count} of {self.total} had a bbox that disagrees with {_its(len(self.reboxed))} mask (IoU with the "
                f"mask's extent under {BOX_MIN_IOU}: {_ids(self.reboxed)}); the mask's extent is used as the box"
            )
        if self.dropped_parts:  # the rest of the mask is kept: its area and AP change without another sign
            count = _plural(len(self.dropped_parts), "annotation", "annotations")
            parts.append(
                f"dropped the polygon parts of under 3 points (or an odd count of numbers) from {count}, keeping "
                f"the rest of {_its(len(self.dropped_parts))} mask: {_ids(self.dropped_parts)}"
            )
        return f"{self.path}: {', '.join(parts)}" if parts else ""


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _its(count: int) -> str:
    return "its" if count == 1 else "their"


def _ids(ids: tuple[Any, ...], shown: int = 5) -> str:
    text = ", ".join(repr(i) for i in ids[:shown])
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{'id' if len(ids) == 1 else 'ids'} {text}{more}"


def _refuse_duplicates(entries: list[dict], key: str, path: Path) -> None:
    """Raise BmbenchError naming every id that two or more `entries` share (and where, for the first five)."""
    where: dict[Any, list[int]] = {}
    for index, entry in enumerate(entries):
        where.setdefault(entry["id"], []).append(index)
    shared = [(entry_id, indices) for entry_id, indices in where.items() if len(indices) > 1]
    if shared:
        named = "; ".join(f"{i!r} ({', '.join(f'{key}[{k}]' for k in at)})" for i, at in shared[:5])
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise BmbenchError(f"{path}: duplicate {_NOUNS[key]} {'id' if len(shared) == 1 else 'ids'} {named}{more}")


def _check_structure(data: Any, path: Path) -> None:
    """The top-level lists, each entry's required fields, well-formed ids and image sizes, then unique ids."""
    if not isinstance(data, dict):
        raise BmbenchError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BmbenchError(f"{path}: missing or non-list {key!r}")
    for key, required in _REQUIRED.items():
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or any(field not in entry for field in required):
                raise BmbenchError(f"{path}: {key}[{index}] must be an object with {', '.join(required)}")
            if isinstance(entry["id"], bool) or not isinstance(entry["id"], int):
                raise BmbenchError(f"{path}: {key}[{index}] id {entry['id']!r} is not an integer")
            if key == "images" and not all(
                isinstance(entry[side], int) and not isinstance(entry[side], bool) and entry[side] > 0
                for side in ("width", "height")
            ):
                raise BmbenchError(f"{path}: image {entry['id']!r} width and height must be positive integers")
    for key in _REQUIRED:  # before any reference is followed: a renumbered image is a duplicate, not a dangling id
        _refuse_duplicates(data[key], key, path)


def _mask(ann: dict, image: dict, path: Path) -> list | dict | None:
    """The annotation's segmentation with polygons under 3 points dropped; None when it holds no mask."""
    segm = ann.get("segmentation")
    if segm is None:
        return None
    if isinstance(segm, list):
        if not all(
            isinstance(poly, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in poly)
            for poly in segm
        ):
            raise BmbenchError(f"{path}: annotation {ann['id']} has a malformed polygon segmentation")
        polygons = [poly for poly in segm if len(poly) >= 6 and len(poly) % 2 == 0]
        return polygons or None
    if isinstance(segm, dict):
        if list(segm.get("size", [])) != [image["height"], image["width"]] or "counts" not in segm:
            raise BmbenchError(
                f"{path}: annotation {ann['id']} has an RLE segmentation whose size is not "
                f"[{image['height']}, {image['width']}] or that lacks counts"
            )
        return segm if int(mask_utils.area(_rle(segm, image))) > 0 else None
    raise BmbenchError(f"{path}: annotation {ann['id']} segmentation is neither polygons nor an RLE: {segm!r:.40}")


def _rle(segm: list | dict, image: dict) -> dict:
    """One RLE of a checked segmentation (polygons merged, uncompressed counts compressed)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, image["height"], image["width"]))
    return mask_utils.frPyObjects(segm, *segm["size"]) if isinstance(segm["counts"], list) else segm


def _disagree(box: list, extent: list[float]) -> bool:
    """Whether xywh `box` and the mask's extent `extent` differ by more than rasterisation does (see BOX_MIN_IOU)."""
    (x, y, w, h), (ex, ey, ew, eh) = box, extent
    edges = (x, y, x + w, y + h), (ex, ey, ex + ew, ey + eh)
    if max(abs(a - b) for a, b in zip(*edges, strict=True)) <= BOX_SLACK_PX:
        return False
    iw = max(0.0, min(x + w, ex + ew) - max(x, ex))
    ih = max(0.0, min(y + h, ey + eh) - max(y, ey))
    inter = iw * ih
    return inter / (w * h + ew * eh - inter) < BOX_MIN_IOU


def check_coco(data: Any, path: Path) -> tuple[dict, AnnotationCheck]:
    """Check a COCO annotation dict read from `path`; return a cleaned copy and what the check did.

    Refused, with a one-line BmbenchError naming the file and the entry: a non-object, or images, annotations or
    categories missing or not lists; an entry without its ids (or an image without a positive width and height);
    duplicate image, category or annotation ids (checked first, so a renumbered image reads as a duplicate, not as
    a dangling reference); an unknown image_id or category_id; a bbox that is not [x, y, w, h] or lies entirely
    outside its image; a malformed polygon or an RLE of the wrong size; an area that is not a number.
    Skipped (counted by reason): annotations with EMPTY_MASK or TINY_BOX.
    Repaired (counted): a box partly outside its image is clipped to it; a missing area becomes the mask's area.
    The mask is the truth where the two disagree: a bbox whose IoU with its mask's extent is under BOX_MIN_IOU (and
    whose edges are more than BOX_SLACK_PX off) is replaced by that extent (counted, with ids), so that training
    (which boxes each mask by its extent), references, oracle boxes and COCOeval's box AP all read the same box.
    A missing iscrowd means 0. `data` itself is not modified; the copy holds only the kept annotations.
    """
    _check_structure(data, path)
    images = {image["id"]: image for image in data["images"]}
    categories = {cat["id"] for cat in data["categories"]}
    kept: list[dict] = []
    skipped: dict[str, list] = {EMPTY_MASK: [], TINY_BOX: []}
    clipped = filled_area = 0
    reboxed: list[Any] = []
    dropped_parts: list[Any] = []
    for ann in data["annotations"]:
        ann_id = ann["id"]
        image = images.get(ann["image_id"])
        if image is None:
            raise BmbenchError(f"{path}: annotation {ann_id} refers to unknown image_id {ann['image_id']!r}")
        if ann.get("category_id") not in categories:
            raise BmbenchError(f"{path}: annotation {ann_id} has unknown category_id {ann.get('category_id')!r}")
        bbox = ann.get("bbox")
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        ):
            raise BmbenchError(f"{path}: annotation {ann_id} has no valid bbox [x, y, w, h]: {bbox!r}")
        if "area" in ann and (isinstance(ann["area"], bool) or not isinstance(ann["area"], int | float)):
            raise BmbenchError(f"{path}: annotation {ann_id} has a malformed area {ann['area']!r}")
        segm = _mask(ann, image, path)
        lost_part = isinstance(segm, list) and len(segm) < len(ann["segmentation"])
        x, y, w, h = bbox
        W, H = image["width"], image["height"]
        if w < 1 or h < 1:
            skipped[TINY_BOX].append(ann_id)
            continue
        if segm is None:
            skipped[EMPTY_MASK].append(ann_id)
            continue
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            raise BmbenchError(
                f"{path}: annotation {ann_id} bbox {bbox} lies entirely outside its image {image['id']} ({W}x{H})"
            )
        ann = {**ann, "segmentation": segm, "iscrowd": ann.get("iscrowd", 0)}
        if x < 0 or y < 0 or x + w > W or y + h > H:
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
            if x1 - x0 < 1 or y1 - y0 < 1:
                skipped[TINY_BOX].append(ann_id)
                continue
            ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            clipped += 1
        rle = _rle(segm, image)
        extent = [float(v) for v in mask_utils.toBbox(rle)]
        if _disagree(ann["bbox"], extent):
            ann["bbox"] = extent
            reboxed.append(ann_id)
        if "area" not in ann:
            ann["area"] = float(mask_utils.area(rle))
            filled_area += 1
        kept.append(ann)
        if lost_part:
            dropped_parts.append(ann_id)
    check = AnnotationCheck(
        path=path,
        total=len(data["annotations"]),
        skipped={why: tuple(ids) for why, ids in skipped.items()},
        clipped=clipped,
        filled_area=filled_area,
        reboxed=tuple(reboxed),
        dropped_parts=tuple(dropped_parts),
    )
    return {**data, "annotations": kept}, check
