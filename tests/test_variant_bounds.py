"""Absurd variant fields are refused before anything is built, in one line giving the largest value and why; the
values the suites, presets and speed defaults use all stay within the bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bmbench.bench.options import AXIS_DEFAULTS
from bmbench.errors import BmbenchError
from bmbench.variants import ATTENTION_LIMIT, FIELD_LIMITS, PRESETS, parse_spec

SUITES = Path(__file__).resolve().parents[1] / "suites"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blendmask:K=100000", "K=100000 is above 256, the largest K bmbench builds: "),
        ("blendmask:K=99999999999999999999999", "K=99999999999999999999999 is above 256, the largest K bmbench builds"),
        ("blendmask:R=100000", "R=100000 is above 512, the largest R bmbench builds: "),
        ("centermask:S=1000", "S=1000 is above 128, the largest S bmbench builds: "),
        ("blendmask:K=256,M=14,R=56", f"K·M·M = 256·14·14 = 50176 is above {ATTENTION_LIMIT}, the most attention"),
    ],
)
def test_absurd_fields_are_refused_in_one_line_before_building(cli_app: typer.Typer, spec: str, message: str) -> None:
    result = CliRunner().invoke(cli_app, ["variants", spec])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {message}") and line.endswith(f"in spec {spec!r}")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("key", sorted(FIELD_LIMITS))
def test_each_bound_admits_its_limit_and_refuses_one_more(key: str) -> None:
    family = {"K": "yolact", "M": "blendmask", "R": "maskrcnn", "S": "centermask"}[key]
    limit = FIELD_LIMITS[key][0]
    extra = {"M": ",K=1,R=512", "R": ""}.get(key, ",R=512" if key == "S" else "")
    assert getattr(parse_spec(f"{family}:{key}={limit}{extra}"), key) == limit
    with pytest.raises(BmbenchError, match=rf"^{key}={limit + 1} is above {limit}, the largest {key} "):
        parse_spec(f"{family}:{key}={limit + 1}{extra}")


def test_every_value_in_use_is_within_the_bounds() -> None:
    for spec in PRESETS.values():
        parse_spec(str(spec))
    for axis, values in AXIS_DEFAULTS.items():
        for value in values:
            parse_spec(f"blendmask:{axis}={value}" + (",M=1" if axis == "R" and value < 7 else ""))
    for path in SUITES.glob("*.yaml"):
        for key, values in re.findall(r"\b([KMRS]): \[?([\d, ]+)", path.read_text()):
            assert all(int(v) <= FIELD_LIMITS[key][0] for v in values.split(",") if v.strip()), (path.name, key)
