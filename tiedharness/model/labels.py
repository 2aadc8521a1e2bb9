"""A run's sharing labels, made and read back in one place (torch-free).

- the **strategy label** names the strategies a run combines: "none", "qkv",
  "embed_output+qkv" (`strategy_label`); run records, tables and W&B carry it;
- the **variant label** adds the non-default sharing options that change those
  strategies (names.py's SHARING_OPTIONS): "qk+mask_self", "cross_layer+unique=3"
  (`variant_label`); the report groups and colours runs by it;
- `parse_label` splits a variant label back into its strategies and its options.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from tiedharness.model.names import SHARING_OPTIONS, STRATEGY_NAMES

SEPARATOR = "+"


def strategy_label(strategies: Iterable[str]) -> str:
    """The strategies joined in their given order; no strategy is "none"."""
    return SEPARATOR.join(strategies) or "none"


def variant_label(strategy: str, options: Mapping[str, Any] | None) -> str:
    """The strategy label plus the non-default sharing options that change it.

    `options` is the run's `sharing` config (nested as composed: `cross_layer.unique`
    is `options["cross_layer"]["unique"]`); keys it leaves out count as their default.
    An option applies only to the strategies SHARING_OPTIONS names, so `none` stays
    "none" whatever is set.
    """
    defaults = _sharing_defaults()
    given = _flat(options or {})
    parts = strategy.split(SEPARATOR)
    for key, (short, applies_to) in SHARING_OPTIONS.items():
        value = given.get(key, defaults.get(key))
        if value == defaults.get(key) or not set(parts) & set(applies_to):
            continue
        parts.append(short if value is True else f"{short}={value}")
    return SEPARATOR.join(parts)


class ParsedLabel(NamedTuple):
    strategy: str  # the strategy label: "qk", "embed_output+qkv"
    options: str  # the options joined by "+": "mask_self", "unique=3+plan=cycle"; "" if none


def parse_label(label: str) -> ParsedLabel:
    """A variant label split into its strategies and its options:
    "qk+mask_self" → ("qk", "mask_self"); "embed_output+qkv" → ("embed_output+qkv", "")."""
    parts = label.split(SEPARATOR)
    return ParsedLabel(
        SEPARATOR.join(p for p in parts if p in STRATEGY_NAMES),
        SEPARATOR.join(p for p in parts if p not in STRATEGY_NAMES),
    )


def _flat(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options → dotted keys: {"cross_layer": {"unique": 3}} → {"cross_layer.unique": 3}."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@functools.cache
def _sharing_defaults() -> dict[str, Any]:
    # imported here: model/config.py imports this module for SharingConfig.name
    from tiedharness.model.config import SharingConfig

    return _flat(dataclasses.asdict(SharingConfig()))
