"""Head plugins: the interface a mask-head family implements, and where families from outside bmbench come from.

A family is a :class:`Family`: its spec fields with their defaults, the values it forces, a builder that returns a
``bmbench.models.heads.base.MaskHead``, a one-line summary and, optionally, a FLOP formula. bmbench's own families
are a literal dict (``bmbench.variants.FAMILIES``); plugins add to it from two places:

- an installed package's entry points in the group ``bmbench.heads``: each entry point's name is the family's
  name and its object a ``Family`` (``gridmask = "bmbench_gridmask.heads:GRIDMASK"``), read with
  ``importlib.metadata.entry_points``, as Python packaging intends plugins to be found;
- a module the user names (``--plugin mypkg.heads``, a suite's ``plugins: [mypkg.heads]``), whose
  ``BMBENCH_HEADS`` dict maps family names to ``Family`` objects: mmdetection's ``custom_imports``, for code that is
  not installed.

This module is a leaf (no torch, no bmbench import but errors): it finds families and says where each came from;
``bmbench.variants`` registers them. docs/plugins.md is the user's page.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as metadata
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from bmbench.errors import BmbenchError
from bmbench.schema import BUILT_IN_ORIGIN

ENTRY_POINT_GROUP = "bmbench.heads"
MODULE_ATTRIBUTE = "BMBENCH_HEADS"  # a --plugin module's dict: family name -> Family
HOW_TO_REGISTER = (
    f"a plugin family comes from an installed package's '{ENTRY_POINT_GROUP}' entry point, or from "
    f"--plugin MODULE (a suite's plugins: [MODULE]) whose {MODULE_ATTRIBUTE} dict names it; see docs/plugins.md"
)
FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a family name: it starts spec strings and cell labels
FIELD_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")  # a spec field: one capital letter, as K, M, R, S, then any
RESERVED_FIELDS = ("family", "extra")  # VariantSpec's own attributes


@dataclass(frozen=True)
class Family:
    """A mask-head family: its own spec fields (with defaults), the values it forces, and its builder."""

    defaults: Mapping[str, int]  # the family's spec fields and their default values, in print order
    fixed: Mapping[str, int]  # fields that must keep one value (YOLACT M=1, CenterMask K=1)
    # build(**fields, in_channels, tower_channels, num_classes, basis_levels) -> a MaskHead
    build: Callable[..., Any]
    summary: str  # one line for tables
    # Optional FLOP formula, flops(**fields, hw, in_channels, tower_channels, num_instances) -> {stage: FLOPs}
    # (stages bottom, top, merge, paste; hw: each FPN level's H_l*W_l). Without one, `bmbench variants` counts the
    # FLOPs of a run with torch.utils.flop_counter and says so.
    flops: Callable[..., Mapping[str, int]] | None = None


@dataclass(frozen=True)
class Origin:
    """Where a family came from: bmbench itself, an installed package's entry point, or a named module."""

    kind: str  # "built in", "entry point" or "module"
    module: str | None = None  # the module that defines the family (imported again in spawned workers)
    package: str | None = None  # the distribution that provides it, when known
    version: str | None = None  # that distribution's version (or the module's __version__)
    digest: str | None = None  # sha256 of the builder's source file, 12 hex digits: a changed file changes it

    def __str__(self) -> str:
        if self.kind == "built in":
            return "built in"
        name = self.package or self.module or "?"
        version = f" {self.version}" if self.version else ""
        return f"{name}{version} ({self.kind})"

    def identity(self) -> dict[str, str | None] | None:
        """What cell ids and result files record of a plugin (None for a built-in family): a plugin whose name,
        version or source changed makes new cells instead of reusing old ones."""
        if self.kind == "built in":
            return None
        return {"name": self.package or self.module, "version": self.version, "digest": self.digest}


BUILT_IN = Origin(BUILT_IN_ORIGIN)
# Where each family that a plugin added in this process came from (bmbench.variants registers them); built-in
# families are absent. It lives in this leaf so that every run's meta.json can list it (bmbench.results).
ORIGINS: dict[str, Origin] = {}


def loaded_plugins() -> dict[str, dict[str, str | None]]:
    """Each plugin family registered in this process and its identity (package or module, version, digest)."""
    return {name: origin.identity() or {} for name, origin in ORIGINS.items()}


class Found(NamedTuple):
    """A family a plugin provides, with its name and origin."""

    name: str
    family: Family
    origin: Origin


def check_family(name: Any, family: Any, where: str) -> None:
    """A plugin's family must be a Family with a lower-case name and capital-letter fields; BmbenchError otherwise."""
    if not isinstance(name, str) or not FAMILY_NAME.match(name):
        raise BmbenchError(f"{where}: family name {name!r} must be lower-case letters, digits and '_'")
    if not isinstance(family, Family):
        raise BmbenchError(f"{where}: expected a bmbench.plugins.Family, got {type(family).__name__}")
    for key, value in {**family.defaults, **family.fixed}.items():
        if not isinstance(key, str) or not FIELD_NAME.match(key) or key in RESERVED_FIELDS:
            raise BmbenchError(f"{where}: field {key!r} must be a capital letter, then letters or digits (as K, M, R)")
        if not isinstance(value, int) or isinstance(value, bool):
            raise BmbenchError(f"{where}: field {key}={value!r} must default to an integer")
    if not set(family.fixed) <= set(family.defaults):
        raise BmbenchError(f"{where}: fixed fields {sorted(set(family.fixed) - set(family.defaults))} lack defaults")
    if not callable(family.build):
        raise BmbenchError(f"{where}: build must be callable")


def source_digest(obj: Any) -> str | None:
    """sha256 of the file that defines `obj` (12 hex digits), or None when it has no file."""
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:12]
    except OSError:
        return None


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    """(distribution name, version) of the installed package that holds `module`, or (None, None)."""
    top = module.split(".")[0]
    for name in metadata.packages_distributions().get(top, []):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def _error_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def discover_entry_points() -> tuple[list[Found], list[str]]:
    """Every family of the ``bmbench.heads`` entry-point group, and one line per entry point that failed (its name,
    its package and the error): a broken plugin never stops the others from loading."""
    found, problems = [], []
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(point, "dist", None)
        package = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        where = f"entry point {point.name} = {point.value}" + (f" of {package} {version}" if package else "")
        try:
            family = point.load()
            check_family(point.name, family, where)
        except Exception as err:  # noqa: BLE001 - any failure of third-party code is reported, not raised
            problems.append(f"{where}: {_error_line(err) if not isinstance(err, BmbenchError) else err}")
            continue
        origin = Origin("entry point", point.module, package, version, source_digest(family.build))
        found.append(Found(point.name, family, origin))
    return found, problems


def import_module_families(module: str) -> list[Found]:
    """The families of a module named with ``--plugin`` (its ``BMBENCH_HEADS`` dict); BmbenchError in one line when
    it cannot be imported or does not provide them."""
    where = f"plugin module {module}"
    try:
        loaded = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - the user named it: one line with its error
        raise BmbenchError(f"{where}: cannot import it: {_error_line(err)}; {HOW_TO_REGISTER}") from None
    heads = getattr(loaded, MODULE_ATTRIBUTE, None)
    if not isinstance(heads, Mapping) or not heads:
        raise BmbenchError(f"{where}: no {MODULE_ATTRIBUTE} dict (family name -> bmbench.plugins.Family) in it")
    package, version = _distribution_of(module)
    top = sys.modules.get(module.split(".")[0])
    version = version or getattr(loaded, "__version__", None) or getattr(top, "__version__", None)
    found = []
    for name, family in heads.items():
        check_family(name, family, where)
        found.append(Found(name, family, Origin("module", module, package, version, source_digest(family.build))))
    return found
