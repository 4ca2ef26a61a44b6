"""The procedurally generated instance-segmentation dataset on disk, written in COCO-2017 layout, and the cache of
the default one. Its images are the scenes of bmbench.data.scenes (shapes, difficulties), image i drawn with the
seed (seed, i).

Each annotation carries ``"subsets": [...]`` (pycocotools ignores the field), the subsets it belongs to
(`touching`, `thin`; defined in bmbench.data.subsets).

Layout written under `out`:
    annotations/instances_train.json, annotations/instances_val.json, train/*.png, val/*.png
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from bmbench.data.scenes import CATEGORIES, DEFAULT_DIFFICULTY, DIFFICULTIES, get_difficulty, render_image
from bmbench.data.subsets import (  # noqa: F401 (re-exported: the subset tests belong to the dataset's definition)
    SUBSETS,
    THIN_FRACTION,
    THIN_RADIUS,
    instance_subsets,
    is_thin,
    opened_fraction,
    thin_radius,
    touching_pairs,
)
from bmbench.errors import BmbenchError

GENERATOR_KEY = "bmbench_synth"  # the annotation files' info entry that records the generator's settings


def _annotation(ann_id: int, image_id: int, kind: int, mask: np.ndarray, subsets: list[str]) -> dict:
    """A COCO annotation with an RLE mask and its subsets; bbox and area come from the visible mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [int(round(x)) for x in mask_utils.toBbox(rle)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": kind + 1,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask_utils.area(rle)),
        "bbox": bbox,
        "iscrowd": 0,
        "subsets": subsets,
    }


def write_synthetic_dataset(
    out: Path,
    *,
    num_images: int = 400,
    size: int = 256,
    seed: int = 0,
    val_fraction: float = 0.25,
    difficulty: str = DEFAULT_DIFFICULTY,
) -> Path:
    """Write the synthetic dataset of `difficulty` under `out` (which must be absent or empty) and return `out`.

    The output is byte-identical for equal arguments: image i draws from its own `numpy` Generator seeded with
    (seed, i), and no global random state is used. It is written to a hidden sibling folder renamed to `out` once
    whole, so that an interrupted run leaves nothing behind and a rerun starts afresh.
    """
    get_difficulty(difficulty)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise BmbenchError(f"synthetic dataset: the seed must be a non-negative integer, got {seed!r}")
    if num_images < 2:
        raise BmbenchError(f"synthetic dataset: need at least 2 images, got {num_images}")
    if size < 64:
        raise BmbenchError(f"synthetic dataset: image size must be at least 64 px, got {size}")
    if not 0.0 < val_fraction < 1.0:
        raise BmbenchError(f"synthetic dataset: val_fraction must lie in (0, 1), got {val_fraction}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BmbenchError(f"{out}: exists and is not an empty directory; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()  # not mkdtemp: mkdir gives an ordinary folder's mode, which the dataset keeps
    try:
        _write_splits(
            scratch, num_images=num_images, size=size, seed=seed, val_fraction=val_fraction, difficulty=difficulty
        )
        os.rename(scratch, out)  # onto an absent or empty folder
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already unless the writing stopped
    return out


def _write_splits(out: Path, *, num_images: int, size: int, seed: int, val_fraction: float, difficulty: str) -> None:
    num_val = min(max(1, round(num_images * val_fraction)), num_images - 1)
    splits = {"train": range(num_images - num_val), "val": range(num_images - num_val, num_images)}
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)]
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, indices in splits.items():
        (out / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in indices:
            image_id = index + 1
            pixels, instances = render_image(np.random.default_rng([seed, index]), size, difficulty)
            file_name = f"{image_id:012d}.png"
            Image.fromarray(pixels).save(out / split / file_name, compress_level=1)  # fast; still lossless
            images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
            for (kind, mask), subsets in zip(instances, instance_subsets(instances), strict=True):
                annotations.append(_annotation(ann_id, image_id, kind, mask, subsets))
                ann_id += 1
        dataset = {
            "info": {
                "description": f"bmbench synthetic shapes, {difficulty}, seed {seed}",
                "version": "2",
                GENERATOR_KEY: {"difficulty": difficulty, "size": size, "seed": seed},
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        text = json.dumps(dataset, separators=(",", ":"))
        (out / "annotations" / f"instances_{split}.json").write_text(text, encoding="utf-8")


def describe_dataset(root: Path) -> dict[str, int]:
    """Counts for a dataset in this layout over both splits: images, instances, classes, and the instances of each
    of SUBSETS (0 where the annotations carry no ``subsets`` field)."""
    counts = {"images": 0, "instances": 0, "classes": 0, **dict.fromkeys(SUBSETS, 0)}
    for split in ("train", "val"):
        data = json.loads((Path(root) / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))
        counts["images"] += len(data["images"])
        counts["instances"] += len(data["annotations"])
        for ann in data["annotations"]:
            for name in ann.get("subsets", []):
                if name in counts:
                    counts[name] += 1
        counts["classes"] = max(counts["classes"], len(data["categories"]))
    return counts


@dataclass(frozen=True)
class SynthInfo:
    """How a synthetic dataset was generated, as its annotation files record it."""

    difficulty: str  # a DIFFICULTIES key
    size: int  # image side in px
    seed: int  # the dataset's seed


def synthetic_info(root: Path) -> SynthInfo | None:
    """The generator settings of the dataset under `root` when `write_synthetic_dataset` wrote it (read from its
    train annotations' ``info``), else None: a COCO-format dataset of any other origin, or one written before the
    settings were recorded."""
    path = Path(root) / "annotations" / "instances_train.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8")).get("info") or {}
    except (OSError, ValueError, AttributeError):
        return None
    settings = info.get(GENERATOR_KEY) if isinstance(info, dict) else None
    if not isinstance(settings, dict) or settings.get("difficulty") not in DIFFICULTIES:
        return None
    return SynthInfo(str(settings["difficulty"]), int(settings["size"]), int(settings["seed"]))


def default_dataset_dir() -> Path:
    """The cache folder for generated datasets: $BMBENCH_DATA if set, else `results/data` under the cwd."""
    return Path(os.environ.get("BMBENCH_DATA") or Path("results") / "data")


def _is_complete(path: Path) -> bool:
    return all((path / "annotations" / f"instances_{split}.json").is_file() for split in ("train", "val"))


def dataset_name(*, num_images: int, size: int, seed: int, difficulty: str = DEFAULT_DIFFICULTY) -> str:
    """The cache folder name of a synthetic dataset: ``synth-{difficulty}-{num_images}-{size}-s{seed}``."""
    return f"synth-{difficulty}-{num_images}-{size}-s{seed}"


def ensure_default_dataset(
    root: Path | None = None,
    *,
    num_images: int = 400,
    size: int = 256,
    seed: int = 0,
    difficulty: str = DEFAULT_DIFFICULTY,
) -> Path:
    """The synthetic dataset for these parameters under `root` (default: `default_dataset_dir()`).

    It is generated once, into `root / dataset_name(...)`, and reused afterwards. Generation
    writes into a temporary sibling folder that is renamed into place, so an interrupted run leaves no
    half-written dataset behind.
    """
    get_difficulty(difficulty)
    root = Path(root) if root is not None else default_dataset_dir()
    target = root / dataset_name(num_images=num_images, size=size, seed=seed, difficulty=difficulty)
    if _is_complete(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise BmbenchError(f"{target}: an incomplete dataset is in the way; delete it to regenerate")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        write_synthetic_dataset(scratch, num_images=num_images, size=size, seed=seed, difficulty=difficulty)
        try:
            os.rename(scratch, target)
        except OSError:
            if not _is_complete(target):  # someone else's rename won the race only if theirs is complete
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
