"""The speed sweep's option parsers and its plan: every bad input is a BmbenchError naming the bad text."""

from __future__ import annotations

import pytest
import torch

from bmbench.bench.options import (
    AXIS_DEFAULTS,
    make_config,
    one_two_five,
    parse_axis,
    parse_image_size,
    parse_instances,
    parse_values,
)
from bmbench.bench.sweep import plan_points
from bmbench.errors import BmbenchError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1..100", [1, 2, 5, 10, 20, 50, 100]),
        ("3..40", [5, 10, 20]),
        ("10..1000", [10, 20, 50, 100, 200, 500, 1000]),
        ("10..100:10", [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]),
        ("1..10:4", [1, 5, 9]),
        ("7", [7]),
        ("1, 10,100", [1, 10, 100]),
        ("50,1..10,10", [1, 2, 5, 10, 50]),
    ],
)
def test_instances_expand(text: str, expected: list[int]) -> None:
    assert parse_instances(text) == expected


@pytest.mark.parametrize("text", ["abc", "0..10", "100..1", "0", "", "1..100:0", "3..4", "1..", "-5", "1.5"])
def test_bad_instances_name_the_bad_text(text: str) -> None:
    with pytest.raises(BmbenchError) as err:
        parse_instances(text)
    assert "--instances" in str(err.value)
    if text:
        assert text.split(",")[0] in str(err.value)


def test_one_two_five_series() -> None:
    assert one_two_five(1, 1) == [1]
    assert one_two_five(2, 4) == [2]
    assert one_two_five(6, 9) == []


def test_axis_values_and_image_size() -> None:
    assert parse_axis("r") == "R"
    assert parse_values(None, "M") == list(AXIS_DEFAULTS["M"])
    assert parse_values("56,28,56", "R") == [56, 28]
    assert parse_image_size("1088x800") == (800, 1088)  # WxH in, (H, W) out
    for bad in ("X", "S"):
        with pytest.raises(BmbenchError, match="unknown axis"):
            parse_axis(bad)
    for bad in ("28,a", "0", ""):
        with pytest.raises(BmbenchError, match="--values"):
            parse_values(bad, "R")
    for bad in ("800", "800x", "axb", "16x800", "800*600"):
        with pytest.raises(BmbenchError, match="--image-size"):
            parse_image_size(bad)


def test_config_defaults_are_the_headline_sweep_sized_for_the_device() -> None:
    config = make_config(device="cpu")  # the CPU's sized defaults
    assert config.axis == "R" and config.values == (14, 28, 56)
    assert config.schedule == "interleaved" and config.runs == 1 and not config.prime
    assert config.instances == (1, 2, 5, 10, 20, 50, 100)
    assert [label for label, _ in config.variants] == ["yolact", "centermask", "blendmask", "condinst", "maskrcnn"]
    assert config.image_size == (416, 544) and config.trunk == "small" and config.threads >= 1
    # the paper's setting everywhere else, and whatever the command gives on the CPU too
    assert parse_values(None, "R", device=torch.device("cuda")) == [28, 56, 112] == parse_values(None, "R")
    assert parse_values(None, "K", device=torch.device("cpu")) == list(AXIS_DEFAULTS["K"])
    given = make_config(device="cpu", image_size="1088x800", trunk="r50", values="28,56,112")
    assert given.image_size == (800, 1088) and given.trunk == "r50" and given.values == (28, 56, 112)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"variants": "nope"}, "unknown family or preset 'nope'"),
        ({"variants": "blendmask:K=0"}, "K must be >= 1"),
        ({"variants": "blendmask:Q=3"}, "unknown key 'Q'"),
        ({"variants": "blendmask,blendmask"}, "twice"),
        ({"vary": "Z"}, "unknown axis 'Z'"),
        ({"trunk": "r101"}, "unknown trunk"),
        ({"budget_s": 0}, "--budget-s"),
        ({"warmup": -1}, "--warmup"),
        ({"threads": 0}, "--threads"),
        ({"runs": 0}, "--runs must be >= 1"),
        ({"schedule": "random"}, "--schedule: unknown schedule 'random'"),
        ({"threads": 1000}, "--threads 1000: this process may use"),
        ({"min_block_ms": -1}, r"--min-block-ms must be in \[0, 1000\]"),
        ({"dtype": "fp8"}, "unknown dtype"),
        ({"dtype": "fp16", "device": "cpu"}, "fp16 needs a CUDA device"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_config(options: dict, message: str) -> None:
    with pytest.raises(BmbenchError, match=message):
        make_config(**({"device": "cpu"} | options))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda() -> None:
    with pytest.raises(BmbenchError, match="CUDA is not available"):
        make_config(device="cuda")


def test_plan_marks_axes_that_do_not_apply_and_skips_invalid_points() -> None:
    config = make_config(
        vary="M", values="1,7,14", variants="yolact,centermask,blendmask:K=2,M=2,R=8,maskrcnn", device="cpu"
    )
    points, skipped = plan_points(config)
    by_variant: dict[str, list] = {}
    for point in points:
        by_variant.setdefault(point.variant, []).append(point)
    # YOLACT's M is fixed at 1, CenterMask and Mask R-CNN have none: one point each, marked.
    assert [(p.axis_value, p.axis_applies) for p in by_variant["yolact"]] == [(1, False)]
    assert [(p.axis_value, p.axis_applies) for p in by_variant["centermask"]] == [(None, False)]
    assert [(p.axis_value, p.axis_applies) for p in by_variant["maskrcnn"]] == [(None, False)]
    # M=14 > R=8 is not a valid BlendMask: skipped and listed.
    assert [p.spec.M for p in by_variant["blendmask:K=2,M=2,R=8"]] == [1, 7]
    assert [(s.variant, s.axis_value) for s in skipped] == [("blendmask:K=2,M=2,R=8", 14)]
    assert "M=14 must not exceed R=8" in skipped[0].reason


def test_plan_with_nothing_valid_is_an_error() -> None:
    config = make_config(vary="R", values="27,29", variants="maskrcnn", device="cpu")
    with pytest.raises(BmbenchError, match="nothing to measure"):
        plan_points(config)
