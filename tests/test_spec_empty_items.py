"""A spec or variant list with an empty item between two commas is refused, not read as if the item were absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bmbench.errors import BmbenchError
from bmbench.variants import parse_spec, parse_specs


@pytest.mark.parametrize("text", ["blendmask:K=4,,M=7", "blendmask:K=4, ,M=7"])
def test_a_spec_with_an_empty_item_is_refused(text: str) -> None:
    with pytest.raises(BmbenchError, match="an empty item between two commas"):
        parse_spec(text)


@pytest.mark.parametrize("text", ["blendmask:K=4,,M=7", "yolact,,blendmask", "yolact;;maskrcnn"])
def test_a_variant_list_with_an_empty_item_is_refused(text: str) -> None:
    with pytest.raises(BmbenchError, match="an empty item between two separators"):
        parse_specs(text)


def test_well_formed_specs_still_parse() -> None:
    assert str(parse_spec("blendmask:K=4,M=7")) == "blendmask:K=4,M=7,R=56"
    assert [str(s) for s in parse_specs("blendmask:K=4,M=7;yolact")] == ["blendmask:K=4,M=7,R=56", "yolact:K=32,M=1"]


def test_the_cli_refuses_it_in_one_line(cli_app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["train", "blendmask:K=4,,M=7", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: bad variant spec 'blendmask:K=4,,M=7': an empty item between two commas"
    ]
    assert not (tmp_path / "run").exists()
