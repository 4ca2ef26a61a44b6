"""The finetune protocol, the training stream, the one-time stages' notes and the cache key's data identity."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bmbench.data.synth import write_synthetic_dataset
from bmbench.results import Event
from bmbench.training.config import TrainConfig
from bmbench.training.train import train
from bmbench.training.trunk import data_identity, trunk_key
from bmbench.variants import build_segmenter, parse_spec

SPEC = "blendmask:K=2,M=2,R=8"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=8, size=64)


def _finetune(data: Path, out: Path, cache: Path, spec: str = SPEC, **kwargs) -> tuple:
    events: list[Event] = []
    config = TrainConfig(protocol="finetune", iters=2, batch_size=2, trunk_iters=2, **kwargs)
    result = train(spec, config, data_dir=data, out=out, device="cpu", trunk_cache=cache, events=events.append)
    return result, events


def test_finetune_pretrains_once_and_gives_each_cell_a_fresh_head(tiny_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, events = _finetune(tiny_data, tmp_path / "a", cache, pretrain_head="maskrcnn")
    second, again = _finetune(tiny_data, tmp_path / "b", cache, spec="yolact:K=4", pretrain_head="maskrcnn")
    assert first.metrics["trunk_reused"] is False and second.metrics["trunk_reused"] is True
    assert len(list(cache.glob("pretrain-*.pt"))) == 1  # one pretraining for every cell
    notes = [e.message for e in events if e.kind == "note" and e.stage == "pretrain"]
    assert len(notes) == 1 and "2 joint steps" in notes[0] and "maskrcnn head" in notes[0]
    assert not [e for e in again if e.stage == "pretrain"]  # reused: nothing announced, nothing trained
    pretrained = torch.load(next(cache.glob("pretrain-*.pt")), weights_only=True)
    assert "mask_head" not in str(list(pretrained))  # only the backbone and detector are kept
    # The cell starts from the pretrained trunk and a fresh head: with 0 steps of its own the head equals a
    # freshly built one of the same seed, and the trunk equals the pretrained one.
    state = torch.load(first.checkpoint, weights_only=True)
    assert state["config"]["protocol"] == "finetune"
    moved = [k for k, v in pretrained["backbone"].items() if not torch.equal(state["model"][f"backbone.{k}"], v)]
    assert moved  # the cell fine-tuned the trunk jointly (it is not frozen)


def test_finetune_head_starts_fresh(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bmbench.training.train as train_module

    seen = {}

    def capture(step, parameters, batches, **kwargs):  # the cell's optimisation: record where it starts
        if kwargs["stage"] == "finetune":
            seen["head"] = {n: p.detach().clone() for n, p in capture.model.mask_head.named_parameters()}
            seen["backbone"] = {n: p.detach().clone() for n, p in capture.model.backbone.named_parameters()}
        return original(step, parameters, batches, **kwargs)

    original = train_module.optimise
    real_build = train_module.build_segmenter

    def build(*args, **kwargs):
        capture.model = real_build(*args, **kwargs)
        return capture.model

    monkeypatch.setattr(train_module, "optimise", capture)
    monkeypatch.setattr(train_module, "build_segmenter", build)
    _finetune(tiny_data, tmp_path / "run", tmp_path / "cache", pretrain_head="maskrcnn")
    torch.manual_seed(0)
    fresh = build_segmenter(parse_spec(SPEC), trunk="small", num_classes=4)
    for name, value in fresh.mask_head.named_parameters():
        assert torch.equal(seen["head"][name], value), name  # the head as initialised, nothing pretrained
    pretrained = torch.load(next((tmp_path / "cache").glob("pretrain-*.pt")), weights_only=True)["backbone"]
    for name, value in seen["backbone"].items():
        assert torch.equal(value, pretrained[name]), name


def test_a_small_explicit_request_finishes_in_about_its_own_time(tiny_data: Path, tmp_path: Path) -> None:
    """No unasked one-time stage (the default protocol is joint): 3 steps on 64 px images (the dataset's own size)
    take seconds."""
    started = time.perf_counter()
    result = train(SPEC, TrainConfig(iters=3, batch_size=2), data_dir=tiny_data, out=tmp_path / "r")  # defaults
    assert time.perf_counter() - started < 60
    assert torch.load(result.checkpoint, weights_only=True)["config"]["image_size"] == 64  # the dataset's own size


def test_the_data_identity_changes_when_an_image_changes(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(tiny_data, tmp_path / "copy"))
    before = data_identity(copy)
    image = next((copy / "train").glob("*.png"))
    pixels = np.asarray(Image.open(image)).copy()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, pixels.shape, dtype=np.uint8)).save(image)
    assert data_identity(copy) != before


@pytest.mark.parametrize(
    ("change", "head"),
    [({"warmup_iters": 10}, "none"), ({"weight_decay": 0.0}, "none"), ({"clip_norm": 1.0}, "none"),
     ({"trunk_iters": 3}, "none"), ({"semantic_loss": "bce"}, "none"), ({"semantic_level": "p2"}, "none"),
     ({"max_mask_positives": None}, "maskrcnn")],
)  # fmt: skip
def test_the_cache_key_changes_with_every_setting_that_changes_the_pretraining(change: dict, head: str) -> None:
    base = TrainConfig(protocol="finetune", image_size=64, trunk_lr=2e-3, pretrain_head=head)
    assert trunk_key("data", replace(base, **change), 3) != trunk_key("data", base, 3)
    assert trunk_key("data", replace(base, seed=5, iters=7, lr=1.0), 3) == trunk_key("data", base, 3)  # the cell's


@pytest.mark.parametrize("protocol", ["finetune", "shared-trunk"])
def test_the_mask_loss_positives_leave_a_maskless_pretraining_key_alone(protocol: str) -> None:
    """Without a mask head (finetune's default) or for shared-trunk (boxes only) the one-time training has no mask
    loss, so how many positives it would take cannot change it: a suite that changes them reuses the trunk."""
    base = TrainConfig(protocol=protocol, image_size=64, trunk_lr=2e-3)
    assert trunk_key("data", replace(base, max_mask_positives=None), 3) == trunk_key("data", base, 3)


def test_finetune_can_pretrain_without_any_mask_head(tiny_data: Path, tmp_path: Path) -> None:
    result, events = _finetune(tiny_data, tmp_path / "a", tmp_path / "cache")  # the default: no mask head
    notes = [e.message for e in events if e.kind == "note" and e.stage == "pretrain"]
    assert "steps of the detector" in notes[0]
    log = (tmp_path / "a" / "train_log.csv").read_text()
    assert "loss_mask" in log.splitlines()[0]  # the cell's own joint steps have a mask loss
    pretrain_rows = [line for line in log.splitlines() if line.startswith("pretrain,")]
    header = log.splitlines()[0].split(",")
    assert pretrain_rows and all(row.split(",")[header.index("loss_mask")] == "" for row in pretrain_rows)
    assert result.metrics["trunk_reused"] is False


def test_adelaidet_recipe_options_train(tiny_data: Path, tmp_path: Path) -> None:
    """Every positive in the mask loss and the cross-entropy semantic loss over C + 1 classes."""
    config = TrainConfig(protocol="joint", iters=2, batch_size=2, max_mask_positives=None, semantic_loss="ce")
    result = train(SPEC, config, data_dir=tiny_data, out=tmp_path / "r", device="cpu")
    assert result.metrics["final_loss_semantic"] > 0 and result.metrics["final_loss_mask"] > 0
    from bmbench.training.steps import build_semantic_head

    head = build_semantic_head(in_channels=128, num_classes=4, cross_entropy=True)
    assert head[-1].out_channels == 5 and head.cross_entropy


@pytest.mark.parametrize("level", ["p3", "p2"])
def test_the_semantic_loss_trains_on_the_level_it_names(tiny_data: Path, tmp_path: Path, level: str) -> None:
    """The auxiliary head reads its level and is scored against targets at that level's stride (a mismatch of map
    and targets would raise in the loss)."""
    from bmbench.training.steps import SEMANTIC_STRIDES, build_semantic_head

    config = TrainConfig(protocol="joint", iters=2, batch_size=2, semantic_level=level)
    result = train(SPEC, config, data_dir=tiny_data, out=tmp_path / "r", device="cpu")
    assert result.metrics["final_loss_semantic"] > 0
    head = build_semantic_head(in_channels=8, num_classes=3, level=level)
    assert (head.level, head.stride) == (level, SEMANTIC_STRIDES[level])
