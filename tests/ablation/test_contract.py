"""The head contract (`bmbench check-head`): every built-in family passes it, and deliberately broken heads fail
it with the right one-line reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf
import typer
from torch import Tensor
from typer.testing import CliRunner

from bmbench.ablation.contract import (
    CHECKS,
    check_device_dtype,
    check_gradient,
    check_seed,
    check_shapes,
    run_contract,
)
from bmbench.models.heads import BlendMaskHead
from bmbench.plugins import Family
from bmbench.variants import FAMILIES, VariantSpec, family_origin

BUILT_IN = [name for name in FAMILIES if family_origin(name).kind == "built in"]


@pytest.mark.parametrize("family", BUILT_IN)
def test_every_built_in_family_keeps_the_contract(family: str) -> None:
    spec = VariantSpec(family, **FAMILIES[family].defaults)
    results = run_contract(spec)
    assert [r.name for r in results] == list(CHECKS)
    assert all(r.ok for r in results), "\n".join(r.line() for r in results)


class WrongShapeHead(BlendMaskHead):
    def merge(self, bottom: Tensor, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        return super().merge(bottom, params, rois, labels)[:, 1:]  # one row short


class OneImageBasesHead(BlendMaskHead):
    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        return super().bottom(features, image_size)[:1]  # the first image's bases only


class Float32BasesHead(BlendMaskHead):
    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        return super().bottom(features, image_size).float()  # ignores the inputs' dtype


class DetachedHead(BlendMaskHead):
    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        weight = self.attention.weight.detach()  # the attention conv's weights never learn
        return [nnf.conv2d(level, weight, self.attention.bias, padding=1) for level in box_tower]


class ParamsClaimedUnusedHead(BlendMaskHead):
    merge_uses_params = False  # wrong: BlendMask's merge reads each instance's attention


class FixedSeedHead(BlendMaskHead):
    def __init__(self, **kwargs) -> None:
        torch.manual_seed(1234)  # the same weights whatever seed it is built under
        super().__init__(**kwargs)


class UnseededHead(BlendMaskHead):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        generator = torch.Generator()
        generator.seed()  # seeded from the clock, not from the seed it is built under
        with torch.no_grad():
            self.attention.weight.copy_(torch.randn(self.attention.weight.shape, generator=generator))


def _family(cls: type[BlendMaskHead]) -> Family:
    def build(*, K: int, M: int, R: int, in_channels: int, tower_channels: int, **_: object) -> BlendMaskHead:
        return cls(K=K, M=M, R=R, in_channels=in_channels, tower_channels=tower_channels)

    return Family(defaults={"K": 2, "M": 2, "R": 8}, fixed={}, build=build, summary=cls.__name__)


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch):
    def register(name: str, cls: type[BlendMaskHead]) -> VariantSpec:
        monkeypatch.setitem(FAMILIES, name, _family(cls))
        return VariantSpec(name, K=2, M=2, R=8)

    return register


def test_a_wrong_shape_fails_the_shape_check_and_the_others_still_run(broken) -> None:
    spec = broken("wrongshape", WrongShapeHead)
    with pytest.raises(
        AssertionError, match=r"merge at N=0 gave Tensor\[0, 7, 8\] float32, expected Tensor\[0, 8, 8\]"
    ):
        check_shapes(spec, "small")
    results = {r.name: r for r in run_contract(spec)}
    assert not results["shapes"].ok and results["gradient"].ok and results["seed"].ok
    assert (
        results["shapes"].line() == "FAIL shapes: merge at N=0 gave Tensor[0, 7, 8] float32, expected Tensor[0, 8, 8]"
    )
    assert all("\n" not in r.line() for r in results.values())


def test_a_bottom_that_drops_an_image_or_the_dtype_fails_in_one_line(broken) -> None:
    with pytest.raises(AssertionError, match=r"^bottom gave Tensor\[1, 2, 24, 32\] float32, expected 2 images first$"):
        check_shapes(broken("oneimage", OneImageBasesHead), "small")
    spec = broken("float32bases", Float32BasesHead)
    check_shapes(spec, "small")  # right in float32
    with pytest.raises(AssertionError, match=r"^bottom gave Tensor\[2, 2, 24, 32\] float32 for float64 inputs$"):
        check_device_dtype(spec, "small")


def test_a_head_that_wrongly_says_its_merge_ignores_the_parameters_fails_the_shape_check(broken) -> None:
    message = "merge_uses_params is False, but the merge's logits change with the instance parameters"
    with pytest.raises(AssertionError, match=f"^{message}$"):
        check_shapes(broken("claimsunused", ParamsClaimedUnusedHead), "small")


def test_a_detached_parameter_fails_the_gradient_check(broken) -> None:
    spec = broken("detached", DetachedHead)
    check_shapes(spec, "small")  # its shapes are right
    with pytest.raises(AssertionError, match=r"no gradient reaches 1 parameter\(s\): attention.weight"):
        check_gradient(spec, "small")


def test_a_head_that_ignores_its_seed_fails_the_seed_check(broken) -> None:
    with pytest.raises(AssertionError, match=r"seeds 0 and 1 built heads with the same outputs \(seed ignored\)"):
        check_seed(broken("fixedseed", FixedSeedHead), "small")
    with pytest.raises(AssertionError, match="the same seed built heads whose outputs differ"):
        check_seed(broken("unseeded", UnseededHead), "small")


def test_check_head_cli_exit_codes(cli_app: typer.Typer, broken) -> None:
    broken("wrongshape", WrongShapeHead)
    result = CliRunner().invoke(cli_app, ["check-head", "wrongshape"])
    assert result.exit_code == 1
    assert (
        "FAIL shapes: merge at N=0" in result.output
        and "3 of 7 checks failed (shapes, training, evaluation)" in result.output
    )
    unknown = CliRunner().invoke(cli_app, ["check-head", "nosuch"])
    assert unknown.exit_code == 2 and unknown.output.startswith("error: unknown family or preset 'nosuch'")
