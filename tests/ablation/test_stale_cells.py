"""A finished cell is reused only on the data it was measured on: a real rerun of a tiny COCO-format suite whose
val annotations change between the runs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bmbench.ablation.cell import DATA_ID_KEY, expand_cells
from bmbench.ablation.suite import load_suite
from bmbench.data.synth import write_synthetic_dataset

TINY_COCO_SUITE = """
name: tinycoco
dataset: {{kind: coco, root: {root}, train: train, val: val}}
train: {{iters: 2, batch_size: 2, image_size: 64}}
eval: {{curve: [100]}}
variants: ["yolact:K=4"]
speed: {{instances: [1], image_size: 64x64, trunk: small, budget_s: 0.01}}
"""


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    """A COCO-format folder (train/val splits) of 8 generated 64 px images."""
    return write_synthetic_dataset(tmp_path / "coco", num_images=8, size=64, seed=3)


def test_a_finished_cell_runs_again_when_its_val_annotations_change(
    cli_app: typer.Typer, tmp_path: Path, tiny_coco: Path
) -> None:
    suite_path = tmp_path / "tinycoco.yaml"
    suite_path.write_text(textwrap.dedent(TINY_COCO_SUITE.format(root=tiny_coco)))
    out = tmp_path / "out"
    args = ["ablate", str(suite_path), "--out", str(out), "--device", "cpu"]
    (cell,) = expand_cells(load_suite(suite_path))
    result_file = out / "tinycoco" / cell.cell_id / "result.json"

    first = CliRunner().invoke(cli_app, args)
    assert first.exit_code == 0, first.output
    recorded = json.loads(result_file.read_text())[DATA_ID_KEY]
    same = CliRunner().invoke(cli_app, args)  # nothing changed: reused, silently
    assert same.exit_code == 0 and "ran 0, reused 1" in same.output and "other data" not in same.output

    val = tiny_coco / "annotations" / "instances_val.json"
    data = json.loads(val.read_text())
    assert len(data["annotations"]) > 1
    data["annotations"] = data["annotations"][1:]  # one val instance fewer: the old scores no longer hold
    val.write_text(json.dumps(data))
    dry = CliRunner().invoke(cli_app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "1 cells, 1 to run, 0 reused" in one_line(dry.output)
    changed = CliRunner().invoke(cli_app, args)
    assert changed.exit_code == 0, changed.output
    said = one_line(changed.output)
    assert "ran 1, reused 0" in said
    assert f"1 finished cell(s) were measured on other data than {tiny_coco.resolve()} holds now" in said
    assert cell.cell_id in said
    rerun = json.loads(result_file.read_text())
    assert rerun[DATA_ID_KEY] != recorded
    summary = pd.read_csv(out / "tinycoco" / "summary.csv", dtype={"cell_id": str})  # an id like 6181e729 is no number
    assert list(summary["cell_id"]) == [cell.cell_id] and summary.loc[0, "status"] == "ok"

    settled = CliRunner().invoke(cli_app, args)  # the new result matches the data: reused again
    assert settled.exit_code == 0 and "ran 0, reused 1" in settled.output


def test_a_replaced_image_makes_the_cell_stale_too(tmp_path: Path, tiny_coco: Path) -> None:
    """The image side of the identity (name, size, mtime), through the planner alone."""
    from bmbench.ablation.dataset import current_data_id
    from bmbench.ablation.plan import plan_suite

    suite_path = tmp_path / "tinycoco.yaml"
    suite_path.write_text(textwrap.dedent(TINY_COCO_SUITE.format(root=tiny_coco)))
    suite = load_suite(suite_path)
    (cell,) = expand_cells(suite)
    cell_dir = tmp_path / "out" / "tinycoco" / cell.cell_id
    cell_dir.mkdir(parents=True)
    before = current_data_id(suite)
    (cell_dir / "result.json").write_text(json.dumps({"status": "ok", DATA_ID_KEY: before}))
    assert [p.action for p in plan_suite(suite, tmp_path / "out", data_id=before)] == ["reuse"]
    image = next((tiny_coco / "val").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")  # same name, another size
    after = current_data_id(suite)
    assert after != before
    (planned,) = plan_suite(suite, tmp_path / "out", data_id=after)
    assert (planned.action, planned.stale) == ("run", True)
    (cell_dir / "result.json").write_text(json.dumps({"status": "ok"}))  # recorded before identities were
    assert [p.action for p in plan_suite(suite, tmp_path / "out", data_id=after)] == ["reuse"]
