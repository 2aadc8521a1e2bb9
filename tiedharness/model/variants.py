"""A run's variant label, made from its sharing config (torch-free).

The variant label is the strategy label plus the non-default sharing options that change
those strategies (names.py's SHARING_OPTIONS): "qk+mask_self", "cross_layer+unique=3";
the report groups and colours runs by it, and labels.py's `parse_label` splits it back.
It lives apart from labels.py because it reads the sharing schema's defaults, and
config.py's SharingConfig.name needs labels.py's strategy label.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from tiedharness.model.config import SharingConfig
from tiedharness.model.labels import SEPARATOR
from tiedharness.model.names import SHARING_OPTIONS


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
    return _flat(dataclasses.asdict(SharingConfig()))
