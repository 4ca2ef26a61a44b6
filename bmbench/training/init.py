"""Pretrained initialisation of the backbone: ``torchvision:<WeightsEnum>`` (through torchvision's weights API, which
downloads into its cache) or a local file (a ResNet state dict, a torchvision checkpoint holding one, or a state
dict of bmbench's own backbone).

Keys map into the ResNet inside bmbench's backbone (``body.body.<resnet key>``). Every ResNet tensor of ours must be
found, with its shape: a partial load may miss only the FPN and its P6/P7 blocks (``body.fpn.*``), which a classifier
does not have; the classifier's ``fc.*`` and BatchNorm's ``num_batches_tracked`` are ignored. Anything else is an
error, so that a checkpoint of another architecture never half-loads in silence.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import get_weight

from bmbench.errors import BmbenchError

TORCHVISION_PREFIX = "torchvision:"
RESNET_PREFIX = "body.body."  # where the torchvision ResNet sits inside bmbench.models.backbone.ResNetFPN
OPTIONAL_PREFIX = "body.fpn."  # what an ImageNet classifier cannot provide: trained from the start
IGNORED = ("fc.", "num_batches_tracked")  # in a classifier's state dict, not in our backbone


@dataclass(frozen=True)
class InitReport:
    """What an init loaded into the backbone; stored in the checkpoint's metadata."""

    source: str  # the --init value
    loaded: int  # tensors copied into the backbone
    missing: list[str] = field(default_factory=list)  # backbone keys not in the source (FPN only)
    unexpected: list[str] = field(default_factory=list)  # source keys ignored (classifier head, counters)

    def summary(self) -> str:
        """One line for the user."""
        text = f"init {self.source}: {self.loaded} backbone tensors loaded"
        if self.missing:
            text += f"; {len(self.missing)} FPN tensors not in it (trained from the start)"
        if self.unexpected:
            shown = ", ".join(self.unexpected[:3]) + (", …" if len(self.unexpected) > 3 else "")
            text += f"; {len(self.unexpected)} ignored ({shown})"
        return text


def check_init(init: str | None) -> None:
    """Refuse a malformed or unknown init before any work: an unknown torchvision enum, a missing file."""
    if init is None:
        return
    if init.startswith(TORCHVISION_PREFIX):
        _weights(init)
    elif not Path(init).expanduser().is_file():
        raise BmbenchError(f"--init {init}: no such file (give a state-dict file or torchvision:<WeightsEnum>)")


def _weights(init: str) -> Any:
    name = init[len(TORCHVISION_PREFIX) :]
    try:
        return get_weight(name)
    except (KeyError, ValueError):
        raise BmbenchError(
            f"--init {init}: unknown torchvision weights {name!r} (e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2)"
        ) from None


def read_state_dict(init: str) -> dict[str, Tensor]:
    """The tensors an init names: downloaded through torchvision's weights API, or read from a file."""
    if init.startswith(TORCHVISION_PREFIX):
        weights = _weights(init)
        try:
            return weights.get_state_dict(progress=False)
        except Exception as err:  # noqa: BLE001 - URLError, socket errors, HTTP errors: the download failed
            raise BmbenchError(
                f"--init {init}: could not download {weights.url} ({type(err).__name__}); on a machine without "
                "internet access, download it elsewhere and pass --init PATH"
            ) from None
    path = Path(init).expanduser()
    if not path.is_file():
        raise BmbenchError(f"--init {init}: no such file (give a state-dict file or torchvision:<WeightsEnum>)")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it: one line is ours
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load raises, the file is not a usable state dict
        raise BmbenchError(f"--init {init}: not a torch state-dict file ({type(err).__name__})") from None
    for key in ("model", "state_dict"):  # torchvision's reference scripts and most trainers nest it
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise BmbenchError(f"--init {init}: not a state dict (expected a mapping of names to tensors)")
    return state


def load_init(backbone: nn.Module, init: str) -> InitReport:
    """Copy the init's tensors into `backbone` (a bmbench.models.backbone.ResNetFPN); raise BmbenchError, before
    changing anything, when they do not fit (see the module docstring)."""
    source = read_state_dict(init)
    own = backbone.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in source.items():
        name = key if key.startswith("body.") else RESNET_PREFIX + key.removeprefix("module.")
        if name in own:
            mapped[name] = value
        else:
            unexpected.append(key)
    required = [key for key in own if not key.startswith(OPTIONAL_PREFIX) and not key.endswith("num_batches_tracked")]
    absent = [key for key in required if key not in mapped]
    foreign = [key for key in unexpected if not any(part in key for part in IGNORED)]
    if absent or foreign:
        detail = (
            f"{len(absent)} ResNet tensors missing (e.g. {absent[0].removeprefix(RESNET_PREFIX)})" if absent else ""
        )
        if foreign:
            detail += ("; " if detail else "") + f"{len(foreign)} tensors of another architecture (e.g. {foreign[0]})"
        raise BmbenchError(f"--init {init}: does not fit this trunk's ResNet: {detail}")
    wrong = [key for key, value in mapped.items() if value.shape != own[key].shape]
    if wrong:
        key = wrong[0]
        raise BmbenchError(
            f"--init {init}: {key.removeprefix(RESNET_PREFIX)} has shape {tuple(mapped[key].shape)}, this trunk's "
            f"{tuple(own[key].shape)}"
        )
    with torch.no_grad():
        for key, value in mapped.items():
            own[key].copy_(value.to(own[key].dtype))
    missing = [key for key in own if key not in mapped and not key.endswith("num_batches_tracked")]
    return InitReport(source=init, loaded=len(mapped), missing=missing, unexpected=unexpected)
