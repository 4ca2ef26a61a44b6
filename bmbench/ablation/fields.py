"""The suite loader's YAML field checks: each reads one value at a key path and returns it typed, or raises one
``BmbenchError`` that names the file and the key path (``suites/x.yaml: grid[0].M: ...``); and `load_dataclass`,
the one loader that reads a whole section into its frozen dataclass from the field types and metadata.

A mapping key given twice is an error too (`UniqueKeyLoader`), where PyYAML would silently keep the last.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from bmbench.errors import BmbenchError

T = TypeVar("T")


def format_size(size: tuple[int, int]) -> str:
    """(H, W) -> ``WxH``, the text form of `bmbench speed --image-size`."""
    H, W = size
    return f"{W}x{H}"


class Errors:
    """Builds the one-line error for a key path in one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, key: str, message: str) -> BmbenchError:
        return BmbenchError(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a mapping key given twice (PyYAML silently keeps the last)."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def describe_value(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def field_mapping(err: Errors, key: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise err(key, f"expected a mapping, got {describe_value(value)}")
    for name in value:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise err(where, f"unknown key (expected one of: {', '.join(allowed)})")
    return value


def field_int(err: Errors, key: str, value: Any, *, minimum: int = 0) -> int:
    if not _is_int(value):
        raise err(key, f"expected an integer, got {describe_value(value)}")
    if value < minimum:
        raise err(key, f"must be >= {minimum}, got {value}")
    return value


def field_int_list(err: Errors, key: str, value: Any, *, minimum: int = 0) -> tuple[int, ...]:
    """A list of distinct integers (a single integer counts as a one-element list)."""
    items = [value] if _is_int(value) else value
    if not isinstance(items, list) or not all(_is_int(v) for v in items):
        raise err(key, f"expected a list of integers, got {describe_value(value)}")
    if not items:
        raise err(key, "expected a non-empty list of integers, got []")
    for v in items:
        if v < minimum:
            raise err(key, f"values must be >= {minimum}, got {v}")
    duplicates = sorted({v for v in items if items.count(v) > 1})
    if duplicates:
        raise err(key, f"duplicate values {duplicates}")
    return tuple(items)


def field_str(err: Errors, key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise err(key, f"expected a non-empty string, got {describe_value(value)}")
    if choices is not None and value not in choices:
        raise err(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def field_size(err: Errors, key: str, value: Any) -> tuple[int, int]:
    """``WxH`` (e.g. 1088x800, as `bmbench speed --image-size`) or one integer for a square image -> (H, W)."""
    if _is_int(value):
        W = H = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*[xX×]\s*\d+\s*", value):
        W, H = (int(s) for s in re.split(r"[xX×]", value))
    else:
        raise err(key, f"expected WxH (e.g. 1088x800) or an integer, got {describe_value(value)}")
    if min(H, W) < 32:
        raise err(key, f"sides must be >= 32 px, got {format_size((H, W))}")
    return H, W


def field_positive(err: Errors, key: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise err(key, f"expected a positive number, got {describe_value(value)}")
    return float(value)


def field_number(err: Errors, key: str, value: Any, *, minimum: float = 0.0) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise err(key, f"expected a number, got {describe_value(value)}")
    if value < minimum:
        raise err(key, f"must be >= {minimum}, got {value}")
    return float(value)


def field_bool(err: Errors, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise err(key, f"expected true or false, got {describe_value(value)}")
    return value


# --- one dataclass-driven loader ---------------------------------------------------------------------------------
# A section's fields, types and defaults come from its frozen dataclass; what a type alone cannot say is declared
# once in the field's metadata:
#   choices   tuple of allowed strings (or a zero-argument callable giving them); Literal[...] types need none
#   minimum   smallest allowed int / float
#   positive  a float that must be > 0
#   multiple  an int that must be a multiple of this
#   size      a (H, W) tuple written WxH
#   sorted    an int tuple stored ascending


def _choices(meta: Any, hint: Any) -> tuple[str, ...] | None:
    if get_origin(hint) is Literal:
        return tuple(get_args(hint))
    choices = meta.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


def _field_value(err: Errors, key: str, value: Any, hint: Any, meta: Any) -> Any:
    """One value read as the field's declared type; raises the one-line error otherwise."""
    args = get_args(hint)
    if get_origin(hint) in (Union, UnionType) and type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = get_args(hint)
    if meta.get("size"):
        return field_size(err, key, value)
    if hint is bool:
        return field_bool(err, key, value)
    if hint is int:
        value = field_int(err, key, value, minimum=meta.get("minimum", 0))
        if meta.get("multiple") and value % meta["multiple"]:
            raise err(key, f"must be a multiple of {meta['multiple']}, got {value}")
        return value
    if hint is float:
        if meta.get("positive"):
            return field_positive(err, key, value)
        return field_number(err, key, value, minimum=meta.get("minimum", 0.0))
    if get_origin(hint) is tuple and args[-1] is Ellipsis and args[0] is int:
        items = field_int_list(err, key, value, minimum=meta.get("minimum", 0))
        return tuple(sorted(items)) if meta.get("sorted") else items
    if hint is str or get_origin(hint) is Literal:
        return field_str(err, key, value, _choices(meta, hint))
    raise TypeError(f"{key}: the loader cannot read fields of type {hint!r}")  # a programming error, not input


def load_dataclass(
    err: Errors, key: str, raw: Any, cls: type[T], *, keys: tuple[str, ...] | None = None, base: T | None = None
) -> T:
    """Read the mapping `raw` at `key` into the frozen dataclass `cls`: only `keys` (default: every field) may be
    given; the others keep `base`'s values (default: the dataclass defaults). Unknown keys and wrong types raise
    ``file: key.field: message``."""
    allowed = keys if keys is not None else tuple(f.name for f in fields(cls))
    raw = {} if raw is None else field_mapping(err, key, raw, allowed)
    hints = get_type_hints(cls)
    values = {}
    for item in fields(cls):
        if item.name in raw:
            where = f"{key}.{item.name}" if key else item.name
            values[item.name] = _field_value(err, where, raw[item.name], hints[item.name], item.metadata)
    return replace(base, **values) if base is not None else cls(**values)
