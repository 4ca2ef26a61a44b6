"""Training: a few steps reduce the loss for every family, NaN stops the run, runs repeat exactly, the shared trunk
is cached and frozen, and bad input fails before anything is written (exit 2 through the CLI)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import bmbench.training.steps as steps_module
import bmbench.training.train as train_module
from bmbench.data.coco import CocoInstanceDataset, collate
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchError
from bmbench.training.config import TrainConfig
from bmbench.training.loop import NonFiniteLossError, optimise
from bmbench.training.steps import joint_step
from bmbench.training.train import train
from bmbench.variants import FAMILY_PRESETS, PRESETS, build_segmenter, parse_spec

# The family presets shrunk so that a step takes a fraction of a second on a CPU.
TINY = {
    "yolact": "yolact:K=4",
    "centermask": "centermask:S=4,R=8",
    "blendmask": "blendmask:K=2,M=2,R=8",
    "condinst": "condinst:K=4,L=2,F=4",
    "maskrcnn": "maskrcnn:R=8",
}
IMAGE_SIZE = 64  # the tiny dataset's 96 px images are resized to 64: evaluation must map back


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=8, size=96)


RUN_KEYS = ("trunk_cache", "log_every", "events")  # train() keywords that are not TrainConfig fields


def _train_tiny(data: Path, out: Path, spec: str = TINY["blendmask"], **kwargs) -> train_module.TrainResult:
    options = {"iters": 2, "batch_size": 2, "image_size": IMAGE_SIZE, "protocol": "joint"} | kwargs
    run = {key: options.pop(key) for key in RUN_KEYS if key in options}
    return train(spec, TrainConfig(**options), data_dir=data, out=out, device="cpu", **run)


def test_tiny_specs_cover_every_family() -> None:
    assert {parse_spec(text).family for text in TINY.values()} == {PRESETS[name].family for name in FAMILY_PRESETS}


@pytest.mark.parametrize("family", FAMILY_PRESETS)
def test_few_steps_reduce_the_loss(family: str, tiny_data: Path) -> None:
    dataset = CocoInstanceDataset(tiny_data, "train", image_size=IMAGE_SIZE)
    batch = collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = build_segmenter(parse_spec(TINY[family]), num_classes=dataset.num_classes)
    rows, _ = optimise(
        joint_step(model, IMAGE_SIZE, max_positives=16),
        list(model.parameters()),
        itertools.repeat(batch),
        stage="joint",
        iters=8,
        lr=2e-3,
        device=torch.device("cpu"),
        seed=0,
        warmup_iters=0,
        log_every=1,
    )
    first, last = rows[0], rows[-1]
    assert last["loss_total"] < first["loss_total"]
    assert last["loss_mask"] < first["loss_mask"]


def test_nan_loss_stops_with_a_clear_message(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    def nan_mask_loss(*args, **kwargs) -> torch.Tensor:
        return torch.tensor(float("nan"), requires_grad=True)

    monkeypatch.setattr(steps_module, "mask_head_loss", nan_mask_loss)
    with pytest.raises(NonFiniteLossError, match=r"joint training stopped at iteration 1/3: loss term 'mask' is nan"):
        _train_tiny(tiny_data, tmp_path / "run", iters=3)
    assert not (tmp_path / "run").exists()


def test_training_repeats_exactly(tiny_data: Path, tmp_path: Path) -> None:
    first = _train_tiny(tiny_data, tmp_path / "a")
    second = _train_tiny(tiny_data, tmp_path / "b")
    a = torch.load(first.checkpoint, weights_only=True)["model"]
    b = torch.load(second.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (tmp_path / "a" / "train_log.csv").is_file() and (tmp_path / "a" / "meta.json").is_file()


def test_shared_trunk_is_trained_once_and_frozen(tiny_data: Path, tmp_path: Path) -> None:
    options = {"protocol": "shared-trunk", "trunk_iters": 2, "trunk_cache": tmp_path / "trunks"}
    first = _train_tiny(tiny_data, tmp_path / "yolact", TINY["yolact"], **options)
    second = _train_tiny(tiny_data, tmp_path / "blendmask", TINY["blendmask"], **options)
    assert first.metrics["trunk_reused"] is False and second.metrics["trunk_reused"] is True
    (trunk_file,) = (tmp_path / "trunks").glob("trunk-*.pt")
    trunk = torch.load(trunk_file, weights_only=True)
    for result in (first, second):
        state = torch.load(result.checkpoint, weights_only=True)
        assert state["config"]["protocol"] == "shared-trunk"
        for key, value in trunk["backbone"].items():
            assert torch.equal(state["model"][f"backbone.{key}"], value)
        for key, value in trunk["detector"].items():
            assert torch.equal(state["model"][f"detector.{key}"], value)
    log = (tmp_path / "blendmask" / "train_log.csv").read_text()
    assert "trunk" in log and "mask" in log


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "sideways"}, "unknown protocol"),
        ({"iters": 0}, "iters must be a positive integer"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"trunk": "r18"}, "unknown trunk"),
        ({"image_size": 100}, "multiple of 32"),
        ({"semantic_level": "p4"}, "semantic_level must be p3 or p2, got 'p4'"),
        ({"semantic_loss": "dice"}, "semantic_loss must be bce or ce"),
    ],
)
def test_bad_options_fail_before_writing(kwargs: dict, message: str, tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(BmbenchError, match=message):
        _train_tiny(tiny_data, tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_train_cli_errors_exit_2(cli_app: typer.Typer, tiny_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        ["train", "blendmask", "--data", str(tiny_data), "--protocol", "sideways", "--out", str(tmp_path / "a")],
        ["train", "nosuchhead", "--data", str(tiny_data), "--out", str(tmp_path / "b")],
        ["train", "blendmask", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "c")],
        ["train", "blendmask", "--data", str(tiny_data), "--semantic-level", "p4", "--out", str(tmp_path / "d")],
    ]
    for args in cases:
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and "Traceback" not in result.output
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_train_cli_writes_a_checkpoint(cli_app: typer.Typer, tiny_data: Path, tmp_path: Path) -> None:
    args = ["train", TINY["yolact"], "--data", str(tiny_data), "--iters", "1", "--batch-size", "2"]
    args += ["--protocol", "joint", "--image-size", str(IMAGE_SIZE), "--device", "cpu", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert "train_images_per_s" in result.output
