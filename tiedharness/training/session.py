"""One model trained from its first step, or from a checkpoint, to its final evaluation.

The loop (loop.py) knows nothing of evaluation, checkpoints or costs; a `TrainingSession`
wires them in as named parts:

- `ValidationCurve`: the validation loss every `trainer.eval_every` steps, the curve
  of (tokens, validation loss) that convergence is judged on, and the seconds all
  evaluations took (`eval_s`);
- `Checkpointer`: checkpoint.pt (tiedharness/checkpoint.py) with the trainer's state, the
  curve, and how many history rows had been logged, so a resume cuts the history back;
- the output layer's cost profile (costs.py), measured before any resume so that the
  checkpoint's RNG states win;
- the evaluation at the end of each budget branch (branches.py), and `budgets`: the
  run's metrics at each budget, the whole budget last;
- the final evaluation, its decoded examples, and the final checkpoint;
- `on_validation(step, val_loss) -> bool` (optional, `OnValidation`): shown every
  validation loss on rank 0; True stops the run there, `pruned` (a search's pruner:
  tiedharness/sweep/pruning.py, handed in by the job; training imports none of it).

The job (tiedharness/job.py) builds the model and data before and records what it returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from tiedharness.checkpoint import save_checkpoint
from tiedharness.model.transformer import Transformer
from tiedharness.training.config import ANNEALED, TrainerConfig
from tiedharness.training.convergence import convergence
from tiedharness.training.costs import output_layer_costs
from tiedharness.training.device import synchronize
from tiedharness.training.distributed import Dist
from tiedharness.training.evaluation import Evaluator
from tiedharness.training.loop import Outcome, Row, Trainer

if TYPE_CHECKING:
    from tiedharness.tasks.data import TaskData


# What a budget records of the final evaluation: the same as a branch's end measures.
BUDGET_METRICS = (
    "val_loss",
    "val_ppl",
    "val_bpc",
    "bleu",
    "chrf",
    "exact_match",
    "decoded_examples",
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
        """What a budget branch's end is measured by: the validation loss, and where the
        task decodes, the decoded validation examples' scores."""
        with self._clock():
            row = self.evaluator.validation()
            if self.evaluator.decodes and self.evaluator.data.kind != "lm":
                cfg = self.trainer.cfg
                row.update(self.evaluator.decode_scores("valid", cfg.decode_examples, speed=False))
        return row


class Checkpointer:
    """checkpoint.pt in the run folder. Every rank calls `save` at the same step (FSDP2
    gathers the state from all of them); rank 0 writes."""

    def __init__(
        self, run_dir: Path, trainer: Trainer, curve: ValidationCurve, history: History, dist: Dist
    ) -> None:
        self.run_dir, self.trainer, self.curve = run_dir, trainer, curve
        self.history, self.dist = history, dist

    def save(self) -> None:
        state = {
            "trainer": self.trainer.state_dict(),
            "curve": self.curve.points,
            "history_rows": self.history.rows,
        }
        if self.dist.main:
            save_checkpoint(self.run_dir, state)

    def restore(self, checkpoint: dict) -> None:
        self.trainer.load_state_dict(checkpoint["trainer"])
        self.curve.points = [tuple(point) for point in checkpoint["curve"]]


class TrainingSession:
    def __init__(
        self,
        model: Transformer,
        data: TaskData,
        cfg: TrainerConfig,
        run_dir: Path,
        history: History,
        *,
        device: torch.device,
        dist: Dist,
    ) -> None:
        self.data, self.run_dir, self.dist = data, run_dir, dist
        self.trainer = Trainer(model, data, cfg, device=device, log=history.log, dist=dist)
        self.evaluator = Evaluator(self.trainer.model, data, cfg, device, dist)
        self.curve = ValidationCurve(self.evaluator, self.trainer)
        self.checkpointer = Checkpointer(run_dir, self.trainer, self.curve, history, dist)

    def costs(self, cache_dir: Path | None) -> dict:
        """The output layer's costs (tiedharness/training/costs.py); call before `resume`."""
        return output_layer_costs(self.trainer, self.data.vocab, cache_dir)

    @property
    def budgets(self) -> list[dict]:
        """The run's metrics at each budget evaluated so far, smallest first."""
        return sorted(self.trainer.branches.budgets, key=lambda b: b["fraction"])

    def resume(self, checkpoint: dict) -> None:
        self.checkpointer.restore(checkpoint)

    def run(
        self,
        stop: Callable[[], bool],
        progress: bool = False,
        say: Callable[[str], None] = lambda message: None,
        on_validation: OnValidation | None = None,
    ) -> tuple[Outcome, dict]:
        """Train until the budget is spent (then evaluate, decode and checkpoint the end),
        the loss diverges, `stop()` asks (`interrupted`) or `on_validation` does after a
        validation (`pruned`: no final evaluation, no checkpoint); returns how it ended
        and what was measured."""
        trainer = self.trainer
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
            return Outcome.pruned, {**trainer.summary(), "eval_s": self.curve.eval_s}
        metrics = dict(result.metrics)
        if result.outcome is Outcome.completed:
            say("final evaluation: validation and test loss, decoding…")
            self.checkpointer.save()  # the final one: what tiedharness-eval and a rerun start from
            final = self.curve.final()
            metrics.update(final)
            trainer.log(trainer.progress_row(**final))
            whole = {k: final[k] for k in BUDGET_METRICS if k in final}
            trainer.branches.budgets.append(
                {"fraction": 1.0, "step": trainer.step, "tokens": trainer.tokens, **whole}
            )
            if self.dist.main:
                write_decoded(self.run_dir, self.evaluator.decoded)
        metrics["eval_s"] = self.curve.eval_s
        return result.outcome, metrics

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


def write_decoded(run_dir: Path, decoded: dict[str, list[dict]]) -> None:
    """The decoded examples of each split, one JSON object a line (index into the split,
    hypothesis, reference): what BLEU was computed on, for paired tests between runs."""
    for split, rows in decoded.items():
        with (run_dir / f"decoded-{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
