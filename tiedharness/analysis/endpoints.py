"""Each comparison at its endpoints, seed by seed, on both splits: comparisons.csv.

A completed run's `budgets` (run.json) hold its validation and test metrics at every
budget it was evaluated at: each budget branch's end and the whole budget. From them,
per run, its **best budget**: the one with the lowest validation loss (early stopping over
the branches and the main run, per seed; a tie goes to the smaller budget). A comparison
(an arm against its cell's baseline, paired by seed: paired.py) is then read at two
endpoints:

- `final`: both arms at the whole budget;
- `best`: each arm at its own best budget, the baseline at its own.

Selection reads validation only (the best budget, like the learning rate, is chosen on
val_loss); every Δ is computed on both splits, and verdicts read the test split. A study's
declared primary comparisons (ReportConfig: `report.primary` in its experiment file) are
corrected together with Holm's step-down method (statsmodels), over every cell each is
read in and every primary contrast; the others are exploratory. A contrast is Δ(first) −
Δ(second): paired by seed where both sides trained on the same data, Welch's unpaired
test of the per-seed Δs where they did not (another task or another task setting: runs on
different data are independent).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tiedharness.analysis.budgets import budget_seed_deltas, budget_table, tolerance_of, verdict
from tiedharness.analysis.paired import cell_ids, seed_deltas
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.stats import SIGNIFICANCE, paired_difference
from tiedharness.schema import from_values
from tiedharness.tracking.config import Comparison, Contrast, ReportConfig

METRICS = ("loss", "bpc", "bleu", "chrf", "exact_match")
SPLITS = ("test", "valid")  # the verdict's split first
SIGNIFICANT, NOT_SIGNIFICANT, EXPLORATORY = "significant", "not significant", "exploratory"
CONTRAST = "contrast:"  # the `arm` of a contrast's row: contrast:<name>


def metric_column(metric: str, split: str) -> str:
    """The run-record key of a metric on a split: val_loss / bleu on validation (the
    record's historical names), test_loss / test_bleu on test."""
    if split == "test":
        return f"test_{metric}"
    return f"val_{metric}" if metric in ("loss", "bpc") else metric


def endpoint_runs(runs: Runs) -> pd.DataFrame:
    """One row per completed run and endpoint (`final`, `best`): its cell, label, seed,
    the budget (fraction, tokens) the endpoint is at, and every metric column there."""
    table = budget_table(runs)
    if table.empty or "val_loss" not in table:
        return pd.DataFrame()
    final = table[table["fraction"] == 1.0].assign(endpoint="final")
    ordered = table[table["val_loss"].notna()].sort_values(["run_id", "fraction"])
    best = ordered.loc[ordered.groupby("run_id")["val_loss"].idxmin()].assign(endpoint="best")
    return pd.concat([final, best], ignore_index=True)


def comparisons(runs: Runs, report: ReportConfig | None = None) -> pd.DataFrame:
    """comparisons.csv: one row per cell, arm, metric, split and endpoint (and one per
    declared contrast), with the paired Δ (mean, ci95, p, n), both arms' means, the mean
    best budget where the endpoint is `best`, and Holm's correction over the primary
    comparisons (`primary`, `p_holm`, `verdict`: significant / not significant on p_holm,
    exploratory where not primary)."""
    report = report or declared(runs)
    columns = [metric_column(m, s) for m in METRICS for s in SPLITS]
    deltas = seed_deltas(endpoint_runs(runs), runs.cell_keys, columns)
    if deltas.empty:
        return pd.DataFrame()
    rows = []
    for (cell_id, arm, endpoint, column), group in deltas.groupby(
        ["_cell", "sharing", "endpoint", "column"], sort=False
    ):
        first = group.iloc[0]
        metric, split = _metric_split(column)
        rows.append(
            {
                **{k: first[k] for k in runs.cell_keys},
                "_cell": cell_id,
                "arm": arm,
                "baseline": first["baseline"],
                "metric": metric,
                "split": split,
                "endpoint": endpoint,
                **paired_difference(group["delta"].tolist()),
                "arm_mean": group["value"].mean(),
                "baseline_mean": group["baseline_value"].mean(),
                "arm_fraction": group["fraction"].mean(),
                "baseline_fraction": group["baseline_fraction"].mean(),
            }
        )
    table = pd.DataFrame(rows)
    table = pd.concat([table, contrast_rows(runs, deltas, report)], ignore_index=True)
    table = with_holm(table, runs, report)
    return with_trends(table, runs, report).drop(columns="_cell")


def with_trends(table: pd.DataFrame, runs: Runs, report: ReportConfig) -> pd.DataFrame:
    """`verdict` of each `final` row followed by its Δ-vs-budget trend where the runs were
    evaluated at two or more budgets (budgets.py), e.g. "significant; shrinking"."""
    per_seed = budget_seed_deltas(runs)
    if per_seed.empty or per_seed["fraction"].nunique() < 2:
        return table
    words = []
    for _, row in table.iterrows():
        word = row["verdict"]
        if row["endpoint"] == "final" and row["_cell"]:
            column = metric_column(row["metric"], row["split"])
            mine = per_seed[
                (per_seed["_cell"] == row["_cell"])
                & (per_seed["sharing"] == row["arm"])
                & (per_seed["column"] == column)
            ]
            if not mine.empty:
                word += "; " + verdict(mine, tolerance_of(column, report.stable_tolerance))
        words.append(word)
    return table.assign(verdict=words)


def _metric_split(column: str) -> tuple[str, str]:
    if column.startswith("test_"):
        return column.removeprefix("test_"), "test"
    return column.removeprefix("val_"), "valid"


# ---------------------------------------------------------------------------- declared


def declared(runs: Runs) -> ReportConfig:
    """The study's ReportConfig, from its runs' configs (`report` in the experiment file);
    the default (nothing primary) where the runs have none. Runs that disagree are named in
    runs.warnings and the first one's is used."""
    frame = runs.completed
    if frame.empty or "cfg.report.primary" not in frame:
        return ReportConfig()
    columns = [c for c in frame.columns if c.startswith("cfg.report.")]
    distinct = frame[columns].astype(str).drop_duplicates()
    if len(distinct) > 1:
        warn(
            runs,
            "the runs declare different primary comparisons (report.* in their configs); "
            "the first run's are used",
        )
    first = frame[columns].iloc[0]
    values: dict[str, Any] = {}
    for column, value in first.items():
        key = column.removeprefix("cfg.report.")
        if key in ("primary", "contrasts"):
            values[key] = json.loads(value) if isinstance(value, str) else []
        elif key.startswith("stable_tolerance.") and not _missing(value):
            values.setdefault("stable_tolerance", {})[key.split(".", 1)[1]] = float(value)
    return from_values(ReportConfig, values)


def warn(runs: Runs, message: str) -> None:
    """A warning for the report, once however often the tables are computed."""
    if message not in runs.warnings:
        runs.warnings.append(message)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cells_where(runs: Runs, where: dict[str, Any]) -> set[str]:
    """The cell ids whose runs match every key of `where` (a cell key, or a config key
    such as task.overlap), values compared as the config holds them."""
    frame = runs.completed
    if frame.empty:
        return set()
    keep = pd.Series(True, index=frame.index)
    for key, wanted in where.items():
        # `model` names a preset (small), which the cell's label spells out in full
        column = "model_preset" if key == "model" else key if key in frame else f"cfg.{key}"
        if column not in frame:
            raise ValueError(
                f"report: `where: {{{key}: …}}` names no key of the runs; use a cell key "
                f"({', '.join(runs.cell_keys)}) or a config key such as task.overlap"
            )
        keep &= frame[column].map(lambda value, w=wanted: _same(value, w))
    return set(cell_ids(frame[keep], runs.cell_keys))


def _same(value: Any, wanted: Any) -> bool:
    try:
        return math.isclose(float(value), float(wanted))
    except (TypeError, ValueError):
        return str(value) == str(wanted)


def _selected(table: pd.DataFrame, runs: Runs, comparison: Comparison) -> pd.Series:
    """The rows of `table` a declared comparison is read in (on the test split)."""
    cells = cells_where(runs, comparison.where)
    return (
        (table["arm"] == comparison.arm)
        & (table["metric"] == str(comparison.metric))
        & (table["endpoint"] == str(comparison.endpoint))
        & (table["split"] == "test")
        & table["_cell"].isin(cells)
    )


# ---------------------------------------------------------------------------- contrasts


def contrast_rows(runs: Runs, deltas: pd.DataFrame, report: ReportConfig) -> pd.DataFrame:
    """One row per declared contrast and split: Δ(first) − Δ(second) with its interval
    and p (paired by seed on the same data, else Welch on the per-seed Δs)."""
    rows = []
    for contrast in report.contrasts:
        for split in SPLITS:
            sides = [
                _side_deltas(runs, deltas, side, split)
                for side in (contrast.first, contrast.second)
            ]
            test = contrast_test(*sides, paired=_same_data(runs, contrast))
            rows.append(
                {
                    "_cell": "",
                    "arm": CONTRAST + contrast.name,
                    "baseline": "",
                    "metric": str(contrast.first.metric),
                    "split": split,
                    "endpoint": str(contrast.first.endpoint),
                    **test,
                    "arm_mean": sides[0].mean(),
                    "baseline_mean": sides[1].mean(),
                }
            )
    return pd.DataFrame(rows)


def _side_deltas(runs: Runs, deltas: pd.DataFrame, side: Comparison, split: str) -> pd.Series:
    """One side's per-seed Δs (indexed by seed); its `where` must pick one cell."""
    cells = cells_where(runs, side.where)
    mine = deltas[
        deltas["_cell"].isin(cells)
        & (deltas["sharing"] == side.arm)
        & (deltas["endpoint"] == str(side.endpoint))
        & (deltas["column"] == metric_column(str(side.metric), split))
    ]
    found = mine["_cell"].nunique()
    if found > 1:
        raise ValueError(
            f"report.contrasts: the side `{side.arm}` where {dict(side.where)} is read in "
            f"{found} cells; its `where` must pick exactly one (add the cell keys that differ)"
        )
    if found == 0:  # a study reported while it runs: the contrast waits for its runs
        warn(
            runs,
            f"report.contrasts: no completed runs yet for `{side.arm}` where {dict(side.where)}",
        )
    return mine.set_index("seed")["delta"]


def _same_data(runs: Runs, contrast: Contrast) -> bool:
    """Whether both sides trained on the same data: no task key tells them apart."""
    keys = set(contrast.first.where) | set(contrast.second.where)
    differing = [
        k for k in keys if not _same(contrast.first.where.get(k), contrast.second.where.get(k))
    ]
    return not any(k == "task" or k.startswith("task.") for k in differing)


def contrast_test(first: pd.Series, second: pd.Series, paired: bool) -> dict[str, float]:
    """Δ(first) − Δ(second): paired by seed (the seeds both have), or Welch's t-test of two
    independent samples; mean, 95% interval, p, n (pairs, or both samples' sizes)."""
    if paired:
        seeds = first.index.intersection(second.index)
        result = paired_difference((first[seeds] - second[seeds]).tolist())
        return {**result, "test": "paired t"}
    a, b = first.dropna().to_numpy(), second.dropna().to_numpy()
    nan = float("nan")
    out = {"mean": float(a.mean() - b.mean()) if len(a) and len(b) else nan, "ci95": nan, "p": nan}
    if len(a) >= 2 and len(b) >= 2:
        welch = stats.ttest_ind(a, b, equal_var=False)
        low, high = welch.confidence_interval(0.95)
        out.update(ci95=float(high - low) / 2, p=float(welch.pvalue))
    return {**out, "n": len(a) + len(b), "test": "Welch t"}


# ---------------------------------------------------------------------------- Holm


def with_holm(table: pd.DataFrame, runs: Runs, report: ReportConfig) -> pd.DataFrame:
    """`primary` (declared, read on the test split), `p_holm` (Holm over all primary
    rows, empty elsewhere), `holm_family` (how many), `verdict` (on p_holm; exploratory
    where not primary)."""
    primary = pd.Series(False, index=table.index)
    for comparison in report.primary:
        selected = _selected(table, runs, comparison)
        if not selected.any():
            warn(
                runs,
                f"report.primary: {comparison.arm} ({comparison.metric}, {comparison.endpoint}) "
                f"where {dict(comparison.where)} matches no comparison of these runs",
            )
        primary |= selected
    for contrast in report.contrasts:
        if contrast.primary:
            primary |= (table["arm"] == CONTRAST + contrast.name) & (table["split"] == "test")
    primary &= table["p"].notna()
    table = table.assign(primary=primary, p_holm=float("nan"), holm_family=int(primary.sum()))
    if primary.any():
        _, corrected, _, _ = multipletests(table.loc[primary, "p"], method="holm")
        table.loc[primary, "p_holm"] = corrected
    table["verdict"] = [
        (SIGNIFICANT if p_holm < SIGNIFICANCE else NOT_SIGNIFICANT) if is_primary else EXPLORATORY
        for is_primary, p_holm in zip(table["primary"], table["p_holm"], strict=True)
    ]
    return table


# ---------------------------------------------------------------------------- summary.csv


def with_endpoints(summary: pd.DataFrame, table: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """summary.csv's columns from comparisons.csv: per row, the Δ of each metric column at
    the arms' best budgets (`best_delta_<column>_{mean,ci95,p,n}`, both splits), the arm's
    mean best budget (`best_fraction_mean`), Holm's p where a comparison is primary
    (`delta_<column>_p_holm`, `best_delta_<column>_p_holm`), and one row per contrast
    (`sharing` contrast:<name>) with its Δ columns."""
    if summary.empty or table.empty:
        return summary
    is_contrast = table["arm"].str.startswith(CONTRAST)
    arms = table[~is_contrast]
    keyed = arms.assign(_key=cell_ids(arms, cell) + "|" + arms["arm"].astype(str))
    keys = cell_ids(summary, cell) + "|" + summary["sharing"].astype(str)
    columns: dict[str, list] = {}
    for (endpoint, metric, split), rows in keyed.groupby(["endpoint", "metric", "split"]):
        at = rows.set_index("_key")
        prefix = ("best_" if endpoint == "best" else "") + f"delta_{metric_column(metric, split)}"
        stats_ = ("mean", "ci95", "p", "n") if endpoint == "best" else ()
        for stat in stats_:
            columns[f"{prefix}_{stat}"] = [at[stat].get(k) for k in keys]
        if at["primary"].any():
            columns[f"{prefix}_p_holm"] = [at["p_holm"].get(k) for k in keys]
        if endpoint == "best" and metric == "loss" and split == "valid":
            columns["best_fraction_mean"] = [at["arm_fraction"].get(k) for k in keys]
    return pd.concat([summary, pd.DataFrame(columns, index=summary.index)], axis=1)


def contrast_summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's row of each contrast (`sharing` contrast:<name>): its Δ columns as an
    arm's are named, and the test it was read with (paired t or Welch t)."""
    rows: dict[str, dict] = {}
    if table.empty:
        return pd.DataFrame()
    for _, row in table[table["arm"].str.startswith(CONTRAST)].iterrows():
        prefix = ("best_" if row["endpoint"] == "best" else "") + "delta_"
        prefix += metric_column(row["metric"], row["split"])
        mine = rows.setdefault(row["arm"], {"sharing": row["arm"], "contrast_test": row["test"]})
        for stat in ("mean", "ci95", "p", "n", "p_holm"):
            mine[f"{prefix}_{stat}"] = row[stat]
    return pd.DataFrame(list(rows.values()))
