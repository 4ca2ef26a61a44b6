"""Build the real-photo instance-segmentation set in this folder from two photographs shipped with scikit-image.

Run once, by hand, in a throwaway environment (scikit-image is not a bmbench dependency, and nothing here runs at
test time; the tests read the files this writes, which are committed):

    python3.11 -m venv /tmp/photovenv
    /tmp/photovenv/bin/pip install scikit-image==0.26.0 pycocotools
    /tmp/photovenv/bin/python tests/data/photos/build.py

Sources (see README.md for their licences): ``skimage/data/coins.png`` (Greek coins from Pompeii, 303x384 grey)
and ``skimage/data/hubble_deep_field.jpg`` (Hubble eXtreme Deep Field, 872x1000 RGB).

The masks come from a deterministic classical segmentation of the whole photo, not from human annotators:
- coins: Sobel elevation map, watershed from markers at grey < 30 (background) and > 150 (coin), holes filled,
  regions under COIN_MIN_AREA pixels dropped (the scikit-image tutorial's method);
- galaxies: grey level smoothed (Gaussian, sigma 1), thresholded at the background's median plus GALAXY_SIGMAS
  robust standard deviations, holes filled, regions under GALAXY_MIN_AREA pixels dropped, touching blobs split by a
  watershed of the distance transform from its local maxima.
Each crop then keeps an instance whose visible part is at least MIN_VISIBLE of its whole area and at least
MIN_CROP_AREA pixels; each kept instance is written as the COCO polygon of its largest connected piece (the contour
at level 0.5, simplified by POLYGON_TOLERANCE pixels), so the annotations read like human COCO polygons.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi
from skimage import data, feature, filters, measure, segmentation
from skimage.color import rgb2gray

HERE = Path(__file__).resolve().parent
COIN_MIN_AREA = 150  # pixels: smaller "coins" are dust or background texture
GALAXY_SIGMAS = 5.0  # threshold: background median + this many robust (MAD) standard deviations
GALAXY_MIN_AREA = 24  # pixels: smaller blobs are noise or galaxies too faint to outline
MIN_VISIBLE = 0.4  # a crop keeps an instance when at least this fraction of it lies inside
MIN_CROP_AREA = 24  # ... and at least this many of its pixels
POLYGON_TOLERANCE = 0.75  # pixels: skimage.measure.approximate_polygon's tolerance
JPEG_QUALITY = 90  # the galaxy crops stay JPEG, as their source is
CATEGORIES = [{"id": 1, "name": "coin", "supercategory": "object"}, {"id": 2, "name": "galaxy", "supercategory": "sky"}]
# split -> (file name, source, category id, (left, top, width, height)); every width and height is off the stride 32
CROPS: dict[str, list[tuple[str, str, int, tuple[int, int, int, int]]]] = {
    "train": [
        ("coins_top_left.png", "coins", 1, (0, 0, 203, 157)),
        ("coins_top_right.png", "coins", 1, (185, 2, 199, 155)),
        ("hubble_a.jpg", "hubble", 2, (0, 0, 245, 183)),
        ("hubble_b.jpg", "hubble", 2, (300, 40, 203, 235)),
        ("hubble_c.jpg", "hubble", 2, (560, 0, 221, 150)),
        ("hubble_d.jpg", "hubble", 2, (90, 300, 187, 229)),
    ],
    "val": [
        ("coins_bottom.png", "coins", 1, (0, 150, 381, 153)),
        ("hubble_e.jpg", "hubble", 2, (600, 560, 250, 201)),
    ],
}


def coin_labels(grey: np.ndarray) -> np.ndarray:
    """int labels[H, W] of the coins in a grey uint8 photo (0: background)."""
    elevation = filters.sobel(grey)
    markers = np.zeros_like(grey, dtype=np.int32)
    markers[grey < 30], markers[grey > 150] = 1, 2
    foreground = ndi.binary_fill_holes(segmentation.watershed(elevation, markers) == 2)
    labels, _ = ndi.label(foreground)
    return _drop_small(labels, COIN_MIN_AREA)


def galaxy_labels(rgb: np.ndarray) -> np.ndarray:
    """int labels[H, W] of the galaxies (and stars) in an RGB uint8 photo (0: background)."""
    grey = filters.gaussian(rgb2gray(rgb), sigma=1.0)
    median = float(np.median(grey))
    spread = 1.4826 * float(np.median(np.abs(grey - median)))  # MAD scaled to a Gaussian's standard deviation
    foreground = ndi.binary_fill_holes(grey > median + GALAXY_SIGMAS * spread)
    blobs, _ = ndi.label(foreground)
    blobs = _drop_small(blobs, GALAXY_MIN_AREA)
    distance = ndi.distance_transform_edt(blobs > 0)
    peaks = feature.peak_local_max(distance, min_distance=4, labels=blobs, exclude_border=False)
    markers = np.zeros_like(blobs)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=blobs > 0)
    return _drop_small(labels, GALAXY_MIN_AREA)


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """labels with regions under min_area pixels set to 0, renumbered 1..n in raster order."""
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = True
    return segmentation.relabel_sequential(np.where(small[labels], 0, labels))[0]


def polygon(mask: np.ndarray) -> list[float] | None:
    """The COCO polygon [x0, y0, x1, y1, ...] (pixel-edge coordinates) of mask's largest connected piece."""
    pieces, count = ndi.label(mask)
    if count == 0:
        return None
    largest = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    padded = np.pad(largest, 1).astype(np.float64)  # closes contours that meet the crop's edge
    contour = max(measure.find_contours(padded, 0.5), key=len)
    contour = measure.approximate_polygon(contour, tolerance=POLYGON_TOLERANCE)
    if len(contour) < 4:  # closed: 3 distinct points and the first again
        return None
    # (row, col) of the padded array -> (x, y) in pixel edges: -1 for the pad, +0.5 from pixel centre to edges
    xy = np.stack([contour[:-1, 1] - 0.5, contour[:-1, 0] - 0.5], axis=1)
    xy = np.clip(xy, 0, [mask.shape[1], mask.shape[0]])
    return [round(float(v), 2) for v in xy.ravel()]


def build_split(split: str, photos: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Write the split's crops into HERE/split/ and return its COCO annotation dict."""
    (HERE / split).mkdir(exist_ok=True)
    images, annotations = [], []
    for image_id, (name, source, category, (left, top, width, height)) in enumerate(CROPS[split], 1):
        pixels, labels = photos[source]
        crop = pixels[top : top + height, left : left + width]
        crop_labels = labels[top : top + height, left : left + width]
        assert crop.shape[:2] == (height, width), (name, crop.shape)
        image = Image.fromarray(crop)
        if name.endswith(".jpg"):
            image.save(HERE / split / name, quality=JPEG_QUALITY)
        else:
            image.save(HERE / split / name, optimize=True)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        whole = np.bincount(labels.ravel())
        for label in np.unique(crop_labels[crop_labels > 0]):
            mask = crop_labels == label
            visible = int(mask.sum())
            if visible < MIN_CROP_AREA or visible < MIN_VISIBLE * whole[label]:
                continue
            points = polygon(mask)
            if points is None:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects([points], height, width))
            area = int(mask_utils.area(rle))
            if area < MIN_CROP_AREA:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": [points],
                    "area": area,
                    "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": "bmbench test photos: crops of scikit-image's coins and Hubble deep field"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def main() -> None:
    coins = data.coins()  # (303, 384) uint8
    hubble = data.hubble_deep_field()  # (872, 1000, 3) uint8
    photos = {"coins": (coins, coin_labels(coins)), "hubble": (hubble, galaxy_labels(hubble))}
    (HERE / "annotations").mkdir(exist_ok=True)
    for split in CROPS:
        dataset = build_split(split, photos)
        text = json.dumps(dataset, separators=(",", ":"))
        (HERE / "annotations" / f"instances_{split}.json").write_text(text + "\n", encoding="utf-8")
        counts = np.bincount([a["image_id"] for a in dataset["annotations"]])[1:]
        print(f"{split}: {len(dataset['images'])} images, {len(dataset['annotations'])} instances, per image {counts}")


if __name__ == "__main__":
    main()
