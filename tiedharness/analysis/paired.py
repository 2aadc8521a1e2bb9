"""Comparisons with the baseline, paired by seed: each label against `none` of its cell
(`none@separate` where the vocabulary is a comparison axis: vocab_axis.py).

Two kinds of statistics, which answer different questions:

- the **seed-level** paired difference (`paired_deltas`, `paired_difference` in stats.py):
  the per-seed differences of a metric, their mean, 95% interval and paired-t p-value.
  It measures training variance (another seed trains another model) and is the one every
  significance mark of the report uses;
- sacreBLEU's **paired bootstrap** (`bleu_bootstrap`) on the decoded sentences pooled over
  seeds: it resamples sentences of fixed, already trained systems, so it measures the
  variance of decoding a test set, not of training. It is reported beside the seed-level
  p (`delta_bleu_bootstrap_p`), never in its place.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tiedharness.analysis.stats import SIGNIFICANCE, bleu_paired_bootstrap, paired_difference
from tiedharness.analysis.vocab_axis import (
    BASELINE,
    BASELINE_SHARES,
    baseline_of,
    baselines,
    cell_labels,
    on_axis,
)


def cell_ids(frame: pd.DataFrame, cell: list[str]) -> pd.Series:
    """One string per row naming its cell (the values of the cell keys): rows of the
    summary and runs of the same cell get the same id."""
    if frame.empty:
        return pd.Series(dtype=str, index=frame.index)
    return frame[cell].astype(str).agg("|".join, axis=1)


def as_float(value: Any) -> float:
    """A metric as a float; NaN where a run did not record it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return float("nan")
    return float(value)


def arm_key(cell_id: str, label: str) -> str:
    """One string naming a label of a cell (what `by_arm_and_seed` indexes by)."""
    return f"{cell_id}|{label}"


def by_arm_and_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs (with their `_cell` id) indexed by (arm key, seed): where a comparison finds
    its baseline's runs."""
    keys = [arm_key(c, s) for c, s in zip(runs["_cell"], runs["sharing"], strict=True)]
    return runs.assign(_arm=keys).set_index(["_arm", "seed"])


def seed_differences(runs: pd.DataFrame, base: pd.DataFrame, key: str, metric: str) -> list[float]:
    """Per-seed differences label − baseline of one metric: `runs` are the label's runs of
    the cell indexed by seed, `base` runs indexed by (arm key, seed) (`by_arm_and_seed`),
    `key` the baseline's arm key (`arm_key`)."""
    return [
        as_float(runs.at[seed, metric]) - as_float(base.at[(key, seed), metric])
        for seed in runs.index
        if (key, seed) in base.index
    ]


def seed_deltas(at: pd.DataFrame, cell: list[str], columns: list[str]) -> pd.DataFrame:
    """Per-seed differences in long form. `at`: one row per run and point of comparison
    (its `_cell`, `sharing`, `seed`, an `endpoint` naming the point — a budget fraction,
    `final`, `best` — its `fraction` and `tokens`, and metric columns). Out: per cell,
    label (not its baseline), seed, endpoint and metric `column`: the label's `value`, the
    baseline's (`baseline_value`, at `baseline_fraction`) and `delta`."""
    columns = [c for c in columns if c in at and at[c].notna().any()]
    if at.empty or not columns:
        return pd.DataFrame()
    present = cell_labels(at["_cell"], at["sharing"])
    long = at.melt(
        id_vars=[*cell, "_cell", "sharing", "seed", "endpoint", "fraction", "tokens"],
        value_vars=columns,
        var_name="column",
    )
    long["baseline"] = [
        baseline_of(label, present.get(c, ()))
        for c, label in zip(long["_cell"], long["sharing"], strict=True)
    ]
    keys = ["_cell", "seed", "endpoint", "column"]
    base = long[long["sharing"] == long["baseline"]][[*keys, "sharing", "value", "fraction"]]
    base = base.rename(
        columns={"sharing": "baseline", "value": "baseline_value", "fraction": "baseline_fraction"}
    )
    arms = long[long["sharing"] != long["baseline"]]
    paired = arms.merge(base, on=[*keys, "baseline"])
    return paired.assign(delta=paired["value"] - paired["baseline_value"])


def paired_deltas(
    out: pd.DataFrame, done: pd.DataFrame, cell: list[str], metrics: list[str]
) -> pd.DataFrame:
    """delta_<metric>_{mean,ci95,p,n} (and `_significant`, p < 0.05) of every summary row
    of `out`: the per-seed differences from the baseline of the same cell, `none` (or
    `none@separate` on the vocabulary axis, vocab_axis.py) (`done`: one row per completed
    run). On the vocabulary axis, also `baseline` and the baseline's output-layer shares
    (`with_baseline_columns`)."""
    metrics = [m for m in metrics if m in done.columns]
    done = done.assign(_cell=cell_ids(done, cell))
    base = by_arm_and_seed(done)
    ids = cell_ids(out, cell)
    compared = baselines(ids, out["sharing"], cell_labels(done["_cell"], done["sharing"]))
    columns: dict[str, list] = {}
    for cell_id, label, baseline in zip(ids, out["sharing"], compared, strict=True):
        runs = done[(done["_cell"] == cell_id) & (done["sharing"] == label)].set_index("seed")
        for m in metrics:
            diffs = seed_differences(runs, base, arm_key(cell_id, baseline), m)
            for stat, value in paired_difference(diffs).items():
                columns.setdefault(f"delta_{m}_{stat}", []).append(value)
    for m in metrics:
        columns[f"delta_{m}_significant"] = [p < SIGNIFICANCE for p in columns[f"delta_{m}_p"]]
    # one concat, not a column at a time: pandas warns of a fragmented frame otherwise
    out = pd.concat([out, pd.DataFrame(columns, index=out.index)], axis=1)
    return with_baseline_columns(out, ids, compared)


def with_baseline_columns(out: pd.DataFrame, ids: pd.Series, compared: list[str]) -> pd.DataFrame:
    """On the vocabulary axis only: `baseline` (the label each row is compared with, after
    `sharing`) and `baseline_<share>_mean`, the baseline row's mean output-layer shares of
    a step (NaN where the cell has no such row); `out` unchanged elsewhere."""
    if not on_axis(out["sharing"]):
        return out
    out = out.copy()
    out.insert(out.columns.get_loc("sharing") + 1, "baseline", compared)
    keys = [arm_key(c, s) for c, s in zip(ids, out["sharing"], strict=True)]
    for share in (s for s in BASELINE_SHARES if f"{s}_mean" in out):
        means = dict(zip(keys, out[f"{share}_mean"], strict=True))
        out[f"baseline_{share}_mean"] = [
            means.get(arm_key(c, b), float("nan")) for c, b in zip(ids, compared, strict=True)
        ]
    return out


def bleu_bootstrap(out: pd.DataFrame, done: pd.DataFrame, cell: list[str]) -> list[float]:
    """sacreBLEU's paired bootstrap of each label against the baseline of its cell, on the
    sentences both decoded (decoded-valid.jsonl, or the hypotheses of the tiedharness-eval
    entry the report uses), pooled over the seeds they share. Decoding variance only
    (see the module's docstring). NaN where the decoded files are missing or cover
    different examples."""
    if "decoded_valid" not in done:  # runs read from W&B: no decoded sentences
        return [float("nan")] * len(out)
    key, ids = cell_ids(done, cell), cell_ids(out, cell)
    compared = baselines(ids, out["sharing"], cell_labels(key, done["sharing"]))
    p_values = []
    for cell_id, label, baseline in zip(ids, out["sharing"], compared, strict=True):
        pooled = pooled_sentences(done[key == cell_id], label, baseline)
        if label == baseline or pooled is None:
            p_values.append(float("nan"))
            continue
        p_values.append(bleu_paired_bootstrap(*pooled))
    return p_values


def pooled_sentences(
    runs: pd.DataFrame, label: str, baseline: str = BASELINE
) -> tuple[list, list, list] | None:
    """(the baseline's hypotheses, the label's hypotheses, references) of one cell's runs,
    the seeds both have concatenated in seed order; None where a pair cannot be read."""
    mine = runs[runs["sharing"] == label].set_index("seed")["decoded_valid"]
    base = runs[runs["sharing"] == baseline].set_index("seed")["decoded_valid"]
    pooled = [decoded_pair(base[s], mine[s]) for s in mine.index if s in base.index]
    if not pooled or any(p is None for p in pooled):
        return None
    baseline, system, references = ([x for p in pooled for x in p[i]] for i in range(3))
    return baseline, system, references


def decoded_pair(base_file: str | None, run_file: str | None) -> tuple[list, list, list] | None:
    """(baseline hypotheses, system hypotheses, references) of the same examples."""
    try:
        rows = [
            [json.loads(line) for line in Path(f).read_text().splitlines()]
            for f in (base_file, run_file)
        ]
    except (OSError, ValueError, TypeError):
        return None
    if [r["index"] for r in rows[0]] != [r["index"] for r in rows[1]]:
        return None
    return (
        [r["hypothesis"] for r in rows[0]],
        [r["hypothesis"] for r in rows[1]],
        [r["reference"] for r in rows[0]],
    )
