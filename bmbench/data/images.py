"""Image files of a dataset: read as 8-bit RGB whatever their depth, and checked once when a split is opened.

Reading (:func:`to_rgb`): 8-bit modes (L, LA, P, RGBA, CMYK, 1, ...) go through Pillow's ``convert("RGB")``.
Deeper pixels are scaled to 0..255, never clipped (Pillow's ``convert`` clips a 16-bit grey to 255, which turns
most such images into a constant white one):

- 16-bit integers (``I;16*``): ``value / 257``, i.e. 0..65535 onto 0..255;
- 32-bit integers (``I``): as 8 bits when every value lies in 0..255, as 16 bits when in 0..65535, else the
  image's own range onto 0..255;
- floats (``F``): 0..1 onto 0..255 when every value lies there, as 8 bits when in 0..255, else the image's own
  range (non-finite values read as 0).

Checking (:func:`check_images`): every image an annotation file lists must exist, be non-empty, open as an image,
have the annotated width and height, and decode to its end. A file that fails is refused (BmbenchError), not
skipped: a benchmark that silently scores a smaller split than the one asked for would compare numbers that do
not measure the same thing. The one line names the first such file, its split and image id, and counts the rest.
An image that is constant after reading is kept and reported as one ``BmbenchWarning`` with the count.

Letters: H x W an image.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bmbench.errors import BmbenchError, BmbenchWarning

_SHOWN = 3  # bad or constant files named in a message; the rest are counted
# (path, size, mtime_ns) -> constant after reading: an image decoded once is not decoded again while unchanged, so
# that the readers of one process (a suite's references, each cell's training and evaluation) check it once.
_DECODED: dict[tuple[str, int, int], bool] = {}


def to_rgb(image: Image.Image) -> np.ndarray:
    """``ndarray[H, W, 3]`` uint8 of an opened image, deep pixels scaled as the module docstring says."""
    mode = image.mode
    if mode.startswith("I;16"):
        grey = np.asarray(image).astype(np.float64) / 257.0
    elif mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode == "F" and low >= 0 and high <= 1:
            grey = values * 255.0
        elif low >= 0 and high <= 255:
            grey = values
        elif mode == "I" and low >= 0 and high <= 65535:
            grey = values / 257.0
        else:  # the image's own range: all that a signed or wider value can be mapped by
            grey = (values - low) * (255.0 / (high - low))
    else:
        return np.asarray(image.convert("RGB"))
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)  # (H, W)
    return np.repeat(grey[:, :, None], 3, axis=2)  # (H, W, 3)


def read_rgb(path: Path) -> np.ndarray:
    """``ndarray[H, W, 3]`` uint8 of the image file at `path` (:func:`to_rgb`)."""
    with Image.open(path) as image:
        return to_rgb(image)


def _problem(path: Path, width: int, height: int) -> tuple[str | None, bool]:
    """(what is wrong with the file, or None; whether it is constant after reading)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "is missing", False
    except OSError as err:
        return f"cannot be read ({err.strerror or err})", False
    if not path.is_file():
        return "is not a file", False
    if stat.st_size == 0:
        return "is empty (0 bytes)", False
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    try:
        with Image.open(path) as image:
            if image.size != (width, height):
                return f"is {image.width}x{image.height} but annotated as {width}x{height}", False
            if key in _DECODED:
                return None, _DECODED[key]
            # JPEG decodes at 1/8 scale here: every byte is still read, so truncation shows, in a fraction of the
            # time; whether the image is constant does not depend on the scale.
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
            pixels = to_rgb(image)
    except UnidentifiedImageError:
        return "is not an image file Pillow can read", False
    except PermissionError as err:
        return f"cannot be read ({err.strerror or err})", False
    except (OSError, SyntaxError, ValueError) as err:  # Pillow raises these for truncated or corrupt data
        return f"is truncated or corrupt ({' '.join(str(err).split()) or type(err).__name__})", False
    constant = bool(pixels.size) and bool((pixels == pixels.flat[0]).all())
    _DECODED[key] = constant
    return None, constant


def check_images(images: Iterable[dict], image_dir: Path, *, split: str, ann_file: Path) -> None:
    """Check every image entry (COCO ``images`` dicts: id, file_name, width, height) of `split` against its file
    in `image_dir`: refuse missing, empty, unreadable, truncated or wrongly sized files in one BmbenchError line;
    warn once, with the count, about images that are constant after reading."""
    image_dir = Path(image_dir)
    bad: list[str] = []
    constant: list[str] = []
    total = 0
    for entry in images:
        total += 1
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            bad.append(f"image id {entry['id']!r} has no file_name in {ann_file}")
            continue
        problem, flat = _problem(image_dir / name, int(entry["width"]), int(entry["height"]))
        if problem is not None:
            listed = f", listed in {ann_file}" if problem == "is missing" else ""
            bad.append(f"{image_dir / name} (image id {entry['id']!r}) {problem}{listed}")
        elif flat:
            constant.append(name)
    if bad:
        more = f"; {len(bad) - 1} more of its {total} images fail too" if len(bad) > 1 else ""
        raise BmbenchError(f"split {split!r}: {bad[0]}{more}")
    if constant:
        named = ", ".join(constant[:_SHOWN]) + (f" and {len(constant) - _SHOWN} more" if len(constant) > _SHOWN else "")
        warnings.warn(
            f"split {split!r} in {image_dir}: {len(constant)} of {total} images are constant after reading (one "
            f"value in every pixel, nothing to learn or detect): {named}",
            BmbenchWarning,
            stacklevel=2,
        )
