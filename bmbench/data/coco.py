"""A COCO-format instance-segmentation reader for training and evaluation, built on pycocotools.COCO.

The annotation file is checked when it is read (bmbench.data.annotations.check_coco: one policy for every
reader, training, evaluation, scoring and references), so that bad input fails early with a message naming the
file and the entry, never deep inside a loss or COCOeval; what the check skips or repairs is reported as one
counted `BmbenchWarning`. The image files are checked when a split is opened (:func:`check_split`, which every
reader calls; bmbench.data.images), and read as 8-bit RGB whatever their depth.

Images are resized to fit an `image_size` square keeping their aspect ratio and padded (bottom and right) to a
multiple of 32.

Letters: N instances, B batch, H x W the padded image.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from torch import Tensor
from torchvision.ops import masks_to_boxes

from bmbench.data.annotations import AnnotationCheck, check_coco
from bmbench.data.images import check_images, read_rgb
from bmbench.errors import BmbenchError, BmbenchWarning

PIXEL_MEAN = (0.485, 0.456, 0.406)  # ImageNet RGB mean of 0..1 pixels
PIXEL_STD = (0.229, 0.224, 0.225)  # ImageNet RGB std of 0..1 pixels
SIZE_DIVISOR = 32  # padded sides are multiples of this (the coarsest FPN stride)


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing file or malformed JSON raises BmbenchError naming the file (and position)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise BmbenchError(f"{path}: cannot read ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise BmbenchError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); JSON files are UTF-8"
        ) from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BmbenchError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from err


def find_split(root: Path, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of `split` under `root`.

    "train" and "val" match COCO-2017 (`annotations/instances_val2017.json` + `val2017/`) or the short layout
    (`annotations/instances_val.json` + `val/`); any other name, e.g. "val2017" or "minival", is used as given.
    """
    root = Path(root)
    names = [f"{split}2017", split] if split in ("train", "val") else [split]
    tried = []
    for name in names:
        ann_file, image_dir = root / "annotations" / f"instances_{name}.json", root / name
        if ann_file.is_file() and image_dir.is_dir():
            return ann_file, image_dir
        tried.append(f"{ann_file} + {image_dir}/")
    raise BmbenchError(f"split {split!r} not found under {root}: looked for {' or '.join(tried)}")


def read_coco(path: Path, data: Any = None) -> tuple[COCO, AnnotationCheck]:
    """The checked pycocotools COCO index of `path` (or of `data`, already read from it), and what the check did.

    Every reader (training, evaluation, scoring, references) goes through here, so all of them refuse and skip
    the same entries (see :func:`check_coco`). Skipped or clipped entries are reported once per call as one
    `BmbenchWarning` (the CLI prints it as one line); pycocotools' console chatter is dropped.
    """
    path = Path(path)
    cleaned, check = check_coco(read_json(path) if data is None else data, path)
    message = check.message()
    if message:
        warnings.warn(message, BmbenchWarning, stacklevel=1)  # one location: the same file warns once per filter
    coco = COCO()
    coco.dataset = cleaned
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, check


def load_coco(path: Path, data: Any = None) -> COCO:
    """The checked COCO index of `path` (:func:`read_coco` without its report)."""
    return read_coco(path, data)[0]


def check_split(root: Path, split: str) -> tuple[Path, Path, COCO, AnnotationCheck]:
    """The dataset check that every reader calls (training, evaluation, references, a suite before its first
    cell), so that one input gets one answer everywhere: the split's files (:func:`find_split`), its annotation
    file (:func:`read_coco`), then every image it lists (bmbench.data.images.check_images: missing, empty,
    unreadable, truncated or wrongly sized files refused in one line; constant images warned about).

    Returns (annotation file, image folder, checked COCO index, what the annotation check did).
    """
    ann_file, image_dir = find_split(root, split)
    coco, check = read_coco(ann_file)
    check_images(coco.dataset["images"], image_dir, split=split, ann_file=ann_file)
    return ann_file, image_dir, coco, check


class CocoInstanceDataset(torch.utils.data.Dataset):
    """Images and instance targets of one split of a COCO-format dataset.

    `dataset[i]` is (image: Tensor[3, H, W] float normalised with PIXEL_MEAN/PIXEL_STD, target) with target:
        boxes: Tensor[N, 4] xyxy in resized pixels, the extent of each mask (so the two always agree)
        labels: Tensor[N] int64 in 0..num_classes-1 (`label_to_category_id[label]` is the COCO category id)
        masks: Tensor[N, H, W] uint8, padded like the image
        iscrowd: Tensor[N] uint8 (all zero when `skip_crowd`)
        image_id: int; orig_size: (h, w) before resizing; size: (h, w) after resizing, before padding
        scale: float, resized / original side
    Crowd annotations are left out when `skip_crowd` (COCOeval reads them from the original json); so are
    instances whose mask is empty after resizing.

    With `flip`, image i is mirrored left-right when a numpy Generator seeded with (seed, epoch, i) says so, so runs are
    deterministic whatever the worker order; call `set_epoch` to draw new flips each epoch.
    """

    def __init__(
        self,
        root: Path,
        split: str,
        *,
        image_size: int | None = 512,
        flip: bool = False,
        skip_crowd: bool = True,
        seed: int = 0,
    ) -> None:
        if seed < 0:
            raise BmbenchError(f"seed must be non-negative, got {seed}")
        if image_size is not None and image_size < SIZE_DIVISOR:
            raise BmbenchError(f"image_size must be at least {SIZE_DIVISOR}, got {image_size}")
        self.ann_file, self.image_dir, self.coco, self.check = check_split(root, split)
        self.image_size, self.flip, self.skip_crowd, self.seed, self.epoch = image_size, flip, skip_crowd, seed, 0
        self.num_clipped, self.num_skipped = self.check.clipped, self.check.num_skipped
        self.image_ids: list[int] = sorted(self.coco.imgs)
        if not self.image_ids:
            raise BmbenchError(f"{self.ann_file}: split {split!r} has no images")
        if image_size is None:  # the split's longest side, rounded up to the stride: the dataset's own size
            sides = [max(int(img.get("height", 0)), int(img.get("width", 0))) for img in self.coco.imgs.values()]
            self.image_size = _round_up(max(max(sides), SIZE_DIVISOR))
        self.label_to_category_id: list[int] = sorted(self.coco.cats)
        self.category_id_to_label = {cat: label for label, cat in enumerate(self.label_to_category_id)}
        self.class_names = [str(self.coco.cats[cat].get("name", cat)) for cat in self.label_to_category_id]
        self.num_classes = len(self.label_to_category_id)

    def set_epoch(self, epoch: int) -> None:
        """Pick the flip draws of `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_ids)

    def _flipped(self, index: int) -> bool:
        if not self.flip:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)

    def _masks(self, image_id: int, anns: list[dict], size: tuple[int, int], *, antialias: bool) -> Tensor:
        """The annotations' masks resized to `size`: Tensor[N, h, w] uint8 (bilinear, then threshold 0.5)."""
        if not anns:
            return torch.zeros((0, *size), dtype=torch.uint8)
        masks = torch.from_numpy(np.stack([self.coco.annToMask(ann) for ann in anns]))  # (N, H0, W0)
        masks = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", antialias=antialias)[:, 0]
        return (masks >= 0.5).to(torch.uint8)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        pixels = read_rgb(self.image_dir / info["file_name"])  # (h, w, 3) uint8, deep pixels scaled, not clipped
        h, w = pixels.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            raise BmbenchError(
                f"{self.ann_file}: image {info['file_name']!r} is {w}x{h} but annotated as "
                f"{info['width']}x{info['height']}"
            )
        anns = [ann for ann in self.coco.imgToAnns.get(image_id, []) if not (self.skip_crowd and ann["iscrowd"])]
        scale = self.image_size / max(h, w)
        new_h, new_w = max(round(h * scale), 1), max(round(w * scale), 1)
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)  # (3, h, w)
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", antialias=True)[0]
        masks = self._masks(image_id, anns, (new_h, new_w), antialias=scale < 1)  # (N, new_h, new_w)
        labels = torch.tensor([self.category_id_to_label[ann["category_id"]] for ann in anns], dtype=torch.int64)
        iscrowd = torch.tensor([int(ann["iscrowd"]) for ann in anns], dtype=torch.uint8)
        if self._flipped(index):
            image, masks = image.flip(-1), masks.flip(-1)
        return build_item(image, masks, labels, iscrowd, image_id=image_id, orig_size=(h, w), scale=scale)


def build_item(
    image: Tensor,
    masks: Tensor,
    labels: Tensor,
    iscrowd: Tensor,
    *,
    image_id: int,
    orig_size: tuple[int, int],
    scale: float,
) -> tuple[Tensor, dict[str, Any]]:
    """One dataset item, as every reader gives it (this one and the training stream, bmbench.data.stream), from an
    image resized to h x w and its masks at that size: (image: Tensor[3, H, W] normalised, target).

    Takes `image` Tensor[3, h, w] in 0..1, `masks` Tensor[N, h, w] uint8, `labels` Tensor[N] int64 and `iscrowd`
    Tensor[N] uint8. Instances the resize emptied are dropped; the image is normalised; image and masks are
    zero-padded (bottom, right) to H x W, multiples of SIZE_DIVISOR. The target holds boxes Tensor[N, 4] xyxy,
    labels, masks Tensor[N, H, W], iscrowd, image_id, orig_size, size (h, w) and scale.
    """
    new_h, new_w = image.shape[-2:]
    mean, std = torch.tensor(PIXEL_MEAN)[:, None, None], torch.tensor(PIXEL_STD)[:, None, None]
    image = (image - mean) / std
    keep = masks.flatten(1).bool().any(dim=1)  # small instances can vanish when downscaled
    masks, labels, iscrowd = masks[keep], labels[keep], iscrowd[keep]
    # Boxes are the transformed masks' extent (pixel edges), so they agree with the masks exactly; thin
    # parts lost in downscaling no longer stretch the box.
    boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # (N, 4) xyxy
    pad_h, pad_w = _round_up(new_h), _round_up(new_w)
    image = F.pad(image, (0, pad_w - new_w, 0, pad_h - new_h))
    masks = F.pad(masks, (0, pad_w - new_w, 0, pad_h - new_h))
    target = {
        "boxes": boxes,
        "labels": labels,
        "masks": masks,
        "iscrowd": iscrowd,
        "image_id": int(image_id),
        "orig_size": orig_size,
        "size": (new_h, new_w),
        "scale": float(scale),
    }
    return image, target


def _round_up(side: int) -> int:
    return -(-side // SIZE_DIVISOR) * SIZE_DIVISOR


def collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
    """Stack images zero-padded (bottom, right) to the batch's largest sides, rounded up to a multiple of 32.

    Returns (images: Tensor[B, 3, H, W], targets) with each target's masks padded to Tensor[N, H, W] too.
    """
    H = _round_up(max(image.shape[-2] for image, _ in batch))
    W = _round_up(max(image.shape[-1] for image, _ in batch))
    images, targets = [], []
    for image, target in batch:
        pad = (0, W - image.shape[-1], 0, H - image.shape[-2])
        images.append(F.pad(image, pad))
        targets.append({**target, "masks": F.pad(target["masks"], pad)})
    return torch.stack(images), targets
