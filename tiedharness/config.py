"""The one check every config dataclass makes: unknown keys are typos, named with the fix."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def reject_unknown(where: str, values: dict[str, Any], schema: type) -> None:
    """Raise naming the unknown `where` options and listing the known ones."""
    known = {f.name for f in fields(schema)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {where} option(s) {unknown}; known: {', '.join(sorted(known))}")
