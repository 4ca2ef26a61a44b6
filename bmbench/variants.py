"""Variant specs: which mask head, at which K, M, R (and S), as a frozen dataclass with a string form.

Letters, used the same everywhere: N instances, K bases, M attention side, R mask side, S CenterMask local-shape side.

A spec prints and parses as ``family:K=4,M=7,R=56``; a preset name (``blendmask``) stands for its spec. Each family
has its own fields: a key outside them is an error, never silently ignored.

The one registry is ``FAMILIES``, a literal dict from family name to its fields and its builder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from torch import nn

from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS, build_backbone
from bmbench.models.fcos import FCOSHead
from bmbench.models.heads import (
    build_blendmask_head,
    build_centermask_head,
    build_maskrcnn_head,
    build_yolact_head,
)
from bmbench.models.segmenter import InstanceSegmenter

SPEC_KEYS = ("K", "M", "R", "S")


@dataclass(frozen=True)
class Family:
    """A mask-head family: its own spec fields (with defaults), the values it forces, and its builder."""

    defaults: Mapping[str, int]  # the family's spec fields and their default values, in print order
    fixed: Mapping[str, int]  # fields that must keep one value (YOLACT M=1, CenterMask K=1)
    build: Callable[..., nn.Module]  # build(*, K/M/R/S as applicable, in_channels, tower_channels, num_classes)
    summary: str  # one line for tables


FAMILIES: dict[str, Family] = {
    "blendmask": Family(
        defaults={"K": 4, "M": 7, "R": 56},
        fixed={},
        build=build_blendmask_head,
        summary="K bases at stride 4 blended by K×M×M attentions in R×R RoIs",
    ),
    "yolact": Family(
        defaults={"K": 32, "M": 1},
        fixed={"M": 1},
        build=build_yolact_head,
        summary="linear combination of K prototypes over the whole map, cropped by the box",
    ),
    "centermask": Family(
        defaults={"K": 1, "S": 32, "R": 56},
        fixed={"K": 1},
        build=build_centermask_head,
        summary="one global saliency map times an S×S local shape, in R×R RoIs",
    ),
    "maskrcnn": Family(
        defaults={"R": 28},
        fixed={},
        build=build_maskrcnn_head,
        summary="RoIAlign R/2 from P2–P5, 4 convs 256, deconv to R×R, per-class logits",
    ),
}


def _check_key(family: str, key: str, text: str) -> None:
    own = FAMILIES[family].defaults
    if key not in own:
        raise BmbenchError(f"unknown key {key!r} for family {family} in spec {text!r} (keys: {', '.join(own)})")


def _validate(spec: VariantSpec) -> None:
    if spec.family not in FAMILIES:
        raise BmbenchError(f"unknown family {spec.family!r} (known: {', '.join(FAMILIES)})")
    family = FAMILIES[spec.family]
    for field in fields(spec)[1:]:
        value = getattr(spec, field.name)
        if field.name not in family.defaults:
            if value is not None:
                raise BmbenchError(f"unknown key {field.name!r} for family {spec.family}")
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise BmbenchError(f"{field.name} must be an integer, got {value!r}")
        if value < 1:
            raise BmbenchError(f"{field.name} must be >= 1, got {field.name}={value}")
    for key, value in family.fixed.items():
        if getattr(spec, key) != value:
            raise BmbenchError(f"{spec.family} requires {key}={value}, got {key}={getattr(spec, key)}")
    if spec.M is not None and spec.R is not None and spec.M > spec.R:
        raise BmbenchError(f"M={spec.M} must not exceed R={spec.R}")
    if spec.family == "maskrcnn" and spec.R % 2:
        raise BmbenchError(f"maskrcnn needs an even R (RoIAlign R/2, deconv x2), got R={spec.R}")


@dataclass(frozen=True)
class VariantSpec:
    """One mask-head configuration. Fields a family does not have are None."""

    family: str  # a key of FAMILIES
    K: int | None = None  # number of bases / prototypes
    M: int | None = None  # attention side (per-instance K×M×M attention)
    R: int | None = None  # mask (RoI) side
    S: int | None = None  # CenterMask local-shape side

    def __post_init__(self) -> None:
        _validate(self)

    def __str__(self) -> str:
        params = ",".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.family}:{params}" if params else self.family

    @property
    def params(self) -> dict[str, int]:
        """The family's own fields, in print order."""
        return {key: getattr(self, key) for key in FAMILIES[self.family].defaults}

    @property
    def name(self) -> str:
        """The preset name when this spec is a preset, else its string form."""
        for preset, spec in PRESETS.items():
            if spec == self:
                return preset
        return str(self)

    def with_params(self, **params: int) -> VariantSpec:
        """A copy with some fields changed; a field the family lacks raises BmbenchError."""
        for key in params:
            _check_key(self.family, key, f"{self}+{key}")
        return replace(self, **params)

    def applies(self, axis: str) -> bool:
        """Whether sweeping `axis` (K, M, R, S) changes this variant: it is a field and not fixed."""
        family = FAMILIES[self.family]
        return axis in family.defaults and axis not in family.fixed

    def build(self, *, trunk: str, num_classes: int) -> nn.Module:
        """Build this variant's mask head at the widths (and basis-module levels) of `trunk`, a key of TRUNKS."""
        sizes = TRUNKS[trunk]
        return FAMILIES[self.family].build(
            **self.params,
            in_channels=sizes.fpn_channels,
            tower_channels=sizes.tower_channels,
            num_classes=num_classes,
            basis_levels=sizes.basis_levels,
        )


def _family_spec(family: str, **params: int) -> VariantSpec:
    return VariantSpec(family, **{**FAMILIES[family].defaults, **params})


PRESETS: dict[str, VariantSpec] = {
    "yolact": _family_spec("yolact"),
    "centermask": _family_spec("centermask"),
    "blendmask": _family_spec("blendmask", K=4, M=7, R=56),
    "blendmask-adelaidet": _family_spec("blendmask", K=4, M=14, R=56),
    "maskrcnn": _family_spec("maskrcnn", R=28),
}

# The four family presets, one per family: the default set of `speed` and of tables.
FAMILY_PRESETS = ("yolact", "centermask", "blendmask", "maskrcnn")

_SPEC_RE = re.compile(r"^\s*(?P<head>[A-Za-z0-9_\-]+)\s*(?::(?P<body>.*))?$")


def parse_spec(text: str) -> VariantSpec:
    """Parse a preset name or ``family[:K=4,M=7,R=56]``; omitted fields take the preset's or family's defaults.

    Raises BmbenchError naming the offending part.
    """
    match = _SPEC_RE.match(text)
    if match is None:
        raise BmbenchError(f"bad variant spec {text!r}: expected a preset name or family:K=4,M=7,R=56")
    head, body = match["head"], match["body"]
    if head in PRESETS:
        base = PRESETS[head]
    elif head in FAMILIES:
        base = _family_spec(head)
    else:
        known = ", ".join([*PRESETS, *(f for f in FAMILIES if f not in PRESETS)])
        raise BmbenchError(f"unknown family or preset {head!r} in spec {text!r} (known: {known})")
    params: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (body or "").split(","))):
        key, sep, raw = (s.strip() for s in item.partition("="))
        if not sep:
            raise BmbenchError(f"bad item {item!r} in spec {text!r}: expected KEY=VALUE")
        _check_key(base.family, key, text)
        if key in params:
            raise BmbenchError(f"key {key} given twice in spec {text!r}")
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise BmbenchError(f"{key} must be an integer, got {raw!r} in spec {text!r}")
        params[key] = int(raw)
    try:
        return replace(base, **params)
    except BmbenchError as err:
        raise BmbenchError(f"{err} in spec {text!r}") from None


def parse_specs(text: str) -> list[VariantSpec]:
    """Parse a comma list of presets or specs; specs with fields are separated by ';' or by a family name."""
    items: list[str] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        # "blendmask:K=4,M=7" splits into "blendmask:K=4", "M=7": glue KEY=VALUE pieces to the spec before.
        if items and "=" in part and ":" not in part:
            items[-1] = f"{items[-1]},{part}"
        else:
            items.append(part)
    if not items:
        raise BmbenchError("no variants given")
    return [parse_spec(item) for item in items]


def build_segmenter(spec: VariantSpec, *, trunk: str = "small", num_classes: int) -> InstanceSegmenter:
    """The whole model for a variant: the shared trunk (backbone + FPN + FCOS) and the variant's mask head."""
    sizes = TRUNKS[trunk]
    return InstanceSegmenter(
        backbone=build_backbone(sizes),
        detector=FCOSHead(
            in_channels=sizes.fpn_channels,
            num_classes=num_classes,
            tower_channels=sizes.tower_channels,
            num_convs=sizes.tower_convs,
        ),
        mask_head=spec.build(trunk=trunk, num_classes=num_classes),
    )
