"""Evaluation of a model on a task's held-out splits: validation loss, and greedy
decoding with the KV cache for exact match / BLEU / chrF and inference throughput.

Its inputs are the model and the task's data (batches, references, detokenizer); it
never trains and never records: the job logs what it returns. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import time

import torch

from tiedharness.model.decoding import greedy_continue, greedy_translate
from tiedharness.model.transformer import Transformer
from tiedharness.tasks.batching import collate, token_batches
from tiedharness.tasks.data import TaskData
from tiedharness.training.config import TrainerConfig
from tiedharness.training.device import autocast, synchronize
from tiedharness.training.loop import model_inputs
from tiedharness.training.metrics import bleu_chrf, exact_match, perplexity, token_loss
from tiedharness.vocab import EOS_ID, PAD_ID

LM_PREFIX, LM_NEW_TOKENS, LM_BATCH = 16, 32, 64  # LM decoding speed: prompt, continuation


class Evaluator:
    def __init__(
        self, model: Transformer, data: TaskData, cfg: TrainerConfig, device: torch.device
    ) -> None:
        self.model, self.data, self.cfg, self.device = model, data, cfg, device

    def _autocast(self):
        return autocast(self.device, self.cfg.precision)

    @torch.no_grad()
    def loss(self, split: str = "valid") -> float:
        """Mean cross-entropy per target token, without label smoothing."""
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.data.batches(split, limit=self.cfg.eval_batches or None):
            batch = batch.to(self.device)
            with self._autocast():
                logits = self.model(*model_inputs(self.model, batch))
            loss_sum, n = token_loss(logits, batch.tgt_out)
            total, count = total + float(loss_sum), count + n
        return total / count if count else float("nan")

    def validation(self) -> dict[str, float]:
        loss = self.loss()
        return {"val_loss": loss, "val_ppl": perplexity(loss)}

    def final(self) -> dict[str, float]:
        """The end of a run: validation loss, decoded validation subset, test split."""
        out = self.validation()
        out.update(self.decode_scores("valid", self.cfg.decode_examples))
        if len(self.data.splits["test"]) and self.cfg.test_examples != 0:
            test = self.decode_scores("test", self.cfg.test_examples, speed=False)
            test["loss"] = self.loss("test")
            out.update({f"test_{k}": v for k, v in test.items()})
        return out

    @torch.no_grad()
    def decode_scores(self, split: str, n_examples: int | None, speed: bool = True) -> dict:
        """Greedy outputs with the KV cache on the first `n_examples` of `split`:
        exact match / BLEU / chrF as the task asks, and generated tokens per second."""
        self.model.eval()
        if self.data.kind == "lm":
            return self._lm_speed(split, n_examples) if speed else {}
        hypotheses, generated, seconds = self._translate(split, n_examples)
        references = self.data.references(split)[: len(hypotheses)]
        out: dict[str, float] = {}
        if "exact_match" in self.data.scores:
            out["exact_match"] = exact_match(hypotheses, references)
        if "bleu" in self.data.scores:
            out["bleu"], out["chrf"] = bleu_chrf(hypotheses, references)
        if speed:
            out["infer_tokens_per_s"] = generated / seconds if seconds else 0.0
        return out

    def _translate(self, split: str, n_examples: int | None) -> tuple[list[str], int, float]:
        """Hypotheses for the first `n_examples`, generated token count, decoding seconds."""
        data = self.data.splits[split]
        n = len(data) if n_examples is None else min(n_examples, len(data))
        subset = torch.arange(n)
        src_sizes, tgt_sizes = (s[:n] for s in data.sizes())
        hypotheses: list[str] = [""] * n
        generated, seconds = 0, 0.0
        for idx in token_batches(src_sizes, tgt_sizes, self.data.max_tokens, shuffle=False):
            batch = collate(data, subset[idx]).to(self.device)
            max_len = min(self.model.cfg.max_len - 1, 2 * batch.src.shape[1] + 10)
            out, elapsed = self._timed(greedy_translate, self.model, batch.src, max_len)
            seconds += elapsed
            generated += int((out != PAD_ID).sum())
            for row, i in zip(out.tolist(), idx.tolist(), strict=True):
                ids = row[: row.index(EOS_ID)] if EOS_ID in row else row
                hypotheses[i] = self.data.detokenize(ids)
        return hypotheses, generated, seconds

    def _lm_speed(self, split: str, n_examples: int | None) -> dict:
        """Generated tokens per second continuing LM_PREFIX-token prompts of the split."""
        windows = self.data.splits[split].tgt
        n = min(n_examples or len(windows), len(windows))
        rows = [windows[i][:LM_PREFIX] for i in range(n) if len(windows[i]) >= LM_PREFIX]
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
