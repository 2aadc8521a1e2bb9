"""A run's sharing labels: their grammar, the strategy label, and reading them back
(torch-free).

- the **strategy label** names the strategies a run combines: "none", "qkv",
  "embed_output+qkv" (`strategy_label`); run records, tables and W&B carry it;
- the **variant label** adds the non-default sharing options that change those
  strategies: "qk+mask_self", "cross_layer+unique=3"; variants.py makes it from the
  run's sharing config;
- `parse_label` splits a variant label back into its strategies and its options.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from tiedharness.model.names import STRATEGY_NAMES

SEPARATOR = "+"


def strategy_label(strategies: Iterable[str]) -> str:
    """The strategies joined in their given order; no strategy is "none"."""
    return SEPARATOR.join(strategies) or "none"


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
