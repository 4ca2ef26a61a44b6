"""--init: a torchvision ResNet's tensors land in our backbone unchanged; bad inits fail in one line, first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from bmbench.errors import BmbenchError
from bmbench.models.backbone import build_backbone
from bmbench.training.init import RESNET_PREFIX, check_init, load_init


def _small_resnet() -> ResNet:
    """A torchvision ResNet of the small trunk's shape (ResNet-10, GroupNorm), built here without weights."""
    return ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=lambda c: torch.nn.GroupNorm(32, c))


def test_a_torchvision_state_dict_lands_in_the_backbone_unchanged(tmp_path: Path) -> None:
    source = resnet50()  # random weights: nothing downloaded
    path = tmp_path / "r50.pt"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("r50")
    report = load_init(backbone, str(path))
    own = backbone.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[RESNET_PREFIX + key], value), key
    assert report.unexpected == ["fc.weight", "fc.bias"]
    assert report.missing and all(key.startswith("body.fpn.") for key in report.missing)  # only the FPN
    assert report.loaded == len([k for k in source.state_dict() if not k.startswith("fc.")])
    assert "backbone tensors loaded" in report.summary() and "\n" not in report.summary()


def test_a_checkpoint_nesting_the_state_dict_loads_too(tmp_path: Path) -> None:
    source = _small_resnet()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    backbone = build_backbone("small")
    load_init(backbone, str(path))
    assert torch.equal(backbone.state_dict()[RESNET_PREFIX + "conv1.weight"], source.conv1.weight)


def test_the_wrong_architecture_is_refused_before_anything_changes(tmp_path: Path) -> None:
    path = tmp_path / "r50.pt"
    torch.save(resnet50().state_dict(), path)
    backbone = build_backbone("small")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(BmbenchError, match="does not fit this trunk's ResNet"):
        load_init(backbone, str(path))
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ("missing.pt", "no such file"),
        ("torchvision:ResNet50_Weights.NOPE", "unknown torchvision weights 'ResNet50_Weights.NOPE'"),
        ("torchvision:garbage", "unknown torchvision weights"),
    ],
)
def test_bad_inits_fail_in_one_line(tmp_path: Path, init: str, message: str) -> None:
    with pytest.raises(BmbenchError, match=message) as info:
        check_init(str(tmp_path / init) if init.endswith(".pt") else init)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not tensors")
    with pytest.raises(BmbenchError, match="not a torch state-dict file"):
        load_init(build_backbone("small"), str(text))
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(BmbenchError, match="not a state dict"):
        load_init(build_backbone("small"), str(listing))


def test_a_download_that_fails_says_so_and_suggests_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet50_Weights

    def offline(self, *args, **kwargs):  # what torch.hub raises without internet access
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V2), "get_state_dict", offline)
    with pytest.raises(BmbenchError, match=r"could not download .* pass --init PATH") as info:
        load_init(build_backbone("r50"), "torchvision:ResNet50_Weights.IMAGENET1K_V2")
    assert "\n" not in str(info.value)
