"""`bmbench evaluate --evaluator/--max-dets`: bad choices give one line and exit 2, writing nothing; a results file
scores with either evaluator and shows Boundary AP and the per-subset and per-class APs; a checkpoint's
post-processing keeps at most max_dets per image."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bmbench.data.synth import write_synthetic_dataset
from bmbench.evaluation.evaluate import evaluate
from bmbench.training.config import TrainConfig
from bmbench.training.train import train


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny dataset and its val ground truth as a results file."""
    tmp = tmp_path_factory.mktemp("evaluate_cli")
    root = write_synthetic_dataset(tmp / "ds", num_images=4, size=96, seed=1)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    detections = tmp / "dets.json"
    keep = ("image_id", "category_id", "bbox", "segmentation")
    detections.write_text(json.dumps([{k: a[k] for k in keep} | {"score": 1.0} for a in gt["annotations"]]))
    return root, detections


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-dets", "0"], "error: max_dets must be a positive integer, got 0"),
        (["--evaluator", "bogus"], "error: unknown evaluator 'bogus' (use pycocotools or faster)"),
    ],
)
def test_bad_choices_fail_in_one_line(
    cli_app: typer.Typer, scored: tuple[Path, Path], tmp_path: Path, options: list, message: str
) -> None:
    root, detections = scored
    out = tmp_path / "out"
    args = ["evaluate", "--detections", str(detections), "--data", str(root), "--out", str(out), *options]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2 and result.stderr.splitlines() == [message]
    assert not out.exists()


def test_faster_extra_missing_fails_in_one_line(
    cli_app: typer.Typer, scored: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if the extra were not installed
    root, detections = scored
    args = ["evaluate", "--detections", str(detections), "--data", str(root), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli_app, [*args, "--evaluator", "faster"])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "faster-coco-eval, which is not installed: pip install 'bmbench[faster]'" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("evaluator", ["pycocotools", "faster"])
def test_results_file_scores_with_either_evaluator(
    cli_app: typer.Typer, scored: tuple[Path, Path], tmp_path: Path, evaluator: str
) -> None:
    if evaluator == "faster":
        pytest.importorskip("faster_coco_eval")
    root, detections = scored
    out = tmp_path / "out"
    args = ["evaluate", "--detections", str(detections), "--data", str(root), "--out", str(out)]
    result = CliRunner().invoke(cli_app, [*args, "--evaluator", evaluator, "--max-dets", "50"])
    assert result.exit_code == 0, result.output
    assert "│ boundary" in result.stdout and "mask AP per subset and class:" in result.stdout
    frame = pd.read_csv(out / "metrics.csv").set_index(["iou_type", "metric"])["value"]
    assert frame[("boundary", "AP")] == pytest.approx(1.0, abs=1e-12)
    assert ("segm", "AR50") in frame.index and ("segm", "AR100") not in frame.index  # recall at --max-dets


def test_checkpoint_max_dets_caps_post_processing(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "synth", num_images=8, size=96)
    config = TrainConfig(iters=2, batch_size=2, image_size=64, protocol="joint")
    checkpoint = train("blendmask:K=2,M=2,R=8", config, data_dir=data, out=tmp_path / "run", device="cpu").checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # images with more than 2 instances
        metrics = evaluate(checkpoint, data, out=tmp_path / "eval", device="cpu", max_dets=2)
    assert metrics["num_detections"] <= 2 * metrics["num_images"] and "mask_AR2" in metrics
    assert "boundary_AP" in metrics and any(key.startswith("mask_AP_") for key in metrics)
    meta = json.loads((tmp_path / "eval" / "meta.json").read_text())
    assert meta["evaluator"] == "pycocotools" and meta["max_dets"] == 2
