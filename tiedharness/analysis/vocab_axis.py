"""The vocabulary as a comparison axis (issue 29: joint against separate vocabularies).

A sweep that varies `task.vocab` over joint and separate asks what a joint vocabulary
costs (a larger softmax) and what sharing wins back with it, so the vocabulary is no
cell key there: it becomes part of each arm's label, `<label>@<vocabulary>`
(`none@separate`, `none@joint`, `encdec_vocab@joint`, `three_way@joint`), and every arm
of a cell is compared with `none@separate` of that cell. A cell with no completed
`none@separate` falls back to `none@joint` and the report's warnings say so. A sweep that
does not vary `task.vocab` keeps plain labels, and `none` is every cell's baseline.

The suffix is the analysis's own: model/labels.py's `parse_label` never sees it
(`split_vocab` takes it off first).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pandas as pd

BASELINE = "none"  # the plain baseline label: no strategy
VOCAB_KEY = "task.vocab"
VOCABS = ("joint", "separate")
BASE_VOCAB = "separate"  # the vocabulary of the baseline on the axis
DEFAULT_VOCAB = "joint"  # the tasks' default (tasks/base.py): figures draw it plain
AT = "@"
# the baseline's output-layer shares each row states beside its own (summary.csv)
BASELINE_SHARES = ("output_step_flops_share", "output_step_time_share")


def vocab_label(label: str, vocab: str) -> str:
    """An arm's label on the axis: ("three_way", "joint") → "three_way@joint"."""
    return f"{label}{AT}{vocab}"


def split_vocab(label: str) -> tuple[str, str | None]:
    """ "encdec_vocab@joint" → ("encdec_vocab", "joint"); a label without a vocabulary
    suffix ("qk+mask_self") → (itself, None)."""
    head, at, vocab = str(label).rpartition(AT)
    return (head, vocab) if at and vocab in VOCABS else (str(label), None)


def on_axis(labels: Collection[str]) -> bool:
    """Whether any of these labels carries a vocabulary."""
    return any(split_vocab(label)[1] is not None for label in labels)


def is_vocab_axis(frame: pd.DataFrame, swept: list[str]) -> bool:
    """The runs vary `task.vocab` (among runs of the same task, strategy and seed) over
    joint and separate, and over nothing else."""
    column = f"cfg.{VOCAB_KEY}"
    if VOCAB_KEY not in swept or column not in frame:
        return False
    return set(frame[column].dropna()) == set(VOCABS)


def with_vocab_arms(frame: pd.DataFrame, swept: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The runs with the vocabulary in their label and out of the cell keys, where it is
    an axis; unchanged otherwise. A run without a vocabulary keeps its plain label."""
    if not is_vocab_axis(frame, swept):
        return frame, swept
    vocab = frame[f"cfg.{VOCAB_KEY}"]
    labels = [
        vocab_label(label, v) if v in VOCABS else label
        for label, v in zip(frame["sharing"], vocab, strict=True)
    ]
    return frame.assign(sharing=labels), [key for key in swept if key != VOCAB_KEY]


def baseline_of(label: str, labels: Collection[str]) -> str:
    """The label `label` is compared with, among the labels of its cell: `none` for a
    plain label; on the axis `none@separate`, or `none@joint` where the cell has no
    `none@separate` but has it."""
    if split_vocab(label)[1] is None:
        return BASELINE
    preferred, fallback = vocab_label(BASELINE, BASE_VOCAB), vocab_label(BASELINE, DEFAULT_VOCAB)
    return fallback if preferred not in labels and fallback in labels else preferred


def cell_labels(ids: pd.Series, labels: pd.Series) -> dict[str, set[str]]:
    """Cell id → the labels its rows have."""
    out: dict[str, set[str]] = {}
    for cell, label in zip(ids, labels, strict=True):
        out.setdefault(cell, set()).add(label)
    return out


def baselines(
    ids: pd.Series, labels: pd.Series, present: Mapping[str, Collection[str]] | None = None
) -> list[str]:
    """Each row's baseline label, chosen among the labels its cell has in `present`
    (cell id → labels; default: these rows' own)."""
    present = cell_labels(ids, labels) if present is None else present
    return [
        baseline_of(label, present.get(cell, ())) for cell, label in zip(ids, labels, strict=True)
    ]


def missing_baselines(done: pd.DataFrame, cell: list[str]) -> list[str]:
    """Warnings for the cells on the axis whose completed runs have no `none@separate`:
    what their arms are compared with instead, or that they have no Δ."""
    if done.empty:
        return []
    preferred = vocab_label(BASELINE, BASE_VOCAB)
    lines = []
    for key, group in done.groupby(cell, dropna=False, sort=False):
        labels = set(group["sharing"])
        if preferred in labels or not on_axis(labels):
            continue
        values = key if isinstance(key, tuple) else (key,)
        name = ", ".join(f"{k}={v}" for k, v in zip(cell, values, strict=True))
        fallback = vocab_label(BASELINE, DEFAULT_VOCAB)
        lines.append(
            f"cell {name}: no completed {preferred} run; its arms are compared with {fallback}"
            if fallback in labels
            else f"cell {name}: no completed {preferred} or {fallback} run; its arms have "
            "no paired Δ"
        )
    return lines
