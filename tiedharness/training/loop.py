"""The one training loop, for every task and every sharing strategy.

`Trainer.fit` steps through token-budget batches until the budget (steps, target tokens
or wall-clock) is spent, logging the training loss every `log_every` steps, calling
`evaluate` every `eval_every` steps and `checkpoint` every `checkpoint_every` steps or
`checkpoint_every_s` seconds. At each step boundary it checks `stop` (a signal arrived):
then it checkpoints and returns `interrupted`. It knows nothing of evaluation, costs,
files or where the numbers go: tiedharness/training/session.py wires those in.
training/state.py turns it into everything a resumed run needs to continue exactly where
this one stopped.

A step is one optimizer update over `accum_steps` × world-size consecutive batches of the
epoch's order: each rank of a data-parallel run takes `accum_steps` of them, and the
gradient is the mean of the per-batch mean-loss gradients (DDP averages over ranks, the
accumulation over micro-batches), so N ranks and N-fold accumulation take the same
update. Target tokens are counted on the host from the batches' sizes, identically on
every rank; losses stay on the device until a log reads them (no host synchronisation
inside a step: a non-finite loss is seen at the next log).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import auto
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tiedharness.model.transformer import Transformer
from tiedharness.schema import Choice
from tiedharness.tasks.batching import Batch, collate, token_batches
from tiedharness.training.branches import Branch, BudgetBranches
from tiedharness.training.config import TrainerConfig
from tiedharness.training.device import resolve_device, synchronize
from tiedharness.training.distributed import Dist, data_parallel
from tiedharness.training.metrics import mean_loss
from tiedharness.training.optim import build_optimizer, lr_factor
from tiedharness.training.state import core_state, load_core_state

if TYPE_CHECKING:
    from tiedharness.tasks.data import TaskData

Row = dict[str, float]


class Outcome(Choice):
    """How `Trainer.fit` ended; the run record's status of the same name."""

    completed = auto()  # the budget is spent
    diverged = auto()  # a training loss was not finite
    interrupted = auto()  # `stop()` asked for it; a checkpoint was written
    pruned = auto()  # the session's `on_validation` hook asked to stop (a search's pruner)


@dataclass
class FitResult:
    outcome: Outcome
    metrics: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Trains `model` on `data`'s training split as `cfg` says. `device` overrides
    `cfg.device` (a rank's own GPU); `log` receives every progress row; `dist` is the
    process group of a data-parallel run."""

    def __init__(
        self,
        model: Transformer,
        data: TaskData,
        cfg: TrainerConfig,
        *,
        device: torch.device | None = None,
        log: Callable[[Row], None] = lambda row: None,
        dist: Dist | None = None,
    ) -> None:
        self.cfg, self.log = cfg, log
        self.examples, self.max_tokens = data.splits["train"], data.max_tokens  # training split
        self.device, self.dist = device or resolve_device(cfg.device), dist or Dist()
        self._order: tuple[int, list[Tensor]] | None = None  # (epoch, its batches)
        self._targets = self.examples.sizes()[1]  # target tokens per example (EOS included)
        self.model = model.to(self.device)
        self.parallel = data_parallel(self.model, cfg.fsdp, self.dist, self.device)  # DDP or FSDP2
        self.forward = torch.compile(self.parallel) if cfg.compile else self.parallel
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, tuple(cfg.betas))
        self.total_steps = self.expected_steps()  # the schedule's length
        self._schedules: dict[int | None, Callable[[int], float]] = {}  # budget → lr factor
        self.branches = BudgetBranches(cfg, self.total_steps)
        self.step = self.tokens = 0
        self.epoch = self.batch_in_epoch = 0  # the data order's position
        self.train_s = 0.0  # seconds inside training steps
        self.window: list[float] = []  # losses since the last log
        self.train_loss: float | None = None
        self.pending: list[Tensor] = []  # this rank's step losses, on the device, until a log
        self._clock: float | None = None  # when the current stretch of steps began
        self._time_up = False  # the wall-clock budget, as the ranks agreed

    @property
    def batches_per_step(self) -> int:
        return self.cfg.accum_steps * self.dist.world

    # ------------------------------------------------------------------ data order

    def batches(self, epoch: int) -> list[Tensor]:
        """Epoch `epoch`'s batches (example indices), shuffled by the seed and the epoch;
        the last epoch's order is kept (the schedule, the cost profile and the loop all
        start with epoch 0's)."""
        if self._order is None or self._order[0] != epoch:
            seed = self.cfg.seed * 100_003 + epoch
            order = token_batches(*self.examples.sizes(), self.max_tokens, shuffle=True, seed=seed)
            self._order = (epoch, order)
        return self._order[1]

    def expected_steps(self) -> int | None:
        """The budget in steps: max_steps, or for a token budget the steps it takes at
        epoch 0's mean batch size (the cosine schedule's length)."""
        if self.cfg.max_steps or not self.cfg.max_train_tokens:
            return self.cfg.max_steps
        per_step = len(self.batches(0)) // self.batches_per_step
        mean = float(self._targets.sum()) / max(per_step, 1)
        return math.ceil(self.cfg.max_train_tokens / max(mean, 1.0))

    def first_batch(self) -> Batch:
        return collate(self.examples, self.batches(0)[0]).to(self.device)

    # ------------------------------------------------------------------ steps

    def update(self, micro_batches: list[Batch]) -> Tensor:
        """One optimizer update over this rank's micro-batches; returns their mean loss,
        detached, on the device."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro_batches):
            with self._gradient_sync(i == len(micro_batches) - 1):
                loss, _ = mean_loss(
                    self.forward, self.model, batch, self.cfg.label_smoothing, self.cfg.precision
                )
                (loss / len(micro_batches)).backward()
            total += loss.detach()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total / len(micro_batches)

    def lr(self) -> float:
        """The learning rate of the next update: the schedule at this step of its budget
        (inside a budget branch, the branch's own shorter budget)."""
        total = self.branches.active.end if self.branches.active else self.total_steps
        if total not in self._schedules:  # one schedule per budget: built once, not per step
            self._schedules[total] = lr_factor(self.cfg, total)
        return self.cfg.lr * self._schedules[total](self.step)

    def _gradient_sync(self, last: bool):
        """Reduce the gradient over the ranks once per update: after the last micro-batch."""
        if self.cfg.fsdp:
            self.model.set_requires_gradient_sync(last)
        elif self.dist.active and not last:
            return self.parallel.no_sync()
        return nullcontext()

    def _step_batches(self, group: list[Tensor]) -> list[Batch]:
        """This rank's micro-batches of a step's group, on the device (pinned host memory
        and non-blocking copies on a GPU)."""
        k, rank = self.cfg.accum_steps, self.dist.rank
        pin = self.device.type == "cuda"
        return [
            collate(self.examples, idx).to(self.device, pin=pin)
            for idx in group[rank * k : (rank + 1) * k]
        ]

    def _clock_start(self) -> None:
        self._clock = time.perf_counter()

    def _clock_stop(self) -> None:
        """Add the steps since `_clock_start` to train_s; one device sync, here, not per step."""
        if self._clock is not None:
            synchronize(self.device)
            self.train_s += time.perf_counter() - self._clock
            self._clock = None

    def budget_spent(self) -> bool:
        """Steps or tokens spent (the same on every rank), or the wall-clock budget, once
        the ranks agreed it is."""
        c = self.cfg
        return bool(
            (c.max_steps and self.step >= c.max_steps)
            or (c.max_train_tokens and self.tokens >= c.max_train_tokens)
            or self._time_up
        )

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        evaluate: Callable[[], Row] | None = None,
        progress: bool = False,
        checkpoint: Callable[[], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
        evaluate_budget: Callable[[], Row] | None = None,
    ) -> FitResult:
        """Train until the budget is spent, the loss diverges or `stop()` says so;
        `evaluate` runs every `eval_every` steps but not at the last one: the caller
        evaluates (and checkpoints) the end. `evaluate_budget` measures the end of each
        budget branch (branches.py)."""
        from tqdm import tqdm

        if len(self.batches(0)) < self.batches_per_step:
            raise ValueError(
                f"an epoch has {len(self.batches(0))} batches, fewer than one update takes "
                f"(trainer.accum_steps={self.cfg.accum_steps} × {self.dist.world} ranks): "
                "lower trainer.accum_steps or task.max_tokens"
            )
        started = time.perf_counter() - self.train_s  # a resumed run's budget goes on
        self._checkpoint, self._stop, self._evaluate_budget = checkpoint, stop, evaluate_budget
        self._checkpointed_at = (self.step, time.perf_counter())
        self._clock_start()
        branch_steps = sum(b.end - b.fork for b in self.branches.plan)  # the bar counts them too
        bar = tqdm(
            total=(self.expected_steps() or 0) + branch_steps or None,
            initial=self.step,
            disable=not progress,
            unit="step",
            leave=False,
        )
        outcome = Outcome.completed
        self._time_up = False
        while outcome is Outcome.completed and not self.budget_spent():
            outcome = self._epoch(started, evaluate, bar)
        self._clock_stop()
        if outcome is Outcome.completed and not self._read_losses():
            outcome = Outcome.diverged
        bar.close()
        return FitResult(outcome, self.summary())

    def _epoch(self, started: float, evaluate: Callable[[], Row] | None, bar) -> Outcome:
        """Steps through the rest of the current epoch; returns how it ended. An
        epoch's last batches that do not fill a whole step (accumulation × ranks) are left
        out of it."""
        order, per_step = self.batches(self.epoch), self.batches_per_step
        while self.batch_in_epoch + per_step <= len(order):
            if branch := self.branches.due(self.step):
                self._fork(branch)
            group = order[self.batch_in_epoch : self.batch_in_epoch + per_step]
            self.pending.append(self.update(self._step_batches(group)))
            self.batch_in_epoch += per_step
            self.tokens += sum(int(self._targets[idx].sum()) for idx in group)  # every rank's
            bar.update(1)
            if self.step % self.cfg.log_every == 0 and not self._log_train_loss(bar):
                return Outcome.diverged
            stop, self._time_up, due = self.dist.agree(
                self._stop(), self._out_of_time(started), self._checkpoint_due()
            )  # every rank takes the same decisions (a checkpoint may need them all)
            if self.branches.active and self.step >= self.branches.active.end:
                self._join()
                return Outcome.completed  # the main run goes on from the fork's data position
            if self.budget_spent():
                return Outcome.completed
            in_branch = self.branches.active is not None
            if evaluate is not None and not in_branch and self.step % self.cfg.eval_every == 0:
                self._clock_stop()
                self.log(self.progress_row(**evaluate()))
                self._clock_start()
            if stop:
                self._save()
                return Outcome.interrupted
            if due:
                self._save()
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        return Outcome.completed

    def _fork(self, branch: Branch) -> None:
        """Enter `branch`: keep the main run's state, start a fresh loss window."""
        self._clock_stop()
        self.branches.fork(branch, copy.deepcopy(core_state(self)))
        self.window, self.pending = [], []
        self._clock_start()

    def _join(self) -> None:
        """End the active branch: evaluate it, log and record its budget, and restore the
        main run's state at the fork (its time, RNG and data position included)."""
        self._clock_stop()
        self._read_losses()
        metrics = self._evaluate_budget() if self._evaluate_budget else {}
        self.log(self.progress_row(**metrics))
        budget = {"fraction": self.branches.active.fraction, "step": self.step}
        main = self.branches.join({**budget, "tokens": self.tokens, **metrics})
        load_core_state(self, main)
        self._clock_start()

    def _out_of_time(self, started: float) -> bool:
        return bool(self.cfg.max_time_s and time.perf_counter() - started >= self.cfg.max_time_s)

    def _read_losses(self) -> bool:
        """Move the device-side step losses (averaged over ranks) into the log window;
        False when one is not finite."""
        if not self.pending:
            return True
        losses = self.dist.mean(torch.stack(self.pending)).tolist()  # the one host sync
        self.pending = []
        self.window.extend(losses)
        return all(math.isfinite(x) for x in losses)

    def _log_train_loss(self, bar) -> bool:
        self._clock_stop()
        finite = self._read_losses()
        self.train_loss = statistics.fmean(self.window)
        self.log(self.progress_row(train_loss=self.train_loss))
        bar.set_postfix(loss=f"{self.train_loss:.3f}")
        self.window = []
        self._clock_start()
        return finite

    def _checkpoint_due(self) -> bool:
        if self._checkpoint is None:
            return False
        every, every_s = self.cfg.checkpoint_every, self.cfg.checkpoint_every_s
        step, at = self._checkpointed_at
        return bool(
            (every and self.step - step >= every)
            or (every_s and time.perf_counter() - at >= every_s)
        )

    def _save(self) -> None:
        """Checkpoint: every rank calls it at the same step (FSDP2 gathers the state from
        all); the callback writes on rank 0."""
        if self._checkpoint is not None:
            self._clock_stop()
            self._checkpoint()
            self._checkpointed_at = (self.step, time.perf_counter())
            self._clock_start()

    def summary(self) -> Row:
        """What the loop measured: the last window's loss, counters, throughput."""
        if self.window:
            self.train_loss = statistics.fmean(self.window)
        out: Row = {} if self.train_loss is None else {"train_loss": self.train_loss}
        epochs = self.epoch + (1 if self.batch_in_epoch else 0)  # epochs begun
        out.update(steps=self.step, tokens=self.tokens, epochs=epochs)
        out["train_tokens_per_s"] = self.tokens_per_s()
        return out

    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s else 0.0

    def progress_row(self, **values: float) -> Row:
        """A history row; a budget branch's rows carry `branch`: its fraction."""
        row = {"step": self.step, "tokens": self.tokens, "lr": self.lr()}
        row["train_tokens_per_s"] = self.tokens_per_s()
        if self.branches.active is not None:
            row["branch"] = self.branches.active.fraction
        return {**row, **values}
