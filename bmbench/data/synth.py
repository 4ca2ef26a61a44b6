"""A procedurally generated instance-segmentation dataset, written in COCO-2017 layout.

The shapes are chosen so that mask resolution and instance separation matter: a ring (a hole), a comb (thin
teeth), a crescent (a concavity) and a star (thin arms). Colours are random per instance, so the class must be
told from shape. Some same-class pairs are placed touching or overlapping, which separates a single global map
(M=1) from per-instance attention (M>1). Instances are drawn in depth order; an instance's mask is what stays
visible after the later ones are drawn.

Two named difficulties (`DIFFICULTIES`): ``light``, the default, which a 2-core CPU learns in minutes (2–4
instances, half-extent 0.12–0.35 of the side, a flat background, instance colours kept apart from it), and
``hard``, the scenes of bmbench 0.1.0 (3–9 instances, half-extent 0.05–0.42, textured backgrounds;
the same images as were written then).

Each annotation carries ``"subsets": [...]`` (pycocotools ignores the field), the subsets it belongs to
(`touching`, `thin`; defined in bmbench.data.subsets).

Layout written under `out`:
    annotations/instances_train.json, annotations/instances_val.json, train/*.png, val/*.png

Letters: N instances, H x W image (here H = W = size).
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

CATEGORIES = ("ring", "comb", "crescent", "star")
MIN_VISIBLE_AREA = 30  # px; instances hidden below this are dropped
DEFAULT_DIFFICULTY = "light"
GENERATOR_KEY = "bmbench_synth"  # the annotation files' info entry that records the generator's settings


@dataclass(frozen=True)
class Difficulty:
    """What a scene may hold."""

    min_instances: int  # fewest independently placed instances
    max_instances: int  # most independently placed instances (a touching partner comes on top of these)
    scale_range: tuple[float, float]  # half-extent of a shape as a fraction of the side, sampled log-uniformly
    pair_probability: float  # chance that an image gets a deliberately touching/overlapping same-class pair
    textured: bool  # textured background (gradient, stripes or blotches, plus grain); else one flat colour
    min_contrast: float  # least RGB distance of an instance's colour from the flat background (0: any colour)


DIFFICULTIES = {
    # 2–4 instances in all (2–3 placed, plus a touching partner in 60 % of the images). Measured: 8.7
    # oracle mask AP after 300 joint steps at 128 px, where `hard` reached 1.5.
    "light": Difficulty(2, 3, (0.12, 0.35), 0.6, textured=False, min_contrast=80.0),
    # The scenes of bmbench 0.1.0: at 256 px the sizes span COCO's small (< 32^2 px), medium and large (> 96^2 px).
    "hard": Difficulty(3, 8, (0.05, 0.42), 0.6, textured=True, min_contrast=0.0),
}


def get_difficulty(name: str) -> Difficulty:
    """The difficulty of that name; an unknown name raises BmbenchError listing the known ones."""
    if name not in DIFFICULTIES:
        raise BmbenchError(f"unknown difficulty {name!r} (known: {', '.join(DIFFICULTIES)})")
    return DIFFICULTIES[name]


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Inside-test of shape `kind` on local coordinates (u, v), where the shape spans roughly [-1, 1]^2.

    `params` holds four uniform numbers in [0, 1) that set the shape's free parameters.
    """
    r = np.hypot(u, v)
    if kind == 0:  # ring: an annulus with a hole of 40-70 % of the radius
        inner = 0.4 + 0.3 * params[0]
        return (r <= 1.0) & (r >= inner)
    if kind == 1:  # comb: a bar along the bottom with 3-5 thin teeth
        num_teeth = 3 + int(params[0] * 3)
        bar = (v >= -1.0) & (v <= -0.55) & (np.abs(u) <= 1.0)
        period = 2.0 / num_teeth
        phase = np.mod(u + 1.0, period) / period  # 0..1 within each tooth period
        tooth_width = 0.25 + 0.2 * params[1]
        teeth = (v > -0.55) & (v <= 1.0) & (np.abs(u) <= 1.0) & (np.abs(phase - 0.5) <= tooth_width / 2)
        return bar | teeth
    if kind == 2:  # crescent: a disk minus an offset disk
        offset = 0.35 + 0.35 * params[0]
        cut = 0.75 + 0.2 * params[1]
        return (r <= 1.0) & (np.hypot(u - offset, v) > cut)
    # star: 4-6 thin arms around a small hub
    num_arms = 4 + int(params[0] * 3)
    arm_width = 0.08 + 0.1 * params[1]
    angles = np.arange(num_arms) * (2 * np.pi / num_arms)
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = cos * u + sin * v  # (arms, h, w) distance along each arm
    across = np.abs(-sin * u + cos * v)  # (arms, h, w) distance from each arm's axis
    arms = ((along >= 0) & (along <= 1.0) & (across <= arm_width)).any(axis=0)
    return arms | (r <= 0.22)


def _rasterise(size: int, inst: dict) -> np.ndarray:
    """A full-image bool mask Tensor[H, W] of one instance, evaluated only on its bounding window."""
    cx, cy, scale, aspect, angle = inst["cx"], inst["cy"], inst["scale"], inst["aspect"], inst["angle"]
    reach = scale * max(aspect, 1.0 / aspect) * 1.05 + 1
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, size)
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, size)
    full = np.zeros((size, size), dtype=bool)
    if x0 >= x1 or y0 >= y1:
        return full
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy  # pixel centres
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / (scale * aspect)  # rotate by -angle, then undo the anisotropic scale
    v = (-s * dx + c * dy) / (scale / aspect)
    full[y0:y1, x0:x1] = _shape_mask(inst["kind"], u, v, inst["params"])
    return full


def _flat_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A flat RGB background Tensor[H, W, 3] float in 0..255 (one random colour)."""
    return np.broadcast_to(rng.uniform(0, 255, size=3), (size, size, 3)).copy()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured RGB background Tensor[H, W, 3] float in 0..255: gradient, stripes or blotchy noise, plus grain."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * xs + np.sin(theta) * ys  # (H, W)
    style = int(rng.integers(3))
    if style == 0:
        weight = (t - t.min()) / (np.ptp(t) + 1e-9)
    elif style == 1:
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 12) * t + rng.uniform(0, 2 * np.pi))
    else:
        cells = int(rng.integers(4, 12))
        coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
        weight = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    low, high = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    image = low + weight[..., None] * (high - low)  # (H, W, 3)
    return image + rng.normal(0, 8, size=(size, size, 1))


def _colour(rng: np.random.Generator, difficulty: Difficulty, background: np.ndarray) -> np.ndarray:
    """An instance colour at least `difficulty.min_contrast` away from the flat `background` colour."""
    colour = rng.uniform(0, 255, size=3)
    while difficulty.min_contrast > 0 and np.linalg.norm(colour - background) < difficulty.min_contrast:
        colour = rng.uniform(0, 255, size=3)
    return colour


def _sample_instances(
    rng: np.random.Generator, size: int, difficulty: Difficulty, background: np.ndarray
) -> list[dict]:
    """Instance parameters in depth order (later ones are drawn on top)."""
    instances = []
    num = int(rng.integers(difficulty.min_instances, difficulty.max_instances + 1))
    lo, hi = np.log(difficulty.scale_range[0] * size), np.log(difficulty.scale_range[1] * size)
    for _ in range(num):
        scale = float(np.exp(rng.uniform(lo, hi)))
        instances.append(
            {
                "kind": int(rng.integers(len(CATEGORIES))),
                "cx": float(rng.uniform(0.1, 0.9) * size),
                "cy": float(rng.uniform(0.1, 0.9) * size),
                "scale": scale,
                "aspect": float(np.exp(rng.uniform(-0.3, 0.3))),
                "angle": float(rng.uniform(0, 2 * np.pi)),
                "params": rng.random(4),
                "colour": _colour(rng, difficulty, background),
            }
        )
    if rng.random() < difficulty.pair_probability:
        # A same-class partner next to an existing instance, 0.55-1.0 of the summed radii away: the two touch
        # or overlap. Inserted right after its partner so that both are likely to stay visible.
        index = int(rng.integers(len(instances)))
        first = instances[index]
        partner = dict(first)
        partner["scale"] = first["scale"] * float(np.exp(rng.uniform(-0.3, 0.3)))
        gap = (first["scale"] + partner["scale"]) * rng.uniform(0.55, 1.0)
        direction = rng.uniform(0, 2 * np.pi)
        partner["cx"] = float(np.clip(first["cx"] + gap * np.cos(direction), 0, size - 1))
        partner["cy"] = float(np.clip(first["cy"] + gap * np.sin(direction), 0, size - 1))
        partner["angle"] = float(rng.uniform(0, 2 * np.pi))
        partner["params"] = rng.random(4)
        partner["colour"] = _colour(rng, difficulty, background)
        instances.insert(index + 1, partner)
    return instances


def render_image(
    rng: np.random.Generator, size: int, difficulty: str = DEFAULT_DIFFICULTY
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image and its visible instances, drawn by `rng` with the scenes of `difficulty` (a DIFFICULTIES key).

    Returns (image: uint8 array [H, W, 3], [(category index, visible mask: bool array [H, W]), ...]) with the
    instances in depth order and those whose visible area is below MIN_VISIBLE_AREA dropped.
    """
    level = get_difficulty(difficulty)
    image = _background(rng, size) if level.textured else _flat_background(rng, size)
    instances = _sample_instances(rng, size, level, image[0, 0])
    shapes = [_rasterise(size, inst) for inst in instances]
    covered = np.zeros((size, size), dtype=bool)
    visible: list[tuple[int, np.ndarray] | None] = [None] * len(instances)
    for i in reversed(range(len(instances))):  # front to back: what later instances cover is hidden
        seen = shapes[i] & ~covered
        covered |= shapes[i]
        # Paint with a faint per-instance shading so that fills are not flat colour.
        image[seen] = instances[i]["colour"] + rng.normal(0, 6, size=(int(seen.sum()), 1))
        if seen.sum() >= MIN_VISIBLE_AREA:
            visible[i] = (instances[i]["kind"], seen)
    kept = [item for item in visible if item is not None]
    return np.clip(image, 0, 255).round().astype(np.uint8), kept


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
