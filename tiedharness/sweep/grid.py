"""A sweep's grid and a search's space, read from Hydra's override syntax.

The grid is `hydra.sweeper.params` then the command line, `key=value` lines as Hydra's
basic sweeper reads them: every combination of the swept values is a cell. The search
space is `hydra.sweeper.search`, read as Hydra's Optuna sweeper reads it. search.py runs
a study per cell; summary.py counts a sweep's jobs from the same reading.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Transformer
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

SEED_KEY = "trainer.seed"


@dataclass
class Grid:
    """The grid's cells (each a list of `key=value` overrides), the overrides every job
    shares, and the seeds the grid listed (a search's tuned runs train on them)."""

    cells: list[list[str]]
    shared: list[str]
    seeds: list[str]
    swept: dict[str, list[str]]  # key → values: what the cells are made of

    @property
    def reporting_seeds(self) -> list[str]:
        """The seeds a search's tuned runs train on: the grid's when it lists several,
        else 0, 1, 2. The search itself trains on a seed of its own."""
        return list(self.seeds) if len(self.seeds) > 1 else ["0", "1", "2"]


def parse_grid(lines: list[str], study_keys: tuple[str, ...] = ()) -> Grid:
    """`key=value` lines (sweeper params, then the command line; later ones win) → cells.
    The cells' keys come in a fixed order whatever the command line's: the study's grid
    keys (`study_keys`, its `hydra.sweeper.params`) in their order, then the others by
    name; so cells, job numbers and study names do not depend on how a command orders
    its overrides (a search started again must find its cells where it left them)."""
    by_key = {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)}
    swept: dict[str, list[str]] = {}
    shared, seeds = [], []
    for key, override in by_key.items():
        if not override.is_sweep_override():
            shared.append(f"{key}={override.get_value_element_as_str()}")
            continue
        if override.is_interval_sweep():
            raise ValueError(
                f"{key}={override.input_line.split('=', 1)[1]} is a search range: put it "
                "under hydra.sweeper.search, the grid takes lists of values"
            )
        values = list(override.sweep_string_iterator())
        if key == SEED_KEY:
            seeds = values
            shared.append(f"{key}={values[0]}")
        else:
            swept[key] = values
    rank = {key: i for i, key in enumerate(study_keys)}
    order = sorted(swept, key=lambda k: (rank.get(k, len(rank)), "" if k in rank else k))
    swept = {key: swept[key] for key in order}
    cells = [
        [f"{k}={v}" for k, v in zip(swept, combo, strict=True)]
        for combo in itertools.product(*swept.values())
    ]
    return Grid(cells, shared, seeds, swept)


def search_space(lines: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`key=value` lines of `hydra.sweeper.search` → (Optuna distributions, fixed values),
    as Hydra's Optuna sweeper reads them: `interval(a, b)` a float between a and b (Hydra
    reads the ends as floats), `tag(log, interval(a, b))` the same on a log scale,
    `range(a, b[, step])` an int from a to b, both included (a float when one is a float),
    `choice(x, y, …)` one of the values, and a plain value fixed."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key, value = override.get_key_element(), override.value()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
        elif override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            space[key] = CategoricalDistribution(choices)
        elif override.is_range_sweep():
            ends = (value.start, value.stop, value.step)
            if any(isinstance(x, float) for x in ends):
                space[key] = FloatDistribution(value.start, value.stop, step=value.step)
            else:
                space[key] = IntDistribution(*(int(x) for x in ends[:2]), step=int(value.step))
        elif override.is_interval_sweep():
            # Hydra reads both ends as floats: interval(0, 10) is a float too
            log_scale = "log" in value.tags
            space[key] = FloatDistribution(value.start, value.end, log=log_scale)
        else:
            raise ValueError(f"hydra.sweeper.search.{override.input_line}: not a search space")
    return space, fixed


def flat_keys(node: Any, prefix: str = "") -> dict[str, str]:
    """`hydra.sweeper.search` as `key: value` strings: a key added on the command line
    (`+hydra.sweeper.search.model.dropout=…`) arrives nested, the preset's keys dotted."""
    node = OmegaConf.to_container(node) if isinstance(node, DictConfig) else node
    out: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def is_search(config: DictConfig) -> bool:
    return str(config.hydra.sweeper.get("_target_", "")).endswith("StudyPerCellSweeper")


def grid_lines(config: DictConfig) -> list[str]:
    """The grid as `key=value` lines: the study's `hydra.sweeper.params`, then the command
    line (later ones win)."""
    params = config.hydra.sweeper.get("params")
    study = OmegaConf.to_container(params) if params else {}
    return [f"{k}={v}" for k, v in study.items()] + list(config.hydra.overrides.task)


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs a search of this config launches (cells × trials); None for a grid
    the sweeper will refuse."""
    try:
        return len(parse_grid(grid_lines(config)).cells) * int(config.hydra.sweeper.n_trials)
    except (ValueError, OverrideParseException):  # the sweeper says what is wrong
        return None
