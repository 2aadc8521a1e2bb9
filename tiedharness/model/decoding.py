"""Greedy decoding, with or without the KV cache (the two must give the same tokens).

With the cache each step feeds only the newest token and every layer appends its K/V;
without it each step re-runs the whole prefix. BLEU and inference throughput use the
cached path; the uncached one exists to check it.
"""

from __future__ import annotations

from collections.abc import Callable

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
