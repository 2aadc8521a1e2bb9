"""Greedy decoding, with or without the KV cache (the two must give the same tokens), and
beam search on the cache with fairseq's or GNMT's length penalty.

With the cache each step feeds only the newest token and every layer appends its K/V;
without it each step re-runs the whole prefix. BLEU and inference throughput use the
cached path; the uncached one exists to check it.
"""

from __future__ import annotations

import math
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
    greedy decoding, token for token. All sources are searched together in tensors
    (`_Beams`), choosing what a loop over the sources would, tie for tie."""
    model.eval()
    if not isinstance(length_penalty, LengthPenalty):
        length_penalty = LengthPenalty(float(length_penalty))
    memory, src_pad = model.encode(src)
    memory, src_pad = memory.repeat_interleave(beam, 0), src_pad.repeat_interleave(beam, 0)
    cache = model.new_cache()
    beams = _Beams.start(src.shape[0], beam, max_len, src.device)
    for t in range(max_len):
        logits = model.decode(beams.tokens[:, -1:], memory, src_pad, cache=cache, offset=t)
        rows = beams.advance(torch.log_softmax(logits[:, -1].float(), dim=-1))
        if bool((beams.n_done >= beam).all()):
            break
        reorder_cache(cache, rows)
    return beams.best(length_penalty)


@dataclass
class _Beams:
    """The state of a beam search over n sources, `beam` hypotheses each, in tensors; row
    i·beam + b of `tokens` is source i's b-th live hypothesis."""

    tokens: Tensor  # (n·beam, t + 1) live hypotheses, BOS first
    scores: Tensor  # (n, beam) their log-probabilities; -inf: an empty slot
    # finished hypotheses, at most `beam` a source, in the order they finished (it breaks
    # ties); their log-probability (-inf: an empty slot), length and tokens (EOS, then PAD)
    done_scores: Tensor  # (n, beam)
    done_lengths: Tensor  # (n, beam)
    done_tokens: Tensor  # (n, beam, max_len)
    n_done: Tensor  # (n,) finished hypotheses of each source

    @classmethod
    def start(cls, n: int, beam: int, max_len: int, device: torch.device) -> _Beams:
        scores = torch.full((n, beam), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis per source to start from
        return cls(
            tokens=torch.full((n * beam, 1), BOS_ID, dtype=torch.long, device=device),
            scores=scores,
            done_scores=torch.full((n, beam), float("-inf"), device=device),
            done_lengths=torch.zeros((n, beam), dtype=torch.long, device=device),
            done_tokens=torch.full((n, beam, max_len), PAD_ID, dtype=torch.long, device=device),
            n_done=torch.zeros(n, dtype=torch.long, device=device),
        )

    def advance(self, logp: Tensor) -> Tensor:
        """One step, from the next-token log-probabilities (n·beam, V) of the live rows:
        each source's 2·beam best extensions, of which those ending in EOS finish and the
        others become the live hypotheses. Returns the rows the new ones extend (the
        cache's new order)."""
        n, beam = self.scores.shape
        vocab = logp.shape[-1]
        total = (self.scores[:, :, None] + logp.view(n, beam, vocab)).view(n, beam * vocab)
        top_scores, top_index = total.topk(min(2 * beam, beam * vocab), dim=-1)
        parent = top_index // vocab + beam * torch.arange(n, device=logp.device)[:, None]
        token = top_index % vocab
        taken = self._taken(top_scores, token)
        self._finish(taken & (token == EOS_ID), top_scores, parent)
        return self._keep(taken & (token != EOS_ID), top_scores, parent, token)

    def _taken(self, top_scores: Tensor, token: Tensor) -> Tensor:
        """Which candidates (n, 2·beam), best first, a source takes: walking down its list
        it stops at the first -inf (nothing left to extend), once `beam` hypotheses have
        finished, or once `beam` live ones are kept. Every test is monotone along the list,
        so a candidate is taken iff it passes them counting the candidates before it."""
        beam = self.scores.shape[1]
        eos = (token == EOS_ID).long()

        def before(flags: Tensor) -> Tensor:  # how many of the earlier candidates
            return flags.cumsum(1) - flags

        reachable = (top_scores == float("-inf")).long().cumsum(1) == 0
        finished_before = self.n_done[:, None] + before(eos)
        return reachable & (finished_before < beam) & (before(1 - eos) < beam)

    def _finish(self, finishing: Tensor, top_scores: Tensor, parent: Tensor) -> None:
        """Set the candidates `finishing` (n, 2·beam) aside, in their order after the
        source's earlier finished ones: parent's tokens after BOS, then EOS."""
        source, k = finishing.nonzero(as_tuple=True)  # row-major: each source in topk order
        if source.numel() == 0:
            return
        slot = self.n_done[source] + (finishing.long().cumsum(1) - 1)[source, k]
        length = self.tokens.shape[1]  # BOS and t tokens: t tokens and EOS
        self.done_scores[source, slot] = top_scores[source, k]
        self.done_lengths[source, slot] = length
        self.done_tokens[source, slot, : length - 1] = self.tokens[parent[source, k], 1:]
        self.done_tokens[source, slot, length - 1] = EOS_ID
        self.n_done += finishing.sum(1)

    def _keep(self, live: Tensor, top_scores: Tensor, parent: Tensor, token: Tensor) -> Tensor:
        """The candidates `live` (n, 2·beam) become the next live hypotheses, best first;
        slots left over hold PAD at -inf on the source's first row (a done source idles
        there). Returns the rows of `tokens` they extend."""
        n, beam = self.scores.shape
        source, k = live.nonzero(as_tuple=True)
        slot = (live.long().cumsum(1) - 1)[source, k]
        rows = beam * torch.arange(n, device=live.device)[:, None].repeat(1, beam)
        scores = torch.full_like(self.scores, float("-inf"))
        tokens = torch.full_like(rows, PAD_ID)
        rows[source, slot] = parent[source, k]
        scores[source, slot] = top_scores[source, k]
        tokens[source, slot] = token[source, k]
        rows = rows.view(-1)
        self.tokens = torch.cat([self.tokens[rows], tokens.view(-1, 1)], 1)
        self.scores = scores
        return rows

    def best(self, length_penalty: LengthPenalty) -> Tensor:
        """Each source's hypothesis with the best log-probability ÷ length penalty,
        PAD-padded into one tensor. The candidates are its finished ones in the order they
        finished, then — when fewer than `beam` finished (it ran out of length) — its live
        ones; the first best wins a tie."""
        n, beam = self.scores.shape
        max_len, live_length = self.done_tokens.shape[2], self.tokens.shape[1] - 1
        ran_out = (self.n_done < beam)[:, None]
        scores = torch.cat([self.done_scores, self.scores.masked_fill(~ran_out, -math.inf)], 1)
        lengths = torch.cat([self.done_lengths, torch.full_like(self.done_lengths, live_length)], 1)
        live = self.tokens[:, 1:].reshape(n, beam, live_length)
        live = torch.nn.functional.pad(live, (0, max_len - live_length), value=PAD_ID)
        tokens = torch.cat([self.done_tokens, live], 1)  # (n, 2·beam, max_len)
        # divided in float64 on the CPU: the Python floats the per-source loop ranked by
        # (MPS has no float64), so that equal or nearly equal scores rank alike
        penalties = [length_penalty(length) for length in range(max_len + 1)]
        ranked = scores.cpu().double() / torch.tensor(penalties, dtype=torch.float64)[lengths.cpu()]
        choice = ranked.argmax(1).to(tokens.device)  # the first of equal maxima, as max() takes
        found = (ranked.amax(1) > -math.inf).to(tokens.device)  # else nothing: an empty output
        sources = torch.arange(n, device=tokens.device)
        out = torch.where(found[:, None], tokens[sources, choice], PAD_ID)
        width = torch.where(found, lengths[sources, choice], 0).amax() if n else 0
        return out[:, : int(width)]
