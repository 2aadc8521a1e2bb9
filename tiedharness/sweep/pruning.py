"""Pruning a search's trials on the validation losses their runs report.

With `hydra.sweeper.pruner` set (docs/studies.md), the sweeper
(tiedharness/sweep/search.py) hands each trial's job who it is: the study's storage, the
study's name, the trial's number and the pruner, as one JSON value in the environment
variable `TIEDHARNESS_TRIAL` (Hydra's `hydra.job.env_set`, so it reaches the job under
any launcher: in-process, joblib's workers, submitit's jobs). The job (tiedharness/job.py)
builds a `TrialReporter` from it and hands it to its TrainingSession as `on_validation`:
every validation loss (each `trainer.eval_every` steps) is reported to the trial as the
intermediate value of that step, and the pruner's answer decides whether the run stops
there. A stopped run ends `pruned`; the sweeper reads that from its run record (`tell`)
and tells the study the trial was PRUNED.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from tiedharness.tracking.record import RunStatus
from tiedharness.tracking.run_folder import RunFolder

log = logging.getLogger(__name__)

ENV_VAR = "TIEDHARNESS_TRIAL"
PRUNING_DB = "optuna.db"  # a pruned search's studies, in its sweep folder, without storage
NO_PRUNER = ("none", "null", "")
ALIASES = {"median": "MedianPruner", "percentile": "PercentilePruner"}


def make_pruner(name: str | None, args: dict[str, Any] | None) -> Any:
    """Optuna's pruner called `name` (`median`, `percentile`, or a class of optuna.pruners
    by name, e.g. `ThresholdPruner`) built with `args` (its own keyword arguments); None
    for `none`. ValueError for a pruner Optuna has not, or arguments it does not take."""
    if name is None or str(name).lower() in NO_PRUNER:
        return None
    import optuna

    cls_name = ALIASES.get(str(name).lower(), str(name))
    cls = getattr(optuna.pruners, cls_name, None)
    if not isinstance(cls, type) or not issubclass(cls, optuna.pruners.BasePruner):
        known = ", ".join(["none", *ALIASES, "or a class of optuna.pruners"])
        raise ValueError(f"hydra.sweeper.pruner={name}: not a pruner; use {known}")
    try:
        return cls(**(args or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"hydra.sweeper.pruner_args {dict(args or {})} do not fit {cls_name}: {err}"
        ) from err


def pruning_problem(name: str, objective: str, direction: str) -> str | None:
    """Why a pruner cannot judge a search's trials by the validation losses they report
    (None: it can)."""
    if objective == "val_loss" and direction == "minimize":
        return None
    return (
        f"hydra.sweeper.pruner={name} prunes on the validation losses the runs report, "
        f"but the search {direction}s {objective}: set objective=val_loss and "
        "hydra.sweeper.direction=minimize, or hydra.sweeper.pruner=none"
    )


@dataclass
class TrialIdentity:
    """Which trial of which study a job is, and the pruner that judges it."""

    storage: str
    study: str
    number: int
    pruner: str
    pruner_args: dict[str, Any] = field(default_factory=dict)

    def env_override(self) -> str:
        """The Hydra override that sets `TIEDHARNESS_TRIAL` for the job: JSON in single
        quotes, with no quote, backslash-before-quote or `$` left to escape for Hydra."""
        text = json.dumps(asdict(self), sort_keys=True)
        text = text.replace("'", "\\u0027").replace("$", "\\u0024")
        return f"++hydra.job.env_set.{ENV_VAR}='{text}'"

    @classmethod
    def from_env(cls) -> TrialIdentity | None:
        text = os.environ.get(ENV_VAR)
        return cls(**json.loads(text)) if text else None


class TrialReporter:
    """`on_validation(step, val_loss) -> bool` for a trial's run: reports the loss to the
    trial and returns whether its pruner says stop. A storage that cannot be reached is
    logged once and the run goes on unpruned: losing the pruning loses no result."""

    def __init__(self, identity: TrialIdentity) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.identity = identity
        self.pruner = make_pruner(identity.pruner, identity.pruner_args)
        storage = optuna.storages.get_storage(identity.storage)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(identity.study), identity.number
        )
        study = optuna.load_study(study_name=identity.study, storage=storage, pruner=self.pruner)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.broken = False
        self.pruned_at: int | None = None

    def __call__(self, step: int, val_loss: float) -> bool:
        if self.broken:
            return False
        try:
            self.trial.report(val_loss, step)
            prune = self.trial.should_prune()
        except Exception as err:  # a busy or lost database: train on, unpruned
            log.warning(f"trial {self.identity.number}: cannot report to the study: {err}")
            self.broken = True
            return False
        if prune:
            self.pruned_at = step
        return prune

    def reason(self) -> str:
        """What the run record's `error` says of a pruned run."""
        return (
            f"pruned at step {self.pruned_at} by the search's {type(self.pruner).__name__} "
            f"(trial {self.identity.number} of {self.identity.study})"
        )


def trial_reporter() -> TrialReporter | None:
    """The reporter of this job's trial: None unless a search with a pruner launched it."""
    identity = TrialIdentity.from_env()
    if identity is None or str(identity.pruner).lower() in NO_PRUNER:
        return None
    try:
        return TrialReporter(identity)
    except Exception as err:  # the study cannot be read: train on, unpruned
        log.warning(f"trial {identity.number} of {identity.study}: no pruning: {err}")
        return None


# ---------------------------------------------------------------------------- the sweeper


def tell(study: Any, trial: int, job_return: JobReturn) -> None:
    """Tell the study how the trial's job ended: its objective, PRUNED when its run record
    says `pruned`, FAIL for anything else (the search goes on without it)."""
    import optuna

    # a job that raised (jobs record their errors, but Hydra could) failed
    done = job_return.status == JobStatus.COMPLETED
    value = job_return.return_value if done else None
    if isinstance(value, int | float) and math.isfinite(value):
        study.tell(trial, float(value))
    elif run_status(job_return) == RunStatus.pruned:  # its last validation loss is its value
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def run_status(job_return: JobReturn) -> RunStatus | None:
    """The status in the job's run record; None when there is none to read."""
    try:
        folder = RunFolder(job_return.hydra_cfg.hydra.runtime.output_dir)
        return folder.read_record().status
    except (AttributeError, ValueError):
        return None
