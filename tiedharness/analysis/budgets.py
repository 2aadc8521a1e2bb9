"""The Δ-vs-budget view: each arm at every budget its runs were evaluated at (budgets.csv),
and a verdict on whether its difference from the baseline (`none` of its cell, or
`none@separate` where the vocabulary is an axis: vocab_axis.py) has settled.

A run's `budgets` (run.json, docs/run-record.md) hold its validation and test metrics at
each budget: one entry per budget branch of a warmup-stable-decay run (`trainer.branch_at`)
and one for the whole budget (fraction 1.0). Budgets pair across the seeds and labels of a
cell by their `fraction`. budgets.csv holds, per cell, label (the baseline too), metric
and budget, the label's own value over seeds (mean, 95% interval, n) and, against the
baseline, the paired Δ (per-seed differences: mean, 95% interval, paired-t p, n).

The verdict (docs/metrics.md, "Δ vs budget") is a test of the paired change of Δ between
the last two budgets (per seed: Δ_last − Δ_prev):

- `shrinking` / `growing`: that change is significant (paired t, p < 0.05) and |Δ| fell /
  rose, its sign unchanged;
- `stable`: it is not, and its 95% interval lies within the metric's stated tolerance
  (`report.stable_tolerance`: 0.02 nats of loss, 0.5 BLEU, …);
- `not settled`: anything else (fewer than two budgets or seeds, a change too noisy to
  call either way, a significant change of sign).
"""

from __future__ import annotations

import pandas as pd

from tiedharness.analysis.paired import cell_ids, seed_deltas
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.stats import SIGNIFICANCE, ci95, paired_difference
from tiedharness.analysis.vocab_axis import baseline_of, baselines, cell_labels

_VALID = ("val_loss", "val_bpc", "bleu", "chrf", "exact_match")
BUDGET_METRICS = (*_VALID, *(f"test_{m.removeprefix('val_')}" for m in _VALID))
STABLE, SHRINKING, GROWING, NOT_SETTLED = "stable", "shrinking", "growing", "not settled"
VERDICT_NOTE = (
    "verdict (Δ vs budget, docs/metrics.md): shrinking / growing = the paired change of Δ "
    f"between the last two budgets is significant (p < {SIGNIFICANCE}) and |Δ| fell / rose "
    "(its sign unchanged); "
    "stable = it is not, and its 95% interval lies within the metric's tolerance "
    "(report.stable_tolerance); not settled = anything else."
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
    """budgets.csv, long: per cell, label (the baseline too), metric and budget fraction,
    the budget's step and tokens, the label's own value (value_mean, value_ci95,
    value_n over seeds), its baseline and the paired Δ against it (mean, ci95, p, n; empty
    on the baseline's own rows)."""
    cell = runs.cell_keys
    columns = [
        *cell, "sharing", "baseline", "fraction", "step", "tokens", "metric",
        "value_mean", "value_ci95", "value_n", *STATS,
    ]  # fmt: skip
    table = budget_table(runs)
    if table.empty:
        return pd.DataFrame(columns=columns)
    metrics = [m for m in BUDGET_METRICS if m in table and table[m].notna().any()]
    deltas = budget_seed_deltas(runs, table)
    present = cell_labels(table["_cell"], table["sharing"])
    rows = []
    for (cell_id, label, fraction), mine in table.groupby(
        ["_cell", "sharing", "fraction"], sort=True
    ):
        baseline = baseline_of(label, present.get(cell_id, ()))
        for metric in metrics:
            values = pd.to_numeric(mine[metric], errors="coerce").dropna()
            if values.empty:
                continue
            paired = deltas[
                (deltas["_cell"] == cell_id)
                & (deltas["sharing"] == label)
                & (deltas["endpoint"] == fraction)
                & (deltas["column"] == metric)
            ] if not deltas.empty else deltas  # fmt: skip
            delta = (
                paired_difference(paired["delta"].tolist())
                if label != baseline
                else dict.fromkeys(STATS, float("nan"))
            )
            rows.append(
                {
                    **{k: mine.iloc[0][k] for k in cell},
                    "sharing": label,
                    "baseline": baseline,
                    "fraction": fraction,
                    "step": _mean(mine.get("step")),
                    "tokens": _mean(mine.get("tokens")),
                    "metric": metric,
                    "value_mean": float(values.mean()),
                    "value_ci95": ci95(float(values.std()), len(values)),
                    "value_n": len(values),
                    **delta,
                }
            )
    out = pd.DataFrame(rows, columns=columns)
    for column in ("step", "tokens"):  # counts stay integers where the seeds agree
        values = out[column].dropna()
        if len(values) and (values % 1 == 0).all():
            out[column] = out[column].astype("Int64")
    return out


def budget_seed_deltas(runs: Runs, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per cell, label, seed, budget (`endpoint`: its fraction) and metric column: the
    paired per-seed Δ against the baseline at that budget (paired.seed_deltas)."""
    table = budget_table(runs) if table is None else table
    if table.empty:
        return pd.DataFrame()
    at = table.assign(endpoint=table["fraction"])
    return seed_deltas(at, runs.cell_keys, list(BUDGET_METRICS))


def _mean(values: pd.Series | None) -> float:
    return float("nan") if values is None else float(pd.to_numeric(values).mean())


def verdict(per_seed: pd.DataFrame, tolerance: float) -> str:
    """The verdict of one comparison and metric from its per-seed Δs (columns fraction,
    seed, delta) at its budgets: a paired test of the change between the last two budgets
    that have Δs (module docstring)."""
    per_seed = per_seed[per_seed["delta"].notna()]
    fractions = sorted(per_seed["fraction"].unique())
    if len(fractions) < 2:
        return NOT_SETTLED
    prev, last = (
        per_seed[per_seed["fraction"] == f].set_index("seed")["delta"] for f in fractions[-2:]
    )
    seeds = prev.index.intersection(last.index)
    change = paired_difference((last[seeds] - prev[seeds]).tolist())
    if change["n"] < 2:
        return NOT_SETTLED
    if change["p"] < SIGNIFICANCE:
        before, after = prev[seeds].mean(), last[seeds].mean()
        if before * after <= 0:  # it changed sign: a direction, not a size, is in question
            return NOT_SETTLED
        return SHRINKING if abs(after) < abs(before) else GROWING
    if abs(change["mean"]) + change["ci95"] <= tolerance:
        return STABLE
    return NOT_SETTLED


def tolerance_of(column: str, tolerances: dict[str, float]) -> float:
    """The stated tolerance of a metric column (val_loss and test_loss: `loss`)."""
    metric = column.removeprefix("test_").removeprefix("val_")
    return float(tolerances.get(metric, 0.0))


def with_verdicts(summary: pd.DataFrame, runs: Runs, tolerances: dict[str, float]) -> pd.DataFrame:
    """The summary with `delta_<metric>_verdict` for every budget metric it compares, and
    `verdict` (the test loss's; the validation loss's where the runs have no test split),
    and each budget's tokens and Δ (`_by_budget`). Empty for the baseline's rows (each
    cell's own: vocab_axis.py) and where a label has no Δ of the metric at all."""
    if summary.empty:
        return summary
    cell = runs.cell_keys
    deltas = budget_deltas(runs)
    per_seed = budget_seed_deltas(runs)
    keyed = deltas.assign(_key=cell_ids(deltas, cell) + "|" + deltas["sharing"].astype(str))
    keys = cell_ids(summary, cell) + "|" + summary["sharing"].astype(str)
    if not per_seed.empty:
        per_seed = per_seed.assign(_key=per_seed["_cell"] + "|" + per_seed["sharing"].astype(str))
    compared_with = baselines(cell_ids(summary, cell), summary["sharing"])
    columns = {}
    for metric in BUDGET_METRICS:
        if f"delta_{metric}_n" not in summary:
            continue
        mine = per_seed[per_seed["column"] == metric] if not per_seed.empty else per_seed
        values = []
        for key, label, base, n in zip(
            keys, summary["sharing"], compared_with, summary[f"delta_{metric}_n"], strict=True
        ):
            points = mine[mine["_key"] == key] if not mine.empty else mine
            compared = label != base and (n > 0 or not points.empty)
            if not compared:
                values.append("")
            elif points.empty:
                values.append(NOT_SETTLED)
            else:
                values.append(verdict(points, tolerance_of(metric, tolerances)))
        columns[f"delta_{metric}_verdict"] = values
    test, valid = columns.get("delta_test_loss_verdict"), columns.get("delta_val_loss_verdict")
    columns["verdict"] = [
        t or v
        for t, v in zip(test or [""] * len(summary), valid or [""] * len(summary), strict=True)
    ]
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
        for metric, rows in at[at["mean"].notna()].groupby("metric", sort=False):
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
