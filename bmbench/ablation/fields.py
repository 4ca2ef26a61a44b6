"""The suite loader's YAML field checks: each reads one value at a key path and returns it typed, or raises one
``BmbenchError`` that names the file and the key path (``suites/x.yaml: grid[0].M: ...``).

A mapping key given twice is an error too (`UniqueKeyLoader`), where PyYAML would silently keep the last.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from bmbench.errors import BmbenchError


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


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def field_mapping(err: Errors, key: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise err(key, f"expected a mapping, got {describe(value)}")
    for name in value:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise err(where, f"unknown key (expected one of: {', '.join(allowed)})")
    return value


def field_int(err: Errors, key: str, value: Any, *, minimum: int = 0) -> int:
    if not _is_int(value):
        raise err(key, f"expected an integer, got {describe(value)}")
    if value < minimum:
        raise err(key, f"must be >= {minimum}, got {value}")
    return value


def field_int_list(err: Errors, key: str, value: Any, *, minimum: int = 0) -> tuple[int, ...]:
    """A list of distinct integers (a single integer counts as a one-element list)."""
    items = [value] if _is_int(value) else value
    if not isinstance(items, list) or not all(_is_int(v) for v in items):
        raise err(key, f"expected a list of integers, got {describe(value)}")
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
        raise err(key, f"expected a non-empty string, got {describe(value)}")
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
        raise err(key, f"expected WxH (e.g. 1088x800) or an integer, got {describe(value)}")
    if min(H, W) < 32:
        raise err(key, f"sides must be >= 32 px, got {format_size((H, W))}")
    return H, W


def field_positive(err: Errors, key: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise err(key, f"expected a positive number, got {describe(value)}")
    return float(value)
