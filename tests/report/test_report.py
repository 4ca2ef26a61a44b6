"""`bmbench report` end to end on a fixture results folder: sections, environments kept apart, figures, the CLI."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import typer
from report_fixtures import suite_frame, write_results, write_speed_run, write_suite
from typer.testing import CliRunner

from bmbench import schema
from bmbench.errors import BmbenchError
from bmbench.report import load, render
from bmbench.report.findings import FINDINGS
from bmbench.report.render import PUBLISHED_LABEL, build_report, figure_dir, suite_section
from bmbench.report.tables import BEST_MARK, PARETO_MARK, grid_table, pareto_front

NOW = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = write_results(tmp_path_factory.mktemp("r") / "results")
    out = root / "report.md"
    build_report(root, out, now=NOW)
    return out, out.read_text()


def test_report_has_every_part(built: tuple[Path, str]) -> None:
    out, text = built
    assert text.startswith("# bmbench report")
    assert "Generated 2026-01-02 03:04 UTC" in text
    for finding in FINDINGS:
        assert f"### {finding.id}. {finding.text}" in text
    assert "Hold here: 1, 2, 3, 4, 5, 6, 7, 8" in text
    for heading in (
        "BlendMask grid (rows R / K / M)",
        "Baselines side by side",
        "Fitted scaling exponents",
        "Whole model",
        "Stage times per variant",
    ):
        assert heading in text
    assert "abc123def456" in text and "Test CPU 9000 · fp32" in text and "2.5.0" in text  # environment block
    assert BEST_MARK in text and PARETO_MARK in text


def test_figures_are_linked_and_exist(built: tuple[Path, str]) -> None:
    out, text = built
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 4
    for link in links:
        assert (out.parent / link).is_file() and (out.parent / link).parent == figure_dir(out)


def test_published_figures_are_apart_and_labelled(built: tuple[Path, str]) -> None:
    _, text = built
    published = text.index(f"## {PUBLISHED_LABEL}")
    assert "published, other hardware and other data" in PUBLISHED_LABEL
    assert text.rindex("## Environment") < published
    assert "GTX 1080Ti" in text[published:] and "GTX 1080Ti" not in text[:published].split("## Environment")[1]


@pytest.fixture()
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests about the text only: skip drawing (the figures have their own tests)."""
    monkeypatch.setattr(render, "SPEED_FIGURES", ())
    monkeypatch.setattr(render, "SUITE_FIGURES", ())


@pytest.mark.usefixtures("no_figures")
def test_runs_on_other_devices_or_dtypes_get_their_own_sections(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_speed_run(root / "speed" / "cpu-run")
    write_speed_run(root / "speed" / "gpu-run", device_name="NVIDIA H100", dtype="fp16")
    mixed = suite_frame()
    mixed["device_name"] = ["Test CPU 9000"] * 10 + ["NVIDIA H100"] * (len(mixed) - 10)
    write_suite(root / "ablate" / "quick", mixed)
    environments = load.load_results(root)
    assert [env.label for env in environments] == ["Test CPU 9000 · fp32", "NVIDIA H100 · fp16", "NVIDIA H100 · fp32"]
    assert [len(env.speed_runs) for env in environments] == [1, 1, 0]
    assert [sum(len(s.frame) for s in env.suites) for env in environments] == [10, 0, len(mixed) - 10]
    text = build_report(root, root / "report.md", now=NOW).path.read_text()
    sections = text.split("## Environment ")[1:]
    assert len(sections) == 3
    assert "`cpu-run`" in sections[0] and "`gpu-run`" not in sections[0]
    assert "`gpu-run`" in sections[1] and "`cpu-run`" not in sections[1]


def test_cell_speed_tables_inside_a_suite_are_not_runs(tmp_path: Path) -> None:
    root = write_results(tmp_path / "results")
    write_speed_run(root / "ablate" / "quick" / "0123456789ab")  # a cell's own speed table
    speed_runs, suites = load.discover(root)
    assert [run.name for run in speed_runs] == ["20250101-120000-varyR"] and len(suites) == 1


@pytest.mark.usefixtures("no_figures")
def test_csv_only_tables_load_like_parquet(tmp_path: Path) -> None:
    root = write_results(tmp_path / "results")
    for parquet in root.rglob("*.parquet"):
        parquet.unlink()
    text = build_report(root, root / "report.md", now=NOW).path.read_text()
    assert "Hold here: 1, 2, 3, 4, 5, 6, 7, 8" in text


def test_grid_marks_best_and_pareto(tmp_path: Path) -> None:
    suite = load.load_ablation(write_suite(tmp_path / "quick"))
    table = grid_table(suite)
    assert list(table.columns[:3]) == ["R", "K", "M"]
    assert {"mask AP", "AP50", "AP75", "box AP", "ms N=10", "ms N=100", "params", "GFLOPs N=100"} <= set(table.columns)
    best = table[table["mark"].str.contains(BEST_MARK, regex=False)]
    assert best[["R", "K", "M"]].values.tolist() == [["56", "8", "7"]]
    ap, ms = pd.Series([30.0, 32.0, 31.0, 29.0]), pd.Series([1.0, 2.0, 3.0, 0.5])
    assert pareto_front(ap, ms).tolist() == [True, True, False, True]


@pytest.mark.parametrize("boxes", ["oracle", "predicted"])
def test_oracle_suites_say_that_box_ap_is_by_construction(tmp_path: Path, boxes: str) -> None:
    frame = suite_frame().assign(eval_boxes=boxes)
    suite = load.load_ablation(write_suite(tmp_path / "quick", frame))
    text = "\n".join(suite_section(suite, [], tmp_path / "report.md"))
    assert ("box AP is 100 by construction" in text) == (boxes == "oracle")


def test_a_plugin_family_is_named_with_its_package_and_version(tmp_path: Path) -> None:
    frame = suite_frame().assign(origin="built in")
    frame.loc[frame["family"] == "maskrcnn", "origin"] = "bmbench-polarmask 0.1.0 (entry point)"
    folder = write_suite(tmp_path / "ablate" / "quick", frame)
    meta = json.loads((folder / "meta.json").read_text())
    meta["plugins"] = {"polarmask": {"name": "bmbench-polarmask", "version": "0.1.0", "digest": "0123456789ab"}}
    (folder / "meta.json").write_text(json.dumps(meta))
    suite = load.load_ablation(folder)
    text = "\n".join(suite_section(suite, [], tmp_path / "report.md"))
    assert "Families from head plugins: `maskrcnn` from bmbench-polarmask 0.1.0 (entry point)." in text
    block = "\n".join(render.environment_block(load.load_results(tmp_path)[0]))
    assert "head plugins" in block and "polarmask (bmbench-polarmask 0.1.0)" in block
    built_in = load.load_ablation(write_suite(tmp_path / "plain", suite_frame().assign(origin="built in")))
    assert "head plugins" not in "\n".join(suite_section(built_in, [], tmp_path / "report.md"))


def test_the_cli_writes_the_report_and_prints_the_verdicts(cli_app: typer.Typer, tmp_path: Path) -> None:
    root = write_results(tmp_path / "results")
    out = tmp_path / "out" / "r.md"
    result = CliRunner().invoke(cli_app, ["report", "--results", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "holds" in result.output and "4 figure(s) drawn" in result.output
    assert len(list((tmp_path / "out" / "r_figures").glob("*.png"))) == 4


@pytest.mark.parametrize("make", ["missing", "empty", "unrelated"])
def test_missing_or_empty_results_is_exit_2_with_a_clear_message(
    cli_app: typer.Typer, tmp_path: Path, make: str
) -> None:
    root = tmp_path / "results"
    if make != "missing":
        root.mkdir()
    if make == "unrelated":
        (root / "notes.txt").write_text("nothing here")
    out = tmp_path / "report.md"
    result = CliRunner().invoke(cli_app, ["report", "--results", str(root), "--out", str(out)])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("error: --results") and len(message.splitlines()) == 1
    assert ("no such folder" if make == "missing" else "no results found") in message
    assert not out.exists()


def test_a_table_that_is_not_ours_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "speed" / "x").mkdir(parents=True)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "speed" / "x" / "speed.csv", index=False)
    with pytest.raises(BmbenchError, match="missing column"):
        load.load_results(tmp_path)


def test_the_columns_read_are_the_columns_the_producers_write() -> None:
    """No copy in the reader: the names it needs are among the columns the schema gives each table's writer."""
    assert set(load.SPEED_REQUIRED) | set(load.SPEED_OPTIONAL) <= set(schema.SPEED_COLUMNS)
    assert set(load.SCALING_REQUIRED) <= set(schema.SCALING_COLUMNS)
    assert set(load.SUMMARY_REQUIRED) <= set(schema.SUMMARY_COLUMNS)
    assert set(load.AP_COLUMNS) <= set(schema.SUMMARY_METRICS)
    assert all(schema.CURVES_TABLE.knows(c) for c in (*load.CURVES_REQUIRED, *load.CURVES_OPTIONAL))
    assert all(schema.REFERENCES_TABLE.knows(c) for c in load.REFERENCES_REQUIRED)
    assert load.SPEC_KEYS is schema.SPEC_KEYS and load.SCALING_COLUMNS is schema.SCALING_COLUMNS


def test_report_imports_only_tables_never_the_models() -> None:
    """Dependencies point one way: bmbench.report reads tables; it imports no model, variant or bench code."""
    import ast

    import bmbench.report

    allowed = ("bmbench.errors", "bmbench.results", "bmbench.report", "bmbench.schema")
    for source in Path(bmbench.report.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] if node.module != "bmbench" else [f"bmbench.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("bmbench."):
                    assert name.startswith(allowed), f"{source.name} imports {name}"


def test_grid_shows_the_bases_correlation_only_when_measured(tmp_path: Path) -> None:
    plain = grid_table(load.load_ablation(write_suite(tmp_path / "plain")))
    assert "bases r" not in plain.columns
    frame = suite_frame()
    frame["bases_corr"] = [0.987 if family == "blendmask" else float("nan") for family in frame["family"]]
    table = grid_table(load.load_ablation(write_suite(tmp_path / "with", frame)))
    assert set(table["bases r"]) == {"0.99"}


@pytest.mark.usefixtures("no_figures")
def test_a_one_seed_suite_reads_not_significant_with_its_numbers(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_speed_run(root / "speed" / "run")
    write_suite(root / "ablate" / "quick", suite_frame(seeds=(0,)))
    text = build_report(root, root / "report.md", now=NOW).path.read_text()
    assert "Hold here: 5, 6, 7. Do not hold here: none. Not significant at this budget: 1, 2, 3, 4, 8." in text
    assert "- **not significant at this budget** (ablate `quick`" in text and "one seed: no interval" in text
    assert "Gaps between BlendMask cells, with their intervals" in text
    assert "Not measured: the suite has no `curves.csv`" in text
