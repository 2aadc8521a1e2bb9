"""Metric functions: a batch's loss, token loss, perplexity, exact match, BLEU/chrF.

Nothing here logs or trains; the loop and the evaluator call these and the trackers
record them. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from tiedharness.training.device import autocast
from tiedharness.vocab import PAD_ID

if TYPE_CHECKING:
    from tiedharness.model.transformer import Transformer
    from tiedharness.tasks.batching import Batch


def model_inputs(model: Transformer, batch: Batch) -> tuple[Tensor, ...]:
    return (batch.src, batch.tgt_in) if model.arch == "encdec" else (batch.tgt_in,)


def mean_loss(
    forward: Callable[..., Tensor], model: Transformer, batch: Batch, smoothing: float, precision
) -> tuple[Tensor, int]:
    """The batch's mean label-smoothed loss per target token, and the token count (the
    host's: dividing by it needs no device synchronisation)."""
    with autocast(batch.tgt_out.device, precision):
        logits = forward(*model_inputs(model, batch))
    loss_sum = token_loss(logits, batch.tgt_out, smoothing)
    n = batch.target_tokens
    return loss_sum / max(n, 1), n


def token_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Summed cross-entropy over non-pad targets (divide by `Batch.target_tokens`, counted
    on the host, for the mean)."""
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=PAD_ID,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return loss


def perplexity(mean_loss: float) -> float:
    """exp(loss), capped where it would overflow a float."""
    return math.exp(min(mean_loss, 700.0))


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of outputs equal to their reference, up to runs of whitespace."""
    same = sum(h.split() == r.split() for h, r in zip(hypotheses, references, strict=True))
    return same / len(references) if references else 0.0


def bleu_chrf(hypotheses: list[str], references: list[str], tokenize: str | None = "13a") -> dict:
    """Corpus BLEU and chrF of detokenized text: sacreBLEU's defaults, BLEU with the
    target language's `tokenize` (13a; `zh` for Chinese; None: no BLEU, chrF only)."""
    scores = signed_bleu_chrf(hypotheses, references, tokenize)
    return {name: scores[name] for name in ("bleu", "chrf") if name in scores}


def score_metrics(tokenize: str | None = "13a") -> dict:
    """The sacreBLEU metrics a translation is scored with, by name."""
    from sacrebleu.metrics import BLEU, CHRF  # only translation runs score with it

    metrics = {"chrf": CHRF()}
    if tokenize is not None:
        metrics = {"bleu": BLEU(tokenize=tokenize), **metrics}
    return metrics


def signatures(tokenize: str | None = "13a") -> dict[str, str]:
    """sacreBLEU's signature of each score (what a paper's number must match to be
    compared with it), as scoring against one reference gives it (sacreBLEU reads the
    number of references off a first scoring)."""
    metrics = score_metrics(tokenize)
    for metric in metrics.values():
        metric.corpus_score(["a"], [["a"]])
    return {name: str(metric.get_signature()) for name, metric in metrics.items()}


def signed_bleu_chrf(
    hypotheses: list[str], references: list[str], tokenize: str | None = "13a"
) -> dict:
    """`bleu_chrf`'s scores with their signatures."""
    metrics = score_metrics(tokenize)
    out: dict = {
        name: m.corpus_score(hypotheses, [references]).score for name, m in metrics.items()
    }
    out["signatures"] = {name: str(m.get_signature()) for name, m in metrics.items()}
    return out
