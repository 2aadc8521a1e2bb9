"""Pure metric functions: loss, perplexity, exact match, BLEU/chrF, FLOPs, softmax cost.

Nothing here logs or trains; `train.py` calls these and `tracking.py` records them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import sacrebleu
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from tiedharness.model import PAD_ID


def token_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, int]:
    """Summed cross-entropy over non-pad targets, and their count."""
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=PAD_ID,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return loss, int((targets != PAD_ID).sum())


def perplexity(mean_loss: float) -> float:
    """exp(loss), capped where it would overflow a float."""
    return math.exp(min(mean_loss, 700.0))


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of outputs equal to their reference, up to runs of whitespace."""
    same = sum(h.split() == r.split() for h, r in zip(hypotheses, references, strict=True))
    return same / len(references) if references else 0.0


def bleu_chrf(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    """Corpus BLEU and chrF from sacrebleu's defaults (13a tokenization) on detokenized text."""
    return (
        sacrebleu.corpus_bleu(hypotheses, [references]).score,
        sacrebleu.corpus_chrf(hypotheses, [references]).score,
    )


def softmax_flops_per_token(d_model: int, vocab_size: int) -> int:
    """Forward FLOPs per target token of the output layer: the projection's V·d
    multiply-adds (2·d·V) plus ~5 per logit for the softmax (max, subtract, exp, sum,
    divide). A training step costs about three times the projection part (backward)."""
    return 2 * d_model * vocab_size + 5 * vocab_size


# FlopCounterMode has no formula for the CPU flash-attention kernels and would count
# attention as zero; these reuse torch's own SDPA formulas for them.
SDPA_CPU_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda g, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(g, q, k, v)
    ),
}


def count_flops(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs of running `fn`, in total ("Global") and per module path, SDPA included."""
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU_FLOPS) as counter:
        fn()
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def module_share(flops: dict[str, int], module: str) -> float:
    """Share of all counted FLOPs spent in `module` ("ClassName.path" as the counter names it)."""
    total = flops.get("Global", 0)
    return flops.get(module, 0) / total if total else 0.0
