"""The training stream: deterministic per seed, other seeds differ, valid targets in the training batch format."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from bmbench.data.coco import PIXEL_MEAN, PIXEL_STD, CocoInstanceDataset
from bmbench.data.stream import NUM_CLASSES, dataset_stream, scene_sample, synthetic_batches
from bmbench.data.synth import SynthInfo, synthetic_info, write_synthetic_dataset
from bmbench.errors import BmbenchError
from bmbench.training.loop import training_batches


def _take(n: int, **kwargs: object) -> list[tuple[Tensor, list[dict]]]:
    return list(islice(synthetic_batches(**kwargs), n))


def _same(a: list[tuple[Tensor, list[dict]]], b: list[tuple[Tensor, list[dict]]]) -> bool:
    if len(a) != len(b):
        return False
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True):
        if not torch.equal(images_a, images_b):
            return False
        for ta, tb in zip(targets_a, targets_b, strict=True):
            if not all(torch.equal(ta[k], tb[k]) for k in ("boxes", "labels", "masks", "iscrowd")):
                return False
    return True


def test_same_seed_same_batches_other_seed_others_and_no_scene_repeats() -> None:
    first = _take(3, batch_size=2, image_size=64, seed=5)
    assert _same(first, _take(3, batch_size=2, image_size=64, seed=5))
    assert not _same(first, _take(3, batch_size=2, image_size=64, seed=6))
    images = torch.cat([images for images, _ in first])  # (6, 3, 64, 64)
    assert len({tuple(image.flatten()[::97].tolist()) for image in images}) == 6  # every step new scenes
    assert [t["image_id"] for _, targets in first for t in targets] == list(range(6))


def test_scene_order_does_not_depend_on_the_batch_size() -> None:
    by_two = _take(2, batch_size=2, image_size=64, seed=1)
    by_four = _take(1, batch_size=4, image_size=64, seed=1)
    assert torch.equal(torch.cat([images for images, _ in by_two]), by_four[0][0])
    assert _same(_take(1, batch_size=2, image_size=64, seed=1, start=2), [by_two[1]])


def test_targets_are_valid_and_agree_with_the_masks() -> None:
    for images, targets in _take(2, batch_size=4, image_size=96, seed=0):
        assert images.shape == (4, 3, 96, 96) and images.dtype == torch.float32
        for target in targets:
            boxes, masks, labels = target["boxes"], target["masks"], target["labels"]
            n = len(labels)
            assert 1 <= n <= 4 and boxes.shape == (n, 4) and masks.shape == (n, 96, 96)
            assert masks.dtype == torch.uint8 and labels.dtype == torch.int64 and target["iscrowd"].dtype == torch.uint8
            assert masks.flatten(1).sum(1).min() > 0 and ((labels >= 0) & (labels < NUM_CLASSES)).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all() and (boxes[:, 2:] > boxes[:, :2]).all()
            for box, mask in zip(boxes, masks, strict=True):  # each box is its mask's extent, in pixel edges
                ys, xs = mask.nonzero(as_tuple=True)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert target["size"] == (96, 96) and target["scale"] == 1.0


def test_rendering_larger_then_resizing_matches_the_dataset_reader(tmp_path: Path) -> None:
    image, target = scene_sample(0, 3, image_size=64, render_size=128)
    assert image.shape == (3, 64, 64) and target["masks"].shape[-2:] == (64, 64)
    assert target["orig_size"] == (128, 128) and target["scale"] == 0.5
    big, _ = scene_sample(0, 3, image_size=128)
    mean, std = torch.tensor(PIXEL_MEAN)[:, None, None], torch.tensor(PIXEL_STD)[:, None, None]
    assert np.allclose((image * std + mean).mean(), (big * std + mean).mean(), atol=1e-2)  # the same scene, smaller


def test_batches_have_the_format_of_the_training_reader(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", num_images=4, size=64, seed=0)
    dataset = CocoInstanceDataset(root, "train", image_size=64)
    images, targets = next(training_batches(dataset, batch_size=2, seed=0))
    stream_images, stream_targets = next(synthetic_batches(batch_size=2, image_size=64, seed=0))
    assert stream_images.shape == images.shape and stream_images.dtype == images.dtype
    for ours, theirs in zip(stream_targets, targets, strict=True):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert type(ours[key]) is type(value)
            if isinstance(value, Tensor):
                assert ours[key].dtype == value.dtype and ours[key].dim() == value.dim()


def test_stream_scenes_are_not_the_dataset_images(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", num_images=4, size=64, seed=0)
    dataset = CocoInstanceDataset(root, "train", image_size=64)
    for index in range(len(dataset)):
        assert not torch.allclose(dataset[index][0], scene_sample(0, index, image_size=64)[0])


def test_a_synthetic_dataset_gets_its_own_stream_and_a_coco_dataset_none(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", num_images=4, size=96, seed=3, difficulty="hard")
    assert synthetic_info(root) == SynthInfo("hard", 96, 3)
    stream = dataset_stream(root, batch_size=2, image_size=64, seed=7)
    assert stream is not None
    expected = _take(1, batch_size=2, image_size=64, seed=7, render_size=96, difficulty="hard")
    assert _same([next(stream)], expected)
    other = tmp_path / "coco"
    (other / "annotations").mkdir(parents=True)
    (other / "annotations" / "instances_train.json").write_text('{"info": {"description": "COCO"}, "images": []}')
    assert synthetic_info(other) is None and dataset_stream(other, batch_size=2, image_size=64, seed=0) is None
    assert synthetic_info(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch size must be positive"),
        ({"image_size": 16}, "image_size must be at least 32"),
        ({"render_size": 32}, "render size must be at least 64"),
        ({"seed": -1}, "non-negative"),
        ({"difficulty": "easy"}, "unknown difficulty"),
    ],
)
def test_bad_arguments_fail_before_the_first_batch(kwargs: dict, message: str) -> None:
    arguments = {"batch_size": 2, "image_size": 64, "seed": 0} | kwargs
    with pytest.raises(BmbenchError, match=message):
        synthetic_batches(**arguments)
