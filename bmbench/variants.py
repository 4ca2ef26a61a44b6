"""Variant specs: which mask head, at which K, M, R (and S), as a frozen dataclass with a string form.

Letters, used the same everywhere: N instances, K bases (CondInst: mask-branch channels), M attention side, R mask
side, S CenterMask local-shape side, L CondInst's dynamic layers, F their channels.

A spec prints and parses as ``family:K=4,M=7,R=56``; a preset name (``blendmask``) stands for its spec. Each family
has its own fields: a key outside them is an error, never silently ignored. K, M, R and S are attributes of every
spec (None where the family lacks them); any other field of a family (CondInst's L and F, a plugin's) lives in
``extra`` and reads as an attribute too.

The one registry is ``FAMILIES``, a literal dict from family name to its fields and its builder; head plugins add to
it (:func:`load_plugins`, see bmbench.plugins), and ``ORIGINS`` says where each added family came from.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

from bmbench.errors import BmbenchError, BmbenchWarning
from bmbench.models.backbone import TRUNKS, build_backbone
from bmbench.models.fcos import FCOSHead
from bmbench.models.heads import (
    build_blendmask_head,
    build_centermask_head,
    build_maskrcnn_head,
    build_yolact_head,
)
from bmbench.models.heads.condinst import build_condinst_head
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.plugins import (
    BUILT_IN,
    HOW_TO_REGISTER,
    ORIGINS,
    Family,
    Found,
    Origin,
    discover_entry_points,
    import_module_families,
)
from bmbench.schema import SPEC_KEYS

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
    "condinst": Family(
        defaults={"K": 8, "L": 3, "F": 8},
        fixed={},
        build=build_condinst_head,
        summary="K-channel mask branch at stride 8 read by L dynamic 1x1 convs of F channels (+ 2 coordinates)",
    ),
    "maskrcnn": Family(
        defaults={"R": 28},
        fixed={},
        build=build_maskrcnn_head,
        summary="RoIAlign R/2 from P2–P5, 4 convs 256, deconv to R×R, per-class logits",
    ),
}


_loaded = {"entry_points": False, "modules": set()}  # what load_plugins has read in this process


def family_origin(family: str) -> Origin:
    """Where `family` came from: bmbench itself, or a plugin's package (name, version) or module."""
    return ORIGINS.get(family, BUILT_IN)


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Register the families of the ``bmbench.heads`` entry points (read once a process; each one that fails is
    one BmbenchWarning line and the others still load) and of each named module (`--plugin`, a suite's
    ``plugins:``), which raises BmbenchError in one line when it cannot be loaded."""
    if not _loaded["entry_points"]:
        _loaded["entry_points"] = True
        found, problems = discover_entry_points()
        for line in problems:
            warnings.warn(f"plugin skipped: {line}", BmbenchWarning, stacklevel=2)
        for item in found:
            try:
                _register(item)
            except BmbenchError as err:
                warnings.warn(f"plugin skipped: {err}", BmbenchWarning, stacklevel=2)
    for module in modules:
        if module not in _loaded["modules"]:
            for item in import_module_families(module):
                _register(item)
            _loaded["modules"].add(module)


def _register(item: Found) -> None:
    if item.name in FAMILIES and FAMILIES[item.name] is not item.family:
        raise BmbenchError(
            f"{item.origin}: family {item.name!r} is already registered ({family_origin(item.name)}); rename it"
        )
    FAMILIES.setdefault(item.name, item.family)
    ORIGINS.setdefault(item.name, item.origin)


def unregister_plugins() -> None:
    """Forget every plugin family (tests; a later load_plugins reads the entry points again)."""
    for name in ORIGINS:
        FAMILIES.pop(name, None)
    ORIGINS.clear()
    _loaded["entry_points"] = False
    _loaded["modules"] = set()


def _known_family(family: str) -> bool:
    """Whether `family` is registered, reading the entry points first when it is not (once a process)."""
    if family not in FAMILIES and not _loaded["entry_points"]:
        load_plugins()
    return family in FAMILIES


def _unknown_family(what: str) -> BmbenchError:
    return BmbenchError(f"{what} (known: {', '.join(FAMILIES)}); {HOW_TO_REGISTER}")


def _check_key(family: str, key: str, text: str) -> None:
    own = FAMILIES[family].defaults
    if key not in own:
        raise BmbenchError(f"unknown key {key!r} for family {family} in spec {text!r} (keys: {', '.join(own)})")


# The largest value of each field that bmbench builds, and why: a head's weights and per-instance maps grow with
# these, so an absurd value (K=100000 asked 45 GB) is refused here, before anything is built or allocated.
FIELD_LIMITS: dict[str, tuple[int, str]] = {
    "K": (256, "a head's weights and every instance's maps grow with K (the papers use at most YOLACT's K=32)"),
    "M": (64, "BlendMask's tower predicts K·M·M attention values at every location (the papers use M <= 14)"),
    "R": (512, "every instance's merge and paste hold R·R maps per basis (the papers use R <= 112)"),
    "S": (128, "CenterMask's tower predicts S·S shape values at every location (its paper uses S=32)"),
}
OTHER_FIELD_LIMIT = (64, "a family's layer and channel counts beyond K, M, R, S stay small (CondInst: L=3, F=8)")
ATTENTION_LIMIT = 16384  # K·M·M, attention values per location (BlendMask's paper: 4·7·7 = 196)


def _check_bound(name: str, value: int) -> None:
    limit, why = FIELD_LIMITS.get(name, OTHER_FIELD_LIMIT)
    if value > limit:
        raise BmbenchError(f"{name}={value} is above {limit}, the largest {name} bmbench builds: {why}")


def _validate(spec: VariantSpec) -> None:
    if not _known_family(spec.family):
        raise _unknown_family(f"unknown family {spec.family!r}")
    family = FAMILIES[spec.family]
    named = [(field.name, getattr(spec, field.name)) for field in fields(spec) if field.name in SPEC_KEYS]
    for name, value in [*named, *spec.extra]:  # K, M, R, S, then the family's other fields
        if name not in family.defaults:
            if value is not None:
                raise BmbenchError(f"unknown key {name!r} for family {spec.family}")
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise BmbenchError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise BmbenchError(f"{name} must be >= 1, got {name}={value}")
        _check_bound(name, value)
    missing = [name for name in family.defaults if getattr(spec, name, None) is None]
    if missing:
        raise BmbenchError(f"{spec.family} needs {', '.join(missing)} (its fields: {', '.join(family.defaults)})")
    if spec.K is not None and spec.M is not None and spec.K * spec.M * spec.M > ATTENTION_LIMIT:
        raise BmbenchError(
            f"K·M·M = {spec.K}·{spec.M}·{spec.M} = {spec.K * spec.M * spec.M} is above {ATTENTION_LIMIT}, the most "
            "attention values per location bmbench builds (BlendMask's paper: 4·7·7 = 196)"
        )
    for key, value in family.fixed.items():
        if getattr(spec, key) != value:
            raise BmbenchError(f"{spec.family} requires {key}={value}, got {key}={getattr(spec, key)}")
    if spec.M is not None and spec.R is not None and spec.M > spec.R:
        raise BmbenchError(f"M={spec.M} must not exceed R={spec.R}")
    if spec.family == "maskrcnn" and spec.R % 2:
        raise BmbenchError(f"maskrcnn needs an even R (RoIAlign R/2, deconv x2), got R={spec.R}")


@dataclass(frozen=True, init=False)
class VariantSpec:
    """One mask-head configuration. Fields a family does not have are None; ``VariantSpec("condinst", K=8, L=3,
    F=8)`` puts L and F in ``extra``."""

    family: str  # a key of FAMILIES
    K: int | None = None  # number of bases / prototypes (CondInst: mask-branch channels)
    M: int | None = None  # attention side (per-instance K×M×M attention)
    R: int | None = None  # mask (RoI) side
    S: int | None = None  # CenterMask local-shape side
    extra: tuple[tuple[str, int], ...] = ()  # the family's other fields, (name, value) in its print order

    def __init__(
        self,
        family: str,
        K: int | None = None,
        M: int | None = None,
        R: int | None = None,
        S: int | None = None,
        extra: Iterable[tuple[str, int]] = (),
        **others: int,
    ) -> None:
        # The known family's print order for the other fields (an unknown family fails in _validate below).
        order = list(FAMILIES[family].defaults) if _known_family(family) else []
        merged = dict(extra) | others
        rank = {name: i for i, name in enumerate(order)}
        for name, value in (("family", family), ("K", K), ("M", M), ("R", R), ("S", S)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "extra", tuple(sorted(merged.items(), key=lambda kv: rank.get(kv[0], len(rank)))))
        _validate(self)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not attributes: a field of the family's `extra` (CondInst's L, F).
        if not name.startswith("_") and name != "extra":
            for key, value in self.__dict__.get("extra", ()):
                if key == name:
                    return value
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # A spec of a family from a --plugin module unpickles in a fresh process (a spawned ablate worker) by
        # importing that module first; entry-point families are found there by reading the entry points.
        origin = family_origin(self.family)
        module = origin.module if origin.kind == "module" else None
        return _unpickle_spec, (self.family, self.params, module)

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


def _unpickle_spec(family: str, params: dict[str, int], module: str | None) -> VariantSpec:
    if module is not None and family not in FAMILIES:
        load_plugins([module])
    return VariantSpec(family, **params)


def _family_spec(family: str, **params: int) -> VariantSpec:
    return VariantSpec(family, **{**FAMILIES[family].defaults, **params})


PRESETS: dict[str, VariantSpec] = {
    "yolact": _family_spec("yolact"),
    "centermask": _family_spec("centermask"),
    "blendmask": _family_spec("blendmask", K=4, M=7, R=56),
    "blendmask-adelaidet": _family_spec("blendmask", K=4, M=14, R=56),
    "condinst": _family_spec("condinst", K=8, L=3, F=8),
    "maskrcnn": _family_spec("maskrcnn", R=28),
}

# The family presets, one per built-in family: the default set of `speed` and of tables.
FAMILY_PRESETS = ("yolact", "centermask", "blendmask", "condinst", "maskrcnn")

_EMPTY_ITEM = re.compile(r",\s*,")  # two commas with nothing between
_SPEC_RE = re.compile(r"^\s*(?P<head>[A-Za-z0-9_\-]+)\s*(?::(?P<body>.*))?$")


def parse_spec(text: str) -> VariantSpec:
    """Parse a preset name or ``family[:K=4,M=7,R=56]``; omitted fields take the preset's or family's defaults.

    Raises BmbenchError naming the offending part.
    """
    match = _SPEC_RE.match(text)
    if match is None:
        raise BmbenchError(f"bad variant spec {text!r}: expected a preset name or family:K=4,M=7,R=56")
    head, body = match["head"], match["body"]
    if body and _EMPTY_ITEM.search(body):  # "K=4,,M=7": a value lost between the commas, not a spec to guess at
        raise BmbenchError(f"bad variant spec {text!r}: an empty item between two commas")
    if head in PRESETS:
        base = PRESETS[head]
    elif _known_family(head):
        base = _family_spec(head)
    else:
        known = ", ".join([*PRESETS, *(f for f in FAMILIES if f not in PRESETS)])
        raise BmbenchError(f"unknown family or preset {head!r} in spec {text!r} (known: {known}); {HOW_TO_REGISTER}")
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
    if _EMPTY_ITEM.search(text.replace(";", ",")):
        raise BmbenchError(f"bad variant list {text!r}: an empty item between two separators")
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
