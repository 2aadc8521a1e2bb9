"""Beam search batched over sources (tiedharness/model/decoding.py) against the per-source
loop it replaced, kept here as the reference: on a model trained a few steps on a real
task, both give the same hypotheses, token for token."""

from __future__ import annotations

import pytest
import torch
from conftest import ScriptedDecoder

from tiedharness.model.decoding import LengthPenalty, beam_translate, reorder_cache
from tiedharness.vocab import BOS_ID, EOS_ID, PAD_ID

# ------------------------------------------------------- the reference: one source at a time


@torch.no_grad()
def reference_beam_translate(model, src, max_len, beam=4, length_penalty=1.0):
    """tiedharness/model/decoding.py's beam_translate before issue 20: each step picks
    every source's hypotheses in a Python loop over the sources."""
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
    return _reference_best(finished, tokens, scores, length_penalty)


def _reference_best(finished, tokens, scores, length_penalty):
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


# ----------------------------------------------------- a model trained a little, and sources


@pytest.fixture(scope="module")
def trained():
    """The smoke experiment's tiny model on its synthetic translation task, trained 150
    steps (seeded: the same weights every time), and 24 validation sources of 3 to
    30-odd tokens in one padded batch."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tiedharness.build import build
    from tiedharness.cli import CONF_DIR
    from tiedharness.config import JobConfig
    from tiedharness.tasks.batching import collate
    from tiedharness.training.loop import Trainer

    overrides = ["experiment=smoke", "logger=none", "trainer.max_steps=150"]
    overrides += ["trainer.lr=3e-3", "trainer.warmup_steps=10", "trainer.eval_every=1000"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    job = JobConfig.from_config(config)
    _, data, model = build(job)
    Trainer(model, data, job.trainer, device=torch.device("cpu")).fit()
    valid = data.splits["valid"]
    lengths = valid.sizes()[0]
    by_length = torch.argsort(lengths, stable=True)
    picked = by_length[torch.linspace(0, len(by_length) - 1, 24).long()]
    return model.eval(), collate(valid, picked).src


PENALTIES = {"fairseq1": 1.0, "gnmt0.6": LengthPenalty(0.6, "gnmt")}


@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("beam", [1, 4, 5])
def test_batched_beam_search_gives_the_per_source_loops_hypotheses(trained, beam, penalty):
    model, src = trained
    longest = min(model.cfg.max_len - 1, 2 * src.shape[1] + 10)  # as the evaluator caps it
    for max_len in (longest, 7):  # 7: most sources run out of length
        expected = reference_beam_translate(model, src, max_len, beam, PENALTIES[penalty])
        got = beam_translate(model, src, max_len, beam, PENALTIES[penalty])
        assert got.dtype == expected.dtype and got.shape == expected.shape, max_len
        assert torch.equal(got, expected), max_len


def test_the_trained_models_hypotheses_are_not_degenerate(trained):
    """Sources of different lengths, hypotheses of different lengths: the comparison
    above covers more than empty or identical outputs."""
    model, src = trained
    src_lengths = (src != PAD_ID).sum(1)
    assert src_lengths.min() < src_lengths.max() // 2
    out = beam_translate(model, src, model.cfg.max_len - 1, 4, LengthPenalty(0.6, "gnmt"))
    lengths = [row.index(EOS_ID) if EOS_ID in row else len(row) for row in out.tolist()]
    assert len(set(lengths)) >= 4 and min(lengths) >= 1
    assert len({tuple(row) for row in out.tolist()}) > len(out) // 2


class ManyTies(ScriptedDecoder):
    """Next-token probabilities that tie everywhere: EOS, PAD and the other tokens take a
    few values by the prefix's length, and PAD may be chosen (it is a token like any
    other to the search). Equal candidates, equal finished scores at one length, and under
    α = 0 equal scores across lengths: ties decide the hypotheses."""

    def next_probs(self, seq: list[int]) -> torch.Tensor:
        probs = torch.ones(self.vocab)
        if len(seq) % 2 == 0:
            probs[EOS_ID] = 2.0
        if len(seq) % 3 == 0:
            probs[PAD_ID] = 2.0
        probs[seq[-1] % self.vocab] = 0.5
        return probs


@pytest.mark.parametrize("penalty", [0.0, 1.0, LengthPenalty(0.6, "gnmt")])
def test_ties_are_broken_as_the_per_source_loop_breaks_them(penalty):
    src = torch.zeros(3, 2, dtype=torch.long)
    for beam in (1, 2, 3, 5):
        for max_len in (0, 1, 4, 9):  # 0 and 1: sources end with their live hypotheses
            expected = reference_beam_translate(ManyTies(), src, max_len, beam, penalty)
            got = beam_translate(ManyTies(), src, max_len, beam, penalty)
            assert got.shape == expected.shape and torch.equal(got, expected), (beam, max_len)
