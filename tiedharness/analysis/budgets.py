"""The Δ-vs-budget view: each comparison (a label against `none` of its cell, or
`none@separate` where the vocabulary is an axis: vocab_axis.py) at every budget its runs
were evaluated at, and a verdict on whether the difference has settled.

A run's `budgets` (run.json, docs/run-record.md) hold its metrics at each budget: one
entry per budget branch of a warmup-stable-decay run (`trainer.branch_at`) and one for the
whole budget (fraction 1.0). Budgets pair across the seeds and labels of a cell by their
`fraction`; at each, the paired Δ is computed as the final one is (per-seed differences,
mean, 95% interval, paired-t p-value, n). The verdict (docs/metrics.md, "Δ vs budget")
reads the last two budgets:

- `stable`: the same sign at both, p < 0.05 at both, and |Δ_last − Δ_prev| no larger
  than the last budget's 95% interval;
- `shrinking` / `growing`: the same sign and significant at both, but |Δ| fell / rose by
  more than that interval;
- `not settled`: anything else (fewer than two budgets, not significant at both, a sign
  change).
"""

from __future__ import annotations

import math

import pandas as pd

from tiedharness.analysis.paired import arm_key, by_arm_and_seed, cell_ids, seed_differences
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.stats import SIGNIFICANCE, paired_difference
from tiedharness.analysis.vocab_axis import baseline_of, baselines, cell_labels

BUDGET_METRICS = ("val_loss", "val_bpc", "bleu", "chrf", "exact_match")
STABLE, SHRINKING, GROWING, NOT_SETTLED = "stable", "shrinking", "growing", "not settled"
VERDICT_NOTE = (
    "verdict (Δ val loss vs budget, docs/metrics.md): stable = at the last two budgets Δ has "
    f"one sign, p < {SIGNIFICANCE} at both and moved by no more than the last budget's 95% "
    "interval; shrinking / growing = the same, but |Δ| fell / rose by more than that; "
    "not settled = anything else (fewer than two budgets, not significant at both, a sign "
    "change)."
)
STATS = ["mean", "ci95", "p", "n"]


def budget_table(runs: Runs) -> pd.DataFrame:
    """One row per completed run and budget: the run's cell keys, label and seed with the
    budget's fraction, step, tokens and metrics. Empty where no run recorded budgets."""
    if runs.budgets is None or runs.budgets.empty or runs.completed.empty:
        return pd.DataFrame()
    done = runs.completed[["run_id", *runs.cell_keys, "sharing", "seed"]]
    table = runs.budgets.merge(done, on="run_id")
    table["fraction"] = table["fraction"].astype(float).round(6)
    table = table.drop_duplicates(["run_id", "fraction"], keep="last")
    return table.assign(_cell=cell_ids(table, runs.cell_keys))


def budget_deltas(runs: Runs) -> pd.DataFrame:
    """The long table of budgets.csv: per cell, label (not its baseline), metric and budget
    fraction, the budget's step and tokens and the paired Δ vs the cell's baseline (none,
    or none@separate on the vocabulary axis) (mean, ci95, p, n)."""
    cell = runs.cell_keys
    columns = [*cell, "sharing", "fraction", "step", "tokens", "metric", *STATS]
    table = budget_table(runs)
    if table.empty:
        return pd.DataFrame(columns=columns)
    metrics = [m for m in BUDGET_METRICS if m in table and table[m].notna().any()]
    base = {fraction: by_arm_and_seed(at) for fraction, at in table.groupby("fraction")}
    done = runs.completed  # the baseline is chosen as the summary chooses it
    present = cell_labels(cell_ids(done, cell), done["sharing"])
    rows = []
    for (cell_id, label), group in table.groupby(["_cell", "sharing"], sort=False):
        key = arm_key(cell_id, baseline_of(label, present.get(cell_id, ())))
        if key == arm_key(cell_id, label):
            continue
        for metric in metrics:
            for fraction, mine in group.groupby("fraction", sort=True):
                diffs = seed_differences(mine.set_index("seed"), base[fraction], key, metric)
                result = paired_difference(diffs)
                if result["n"] == 0:
                    continue
                rows.append(
                    {
                        **{k: mine.iloc[0][k] for k in cell},
                        "sharing": label,
                        "fraction": fraction,
                        "step": _mean(mine.get("step")),
                        "tokens": _mean(mine.get("tokens")),
                        "metric": metric,
                        **result,
                    }
                )
    out = pd.DataFrame(rows, columns=columns)
    for column in ("step", "tokens"):  # counts stay integers where the seeds agree
        values = out[column].dropna()
        if len(values) and (values % 1 == 0).all():
            out[column] = out[column].astype("Int64")
    return out


def _mean(values: pd.Series | None) -> float:
    return float("nan") if values is None else float(pd.to_numeric(values).mean())


def verdict(points: pd.DataFrame) -> str:
    """The verdict of one comparison and metric from its per-budget Δ (columns fraction,
    mean, ci95, p), read at the last two budgets that have a Δ (module docstring)."""
    points = points[points["mean"].notna()].sort_values("fraction")
    if len(points) < 2:
        return NOT_SETTLED
    prev, last = points.iloc[-2], points.iloc[-1]
    significant = prev["p"] < SIGNIFICANCE and last["p"] < SIGNIFICANCE
    same_sign = _sign(prev["mean"]) == _sign(last["mean"]) != 0
    if not (significant and same_sign):
        return NOT_SETTLED
    if abs(last["mean"] - prev["mean"]) <= last["ci95"]:
        return STABLE
    return SHRINKING if abs(last["mean"]) < abs(prev["mean"]) else GROWING


def _sign(value: float) -> int:
    return 0 if value == 0 or math.isnan(value) else (1 if value > 0 else -1)


def with_verdicts(summary: pd.DataFrame, deltas: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """The summary with `delta_<metric>_verdict` for every budget metric it compares, and
    `verdict` (val loss's). Empty for the baseline's rows (each cell's own: vocab_axis.py)
    and where a label has no Δ of the metric at all; `not settled` where it has fewer than
    two budgets."""
    if summary.empty:
        return summary
    keyed = deltas.assign(_key=cell_ids(deltas, cell) + "|" + deltas["sharing"].astype(str))
    keys = cell_ids(summary, cell) + "|" + summary["sharing"].astype(str)
    compared_with = baselines(cell_ids(summary, cell), summary["sharing"])
    columns = {}
    for metric in BUDGET_METRICS:
        if f"delta_{metric}_n" not in summary:
            continue
        mine = keyed[keyed["metric"] == metric]
        values = []
        for key, label, base, n in zip(
            keys, summary["sharing"], compared_with, summary[f"delta_{metric}_n"], strict=True
        ):
            points = mine[mine["_key"] == key]
            compared = label != base and (n > 0 or not points.empty)
            values.append(verdict(points) if compared else "")
        columns[f"delta_{metric}_verdict"] = values
    columns["verdict"] = columns.get("delta_val_loss_verdict", [""] * len(summary))
    added = pd.DataFrame({**columns, **_by_budget(keys, keyed)}, index=summary.index)
    # one concat, not a column at a time: pandas warns of a fragmented frame otherwise
    return pd.concat([summary.drop(columns=added.columns, errors="ignore"), added], axis=1)


def _by_budget(keys: pd.Series, keyed: pd.DataFrame) -> dict[str, list]:
    """summary.csv's budgets, one row per comparison: the target tokens of each budget
    fraction f (`tokens_at_<f>`) and the paired Δ there (`delta_<metric>_<stat>_at_<f>`),
    as in budgets.csv; empty where a row has no such budget."""
    columns: dict[str, list] = {}
    for fraction in sorted(keyed["fraction"].unique()) if len(keyed) else []:
        at = keyed[keyed["fraction"] == fraction]
        tokens = at.groupby("_key")["tokens"].first()
        columns[f"tokens_at_{fraction:g}"] = [tokens.get(key) for key in keys]
        for metric, rows in at.groupby("metric", sort=False):
            stats = rows.set_index("_key")
            for stat in ("mean", "ci95", "p"):
                column = stats[stat]
                columns[f"delta_{metric}_{stat}_at_{fraction:g}"] = [column.get(k) for k in keys]
    return columns


def budgeted_runs(runs: Runs) -> int:
    """How many runs were evaluated at two or more budgets."""
    if runs.budgets is None or runs.budgets.empty:
        return 0
    return int((runs.budgets.groupby("run_id")["fraction"].nunique() >= 2).sum())
