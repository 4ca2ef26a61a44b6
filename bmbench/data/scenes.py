"""The synthetic scenes: one image and its visible instances, drawn by a seeded `numpy` Generator.

The shapes are chosen so that mask resolution and instance separation matter: a ring (a hole), a comb (thin
teeth), a crescent (a concavity) and a star (thin arms). Colours are random per instance, so the class must be
told from shape. Some same-class pairs are placed touching or overlapping, which separates a single global map
(M=1) from per-instance attention (M>1). Instances are drawn in depth order; an instance's mask is what stays
visible after the later ones are drawn.

Two named difficulties (`DIFFICULTIES`): ``light``, the default, which a 2-core CPU learns in minutes (2–4
instances, half-extent 0.12–0.35 of the side, a flat background, instance colours kept apart from it), and
``hard``, the scenes of bmbench 0.1.0 (3–9 instances, half-extent 0.05–0.42, textured backgrounds;
the same images as were written then).

The dataset on disk (bmbench.data.synth) and the training stream (bmbench.data.stream) both draw their images here.

Letters: N instances, H x W image (here H = W = size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bmbench.errors import BmbenchError

CATEGORIES = ("ring", "comb", "crescent", "star")
MIN_VISIBLE_AREA = 30  # px; instances hidden below this are dropped
DEFAULT_DIFFICULTY = "light"


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
