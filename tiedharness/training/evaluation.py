"""Evaluation of a model on a task's held-out splits: validation loss, and greedy
decoding with the KV cache for exact match / BLEU / chrF and inference throughput.

Its inputs are the model and the task's data (batches, references, detokenizer); it
never trains and never records: the job logs what it returns. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import math
import time

import torch

from tiedharness.model.decoding import (
    LengthPenalty,
    beam_translate,
    greedy_continue,
    greedy_translate,
)
from tiedharness.model.transformer import Transformer
from tiedharness.tasks.batching import Batch, collate
from tiedharness.tasks.data import TaskData
from tiedharness.training.config import TrainerConfig
from tiedharness.training.device import autocast, synchronize
from tiedharness.training.distributed import Dist
from tiedharness.training.metrics import (
    bleu_chrf,
    exact_match,
    model_inputs,
    perplexity,
    token_loss,
)
from tiedharness.vocab import EOS_ID, PAD_ID

LM_PREFIX, LM_NEW_TOKENS, LM_BATCH = 16, 32, 64  # LM decoding speed: prompt, continuation


class Evaluator:
    """Validation loss (and bits per character) on `trainer.eval_examples` examples drawn
    across the split, and greedy decoding of `trainer.decode_examples` drawn the same way:
    the same examples for every run on the same data, so runs pair up.

    Decoding options (tiedharness-eval's; training decodes greedily): `beam` > 1 searches
    with `length_penalty` (a float α, or a `LengthPenalty`), `max_new_tokens` caps the
    outputs (None: twice the source plus 10), `batch_size` decodes that many sources a
    batch (None: the task's token-budget batches)."""

    def __init__(
        self,
        model: Transformer,
        data: TaskData,
        cfg: TrainerConfig,
        device: torch.device,
        dist: Dist | None = None,
        *,
        beam: int = 1,
        length_penalty: float | LengthPenalty = 1.0,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.dist = dist or Dist()
        self.beam, self.length_penalty = beam, length_penalty
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        # DDP: each rank evaluates a share of the losses, rank 0 decodes; FSDP2: a forward
        # needs every rank, so every rank evaluates everything (rank 0 records it)
        self.shared = self.dist.active and not cfg.fsdp
        self.decodes = self.dist.main or cfg.fsdp
        self.decoded: dict[str, list[dict]] = {}  # split → index, hypothesis, reference
        self._chars: dict[str, torch.Tensor] = {}

    def _autocast(self):
        return autocast(self.device, self.cfg.precision)

    @torch.no_grad()
    def loss(self, split: str, n_examples: int | None) -> dict[str, float]:
        """Cross-entropy per target token without label smoothing, bits per character of
        the target text, and what was evaluated (examples, tokens, characters), on
        `n_examples` drawn across `split` (None: all of it)."""
        self.model.eval()
        indices = self.data.sample(split, n_examples)
        if split not in self._chars:
            self._chars[split] = self.data.target_chars(split)
        mine = indices[self.dist.rank :: self.dist.world] if self.shared else indices
        total, tokens = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for batch in self.data.batches(split, mine) if len(mine) else []:
            tokens += batch.target_tokens  # on the host, before the copy
            batch = batch.to(self.device)
            with self._autocast():
                logits = self.model(*model_inputs(self.model, batch))
            total += token_loss(logits, batch.tgt_out).double()
        if self.shared:
            total, tokens = self.dist.sum([float(total), tokens], self.device)
        total, tokens = float(total), int(tokens)
        chars = int(self._chars[split][indices].sum())
        nan = float("nan")
        return {
            "loss": total / tokens if tokens else nan,
            "bpc": total / chars / math.log(2) if chars else nan,
            "examples": len(indices),
            "tokens": tokens,
            "chars": chars,
        }

    def validation(self) -> dict[str, float]:
        out = self.loss("valid", self.cfg.eval_examples)
        return {"val_loss": out["loss"], "val_ppl": perplexity(out["loss"]), "val_bpc": out["bpc"]}

    def final(self, speed: bool = True) -> dict[str, float]:
        """The end of a run (or of a budget branch): validation loss and what it covered,
        the decoded validation subset, and on the test split loss and decoding of the same
        `test_examples`. `speed`: measure generated tokens per second too."""
        valid = self.loss("valid", self.cfg.eval_examples)
        out = {
            "val_loss": valid["loss"],
            "val_ppl": perplexity(valid["loss"]),
            "val_bpc": valid["bpc"],
        }
        out.update({f"val_{k}": valid[k] for k in ("examples", "tokens", "chars")})
        with_test = len(self.data.splits["test"]) and self.cfg.test_examples != 0
        if with_test:  # every rank takes part in the losses; rank 0 alone decodes
            measured = self.loss("test", self.cfg.test_examples)
            out.update(test_loss=measured["loss"], test_bpc=measured["bpc"])
        if not self.decodes:
            return out
        out.update(self.decode_scores("valid", self.cfg.decode_examples, speed=speed))
        if with_test:
            test = self.decode_scores("test", self.cfg.test_examples, speed=False)
            out.update({f"test_{k}": v for k, v in test.items()})
        return out

    @torch.no_grad()
    def decode_scores(self, split: str, n_examples: int | None, speed: bool = True) -> dict:
        """Greedy outputs with the KV cache on `n_examples` drawn across `split`: exact
        match / BLEU / chrF as the task asks, and generated tokens per second."""
        self.model.eval()
        indices = self.data.sample(split, n_examples)
        if not len(indices):  # decode_examples=0: no decoding
            return {}
        if self.data.kind == "lm":
            return self._lm_speed(split, indices) if speed else {}
        hypotheses, generated, seconds = self._translate(split, indices)
        references = [self.data.references(split)[i] for i in indices.tolist()]
        sources = self.data.texts[split].get("src") or [None] * len(self.data.references(split))
        self.decoded[split] = [
            {"index": i, "source": sources[i], "hypothesis": h, "reference": r}
            for i, h, r in zip(indices.tolist(), hypotheses, references, strict=True)
        ]
        out: dict[str, float] = {"decoded_examples": len(indices)}
        if "exact_match" in self.data.scores:
            out["exact_match"] = exact_match(hypotheses, references)
        if "bleu" in self.data.scores:
            out.update(bleu_chrf(hypotheses, references, self.data.task.bleu_tokenizer()))
        if speed:
            out["infer_tokens_per_s"] = generated / seconds if seconds else 0.0
        return out

    def _translate(self, split: str, indices: torch.Tensor) -> tuple[list[str], int, float]:
        """Hypotheses for the examples `indices` (in that order), generated token count,
        decoding seconds."""
        position = {i: p for p, i in enumerate(indices.tolist())}
        hypotheses: list[str] = [""] * len(indices)
        generated, seconds = 0, 0.0
        for batch in self._decode_batches(split, indices):
            batch = batch.to(self.device)
            wanted = self.max_new_tokens or 2 * batch.src.shape[1] + 10
            max_len = min(self.model.cfg.max_len - 1, wanted)  # the model's positions cap it
            if self.beam > 1:
                out, elapsed = self._timed(
                    beam_translate, self.model, batch.src, max_len, self.beam, self.length_penalty
                )
            else:
                out, elapsed = self._timed(greedy_translate, self.model, batch.src, max_len)
            seconds += elapsed
            generated += int((out != PAD_ID).sum())
            for row, i in zip(out.tolist(), batch.indices.tolist(), strict=True):
                ids = row[: row.index(EOS_ID)] if EOS_ID in row else row
                hypotheses[position[i]] = self.data.detokenize(ids)
        return hypotheses, generated, seconds

    def _decode_batches(self, split: str, indices: torch.Tensor) -> list[Batch]:
        """The task's batches of `indices`, in their length order; with `batch_size`, cut
        again into that many sources a batch."""
        batches = self.data.batches(split, indices)
        if not self.batch_size or not batches:
            return batches
        chunks = torch.cat([b.indices for b in batches]).split(self.batch_size)
        return [collate(self.data.splits[split], chunk) for chunk in chunks]

    def _lm_speed(self, split: str, indices: torch.Tensor) -> dict:
        """Generated tokens per second continuing LM_PREFIX-token prompts of the split."""
        windows = self.data.splits[split].tgt
        rows = [windows[i][:LM_PREFIX] for i in indices.tolist() if len(windows[i]) >= LM_PREFIX]
        if not rows:
            return {}
        new = min(LM_NEW_TOKENS, self.model.cfg.max_len - LM_PREFIX)
        generated, seconds = 0, 0.0
        for start in range(0, len(rows), LM_BATCH):
            prefixes = torch.stack(rows[start : start + LM_BATCH]).to(self.device)
            out, elapsed = self._timed(greedy_continue, self.model, prefixes, new)
            seconds += elapsed
            generated += out.numel()
        return {"infer_tokens_per_s": generated / seconds if seconds else 0.0}

    def _timed(self, decode, *args):
        """decode(*args) under autocast, and its wall time."""
        synchronize(self.device)
        t0 = time.perf_counter()
        with self._autocast():
            out = decode(*args)
        synchronize(self.device)
        return out, time.perf_counter() - t0
