"""One owner for the results schema: the report reads the writers' column names from bmbench.schema, refuses a table
without a column it needs, and warns, naming the file and the column, about any column the schema does not know."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest
import typer
from report_fixtures import curves_frame, suite_frame, write_results, write_speed_run, write_suite
from typer.testing import CliRunner

from bmbench import schema
from bmbench.ablation.cell import expand_cells
from bmbench.ablation.suite import load_suite
from bmbench.ablation.summary import summary_row
from bmbench.errors import BmbenchError, BmbenchWarning
from bmbench.report import load

SUITE = """
name: columns
dataset: {kind: synthetic, images: 8, size: 64, seed: 0}
train: {iters: 2, batch_size: 2}
seeds: [0]
grid:
  - family: blendmask
    K: [4]
    M: [2]
    R: [8]
speed: {instances: [1, 5], image_size: 64x64}
"""


def test_every_column_the_summary_writer_writes_is_in_the_schema(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SUITE))
    (cell,) = expand_cells(load_suite(tmp_path / "s.yaml"))
    measured = {  # one of each kind of name a real cell measures (bmbench.ablation.measure.measure_cell)
        "mask_AP": 0.2, "mask_AP_person": 0.1, "boundary_AP": 0.1, "mask_ms_n5": 3.0, "merge_ms_n5": 1.0,
        "mask_gflops_n5": 0.4, "paste_gflops_n5": 0.1, "mask_params": 1e5, "train_s": 9.0, "final_loss_mask": 0.3,
        "pretrain_train_s": 20.0, "trunk_reused": True, "infer_images_per_s": 4.0, "bases_corr": 0.5,
    }  # fmt: skip
    env = {"device": "cpu", "device_name": "x", "dtype": "fp32", "torch": "2", "threads": 2, "git_commit": "abc"}
    row = summary_row(cell, {"status": "ok", "error": None, "measured": measured, "env": env | {"hostname": "h"}})
    assert [c for c in row if not schema.SUMMARY_TABLE.knows(c)] == []
    metrics = [c for c in row if c in schema.SUMMARY_METRICS]
    assert metrics == list(schema.SUMMARY_METRICS)  # written first, in the schema's order
    assert not schema.SUMMARY_TABLE.knows("maskAP") and not schema.SUMMARY_TABLE.knows("pid")


def test_the_fixture_results_load_without_a_warning(tmp_path: Path) -> None:
    root = write_results(tmp_path / "results")
    curves_frame(suite_frame()).to_csv(root / "ablate" / "quick" / "curves.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BmbenchWarning)
        (environment,) = load.load_results(root)
    assert environment.suites[0].curves is not None


def test_a_renamed_speed_column_is_named_not_dropped(tmp_path: Path) -> None:
    folder = write_speed_run(tmp_path / "run")
    frame = pd.read_csv(folder / "speed.csv").rename(columns={"noisy": "is_noisy"})
    frame.to_csv(folder / "speed.csv", index=False)
    (folder / "speed.parquet").unlink()
    with pytest.warns(BmbenchWarning) as caught:
        run = load.load_speed_run(folder)
    messages = [str(w.message) for w in caught]
    assert any(str(folder / "speed") in m and "is_noisy" in m and "not read" in m for m in messages), messages
    assert any("noisy" in m and "defaults" in m and "is_noisy" not in m for m in messages), messages
    assert not run.frame["noisy"].any()  # read as its default, and said so


def test_an_unknown_summary_column_warns_and_a_per_class_ap_does_not(tmp_path: Path) -> None:
    frame = suite_frame().assign(mask_AP_person=0.3, mystery=1.0)
    folder = write_suite(tmp_path / "quick", frame)
    with pytest.warns(
        BmbenchWarning, match=r"summary: column\(s\) the summary table does not have, not read: mystery$"
    ):
        load.load_ablation(folder)


def test_a_table_without_a_needed_column_is_refused_naming_it(tmp_path: Path) -> None:
    folder = write_suite(tmp_path / "quick", suite_frame().drop(columns=["status"]))
    with pytest.raises(BmbenchError, match=r"quick/summary: missing column\(s\) status"):
        load.load_ablation(folder)
    run = write_speed_run(tmp_path / "run")
    pd.DataFrame({"variant": ["blendmask"], "x": ["R"]}).to_csv(run / "scaling.csv", index=False)
    with pytest.raises(BmbenchError, match=r"run/scaling: missing column\(s\) stage"):
        load.load_speed_run(run)


def test_the_cli_prints_the_unknown_column_as_one_warning_line(cli_app: typer.Typer, tmp_path: Path) -> None:
    root = write_results(tmp_path / "results")
    summary = root / "ablate" / "quick"
    pd.read_parquet(summary / "summary.parquet").assign(mystery=1.0).to_parquet(summary / "summary.parquet")
    result = CliRunner().invoke(cli_app, ["report", "--results", str(root), "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert lines == [f"warning: {summary / 'summary'}: column(s) the summary table does not have, not read: mystery"]
