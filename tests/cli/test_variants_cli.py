from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

runner = CliRunner()


def test_help_lists_the_commands(cli_app: typer.Typer) -> None:
    result = runner.invoke(cli_app, ["--help"])
    assert result.exit_code == 0
    assert "variants" in result.output


def test_variants_json_lists_the_six_presets_over_five_families(cli_app: typer.Typer) -> None:
    result = runner.invoke(cli_app, ["variants", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["variant"] for r in rows] == [
        "yolact", "centermask", "blendmask", "blendmask-adelaidet", "condinst", "maskrcnn"
    ]  # fmt: skip
    assert {r["family"] for r in rows} == {"yolact", "centermask", "blendmask", "condinst", "maskrcnn"}
    assert {r["origin"] for r in rows} == {"built in"} and {r["flops_from"] for r in rows} == {"formula"}
    for row in rows:
        assert {"K", "M", "R", "bottom_gflops", "top_gflops", "merge_gflops", "paste_gflops", "mask_params"} <= set(row)
        assert row["total_gflops"] > 0


def test_variants_table_and_custom_specs(cli_app: typer.Typer) -> None:
    result = runner.invoke(cli_app, ["variants", "blendmask:K=1,M=1,R=28"])
    assert result.exit_code == 0
    assert "blendmask:K=1,M=1,R=28" in result.output


def test_a_bad_spec_is_one_line_and_exit_code_2(cli_app: typer.Typer) -> None:
    result = runner.invoke(cli_app, ["variants", "blendmask:K=0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: K must be >= 1, got K=0 in spec 'blendmask:K=0'"
    assert "Traceback" not in result.output
