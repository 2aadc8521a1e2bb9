"""A finished translation run decoded again from its final checkpoint and scored: the
library side of `tiedharness-eval` (the command parses and prints; docs/evaluation.md).

It decodes the examples the run decoded (by default) with batched beam search on the KV
cache, scores them with sacreBLEU (BLEU and chrF with their signatures, exact match where
the task scores it), compares them with the run's own greedy decoding of the same
examples, and records the result through the run folder: the hypotheses beside the run,
an entry under the record's `eval`, and the same numbers in the run's W&B run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import torch

from tiedharness.build import build
from tiedharness.checkpoint import checkpoint_step, load_checkpoint, model_state
from tiedharness.config import JobConfig
from tiedharness.model.decoding import LengthPenalty
from tiedharness.tasks import make_task
from tiedharness.tracking.run_folder import RunFolder
from tiedharness.tracking.trackers import log_eval_entry
from tiedharness.training.evaluation import Evaluator
from tiedharness.training.metrics import exact_match, signed_bleu_chrf


@dataclass(frozen=True)
class DecodeSettings:
    """How tiedharness-eval decodes (its options; docs/evaluation.md)."""

    beam: int = 4
    lenpen: float = 1.0
    lenpen_style: str = "fairseq"  # fairseq: |Y|^α; gnmt: ((5 + |Y|) / 6)^α
    split: str = "valid"
    max_len: int | None = None  # None: twice the source plus 10
    batch_size: int | None = None  # None: the task's token-budget batches
    examples: int | None = None  # None: as many as the run decoded

    def key(self) -> str:
        """The record's `eval` key: `valid/beam4/lp0.6` (fairseq's penalty),
        `valid/beam4/gnmt0.6` (GNMT's), `/len<N>` added when max_len caps the outputs."""
        penalty = "lp" if self.lenpen_style == "fairseq" else self.lenpen_style
        key = f"{self.split}/beam{self.beam}/{penalty}{self.lenpen:g}"
        return key + (f"/len{self.max_len}" if self.max_len else "")


def evaluate_run(folder: RunFolder, settings: DecodeSettings) -> dict:
    """Decode the run in `folder` again as `settings` say and record it; returns the
    record's new `eval` entry. ValueError / FileNotFoundError name what is missing."""
    record = folder.read_record()
    checkpoint = load_checkpoint(folder.checkpoint)
    if checkpoint is None:
        raise FileNotFoundError(
            f"no checkpoint in {folder.path}: only runs trained with checkpoints can be evaluated"
        )
    job = JobConfig.from_config(record.config)
    if make_task(job.task).kind == "lm":  # before building its data
        raise ValueError("an LM run has nothing to decode against references")
    _, data, model = build(job)
    model.load_state_dict(model_state(checkpoint))
    evaluator = Evaluator(
        model,
        data,
        job.trainer,
        torch.device("cpu"),
        beam=settings.beam,
        length_penalty=LengthPenalty(settings.lenpen, settings.lenpen_style),
        max_new_tokens=settings.max_len,
        batch_size=settings.batch_size,
    )
    split = settings.split
    n = settings.examples or (
        job.trainer.decode_examples if split == "valid" else job.trainer.test_examples
    )
    scores = evaluator.decode_scores(split, n, speed=False)
    decoded = evaluator.decoded[split]
    # BLEU and chrF with their signatures (exact-match tasks get them too)
    tokenize = data.task.bleu_tokenizer()
    scores.update(signed_bleu_chrf(*hypotheses_and_references(decoded), tokenize))
    greedy = training_greedy(folder.read_decoded(split), decoded, set(scores), tokenize)
    if greedy is not None:
        scores["training_greedy"] = greedy
    key = settings.key()
    entry = {
        **scores,
        "hypotheses": folder.write_eval(key, decoded).name,
        "checkpoint_step": checkpoint_step(checkpoint),
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record = folder.read_record()  # as fresh as possible before writing
    record.eval[key] = entry
    folder.write_record(record)
    log_eval_entry(record, key, entry, folder.path)
    return entry


def hypotheses_and_references(rows: list[dict]) -> tuple[list[str], list[str]]:
    return [r["hypothesis"] for r in rows], [r["reference"] for r in rows]


def training_greedy(
    rows: list[dict] | None, decoded: list[dict], names: set[str], tokenize: str | None = "13a"
) -> dict | None:
    """The scores of the run's own greedy decoding during training (`rows`), when it
    decoded the same examples: what a beam gains over it."""
    if rows is None or [r["index"] for r in rows] != [r["index"] for r in decoded]:
        return None
    hyps, refs = hypotheses_and_references(rows)
    out = {"exact_match": exact_match(hyps, refs)} if "exact_match" in names else {}
    out.update(
        {k: v for k, v in signed_bleu_chrf(hyps, refs, tokenize).items() if k != "signatures"}
    )
    return out
