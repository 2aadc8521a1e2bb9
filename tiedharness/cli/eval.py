"""tiedharness-eval RUN_DIR [beam=4] [length_penalty=1.0] [max_len=N] [split=valid] [examples=N]:
decode a finished translation run again from its final checkpoint and score it.

Loads the run's model from `checkpoint.pt` (docs/run-record.md), decodes the same
examples the run decoded (by default) with batched beam search on the KV cache (beam=1
is the run's greedy decoding, token for token), scores them with sacreBLEU (BLEU and
chrF, their signatures recorded; exact match too where the task scores it), writes the hypotheses next to the run
(`eval-<split>-beam<k>-lp<x>.jsonl`) and an entry under `eval` in run.json keyed
`<split>/beam<k>/lp<x>` (`/len<N>` added when max_len=N caps the output length; by default
at most twice the source plus 10 tokens, as during training). A sweep folder evaluates
each of its runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from tiedharness.cli import fail

SETTINGS = {"beam": int, "length_penalty": float, "max_len": int, "split": str, "examples": int}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiedharness-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder, or a sweep folder of runs")
    parser.add_argument(
        "settings", nargs="*", help="beam=K length_penalty=X max_len=N split=valid|test examples=N"
    )
    return parser


def settings_of(pairs: list[str]) -> dict:
    out = {"beam": 4, "length_penalty": 1.0, "max_len": None, "split": "valid", "examples": None}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in SETTINGS or not value:
            fail(f"unknown setting {pair!r}: use {', '.join(f'{k}=…' for k in SETTINGS)}")
        try:
            out[key] = SETTINGS[key](value)
        except ValueError:
            fail(f"{key}={value!r} is not a {SETTINGS[key].__name__}")
    if out["beam"] < 1 or out["split"] not in ("valid", "test") or (out["max_len"] or 1) < 1:
        fail("beam and max_len must be ≥ 1, split one of valid, test")
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = settings_of(args.settings)
    if not args.run_dir.is_dir():
        fail(f"{args.run_dir} is not a folder: pass a run folder (with run.json)")
    runs = (
        [args.run_dir]
        if (args.run_dir / "run.json").is_file()
        else sorted(p.parent for p in args.run_dir.glob("*/run.json"))
    )
    if not runs:
        fail(f"no run.json in {args.run_dir} or its subfolders")
    for run_dir in runs:
        try:
            key, scores = evaluate_run(run_dir, settings)
        except (ValueError, FileNotFoundError) as err:
            fail(f"{run_dir}: {err}")
        print(f"{run_dir}  {key}  {shown(scores)}")
        if "training_greedy" in scores:
            print(
                f"  the run's own greedy decoding of the same {scores['decoded_examples']} "
                f"examples: {shown(scores['training_greedy'])}"
            )


def shown(scores: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in scores.items() if isinstance(v, float))


def evaluate_run(run_dir: Path, settings: dict) -> tuple[str, dict]:
    import torch

    from tiedharness.build import build
    from tiedharness.checkpoint import load_checkpoint
    from tiedharness.config import JobConfig
    from tiedharness.tasks import make_task
    from tiedharness.tracking.record import RunRecord
    from tiedharness.training.evaluation import Evaluator
    from tiedharness.training.metrics import signed_bleu_chrf

    record = RunRecord.read(run_dir / "run.json")
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(
            "no checkpoint.pt: only runs trained with checkpoints can be evaluated"
        )
    job = JobConfig.from_config(record.config)
    if make_task(job.task).kind == "lm":  # before building its data
        raise ValueError("an LM run has nothing to decode against references")
    _, data, model = build(job)
    model.load_state_dict(checkpoint["trainer"]["model"])
    evaluator = Evaluator(model, data, job.trainer, torch.device("cpu"))
    evaluator.beam, evaluator.length_penalty = settings["beam"], settings["length_penalty"]
    evaluator.max_new_tokens = settings["max_len"]
    split = settings["split"]
    n = settings["examples"] or (
        job.trainer.decode_examples if split == "valid" else job.trainer.test_examples
    )
    scores = evaluator.decode_scores(split, n, speed=False)
    # BLEU and chrF with their signatures (exact-match tasks get them too)
    decoded = evaluator.decoded[split]
    hyps, refs = [r["hypothesis"] for r in decoded], [r["reference"] for r in decoded]
    scores.update(signed_bleu_chrf(hyps, refs))
    greedy = training_greedy(run_dir / f"decoded-{split}.jsonl", decoded, set(scores))
    if greedy is not None:
        scores["training_greedy"] = greedy
    key = f"{split}/beam{settings['beam']}/lp{settings['length_penalty']:g}"
    if settings["max_len"]:
        key += f"/len{settings['max_len']}"
    hypotheses = run_dir / f"eval-{key.replace('/', '-')}.jsonl"
    with hypotheses.open("w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in evaluator.decoded[split])
    entry = {
        **scores,
        "hypotheses": hypotheses.name,
        "checkpoint_step": checkpoint["trainer"]["counters"]["step"],
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record = RunRecord.read(run_dir / "run.json")  # as fresh as possible before writing
    record.eval[key] = entry
    record.write(run_dir)
    log_to_wandb(record, key, entry, run_dir)
    return key, entry


def training_greedy(path: Path, decoded: list[dict], names: set[str]) -> dict | None:
    """The scores of the run's own greedy decoding during training (`decoded-<split>.jsonl`),
    when it decoded the same examples: what a beam gains over it."""
    from tiedharness.training.metrics import exact_match, signed_bleu_chrf

    try:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    except (OSError, ValueError):
        return None
    if [r["index"] for r in rows] != [r["index"] for r in decoded]:
        return None
    hyps, refs = [r["hypothesis"] for r in rows], [r["reference"] for r in rows]
    out = {"exact_match": exact_match(hyps, refs)} if "exact_match" in names else {}
    out.update({k: v for k, v in signed_bleu_chrf(hyps, refs).items() if k != "signatures"})
    return out


def log_to_wandb(record, key: str, entry: dict, run_dir: Path) -> None:
    """Into the run's own W&B run (its id, resume="allow"), as eval/<key>/<score>; W&B's
    files go to the run folder where it is now (it may have moved since training)."""
    if not record.wandb or not record.wandb.get("id"):
        return
    from tiedharness.tracking.trackers import open_wandb_run

    logger = (record.config.get("logger") or {}).get("wandb") or {}
    mode = record.wandb.get("mode", "offline")
    options = {"project": logger.get("project"), "entity": logger.get("entity")}
    with open_wandb_run(run_dir, mode, id=record.wandb["id"], resume="allow", **options) as run:
        run.summary.update(
            {f"eval/{key}/{k}": v for k, v in entry.items() if isinstance(v, int | float)}
        )
