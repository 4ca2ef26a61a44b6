"""The one-line form of bmbench's warnings (bmbench.cli.console.one_line_warnings), alone and through the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bmbench.cli.console import one_line_warnings
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import BmbenchWarning


def test_bmbench_warnings_print_as_one_line_once_and_others_as_python_does(capsys: pytest.CaptureFixture) -> None:
    passed_on = []
    text = "data.json: skipped 2 of 9 annotations\n(2 with an empty mask: ids 4, 7)"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *_, **__: passed_on.append((category, str(message)))
        with one_line_warnings():
            warnings.warn(text, BmbenchWarning, stacklevel=1)
            warnings.warn(text, BmbenchWarning, stacklevel=1)  # the same message again: said once
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert (
        capsys.readouterr().err == "warning: data.json: skipped 2 of 9 annotations (2 with an empty mask: ids 4, 7)\n"
    )
    assert passed_on == [(UserWarning, "something else")]  # other warnings go to Python's own hook


def test_detections_without_segmentation_say_mask_ap_was_skipped(cli_app: typer.Typer, tmp_path: Path) -> None:
    """Box-only detections once scored box AP and said nothing about the missing mask AP."""
    root = write_synthetic_dataset(tmp_path / "ds", num_images=4, size=96, seed=1)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    boxes = [
        {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0, "bbox": ann["bbox"]}
        for ann in gt["annotations"]
    ]
    detections = tmp_path / "boxes.json"
    detections.write_text(json.dumps(boxes))
    result = CliRunner().invoke(
        cli_app, ["evaluate", "--detections", str(detections), "--data", str(root), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {detections}: mask AP not scored: the entries carry no 'segmentation'"
    ]
    assert "│ box" in result.stdout and "│ mask" not in result.stdout
