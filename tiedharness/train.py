"""The one training loop, for every task and every sharing strategy.

train() runs: measure the step's costs once (FLOPs and time shares of the output layer),
then steps until the budget (steps, target tokens or wall-clock) is spent, evaluating
every `eval_every` steps and at the end, then decodes a fixed validation subset (and the
test set) for exact match / BLEU / chrF and inference throughput. Every number goes out
through `log` (history) and the returned metrics (summary); where it goes is not this
module's business.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tiedharness.config import reject_unknown
from tiedharness.decoding import greedy_continue, greedy_translate
from tiedharness.metrics import (
    bleu_chrf,
    count_flops,
    exact_match,
    module_share,
    perplexity,
    softmax_flops_per_token,
    token_loss,
)
from tiedharness.model import EOS_ID, PAD_ID, Transformer
from tiedharness.optim import build_optimizer
from tiedharness.tasks.batching import Batch, collate, token_batches
from tiedharness.tasks.data import TaskData
from tiedharness.tasks.tokenize import decode


@dataclass
class TrainerConfig:
    """The `trainer` config group."""

    seed: int = 0
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 (autocast; on CPU too)
    compile: bool = False  # torch.compile the training forward
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01  # policy in tiedharness/optim.py
    warmup_steps: int = 200
    schedule: str = "inverse_sqrt"  # inverse_sqrt | cosine (needs max_steps) | constant
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    label_smoothing: float = 0.1
    max_steps: int | None = 2000  # budget: the first of steps, tokens, seconds to run out
    max_train_tokens: int | None = None  # target tokens
    max_time_s: float | None = None  # wall-clock of the training loop
    eval_every: int = 500  # steps between validation-loss evaluations
    eval_batches: int | None = None  # cap validation batches (null: whole split)
    decode_examples: int = 200  # fixed validation subset decoded for quality and speed
    test_examples: int | None = None  # test examples decoded at the end (null: all; 0: none)
    log_every: int = 50
    num_threads: int | None = None  # torch threads (null: cores divided among parallel jobs)
    deterministic: bool = True
    profile: bool = True  # measure FLOP and time shares of the output layer on batch 0

    def __post_init__(self) -> None:
        if not (self.max_steps or self.max_train_tokens or self.max_time_s):
            raise ValueError(
                "the training budget is unbounded: set trainer.max_steps, "
                "trainer.max_train_tokens or trainer.max_time_s"
            )
        if self.schedule == "cosine" and not self.max_steps:
            raise ValueError("trainer.schedule=cosine needs trainer.max_steps to know its length")
        if self.schedule not in ("inverse_sqrt", "cosine", "constant"):
            raise ValueError(
                f"trainer.schedule={self.schedule!r} is not one of inverse_sqrt, cosine, constant"
            )
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"trainer.precision={self.precision!r} is not one of fp32, bf16")
        self.betas = tuple(self.betas)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        reject_unknown("trainer", values, cls)
        return cls(**values)


@dataclass
class TrainResult:
    status: str  # completed | diverged
    metrics: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def lr_factor(cfg: TrainerConfig) -> Callable[[int], float]:
    """Linear warmup, then inverse-sqrt decay (Vaswani et al.), cosine to zero, or flat."""
    warmup = max(cfg.warmup_steps, 1)

    def factor(step: int) -> float:
        s = step + 1
        if s < warmup:
            return s / warmup
        if cfg.schedule == "inverse_sqrt":
            return math.sqrt(warmup / s)
        if cfg.schedule == "cosine":
            progress = min((s - warmup) / max(cfg.max_steps - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def model_inputs(model: Transformer, batch: Batch) -> tuple[Tensor, ...]:
    return (batch.src, batch.tgt_in) if model.arch == "encdec" else (batch.tgt_in,)


class Trainer:
    def __init__(
        self,
        model: Transformer,
        data: TaskData,
        cfg: TrainerConfig,
        log: Callable[[dict], None] = lambda row: None,
        progress: bool = False,
    ) -> None:
        self.cfg, self.data, self.log, self.progress = cfg, data, log, progress
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg))
        self.step = self.tokens = 0
        self.train_s = 0.0

    def autocast(self):
        if self.cfg.precision != "bf16":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # ------------------------------------------------------------------ training

    def loss(self, batch: Batch, forward: Callable | None = None) -> tuple[Tensor, int]:
        with self.autocast():
            logits = (forward or self.forward)(*model_inputs(self.model, batch))
        loss_sum, n = token_loss(logits, batch.tgt_out, self.cfg.label_smoothing)
        return loss_sum / max(n, 1), n

    def train_step(self, batch: Batch) -> float:
        self.model.train()
        loss, n = self.loss(batch)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += n
        return float(loss.detach())

    def budget_spent(self, started: float) -> bool:
        c = self.cfg
        return bool(
            (c.max_steps and self.step >= c.max_steps)
            or (c.max_train_tokens and self.tokens >= c.max_train_tokens)
            or (c.max_time_s and time.perf_counter() - started >= c.max_time_s)
        )

    def batches(self, epoch: int) -> list[Tensor]:
        sizes = self.data.splits["train"].sizes()
        budget = self.data.task.cfg.max_tokens
        return token_batches(*sizes, budget, shuffle=True, seed=self.cfg.seed * 100_003 + epoch)

    def run(self) -> TrainResult:
        from tqdm import tqdm

        metrics = self.static_metrics()
        if self.cfg.profile:
            first = collate(self.data.splits["train"], self.batches(0)[0]).to(self.device)
            metrics.update(self.profile_step(first))
        started = time.perf_counter()
        bar = tqdm(total=self.cfg.max_steps, disable=not self.progress, unit="step", leave=False)
        window: list[float] = []
        status, epoch = "completed", 0
        while not self.budget_spent(started) and status == "completed":
            for idx in self.batches(epoch):
                batch = collate(self.data.splits["train"], idx).to(self.device)
                self._sync()
                t0 = time.perf_counter()
                loss = self.train_step(batch)
                self._sync()
                self.train_s += time.perf_counter() - t0
                if not math.isfinite(loss):
                    status = "diverged"
                    self.log({"step": self.step, "tokens": self.tokens, "train_loss": loss})
                    break
                window.append(loss)
                bar.update(1)
                if self.step % self.cfg.log_every == 0:
                    metrics["train_loss"] = statistics.fmean(window)
                    self.log(self.progress_row(train_loss=metrics["train_loss"]))
                    bar.set_postfix(loss=f"{metrics['train_loss']:.3f}")
                    window = []
                if self.budget_spent(started):
                    break  # the final evaluation below covers this step
                if self.step % self.cfg.eval_every == 0:
                    self.log(self.progress_row(**self.validation()))
            epoch += 1
        bar.close()
        if window:
            metrics["train_loss"] = statistics.fmean(window)
        metrics.update(steps=self.step, tokens=self.tokens, epochs=epoch)
        metrics["train_tokens_per_s"] = self.tokens / self.train_s if self.train_s else 0.0
        if status == "completed":
            final = self.validation()
            final.update(self.decode_metrics("valid", self.cfg.decode_examples))
            if self.data.splits["test"] and self.cfg.test_examples != 0:
                test = self.decode_metrics("test", self.cfg.test_examples, speed=False)
                test["loss"] = self.validation_loss("test")
                final.update({f"test_{k}": v for k, v in test.items()})
            metrics.update(final)
            self.log(self.progress_row(**final))
        metrics["wall_s"] = time.perf_counter() - started  # the caller may widen this
        metrics["peak_mem_mb"] = self.peak_memory_mb()
        return TrainResult(status, metrics)

    def progress_row(self, **values: float) -> dict:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "lr": self.scheduler.get_last_lr()[0],
            "train_tokens_per_s": self.tokens / self.train_s if self.train_s else 0.0,
            **values,
        }

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def validation_loss(self, split: str = "valid") -> float:
        """Mean cross-entropy per target token, without label smoothing."""
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.data.batches(split, limit=self.cfg.eval_batches or None):
            batch = batch.to(self.device)
            with self.autocast():
                logits = self.model(*model_inputs(self.model, batch))
            loss_sum, n = token_loss(logits, batch.tgt_out)
            total, count = total + float(loss_sum), count + n
        return total / count if count else float("nan")

    def validation(self) -> dict[str, float]:
        loss = self.validation_loss()
        return {"val_loss": loss, "val_ppl": perplexity(loss)}

    @torch.no_grad()
    def decode_metrics(self, split: str, n_examples: int | None, speed: bool = True) -> dict:
        """Greedy outputs with the KV cache on the first `n_examples` of `split`:
        exact match / BLEU / chrF as the task asks, and generated tokens per second."""
        if self.model.arch == "lm":
            return self._lm_speed(split, n_examples) if speed else {}
        hypotheses, references, generated, seconds = self._translate(split, n_examples)
        out: dict[str, float] = {}
        scores = self.data.task.scores
        if "exact_match" in scores:
            out["exact_match"] = exact_match(hypotheses, references)
        if "bleu" in scores:
            out["bleu"], out["chrf"] = bleu_chrf(hypotheses, references)
        if speed:
            out["infer_tokens_per_s"] = generated / seconds if seconds else 0.0
        return out

    def _translate(self, split: str, n_examples: int | None) -> tuple[list, list, int, float]:
        data = self.data.splits[split]
        n = len(data) if n_examples is None else min(n_examples, len(data))
        subset = torch.arange(n)
        src_sizes, tgt_sizes = (s[:n] for s in data.sizes())
        budget = self.data.task.cfg.max_tokens
        hypotheses: list[str] = [""] * n
        generated, seconds = 0, 0.0
        for idx in token_batches(src_sizes, tgt_sizes, budget, shuffle=False):
            batch = collate(data, subset[idx]).to(self.device)
            max_len = min(self.model.cfg.max_len - 1, 2 * batch.src.shape[1] + 10)
            self._sync()
            t0 = time.perf_counter()
            with self.autocast():
                out = greedy_translate(self.model, batch.src, max_len)
            self._sync()
            seconds += time.perf_counter() - t0
            generated += int((out != PAD_ID).sum())
            for row, i in zip(out.tolist(), idx.tolist(), strict=True):
                ids = row[: row.index(EOS_ID)] if EOS_ID in row else row
                text = decode(self.data.tgt_tokenizer, ids)
                hypotheses[i] = self.data.task.to_target_text(text)
        references = self.data.texts[split]["tgt"][:n]
        return hypotheses, references, generated, seconds

    def _lm_speed(
        self, split: str, n_examples: int | None, prefix: int = 16, new: int = 32
    ) -> dict:
        windows = self.data.splits[split].tgt
        n = min(n_examples or len(windows), len(windows))
        rows = [windows[i][:prefix] for i in range(n) if len(windows[i]) >= prefix]
        if not rows:
            return {}
        generated, seconds = 0, 0.0
        for start in range(0, len(rows), 64):
            prefixes = torch.stack(rows[start : start + 64]).to(self.device)
            self._sync()
            t0 = time.perf_counter()
            with self.autocast():
                out = greedy_continue(
                    self.model, prefixes, min(new, self.model.cfg.max_len - prefix)
                )
            self._sync()
            seconds += time.perf_counter() - t0
            generated += out.numel()
        return {"infer_tokens_per_s": generated / seconds if seconds else 0.0}

    # ------------------------------------------------------------------ costs

    def static_metrics(self) -> dict[str, float]:
        vocab, d = self.data.vocab, self.model.cfg.d_model
        metrics = {
            "vocab_size_tgt": vocab.tgt_size,
            "softmax_flops_per_token": softmax_flops_per_token(d, vocab.tgt_size),
        }
        if self.model.arch == "encdec":  # an LM has no source side
            metrics["vocab_size_src"] = vocab.src_size
        return metrics

    def profile_step(self, batch: Batch, reps: int = 3) -> dict[str, float]:
        """The output layer's share of a training step (forward + backward; the optimizer
        update excluded), in FLOPs counted by FlopCounterMode and in measured time. The
        time share times the output projection and loss alone, on this batch's real
        decoder features, against the whole step: medians of `reps` runs of each, alternated."""
        self.model.train()
        inputs = model_inputs(self.model, batch)

        def whole_step() -> None:
            self.loss(batch, forward=self.model)[0].backward()

        flops = count_flops(whole_step)
        with self.autocast():
            features = self.model.features(*inputs).detach().requires_grad_(True)

        def output_layer() -> None:
            with self.autocast():
                logits = self.model.output(features)
            loss_sum, n = token_loss(logits, batch.tgt_out, self.cfg.label_smoothing)
            (loss_sum / max(n, 1)).backward()

        output_layer()  # warm-up (counting FLOPs already ran the whole step once)
        step_s, output_s = self._interleaved_medians(whole_step, output_layer, reps)
        self.optimizer.zero_grad(set_to_none=True)
        name = f"{type(self.model).__name__}.output"
        return {
            "step_flops": flops["Global"],
            "softmax_flops_share": module_share(flops, name),
            "softmax_time_share": output_s / step_s if step_s else 0.0,
        }

    def _interleaved_medians(self, a: Callable[[], None], b: Callable[[], None], reps: int):
        """Median times of a and b, timed alternately so that both see the same load."""
        times: dict[Callable, list[float]] = {a: [], b: []}
        for _ in range(reps):
            for fn in (a, b):
                self._sync()
                t0 = time.perf_counter()
                fn()
                self._sync()
                times[fn].append(time.perf_counter() - t0)
        return statistics.median(times[a]), statistics.median(times[b])

    def peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB → MiB
