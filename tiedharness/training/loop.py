"""The one training loop, for every task and every sharing strategy.

`Trainer.fit` steps through token-budget batches until the budget (steps, target tokens
or wall-clock) is spent, logging the training loss every `log_every` steps, calling
`evaluate` every `eval_every` steps and `checkpoint` every `checkpoint_every` steps or
`checkpoint_every_s` seconds. At each step boundary it checks `stop` (a signal arrived):
then it checkpoints and returns `interrupted`. It knows nothing of evaluation, costs,
files or where the numbers go: `tiedharness/job.py` wires those in. `state_dict()` holds
everything a resumed run needs to continue exactly where this one stopped.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tiedharness.model.transformer import Transformer
from tiedharness.tasks.batching import Batch, EncodedSplit, collate, token_batches
from tiedharness.training.config import TrainerConfig
from tiedharness.training.device import autocast, synchronize
from tiedharness.training.metrics import token_loss
from tiedharness.training.optim import build_optimizer, lr_factor

Row = dict[str, float]


@dataclass
class TrainResult:
    status: str  # completed | diverged | interrupted
    metrics: dict[str, float] = field(default_factory=dict)


def model_inputs(model: Transformer, batch: Batch) -> tuple[Tensor, ...]:
    return (batch.src, batch.tgt_in) if model.arch == "encdec" else (batch.tgt_in,)


def mean_loss(
    forward: Callable[..., Tensor], model: Transformer, batch: Batch, smoothing: float, precision
) -> tuple[Tensor, int]:
    """The batch's mean label-smoothed loss per target token, and the token count."""
    with autocast(batch.tgt_out.device, precision):
        logits = forward(*model_inputs(model, batch))
    loss_sum, n = token_loss(logits, batch.tgt_out, smoothing)
    return loss_sum / max(n, 1), n


class Trainer:
    def __init__(
        self,
        model: Transformer,
        train: EncodedSplit,
        max_tokens: int,
        cfg: TrainerConfig,
        device: torch.device,
        log: Callable[[Row], None] = lambda row: None,
    ) -> None:
        self.cfg, self.train, self.max_tokens, self.log = cfg, train, max_tokens, log
        self.device = device
        self._order: tuple[int, list[Tensor]] | None = None  # (epoch, its batches)
        self.model = model.to(device)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, tuple(cfg.betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.expected_steps())
        )
        self.step = self.tokens = 0
        self.epoch = self.batch_in_epoch = 0  # the data order's position
        self.train_s = 0.0  # seconds inside training steps
        self.window: list[float] = []  # losses since the last log
        self.train_loss: float | None = None

    # ------------------------------------------------------------------ data order

    def batches(self, epoch: int) -> list[Tensor]:
        """Epoch `epoch`'s batches (example indices), shuffled by the seed and the epoch;
        the last epoch's order is kept (the schedule, the cost profile and the loop all
        start with epoch 0's)."""
        if self._order is None or self._order[0] != epoch:
            seed = self.cfg.seed * 100_003 + epoch
            order = token_batches(*self.train.sizes(), self.max_tokens, shuffle=True, seed=seed)
            self._order = (epoch, order)
        return self._order[1]

    def expected_steps(self) -> int | None:
        """The budget in steps: max_steps, or for a token budget the steps it takes at
        epoch 0's mean batch size (the cosine schedule's length)."""
        if self.cfg.max_steps or not self.cfg.max_train_tokens:
            return self.cfg.max_steps
        batches = self.batches(0)
        targets = self.train.sizes()[1]  # predicted tokens per example (EOS included)
        mean = float(targets.sum()) / max(len(batches), 1)
        return math.ceil(self.cfg.max_train_tokens / max(mean, 1.0))

    def first_batch(self) -> Batch:
        return collate(self.train, self.batches(0)[0]).to(self.device)

    # ------------------------------------------------------------------ steps

    def train_step(self, batch: Batch) -> float:
        self.model.train()
        loss, n = mean_loss(
            self.forward, self.model, batch, self.cfg.label_smoothing, self.cfg.precision
        )
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += n
        return float(loss.detach())

    def _timed_step(self, batch: Batch) -> float:
        synchronize(self.device)
        t0 = time.perf_counter()
        loss = self.train_step(batch)
        synchronize(self.device)
        self.train_s += time.perf_counter() - t0
        return loss

    def budget_spent(self, started: float) -> bool:
        c = self.cfg
        return bool(
            (c.max_steps and self.step >= c.max_steps)
            or (c.max_train_tokens and self.tokens >= c.max_train_tokens)
            or (c.max_time_s and time.perf_counter() - started >= c.max_time_s)
        )

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        evaluate: Callable[[], Row] | None = None,
        progress: bool = False,
        checkpoint: Callable[[], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> TrainResult:
        """Train until the budget is spent, the loss diverges or `stop()` says so;
        `evaluate` runs every `eval_every` steps but not at the last one: the caller
        evaluates (and checkpoints) the end."""
        from tqdm import tqdm

        started = time.perf_counter() - self.train_s  # a resumed run's budget goes on
        self._checkpoint, self._stop = checkpoint, stop
        self._checkpointed_at = (self.step, time.perf_counter())
        bar = tqdm(
            total=self.expected_steps(),
            initial=self.step,
            disable=not progress,
            unit="step",
            leave=False,
        )
        status = "completed"
        while status == "completed" and not self.budget_spent(started):
            status = self._epoch(started, evaluate, bar)
        bar.close()
        return TrainResult(status, self.summary())

    def _epoch(self, started: float, evaluate: Callable[[], Row] | None, bar) -> str:
        """Steps through the rest of the current epoch; returns the run's status."""
        order = self.batches(self.epoch)
        for idx in order[self.batch_in_epoch :]:
            loss = self._timed_step(collate(self.train, idx).to(self.device))
            self.batch_in_epoch += 1
            if not math.isfinite(loss):
                self.log({"step": self.step, "tokens": self.tokens, "train_loss": loss})
                return "diverged"
            self._record_loss(loss, bar)
            if self.budget_spent(started):
                return "completed"
            if evaluate is not None and self.step % self.cfg.eval_every == 0:
                self.log(self.progress_row(**evaluate()))
            if self._stop():
                self._save()
                return "interrupted"
            if self._checkpoint_due():
                self._save()
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        return "completed"

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
        if self._checkpoint is not None:
            self._checkpoint()
            self._checkpointed_at = (self.step, time.perf_counter())

    def _record_loss(self, loss: float, bar) -> None:
        self.window.append(loss)
        bar.update(1)
        if self.step % self.cfg.log_every == 0:
            self.train_loss = statistics.fmean(self.window)
            self.log(self.progress_row(train_loss=self.train_loss))
            bar.set_postfix(loss=f"{self.train_loss:.3f}")
            self.window = []

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
        return {
            "step": self.step,
            "tokens": self.tokens,
            "lr": self.scheduler.get_last_lr()[0],
            "train_tokens_per_s": self.tokens_per_s(),
            **values,
        }

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        """Model (each tied tensor once), optimizer, schedule, counters, data position,
        the loss window and the RNG states: enough to continue bit for bit on CPU."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "counters": {
                "step": self.step,
                "tokens": self.tokens,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "train_s": self.train_s,
            },
            "window": list(self.window),
            "train_loss": self.train_loss,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        self.window, self.train_loss = list(state["window"]), state["train_loss"]
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        random.setstate(state["rng"]["python"])
