"""tiedharness-eval RUN_DIR [--beam K] [--lenpen X] [--lenpen-style fairseq|gnmt]
[--split valid|test] [--max-len N] [--batch-size N] [--examples N]: decode a finished
translation run again from its final checkpoint and score it.

Every option may also be written key=value (`beam=4 lenpen=0.6`; `length_penalty=` is
`lenpen=`). Loads the run's model from `checkpoint.pt` (docs/run-record.md), decodes the
same examples the run decoded (by default) with batched beam search on the KV cache
(beam=1 is the run's greedy decoding, token for token), ranking finished hypotheses by
log-probability ÷ |Y|^lenpen (fairseq) or ÷ ((5 + |Y|) / 6)^lenpen (GNMT, Wu et al. 2016),
scores them with sacreBLEU (BLEU and chrF, their signatures recorded; exact match too
where the task scores it), writes the hypotheses next to the run
(`eval-<split>-beam<k>-lp<x>.jsonl`) and an entry under `eval` in run.json keyed
`<split>/beam<k>/lp<x>` (`gnmt<x>` in place of `lp<x>` for the GNMT penalty; `/len<N>`
added when max_len=N caps the output length; by default at most twice the source plus 10
tokens, as during training). A sweep folder evaluates each of its runs. Each run's last
line is fairseq's: `valid beam=4 lenpen=0.6: BLEU = 27.31 (signature nrefs:1|…)`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

from tiedharness.cli import fail

# option → type, default, what it takes, help; key=value and --key value, "_" or "-" alike
OPTIONS: dict[str, tuple[type, object, str, str]] = {
    "beam": (int, 4, "K", "beam size (1: greedy decoding)"),
    "lenpen": (float, 1.0, "X", "length penalty α: score ÷ |Y|^α, or see --lenpen-style"),
    "lenpen_style": (str, "fairseq", "fairseq|gnmt", "fairseq: |Y|^α; gnmt: ((5+|Y|)/6)^α"),
    "split": (str, "valid", "valid|test", "the split decoded"),
    "max_len": (int, None, "N", "at most N output tokens (default: 2 × source + 10)"),
    "batch_size": (int, None, "N", "sources decoded together (default: task.max_tokens a batch)"),
    "examples": (int, None, "N", "examples decoded (default: as many as the run decoded)"),
}
ALIASES = {"length_penalty": "lenpen"}  # the key=value name of earlier versions
CHOICES = {"lenpen_style": ("fairseq", "gnmt"), "split": ("valid", "test")}
VALID = ", ".join(f"--{k.replace('_', '-')} {v[2]}" for k, v in OPTIONS.items())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit 2, naming every valid option
        fail(f"{message}\nvalid options (also as key=value): {VALID}")


def parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tiedharness-eval", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("run_dir", type=Path, help="a run folder, or a sweep folder of runs")
    for key, (kind, default, metavar, text) in OPTIONS.items():
        names = [key, *(a for a, k in ALIASES.items() if k == key)]
        flags = [f"--{n}" for name in names for n in (name.replace("_", "-"), name)]
        parser.add_argument(
            *dict.fromkeys(flags),
            dest=key,
            type=kind,
            default=default,
            metavar=metavar,
            choices=CHOICES.get(key),
            help=text,
        )
    return parser


def as_options(argv: list[str]) -> list[str]:
    """key=value words (a name before the "=", not an existing path) → --key=value."""
    key_value = re.compile(r"[A-Za-z][\w-]*=")
    return [f"--{a}" if key_value.match(a) and not Path(a).exists() else a for a in argv]


def settings_of(argv: list[str]) -> tuple[Path, dict]:
    args = vars(parser().parse_args(as_options(argv)))
    run_dir = args.pop("run_dir")
    if args["beam"] < 1 or any((args[k] or 1) < 1 for k in ("max_len", "batch_size")):
        fail(f"beam, max_len and batch_size must be ≥ 1\nvalid options: {VALID}")
    return run_dir, args


def main(argv: list[str] | None = None) -> None:
    run_dir, settings = settings_of(sys.argv[1:] if argv is None else argv)
    if not run_dir.is_dir():
        fail(f"{run_dir} is not a folder: pass a run folder (with run.json)")
    runs = (
        [run_dir]
        if (run_dir / "run.json").is_file()
        else sorted(p.parent for p in run_dir.glob("*/run.json"))
    )
    if not runs:
        fail(f"no run.json in {run_dir} or its subfolders")
    for run in runs:
        try:
            key, scores = evaluate_run(run, settings)
        except (ValueError, FileNotFoundError) as err:
            fail(f"{run}: {err}")
        print(f"{run}  {key}  {shown(scores)}")
        if "training_greedy" in scores:
            print(
                f"  the run's own greedy decoding of the same {scores['decoded_examples']} "
                f"examples: {shown(scores['training_greedy'])}"
            )
        print(closing_line(settings, scores))


def closing_line(settings: dict, scores: dict) -> str:
    """fairseq's last line: `valid beam=4 lenpen=0.6: BLEU = 27.31 (signature …)`."""
    words = [settings["split"], f"beam={settings['beam']}", f"lenpen={settings['lenpen']:g}"]
    if settings["lenpen_style"] != "fairseq":
        words.append(f"lenpen_style={settings['lenpen_style']}")
    if settings["max_len"]:
        words.append(f"max_len={settings['max_len']}")
    signature = scores["signatures"]["bleu"]
    return f"{' '.join(words)}: BLEU = {scores['bleu']:.2f} (signature {signature})"


def shown(scores: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in scores.items() if isinstance(v, float))


def evaluate_run(run_dir: Path, settings: dict) -> tuple[str, dict]:
    import torch

    from tiedharness.build import build
    from tiedharness.checkpoint import load_checkpoint
    from tiedharness.config import JobConfig
    from tiedharness.model.decoding import LengthPenalty
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
    if settings["batch_size"]:
        data.batches = source_batches(data, settings["batch_size"])  # type: ignore[method-assign]
    evaluator = Evaluator(model, data, job.trainer, torch.device("cpu"))
    evaluator.beam = settings["beam"]
    evaluator.length_penalty = LengthPenalty(settings["lenpen"], settings["lenpen_style"])
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
    key = eval_key(settings)
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


def eval_key(settings: dict) -> str:
    """run.json's `eval` key: `valid/beam4/lp0.6` (fairseq's penalty), `valid/beam4/gnmt0.6`
    (GNMT's), `/len<N>` added when max_len caps the outputs."""
    penalty = "lp" if settings["lenpen_style"] == "fairseq" else settings["lenpen_style"]
    key = f"{settings['split']}/beam{settings['beam']}/{penalty}{settings['lenpen']:g}"
    return key + (f"/len{settings['max_len']}" if settings["max_len"] else "")


def source_batches(data, batch_size: int):
    """data.batches in its length order, but `batch_size` sources to a batch."""
    import torch

    from tiedharness.tasks.batching import collate

    batches = data.batches

    def sized(split: str, indices=None) -> list:
        order = [b.indices for b in batches(split, indices)]
        if not order:
            return []
        chunks = torch.cat(order).split(batch_size)
        return [collate(data.splits[split], chunk) for chunk in chunks]

    return sized


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
