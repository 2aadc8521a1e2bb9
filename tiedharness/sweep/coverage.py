"""Where a search's trials go: spread evenly over the range, and past its edge when the
best lies there.

- `LogGridSampler` (`hydra/sweeper/sampler=log_grid`): over a study's first `n_points`
  trials each searched parameter takes `n_points` values spread evenly over its range,
  both ends included — on the log scale for `tag(log, …)`, so 6 rates in 2e-3 … 6.4e-2
  are 2e-3, 4e-3, …, 6.4e-2, an octave apart — each value once, in a seeded order of its
  own per parameter (with several parameters, a Latin hypercube on the grids). A Sobol
  sequence of a few points leaves gaps and near-duplicates and never tries the ends; a
  grid has neither, and its order is the same in every cell, so the cells' trials pair.
- The edge rule (`edge_trials`, run by search.py after a cell's `n_trials`): while a
  cell's best value of a log-scaled parameter is the lowest or the highest value its
  trials tried, the next trial tries one octave past it (÷2 or ×2), its other settings
  the best's, until the best is bracketed or the cap is reached; `at_edge` names what is
  still at an edge for the results and the report (`lr_at_edge`).

A trial tried a value once it finished, whatever its state: a rate that diverged (failed)
or trailed (pruned) was tried and lost, so it brackets the best as a worse completed one
does. Only completed trials can be the best.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

EXTENDS = "extends"  # user attribute of a trial the edge rule added: what it extends
LOWEST, HIGHEST = "lowest", "highest"


def tidy(value: float) -> float:
    """A float without its last bits of rounding noise (2e-3 × 2 is 0.004, not
    0.004000000000000001), so that rates read cleanly in configs and folder listings."""
    return float(f"{value:.12g}")


def spread(distribution: BaseDistribution, n: int) -> list[Any]:
    """`n` values spread evenly over a distribution, both ends included (one value: the
    middle): on the log scale when it is log-scaled, on its step when it has one; a
    categorical's choices in turn."""
    if isinstance(distribution, CategoricalDistribution):
        return [distribution.choices[i % len(distribution.choices)] for i in range(n)]
    low, high = distribution.low, distribution.high
    shares = [i / (n - 1) for i in range(n)] if n > 1 else [0.5]
    if distribution.log:
        values = [low * (high / low) ** s for s in shares]
    else:
        values = [low + (high - low) * s for s in shares]
    step = getattr(distribution, "step", None)
    if step:  # onto the distribution's own grid
        values = [low + step * round((v - low) / step) for v in values]
    if isinstance(distribution, FloatDistribution):
        values = [min(max(tidy(v), low), high) for v in values]
        if n > 1:
            values[0], values[-1] = low, high
        return values
    return [round(v) for v in values]


class LogGridSampler(BaseSampler):
    """Trial t < `n_points` takes, for each parameter, one of its `n_points` evenly spread
    values (`spread`), in an order seeded by `seed` and the parameter's name; later trials
    (more trials than points) are drawn at random."""

    def __init__(self, n_points: int, seed: int = 0) -> None:
        self.n_points, self.seed = int(n_points), seed
        self._random = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(
        self, study: Any, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> Any:
        if trial.number >= self.n_points:
            return self._random.sample_independent(study, trial, name, distribution)
        # a string seed is hashed the same way in every process (not by PYTHONHASHSEED)
        order = random.Random(f"{self.seed}-{name}").sample(range(self.n_points), self.n_points)
        return spread(distribution, self.n_points)[order[trial.number]]


# ---------------------------------------------------------------------------- edge rule


def log_scaled(space: dict[str, BaseDistribution]) -> list[str]:
    return [k for k, d in space.items() if isinstance(d, FloatDistribution) and d.log]


def at_edge(study: Any, space: dict[str, BaseDistribution]) -> dict[str, list[str]]:
    """Each log-scaled parameter whose best value (over completed trials) is the lowest
    and/or the highest value the finished trials tried → those sides; {} when every best
    is bracketed, or when no trial completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    best = study.best_trial
    tried = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    edges = {}
    for name in log_scaled(space):
        if name not in best.params:  # a key the best trial did not take
            continue
        values = [t.params[name] for t in tried if name in t.params]
        value = best.params[name]
        sides = [side for side, end in ((LOWEST, min), (HIGHEST, max)) if value == end(values)]
        if sides:
            edges[name] = sides
    return edges


def edge_trials(study: Any, space: dict[str, BaseDistribution]) -> list[tuple[dict, str]]:
    """The trials the edge rule asks for next, as (params, what it extends, e.g.
    `trainer.lr highest`): for each side a parameter's best is at, the best's settings
    with that parameter one octave past it."""
    proposals = []
    for name, sides in at_edge(study, space).items():
        best = study.best_trial.params
        for side in sides:
            value = tidy(best[name] / 2 if side == LOWEST else best[name] * 2)
            proposals.append(({**best, name: value}, f"{name} {side}"))
    return proposals


def covering(space: dict[str, BaseDistribution], params: dict[str, Any]) -> dict:
    """The search space with each float range widened to hold `params`: an extension
    trial's rate lies outside the range searched (Optuna compares ranges only by kind)."""
    wide = dict(space)
    for name, value in params.items():
        dist = space.get(name)
        if isinstance(dist, FloatDistribution) and not dist.low <= value <= dist.high:
            wide[name] = FloatDistribution(
                min(dist.low, value), max(dist.high, value), log=dist.log, step=dist.step
            )
    return wide


def ask_extension(study: Any, space: dict, params: dict, extends: str) -> optuna.trial.Trial:
    """A trial at exactly `params`, marked as the edge rule's. A waiting copy a killed
    start enqueued is asked instead of a second one."""
    study.enqueue_trial(params, user_attrs={EXTENDS: extends}, skip_if_exists=True)
    return study.ask(covering(space, params))


def edge_batches(
    study: Any, space: dict, n_jobs: int, max_extensions: int, label: str = ""
) -> Iterator[list[tuple[int, dict]]]:
    """The edge rule's trials as (trial number, params), `n_jobs` at a time, round after
    round (each reads the results of the last, told between yields), until every best of
    a log-scaled parameter is bracketed or the cell has `max_extensions` of them."""
    while True:
        added = sum(EXTENDS in t.user_attrs for t in study.trials)
        proposals = edge_trials(study, space)[: max(0, max_extensions - added)]
        if not proposals:
            return
        batch = []
        for params, extends in proposals:
            trial = ask_extension(study, space, params, extends)
            batch.append((trial.number, trial.params))
            name, side = extends.split()
            log.info(f"{label or 'search'}: best {name} is the {side} tried; trying {params}")
        for start in range(0, len(batch), n_jobs):
            yield batch[start : start + n_jobs]


def scaled(value: int | float, fraction: float) -> int | float:
    """A budget value times a fraction: steps and tokens stay whole (at least 1)."""
    return max(1, round(value * fraction)) if isinstance(value, int) else value * fraction


def pruned_step(trial: FrozenTrial) -> int | None:
    """The step a pruned trial stopped at: its last reported validation."""
    if trial.state != TrialState.PRUNED or not trial.intermediate_values:
        return None
    return max(trial.intermediate_values)
