"""tiedharness-eval RUN_DIR [--beam K] [--lenpen X] [--lenpen-style fairseq|gnmt]
[--split valid|test] [--max-len N] [--batch-size N] [--examples N]: decode a finished
translation run again from its final checkpoint and score it.

Every option may also be written key=value (`beam=4 lenpen=0.6`). The run's model is
loaded from its final checkpoint and the same examples the run decoded (by default) are
decoded with batched beam search on the KV cache (beam=1 is the run's greedy decoding,
token for token), ranking finished hypotheses by log-probability ÷ |Y|^lenpen (fairseq)
or ÷ ((5 + |Y|) / 6)^lenpen (GNMT, Wu et al. 2016), and scored with sacreBLEU. The
hypotheses land beside the run and an entry under the record's `eval`, keyed
`<split>/beam<k>/lp<x>` (`gnmt<x>` for the GNMT penalty; `/len<N>` when max_len=N caps
the output length; by default at most twice the source plus 10 tokens, as during
training): tiedharness/rescoring.py, docs/evaluation.md. A sweep folder evaluates each of
its runs. Each run's last line is fairseq's: `valid beam=4 lenpen=0.6: BLEU = 27.31
(signature nrefs:1|…)`.
"""

from __future__ import annotations

import argparse
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
        flags = [f"--{key.replace('_', '-')}", f"--{key}"]
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
        fail(f"{run_dir} is not a folder: pass a run folder, or a sweep folder of runs")
    from tiedharness.rescoring import DecodeSettings, evaluate_run  # torch loads here
    from tiedharness.tracking.run_folder import RunFolder

    folder, decode = RunFolder(run_dir), DecodeSettings(**settings)
    runs = [folder] if folder.holds_run() else RunFolder.every_below(run_dir)
    if not runs:
        fail(f"no run record in {run_dir} or its subfolders")
    for run in runs:
        try:
            scores = evaluate_run(run, decode)
        except (ValueError, FileNotFoundError) as err:
            fail(f"{run.path}: {err}")
        print(f"{run.path}  {decode.key()}  {shown(scores)}")
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
    if "bleu" not in scores:  # a target sacreBLEU cannot tokenize here (Japanese without MeCab)
        signature = scores["signatures"]["chrf"]
        return f"{' '.join(words)}: chrF = {scores['chrf']:.2f} (signature {signature}; no BLEU)"
    signature = scores["signatures"]["bleu"]
    return f"{' '.join(words)}: BLEU = {scores['bleu']:.2f} (signature {signature})"


def shown(scores: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in scores.items() if isinstance(v, float))
