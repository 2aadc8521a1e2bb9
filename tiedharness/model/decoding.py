"""Greedy decoding, with or without the KV cache (the two must give the same tokens), and
beam search on the cache with fairseq's or GNMT's length penalty.

With the cache each step feeds only the newest token and every layer appends its K/V;
without it each step re-runs the whole prefix. BLEU and inference throughput use the
cached path; the uncached one exists to check it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tiedharness.model.transformer import DecoderLM, EncoderDecoder
from tiedharness.vocab import BOS_ID, EOS_ID, PAD_ID

# step(tokens so far (B, t), cache or None) → next-token logits (B, V)
StepFn = Callable[[Tensor, "list[dict] | None"], Tensor]


def _greedy(step: StepFn, prefix: Tensor, max_new: int, cache: list[dict] | None) -> Tensor:
    """Extend `prefix` (B, t0) by up to `max_new` argmax tokens; rows that emitted EOS
    continue with PAD. Returns only the new tokens (B, ≤ max_new)."""
    tokens, start = prefix, prefix.shape[1]
    done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
    for _ in range(max_new):
        logits = step(tokens, cache)  # (B, V)
        nxt = torch.where(done, PAD_ID, logits.argmax(-1))
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == EOS_ID
        if done.all():
            break
    return tokens[:, start:]


@torch.no_grad()
def greedy_translate(
    model: EncoderDecoder, src: Tensor, max_len: int, use_cache: bool = True
) -> Tensor:
    """Greedy target tokens (B, ≤ max_len) for source tokens (B, S), EOS included."""
    model.eval()
    memory, src_pad = model.encode(src)

    def step(tokens: Tensor, cache: list[dict] | None) -> Tensor:
        if cache is None:
            return model.decode(tokens, memory, src_pad)[:, -1]
        t = tokens.shape[1] - 1
        return model.decode(tokens[:, -1:], memory, src_pad, cache=cache, offset=t)[:, -1]

    bos = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long, device=src.device)
    return _greedy(step, bos, max_len, model.new_cache() if use_cache else None)


@torch.no_grad()
def greedy_continue(
    model: DecoderLM, prefix: Tensor, max_new: int, use_cache: bool = True
) -> Tensor:
    """Greedy continuation (B, ≤ max_new) of an LM prefix (B, t0), unpadded."""
    model.eval()

    def step(tokens: Tensor, cache: list[dict] | None) -> Tensor:
        if cache is None:
            return model(tokens)[:, -1]
        if tokens.shape[1] == prefix.shape[1]:  # first step: run the whole prefix once
            return model(tokens, cache=cache)[:, -1]
        return model(tokens[:, -1:], cache=cache, offset=tokens.shape[1] - 1)[:, -1]

    return _greedy(step, prefix, max_new, model.new_cache() if use_cache else None)


LENPEN_STYLES = ("fairseq", "gnmt")


@dataclass(frozen=True)
class LengthPenalty:
    """What a finished hypothesis's log-probability is divided by, for its length |Y|
    (tokens, EOS included): fairseq's |Y|^α, or GNMT's ((5 + |Y|) / 6)^α (Wu et al. 2016,
    the one Vaswani et al. 2017 use with α = 0.6). α = 0 ranks by log-probability alone."""

    alpha: float = 1.0
    style: str = "fairseq"

    def __post_init__(self) -> None:
        if self.style not in LENPEN_STYLES:
            raise ValueError(f"length penalty style {self.style!r}: one of {LENPEN_STYLES}")

    def __call__(self, length: int) -> float:
        if self.style == "gnmt":
            return ((5 + length) / 6) ** self.alpha
        return max(length, 1) ** self.alpha


def reorder_cache(cache: list[dict] | dict, rows: Tensor, memo: dict | None = None):
    """Every cached tensor's rows (dim 0) picked by `rows`, in place; a tensor cached
    under two names (shared K/V) stays one tensor."""
    memo = {} if memo is None else memo
    items = cache.items() if isinstance(cache, dict) else enumerate(cache)
    for key, value in list(items):
        if isinstance(value, Tensor):
            if id(value) not in memo:
                memo[id(value)] = value.index_select(0, rows)
            cache[key] = memo[id(value)]
        elif isinstance(value, dict | list):
            reorder_cache(value, rows, memo)
    return cache


@torch.no_grad()
def beam_translate(
    model: EncoderDecoder,
    src: Tensor,
    max_len: int,
    beam: int = 4,
    length_penalty: float | LengthPenalty = 1.0,
) -> Tensor:
    """Beam search with the KV cache: target tokens (B, ≤ max_len), EOS included, then
    PAD, of the hypothesis with the best log-probability ÷ its length penalty (a number α:
    fairseq's length^α; or a `LengthPenalty`, GNMT's too).

    Each step keeps the `beam` best unfinished hypotheses of each source; a hypothesis
    ending in EOS is set aside, and a source is done once `beam` are. With beam=1 this is
    greedy decoding, token for token."""
    model.eval()
    if not isinstance(length_penalty, LengthPenalty):
        length_penalty = LengthPenalty(float(length_penalty))
    n, device = src.shape[0], src.device
    memory, src_pad = model.encode(src)
    memory, src_pad = memory.repeat_interleave(beam, 0), src_pad.repeat_interleave(beam, 0)
    cache = model.new_cache()
    tokens = torch.full((n * beam, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.full((n, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per source to start from
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    for t in range(max_len):
        logits = model.decode(tokens[:, -1:], memory, src_pad, cache=cache, offset=t)[:, -1]
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n·beam, V)
        vocab = logp.shape[-1]
        total = (scores[:, :, None] + logp.view(n, beam, vocab)).view(n, beam * vocab)
        top_scores, top_index = total.topk(min(2 * beam, beam * vocab), dim=-1)
        rows, next_scores, next_tokens = [], [], []
        for i in range(n):
            live: list[tuple[float, int, int]] = []
            for score, index in zip(top_scores[i].tolist(), top_index[i].tolist(), strict=True):
                source_beam, token = divmod(index, vocab)
                if score == float("-inf"):
                    break
                if len(finished[i]) >= beam:
                    break
                if token == EOS_ID:
                    hypothesis = [*tokens[i * beam + source_beam, 1:].tolist(), EOS_ID]
                    finished[i].append((score / length_penalty(len(hypothesis)), hypothesis))
                elif len(live) < beam:
                    live.append((score, source_beam, token))
                if len(live) == beam:
                    break
            live += [(float("-inf"), 0, PAD_ID)] * (beam - len(live))  # a done source idles
            for score, source_beam, token in live:
                rows.append(i * beam + source_beam)
                next_scores.append(score)
                next_tokens.append(token)
        if all(len(f) >= beam for f in finished):
            break
        rows_t = torch.tensor(rows, device=device)
        reorder_cache(cache, rows_t)
        tokens = torch.cat([tokens[rows_t], torch.tensor(next_tokens, device=device)[:, None]], 1)
        scores = torch.tensor(next_scores, device=device).view(n, beam)
    return _best_hypotheses(finished, tokens, scores, length_penalty)


def _best_hypotheses(
    finished: list[list[tuple[float, list[int]]]],
    tokens: Tensor,
    scores: Tensor,
    length_penalty: LengthPenalty,
) -> Tensor:
    """Each source's best hypothesis, PAD-padded into one tensor; a source that ran out of
    length before `beam` hypotheses finished lets its live ones compete too."""
    n, beam = scores.shape
    for i in range(n):
        if len(finished[i]) < beam:
            for b in range(beam):
                score = float(scores[i, b])
                if score > float("-inf"):
                    hypothesis = tokens[i * beam + b, 1:].tolist()
                    finished[i].append((score / length_penalty(len(hypothesis)), hypothesis))
    best = [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]
    out = torch.full((n, max(map(len, best), default=0)), PAD_ID, dtype=torch.long)
    for i, hypothesis in enumerate(best):
        out[i, : len(hypothesis)] = torch.tensor(hypothesis, dtype=torch.long)
    return out.to(tokens.device)
