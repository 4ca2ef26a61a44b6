"""Evaluation: train → checkpoint → evaluate round trip (predicted and oracle boxes, mapped back to the original
image size), scoring a detections file (ground truth scores AP 1.0), and the error paths through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchError
from bmbench.evaluation.evaluate import evaluate, evaluate_detections, evaluate_source
from bmbench.training.config import TrainConfig
from bmbench.training.train import train

IMAGE_SIZE = 64  # the dataset's 96 px images are resized to 64 px: results must come back at 96 px


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=8, size=96)


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(iters=2, batch_size=2, image_size=IMAGE_SIZE, protocol="joint")
    return train("blendmask:K=2,M=2,R=8", config, data_dir=tiny_data, out=out, device="cpu").checkpoint


def _val_annotations(data: Path) -> dict:
    return json.loads((data / "annotations" / "instances_val.json").read_text())


def test_round_trip_writes_detections_and_metrics(checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    metrics = evaluate(checkpoint, tiny_data, out=tmp_path / "eval", device="cpu")
    for key in ("mask_AP", "mask_AP50", "mask_AP75", "mask_APs", "mask_APm", "mask_APl", "box_AP"):
        assert key in metrics
    assert metrics["inference_images_per_s"] > 0 and metrics["num_images"] == 2
    detections = json.loads((tmp_path / "eval" / "detections.json").read_text())
    assert isinstance(detections, list) and len(detections) == metrics["num_detections"]
    for det in detections:
        assert det["segmentation"]["size"] == [96, 96]  # the original size, not the model's 64
        x, y, w, h = det["bbox"]
        assert 0 <= x and x + w <= 96 + 1e-3 and 0 <= y and y + h <= 96 + 1e-3
    table = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert {"spec", "boxes", "split", "iou_type", "metric", "value"} <= set(table.columns)
    assert set(table["iou_type"]) >= {"segm", "bbox"}
    assert (tmp_path / "eval" / "meta.json").is_file()


def test_oracle_boxes_give_one_detection_per_instance(checkpoint: Path, tiny_data: Path) -> None:
    metrics = evaluate(checkpoint, tiny_data, boxes="oracle", device="cpu")
    assert metrics["num_detections"] == len(_val_annotations(tiny_data)["annotations"])
    # The boxes are the ground truth's, taken from the masks resized to 64 px and scaled back: close, not exact.
    assert metrics["box_AP"] > 0.8


def test_ground_truth_as_detections_scores_one(cli_app: typer.Typer, tiny_data: Path, tmp_path: Path) -> None:
    annotations = _val_annotations(tiny_data)["annotations"]
    results = [
        {key: ann[key] for key in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
        for ann in annotations
    ]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "scores"
    result = CliRunner().invoke(
        cli_app, ["evaluate", "--detections", str(path), "--data", str(tiny_data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "metrics.csv")
    ap = table.set_index(["iou_type", "metric"])["value"]
    assert ap[("segm", "AP")] == pytest.approx(1.0) and ap[("bbox", "AP")] == pytest.approx(1.0)
    assert evaluate_detections(path, tiny_data)["mask_AP"] == pytest.approx(1.0)


def test_evaluate_cli_round_trip(cli_app: typer.Typer, checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    args = ["evaluate", str(checkpoint), "--data", str(tiny_data), "--boxes", "oracle", "--device", "cpu"]
    result = CliRunner().invoke(cli_app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "detections.json").is_file() and "mask" in result.output


def test_evaluate_cli_errors_exit_2(cli_app: typer.Typer, checkpoint: Path, tiny_data: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    detections = tmp_path / "dets.json"
    detections.write_text("[]")
    data = ["--data", str(tiny_data)]
    cases = {
        "missing checkpoint": ["evaluate", str(tmp_path / "nope.pt"), *data],
        "corrupted checkpoint": ["evaluate", str(garbage), *data],
        "foreign checkpoint": ["evaluate", str(foreign), *data],
        "both sources": ["evaluate", str(checkpoint), "--detections", str(detections), *data],
        "neither source": ["evaluate", *data],
        "bad boxes": ["evaluate", str(checkpoint), "--boxes", "psychic", *data],
        "missing data": ["evaluate", str(checkpoint), "--data", str(tmp_path / "nodata")],
        "missing detections": ["evaluate", "--detections", str(tmp_path / "none.json"), *data],
        "checkpoint and reference": ["evaluate", str(checkpoint), "--reference", "box", *data],
        "unknown reference": ["evaluate", "--reference", "psychic", *data],
        "boxes with reference": ["evaluate", "--reference", "box", "--boxes", "oracle", *data],
        "reference on missing data": ["evaluate", "--reference", "box", "--data", str(tmp_path / "nodata")],
    }
    for name, args in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        result = CliRunner().invoke(cli_app, [*args, "--out", str(out)])
        assert result.exit_code == 2, (name, result.output)
        assert "error:" in result.output and "Traceback" not in result.output, name
        assert not out.exists(), name


def test_wrong_categories_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    other = write_synthetic_dataset(tmp_path / "other", num_images=4, size=64)
    for split in ("train", "val"):
        path = other / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        data["categories"] = data["categories"][:3] + [{"id": 9, "name": "extra"}]
        data["annotations"] = [ann for ann in data["annotations"] if ann["category_id"] != 4]
        path.write_text(json.dumps(data))
    with pytest.raises(BmbenchError, match="differ from the checkpoint"):
        evaluate(checkpoint, other, device="cpu")


def test_basis_correlation_of_constructed_maps() -> None:
    from bmbench.models.diagnostics import basis_correlation

    x = torch.randn(2, 1, 8, 8)
    assert basis_correlation(torch.cat([x, 3 * x + 1], dim=1)) == pytest.approx(1.0)  # one map, rescaled
    assert basis_correlation(torch.cat([x, -x], dim=1)) == pytest.approx(-1.0)
    three = torch.cat([x, x, -x], dim=1)  # pairs: +1, -1, -1
    assert basis_correlation(three) == pytest.approx(-1.0 / 3.0)
    for not_bases in (x, {"p2": x}, torch.randn(4, 8, 8)):  # K = 1, FPN levels (Mask R-CNN), wrong rank
        assert math.isnan(basis_correlation(not_bases))


def test_evaluate_reports_the_bases_correlation(checkpoint: Path, tiny_data: Path) -> None:
    metrics = evaluate(checkpoint, tiny_data, boxes="oracle", device="cpu")
    assert -1.0 <= metrics["bases_corr"] <= 1.0  # K=2 bases: measured, not NaN


def test_evaluate_source_scores_a_results_file_as_evaluate_detections_does(tiny_data: Path, tmp_path: Path) -> None:
    results = [
        {key: ann[key] for key in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
        for ann in _val_annotations(tiny_data)["annotations"]
    ]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(results))
    scored = evaluate_source("detections", path, tiny_data)
    assert scored["mask_AP"] == pytest.approx(1.0)
    assert scored == pytest.approx(evaluate_detections(path, tiny_data), nan_ok=True)
    with pytest.raises(BmbenchError, match="unknown source kind 'psychic'"):
        evaluate_source("psychic", path, tiny_data)  # type: ignore[arg-type]
