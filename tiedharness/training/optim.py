"""The optimizer and the learning-rate schedule.

AdamW's parameter groups see each tensor exactly once.

Weight-decay policy (as in nanoGPT and BERT): decay every matrix — linear weights and
embedding tables, which a tie may make the same tensor — and exempt biases and LayerNorm
gains, whose scale decay would only distort. A tied tensor appears in one group only,
because `named_parameters()` deduplicates; otherwise AdamW would step it twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from tiedharness.training.config import DecayShape, Schedule, TrainerConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # deduplicated: one entry per tensor
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.98)
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


def lr_factor(cfg: TrainerConfig, total_steps: int | None = None) -> Callable[[int], float]:
    """The learning rate of update `step` (0-based) as a multiple of `trainer.lr`: linear
    warmup, then inverse-sqrt decay (Vaswani et al.), cosine to zero at `total_steps`
    (default: trainer.max_steps), flat, or warmup-stable-decay: flat until the last
    `decay_frac` of `total_steps`, then down to zero (linearly, or as 1 − √x); a decay
    that begins inside the warmup multiplies it, so every budget ends at zero."""
    warmup = max(cfg.warmup_steps, 1)
    total = total_steps or cfg.max_steps or warmup
    decay_start = total - max(1, round(cfg.decay_frac * total))

    def factor(step: int) -> float:
        s = step + 1
        if cfg.schedule == Schedule.wsd:  # the decay may begin before the warmup ends
            return min(s / warmup, 1.0) * wsd_decay(s)
        if s < warmup:
            return s / warmup
        if cfg.schedule == Schedule.inverse_sqrt:
            return math.sqrt(warmup / s)
        if cfg.schedule == Schedule.cosine:
            progress = min((s - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    def wsd_decay(s: int) -> float:
        if s <= decay_start:
            return 1.0
        progress = min((s - decay_start) / (total - decay_start), 1.0)
        return 1 - (math.sqrt(progress) if cfg.decay_shape == DecayShape.sqrt else progress)

    return factor
