"""Building blocks of the config schemas (one dataclass per config group).

Hydra composes each group against its dataclass, so OmegaConf already rejects unknown
keys, wrong types and choices outside an enum, naming the key. What a type cannot say
(a positive width, a probability) is checked in the dataclass's `__post_init__` with
the helpers below, which runs when the job turns its config into objects — before any
data is built.
"""

from __future__ import annotations

import functools
import typing
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """A config choice: compares, hashes, prints and serialises as its plain string.
    A member declared with `enum.auto()` takes its own name as its value."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list) -> str:
        return name

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@functools.cache
def _choice_fields(schema: type) -> dict[str, type[Choice]]:
    """The fields of a dataclass typed with a Choice (optional ones too)."""
    out = {}
    for name, hint in typing.get_type_hints(schema).items():
        for candidate in (hint, *typing.get_args(hint)):
            if isinstance(candidate, type) and issubclass(candidate, Choice):
                out[name] = candidate
    return out


def coerce_choices(owner: object, group: str) -> None:
    """Turn plain strings into their Choice, so an object built in code (not composed by
    Hydra) is checked too: `ModelConfig(norm="sandwich")` fails, naming the choices."""
    for name, choice in _choice_fields(type(owner)).items():
        value = getattr(owner, name)
        if value is None or isinstance(value, choice):
            continue
        allowed = [member.value for member in choice]
        require(value in allowed, f"{group}.{name}", value, f"must be one of {', '.join(allowed)}")
        setattr(owner, name, choice(value))


def require(condition: bool, key: str, value: Any, rule: str) -> None:
    """Raise `ValueError("key=value: rule")` unless `condition` holds."""
    if not condition:
        raise ValueError(f"{key}={value!r}: {rule}")


def require_positive(owner: object, group: str, *names: str) -> None:
    """Each named field, where set, is > 0."""
    for name in names:
        value = getattr(owner, name)
        require(value is None or value > 0, f"{group}.{name}", value, "must be > 0")


def require_non_negative(owner: object, group: str, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        require(value is None or value >= 0, f"{group}.{name}", value, "must be ≥ 0")


def require_fraction(owner: object, group: str, *names: str) -> None:
    """Each named field lies in [0, 1]."""
    for name in names:
        value = getattr(owner, name)
        require(0 <= value <= 1, f"{group}.{name}", value, "must lie in [0, 1]")


def from_values(schema: Any, values: dict[str, Any] | None = None) -> Any:
    """A schema object (dataclass type or instance) with `values` merged in the same
    typed way Hydra composes configs, so code and the CLI reject the same mistakes."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(schema), values or {})
    return OmegaConf.to_object(merged)
