"""One model trained from its first step, or from a checkpoint, to its final evaluation.

The loop (loop.py) knows nothing of evaluation, checkpoints or costs; a `TrainingSession`
wires them in as named parts:

- `ValidationCurve`: the validation loss every `trainer.eval_every` steps, the curve
  of (tokens, validation loss) that convergence is judged on, and the seconds all
  evaluations took (`eval_s`);
- `Checkpointer`: the checkpoint (tiedharness/checkpoint.py) of the trainer's state, the
  curve, and how many history rows had been logged, so a resume cuts the history back;
  the job hands in where it is written;
- the output layer's cost profile (costs.py), measured before any resume so that the
  checkpoint's RNG states win;
- the evaluation at the end of each budget branch (branches.py, which keeps the run's
  metrics at each budget, the whole budget last);
- the final evaluation, its decoded examples, and the final checkpoint;
- `on_validation(step, val_loss) -> bool` (optional, `OnValidation`): shown every
  validation loss on rank 0; True stops the run there, `pruned` (a search's pruner:
  tiedharness/sweep/pruning.py, handed in by the job; training imports none of it).

The job (tiedharness/job.py) builds the model and data before and records what it returns
(`Trained`); the session writes no file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from tiedharness.checkpoint import curve, make_checkpoint, trainer_state
from tiedharness.model.transformer import Transformer
from tiedharness.training.config import ANNEALED, TrainerConfig
from tiedharness.training.convergence import convergence
from tiedharness.training.costs import output_layer_costs
from tiedharness.training.device import synchronize
from tiedharness.training.distributed import Dist
from tiedharness.training.evaluation import Evaluator
from tiedharness.training.loop import Outcome, Row, Trainer
from tiedharness.training.state import load_trainer_state, trainer_state_dict

if TYPE_CHECKING:
    from tiedharness.tasks.data import TaskData


# What a budget records, at a branch's end and at the run's: the validation metrics (what
# a best budget is selected on) and the test metrics (what a verdict reads).
_SCORES = ("bleu", "chrf", "exact_match", "decoded_examples")
BUDGET_METRICS = (
    "val_loss",
    "val_ppl",
    "val_bpc",
    *_SCORES,
    "test_loss",
    "test_bpc",
    *(f"test_{score}" for score in _SCORES),
)


class History(Protocol):
    """Where progress rows go (the run's trackers), and how many went there so far."""

    @property
    def rows(self) -> int: ...

    def log(self, row: Row) -> None: ...


# Shown each validation loss as (step, val_loss); returns True to stop the run there.
OnValidation = Callable[[int, float], bool]


class _StopAfterValidation(Exception):
    """Raised out of the loop's evaluation when `on_validation` asked to stop."""


@dataclass
class Trained:
    """How a session ended and what it measured, for the job to record."""

    outcome: Outcome
    metrics: dict
    budgets: list[dict] = field(default_factory=list)  # the metrics at each budget, smallest first
    decoded: dict[str, list[dict]] = field(default_factory=dict)  # split → decoded examples


class ValidationCurve:
    """The evaluation the loop runs every `eval_every` steps, and the curve it draws."""

    def __init__(self, evaluator: Evaluator, trainer: Trainer) -> None:
        self.evaluator, self.trainer = evaluator, trainer
        self.points: list[tuple[int, float]] = []  # (tokens, validation loss)
        # seconds spent evaluating in this start of the job, like wall_s (not checkpointed)
        self.eval_s = 0.0

    @contextmanager
    def _clock(self) -> Iterator[None]:
        # the loop stops (and syncs) its training clock before every evaluation; the sync
        # after it counts the evaluation's queued GPU work here
        started = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.evaluator.device)
            self.eval_s += time.perf_counter() - started

    def evaluate(self) -> Row:
        with self._clock():
            row = self.evaluator.validation()
        self.points.append((self.trainer.tokens, row["val_loss"]))
        return row

    def final(self) -> dict[str, float]:
        """The end-of-run evaluation, and whether the curve had converged: measured only
        where the schedule leaves the learning rate up at the end (constant, inverse_sqrt).
        A schedule that anneals to zero flattens the tail by construction."""
        with self._clock():
            final = self.evaluator.final()
        self.points.append((self.trainer.tokens, final["val_loss"]))
        cfg = self.trainer.cfg
        verdict = convergence(
            self.points, cfg.converge_window, cfg.converge_tolerance, cfg.converge_tolerance_abs
        )
        if cfg.schedule in ANNEALED:
            verdict["converged"] = None
            verdict["convergence_note"] = (
                f"not measured: trainer.schedule={cfg.schedule} anneals the learning rate to "
                "zero, so the curve's tail is flat by construction; compare at several "
                "budgets (trainer.branch_at) instead"
            )
        return {**final, **verdict}

    def budget(self) -> dict[str, float]:
        """What a budget branch's end is measured by: what the run's end is (BUDGET_METRICS:
        validation and test loss, and where the task decodes, both splits' scores)."""
        with self._clock():
            measured = self.evaluator.final(speed=False)
        return {k: measured[k] for k in BUDGET_METRICS if k in measured}


# Writes a checkpoint where the job keeps it (rank 0 only is handed one).
WriteCheckpoint = Callable[[dict], None]


class Checkpointer:
    """The run's checkpoint. Every rank calls `save` at the same step (FSDP2 gathers the
    state from all of them); rank 0 writes."""

    def __init__(
        self,
        write: WriteCheckpoint,
        trainer: Trainer,
        curve: ValidationCurve,
        history: History,
        dist: Dist,
    ) -> None:
        self.write, self.trainer, self.curve = write, trainer, curve
        self.history, self.dist = history, dist

    def save(self) -> None:
        state = trainer_state_dict(self.trainer)
        if self.dist.main:
            self.write(make_checkpoint(state, self.curve.points, self.history.rows))

    def restore(self, checkpoint: dict) -> None:
        load_trainer_state(self.trainer, trainer_state(checkpoint))
        self.curve.points = curve(checkpoint)


class TrainingSession:
    def __init__(
        self,
        model: Transformer,
        data: TaskData,
        cfg: TrainerConfig,
        history: History,
        write_checkpoint: WriteCheckpoint,
        *,
        device: torch.device,
        dist: Dist,
    ) -> None:
        self.data, self.dist = data, dist
        self.trainer = Trainer(model, data, cfg, device=device, log=history.log, dist=dist)
        self.evaluator = Evaluator(self.trainer.model, data, cfg, device, dist)
        self.curve = ValidationCurve(self.evaluator, self.trainer)
        self.checkpointer = Checkpointer(write_checkpoint, self.trainer, self.curve, history, dist)

    def costs(self, cache_dir: Path | None) -> dict:
        """The output layer's costs (tiedharness/training/costs.py), measured before `run`
        restores a checkpoint, so that the checkpoint's RNG states win."""
        return output_layer_costs(self.trainer, self.data.vocab, cache_dir)

    def run(
        self,
        stop: Callable[[], bool],
        resume_from: dict | None = None,
        progress: bool = False,
        say: Callable[[str], None] = lambda message: None,
        on_validation: OnValidation | None = None,
    ) -> Trained:
        """Train (from the checkpoint `resume_from`, if given) until the budget is spent
        (then evaluate, decode and checkpoint the end), the loss diverges, `stop()` asks
        (`interrupted`) or `on_validation` does after a validation (`pruned`: no final
        evaluation, no checkpoint); returns how it ended and what was measured."""
        trainer = self.trainer
        if resume_from is not None:
            self.checkpointer.restore(resume_from)
        watched = on_validation is not None or self.dist.active  # every rank asks rank 0
        evaluate = self._watched(on_validation) if watched else self.curve.evaluate
        try:
            result = trainer.fit(
                evaluate,
                progress=progress,
                checkpoint=self.checkpointer.save,
                stop=stop,
                evaluate_budget=self.curve.budget,
            )
        except _StopAfterValidation:
            metrics = {**trainer.summary(), "eval_s": self.curve.eval_s}
            return Trained(Outcome.pruned, metrics, trainer.branches.budgets)
        metrics = dict(result.metrics)
        if result.outcome is Outcome.completed:
            say("final evaluation: validation and test loss, decoding…")
            self.checkpointer.save()  # the final one: what tiedharness-eval and a rerun start from
            final = self.curve.final()
            metrics.update(final)
            trainer.log(trainer.progress_row(**final))
            whole = {k: final[k] for k in BUDGET_METRICS if k in final}
            trainer.branches.record_whole(trainer.step, trainer.tokens, whole)
        metrics["eval_s"] = self.curve.eval_s
        decoded = self.evaluator.decoded if self.dist.main else {}
        return Trained(result.outcome, metrics, trainer.branches.budgets, decoded)

    def _watched(self, on_validation: OnValidation | None) -> Callable[[], Row]:
        """The curve's evaluation, shown to rank 0's `on_validation` (the other ranks have
        none and follow its answer); a stop logs the validation row, as the loop would,
        and leaves the loop."""

        def evaluate() -> Row:
            row = self.curve.evaluate()
            ask = self.dist.main and on_validation is not None
            wants = ask and bool(on_validation(self.trainer.step, row["val_loss"]))
            (stop,) = self.dist.agree(wants)
            if stop:
                self.trainer.log(self.trainer.progress_row(**row))
                raise _StopAfterValidation
            return row

        return evaluate
