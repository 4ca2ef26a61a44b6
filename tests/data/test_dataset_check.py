"""The one dataset check every reader calls: broken image files and annotation files that are not UTF-8 get one
line and exit 2 from training, evaluation and references alike (and from a suite before its first cell); deep
images are scaled, not clipped; a constant image is warned about."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from bmbench.ablation.driver import run_suite
from bmbench.ablation.suite import load_suite
from bmbench.data.coco import PIXEL_MEAN, PIXEL_STD, CocoInstanceDataset, check_split
from bmbench.data.images import read_rgb, to_rgb
from bmbench.data.synth import ensure_default_dataset, write_synthetic_dataset
from bmbench.errors import BmbenchError, BmbenchWarning


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("check") / "ds", num_images=6, size=64, seed=2)


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def _first_image(root: Path, split: str) -> Path:
    return (
        root
        / split
        / json.loads((root / "annotations" / f"instances_{split}.json").read_text())["images"][0]["file_name"]
    )


def _break(path: Path, how: str) -> str:
    """Damage the image file at `path`; return the words the one-line error must hold."""
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return "is truncated or corrupt"
    if how == "empty":
        path.write_bytes(b"")
        return "is empty (0 bytes)"
    if how == "missing":
        path.unlink()
        return "is missing, listed in"
    if how == "not an image":
        path.write_text("hello")
        return "is not an image file Pillow can read"
    Image.new("RGB", (40, 30)).save(path)  # wrong size
    return "is 40x30 but annotated as 64x64"


CASES = ["truncated", "empty", "missing", "not an image", "wrong size"]


@pytest.mark.parametrize("how", CASES)
def test_every_reader_refuses_a_broken_image_in_one_line(
    cli_app: typer.Typer, root: Path, tmp_path: Path, how: str
) -> None:
    bad_val = _first_image(root, "val")
    words = _break(bad_val, how)
    runner = CliRunner()
    commands = {
        "references": ["evaluate", "--reference", "roi-28", "--data", str(root), "--out", str(tmp_path / "ref")],
        "detections": ["evaluate", "--detections", str(_detections(root, tmp_path)), "--data", str(root)]
        + ["--out", str(tmp_path / "det")],
    }
    for name, args in commands.items():
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 2, (name, result.output)
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: split 'val': {bad_val} (image id ") and words in line, (name, line)
    assert not (tmp_path / "ref").exists() and not (tmp_path / "det").exists()
    with pytest.raises(BmbenchError, match=r"^split 'val': .* " + re.escape(words)):
        CocoInstanceDataset(root, "val")  # what `evaluate CHECKPOINT` opens, before the model runs


@pytest.mark.parametrize("how", ["truncated", "empty", "missing"])
def test_training_refuses_a_broken_image_before_it_trains(
    cli_app: typer.Typer, root: Path, tmp_path: Path, how: str
) -> None:
    bad = _first_image(root, "train")
    words = _break(bad, how)
    out = tmp_path / "run"
    args = ["train", "blendmask:K=2,M=2,R=8", "--data", str(root), "--out", str(out), "--iters", "1"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: split 'train': {bad} (image id ") and words in line
    assert not out.exists()


def test_several_broken_images_are_counted_in_the_one_line(root: Path) -> None:
    for path in sorted((root / "train").iterdir())[:3]:
        path.write_bytes(b"")
    with pytest.raises(BmbenchError, match=r"is empty \(0 bytes\); 2 more of its \d+ images fail too$"):
        check_split(root, "train")


def test_a_suite_refuses_a_broken_image_before_its_first_cell(root: Path, tmp_path: Path) -> None:
    (root / "annotations" / "instances_train.json").rename(root / "annotations" / "instances_train2017.json")
    (root / "train").rename(root / "train2017")
    _break(_first_image(root, "val"), "truncated")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: s\ndataset: {{kind: coco, root: {root}, train: train2017, val: val}}\ntrain: {{iters: 1}}\n"
        "variants: [yolact]\nspeed: {instances: [1], image_size: 64x64}\n"
    )
    ran = []
    with pytest.raises(BmbenchError, match=r"^split 'val': .* is truncated or corrupt"):
        run_suite(load_suite(suite), out=tmp_path / "out", device="cpu", runner=lambda cell, **_: ran.append(cell))
    assert ran == [] and not (tmp_path / "out" / "s" / "references.csv").exists()


def test_an_annotation_file_that_is_not_utf8_is_refused_in_one_line(
    cli_app: typer.Typer, root: Path, tmp_path: Path
) -> None:
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        path.write_bytes(path.read_text().encode("utf-16"))
    commands = [
        ["train", "yolact", "--data", str(root), "--out", str(tmp_path / "t"), "--iters", "1"],
        ["evaluate", "--reference", "box", "--data", str(root), "--out", str(tmp_path / "r")],
    ]
    for args in commands:
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert "instances_" in line and "not UTF-8 text (byte 0xff at offset 0)" in line


def _detections(root: Path, tmp_path: Path) -> Path:
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    keep = ("image_id", "category_id", "bbox", "segmentation")
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{k: ann[k] for k in keep} | {"score": 1.0} for ann in gt["annotations"]]))
    return path


def _gradient(side: int = 48) -> np.ndarray:
    """A float grey image in 0..1 with spread: a ramp plus a fixed pattern."""
    ramp = np.linspace(0.05, 0.95, side)[None, :] * np.ones((side, 1))
    return ramp * 0.7 + 0.25 * (np.indices((side, side)).sum(0) % 3) / 2


@pytest.mark.parametrize("depth", ["I;16", "I", "F"])
def test_deep_grey_images_are_scaled_and_keep_their_pixel_statistics(tmp_path: Path, depth: str) -> None:
    grey = _gradient()
    if depth == "I;16":
        Image.fromarray(np.rint(grey * 65535).astype(np.uint16)).save(tmp_path / "x.png")  # a 16-bit PNG
        pixels = read_rgb(tmp_path / "x.png")
    elif depth == "I":
        pixels = to_rgb(Image.fromarray(np.rint(grey * 65535).astype(np.int32), mode="I"))
    else:
        Image.fromarray(grey.astype(np.float32), mode="F").save(tmp_path / "x.tiff")
        pixels = read_rgb(tmp_path / "x.tiff")
    assert pixels.shape == (*grey.shape, 3) and pixels.dtype == np.uint8
    assert (pixels[..., 0] == pixels[..., 2]).all()
    read = pixels[..., 0] / 255.0
    assert read.mean() == pytest.approx(grey.mean(), abs=1 / 255) and read.std() == pytest.approx(
        grey.std(), abs=1 / 255
    )


def test_a_16_bit_image_reaches_the_model_with_its_statistics(root: Path) -> None:
    path = _first_image(root, "val")
    grey = _gradient(64)
    Image.fromarray(np.rint(grey * 65535).astype(np.uint16)).save(path)  # used to read as constant white
    dataset = CocoInstanceDataset(root, "val", image_size=64)
    image, _ = dataset[0]
    channel0 = image[0, :64, :64] * PIXEL_STD[0] + PIXEL_MEAN[0]  # back to 0..1
    assert float(channel0.std()) == pytest.approx(grey.std(), abs=0.01)
    assert float(channel0.mean()) == pytest.approx(grey.mean(), abs=0.01)
    assert torch.isfinite(image).all()


def test_a_constant_image_gets_one_counted_warning(root: Path) -> None:
    path = _first_image(root, "val")
    Image.new("RGB", (64, 64), (255, 255, 255)).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CocoInstanceDataset(root, "val")
    messages = [str(w.message) for w in caught if issubclass(w.category, BmbenchWarning)]
    assert messages == [
        f"split 'val' in {root / 'val'}: 1 of 2 images are constant after reading (one value in every pixel, nothing "
        f"to learn or detect): {path.name}"
    ]


def test_a_synthetic_suite_checks_its_cached_dataset_before_its_first_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMBENCH_DATA", str(tmp_path / "data"))
    root = ensure_default_dataset(num_images=6, size=64, seed=2)  # the suite's cached dataset, then damaged
    bad = _first_image(root, "train")
    _break(bad, "empty")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndataset: {kind: synthetic, images: 6, size: 64, seed: 2}\ntrain: {iters: 1}\n"
        "variants: [yolact]\nspeed: {instances: [1], image_size: 64x64}\n"
    )
    ran = []
    with pytest.raises(BmbenchError, match=rf"^split 'train': {re.escape(str(bad))} \(image id \d+\) is empty"):
        run_suite(load_suite(suite), out=tmp_path / "out", device="cpu", runner=lambda cell, **_: ran.append(cell))
    assert ran == []
