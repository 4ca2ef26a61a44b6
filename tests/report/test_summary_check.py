"""The report checks a suite's summary table against its cells' own result.json: a truncated, stale or edited
summary is rebuilt from them and said to be so; a truncated meta.json is reported as truncated."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bmbench.ablation.cell import Cell, expand_cells
from bmbench.ablation.driver import run_suite
from bmbench.ablation.suite import load_suite
from bmbench.errors import BmbenchWarning
from bmbench.report.load import load_results
from bmbench.report.render import build_report

SUITE = """
name: three
dataset: {kind: synthetic, images: 8, size: 64, seed: 0}
train: {iters: 2, batch_size: 2}
grid:
  - {family: blendmask, K: [1, 2, 4], M: [2], R: [8]}
speed: {instances: [1, 5], image_size: 64x64}
"""


def measured(cell: Cell, **_: Any) -> dict[str, Any]:
    """A made-up measurement: AP grows with K."""
    return {
        "mask_AP": 0.1 * cell.spec.K,
        "box_AP": 0.3,
        **{f"mask_ms_n{n}": 0.5 * n for n in cell.speed.instances},
        "env": {"device": "cpu", "device_name": "test cpu", "dtype": "fp32"},
    }


def run(tmp_path: Path, text: str = SUITE) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    out = tmp_path / "results" / "ablate"
    run_suite(load_suite(path), out=out, device="cpu", runner=measured, prepare=lambda suite, device: None)
    return out / "three"


def load(results: Path) -> tuple[pd.DataFrame, list[str]]:
    """The suite's rows as the report reads them, and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (env,) = load_results(results)
    said = [str(w.message) for w in caught if issubclass(w.category, BmbenchWarning)]
    return pd.concat([suite.frame for suite in env.suites]), said


def test_a_whole_summary_reads_without_a_word(tmp_path: Path) -> None:
    run(tmp_path)
    frame, said = load(tmp_path / "results")
    assert len(frame) == 3 and said == []


def test_a_truncated_summary_is_rebuilt_from_the_cells_results_and_said(tmp_path: Path) -> None:
    suite_dir = run(tmp_path)
    lines = (suite_dir / "summary.csv").read_text().splitlines(keepends=True)
    (suite_dir / "summary.csv").write_text("".join(lines[:3]))  # header and 2 of the 3 rows
    (suite_dir / "summary.parquet").unlink()
    lost = pd.read_csv(suite_dir / "summary.csv")
    assert len(lost) == 2
    frame, said = load(tmp_path / "results")
    assert len(frame) == 3
    assert sorted(frame["mask_AP"].round(6)) == [10.0, 20.0, 40.0]  # in points, the third from its result.json
    missing = next(iter(set(frame["cell_id"]) - set(lost["cell_id"])))
    (message,) = said
    assert f"the summary table lacks 1 finished cell(s) that have a result.json ({missing})" in message
    report = build_report(tmp_path / "results", tmp_path / "report.md").path.read_text()
    assert "3 of 3 cells succeeded." in report
    assert "**Warning:** the summary table lacks 1 finished cell(s)" in report


def test_a_summary_value_that_disagrees_with_its_result_is_replaced(tmp_path: Path) -> None:
    suite_dir = run(tmp_path)
    summary = pd.read_parquet(suite_dir / "summary.parquet")
    summary.loc[0, "mask_AP"] = 0.9  # not what the cell measured
    summary.to_parquet(suite_dir / "summary.parquet")
    frame, said = load(tmp_path / "results")
    assert frame["mask_AP"].iloc[0] == pytest.approx(10.0)
    assert said == [
        f"{suite_dir}: the summary table disagrees with result.json for 1 cell(s) ({summary.loc[0, 'cell_id']} "
        "(mask_AP)); their rows are rebuilt from result.json"
    ]


def test_an_unreadable_summary_is_rebuilt_whole(tmp_path: Path) -> None:
    suite_dir = run(tmp_path)
    parquet = suite_dir / "summary.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])  # cut short
    frame, said = load(tmp_path / "results")
    assert len(frame) == 3 and list(frame["status"]) == ["ok"] * 3
    assert any("cannot be read" in line and "rebuilt from the cells' result.json" in line for line in said)


def test_cells_of_an_earlier_version_of_the_suite_are_not_added_back(tmp_path: Path) -> None:
    run(tmp_path)
    run(tmp_path, SUITE.replace("K: [1, 2, 4]", "K: [1, 2]").replace("iters: 2", "iters: 3"))
    frame, said = load(tmp_path / "results")
    assert len(frame) == 2 and said == []


def test_a_truncated_meta_json_is_reported_as_truncated(tmp_path: Path) -> None:
    suite_dir = run(tmp_path)
    meta = suite_dir / "meta.json"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    frame, said = load(tmp_path / "results")
    assert len(frame) == 3
    assert said == [f"{meta}: truncated; the run's command, device and versions are unknown"]
    report = build_report(tmp_path / "results", tmp_path / "report.md").path.read_text()
    assert "meta.json truncated" in report
    json.loads(json.dumps(said))  # plain strings
    assert [cell.cell_id for cell in expand_cells(load_suite(tmp_path / "suite.yaml"))] == list(frame["cell_id"])
