from __future__ import annotations

import pytest

from bmbench.errors import BmbenchError
from bmbench.variants import FAMILIES, FAMILY_PRESETS, PRESETS, VariantSpec, parse_spec, parse_specs


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_round_trips(name: str) -> None:
    spec = PRESETS[name]
    assert parse_spec(str(spec)) == spec
    assert parse_spec(name) == spec
    assert spec.name == name


def test_presets_match_the_paper_and_code() -> None:
    assert str(PRESETS["yolact"]) == "yolact:K=32,M=1"
    assert str(PRESETS["centermask"]) == "centermask:K=1,S=32,R=56"
    assert str(PRESETS["blendmask"]) == "blendmask:K=4,M=7,R=56"
    assert str(PRESETS["blendmask-adelaidet"]) == "blendmask:K=4,M=14,R=56"
    assert str(PRESETS["maskrcnn"]) == "maskrcnn:R=28"
    assert {PRESETS[name].family for name in FAMILY_PRESETS} == set(FAMILIES)


def test_omitted_fields_take_defaults_and_custom_specs_print_back() -> None:
    spec = parse_spec("blendmask:K=1, R=28")
    assert (spec.K, spec.M, spec.R) == (1, 7, 28)
    assert str(spec) == "blendmask:K=1,M=7,R=28"
    assert spec.name == "blendmask:K=1,M=7,R=28"
    assert parse_spec("blendmask-adelaidet:R=112") == VariantSpec("blendmask", K=4, M=14, R=112)


def test_parse_specs_splits_comma_lists() -> None:
    specs = parse_specs("yolact,blendmask:K=8,M=4,maskrcnn:R=56")
    assert [str(s) for s in specs] == ["yolact:K=32,M=1", "blendmask:K=8,M=4,R=56", "maskrcnn:R=56"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo:K=1", "unknown family or preset 'foo'"),
        ("blendmask:Q=3", "unknown key 'Q' for family blendmask"),
        ("maskrcnn:K=4", "unknown key 'K' for family maskrcnn"),
        ("blendmask:K=0", "K must be >= 1, got K=0"),
        ("blendmask:M=0", "M must be >= 1, got M=0"),
        ("blendmask:M=14,R=7", "M=14 must not exceed R=7"),
        ("blendmask:K=4.5", "K must be an integer, got '4.5'"),
        ("blendmask:R=abc", "R must be an integer, got 'abc'"),
        ("centermask:K=4", "centermask requires K=1, got K=4"),
        ("yolact:M=2", "yolact requires M=1, got M=2"),
        ("blendmask:K", "bad item 'K'"),
        ("blendmask:K=2,K=3", "key K given twice"),
    ],
)
def test_invalid_specs_name_the_offending_part(text: str, message: str) -> None:
    with pytest.raises(BmbenchError) as info:
        parse_spec(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_axes_that_apply() -> None:
    assert PRESETS["blendmask"].applies("R") and PRESETS["blendmask"].applies("M")
    assert not PRESETS["yolact"].applies("R") and not PRESETS["yolact"].applies("M")
    assert not PRESETS["centermask"].applies("K") and PRESETS["centermask"].applies("R")
    assert not PRESETS["maskrcnn"].applies("K")
    with pytest.raises(BmbenchError, match="unknown key 'R' for family yolact"):
        PRESETS["yolact"].with_params(R=56)
