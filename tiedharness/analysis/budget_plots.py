"""The Δ-vs-budget figure: each label's paired difference from none (95% band) in test
loss (validation loss where the runs have no test split) against the target tokens of the
budgets its runs were evaluated at (tiedharness/analysis/budgets.py)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from tiedharness.analysis.budgets import NOT_SETTLED, budget_deltas, budgeted_runs
from tiedharness.analysis.labels_layout import data_label
from tiedharness.analysis.paired import cell_ids
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.style import NoData, finish, panels, strategy_order, token_axis
from tiedharness.analysis.style import strategy_style as style_of
from tiedharness.analysis.titles import title_panels
from tiedharness.analysis.vocab_axis import on_axis

# the split verdicts read, and the one to fall back on
UNITS = {
    "test_loss": ("Δ test loss vs none (nats/token)", "Δ test loss vs none@separate (nats/token)"),
    "val_loss": (
        "Δ validation loss vs none (nats/token)",
        "Δ val. loss vs none@separate (nats/token)",  # the vocabulary axis's baseline
    ),
}


def delta_vs_budget(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Δ test (or validation) loss vs none (paired over seeds, 95% band) against the tokens
    of each budget the runs were evaluated at (trainer.branch_at and the whole budget),
    one panel per cell, one line per label, each line ending in its verdict (stable,
    shrinking, growing, not settled: docs/metrics.md)."""
    if budgeted_runs(runs) == 0:
        raise NoData("no run was evaluated at two or more budgets (trainer.branch_at)")
    deltas = budget_deltas(runs)
    deltas = deltas[deltas["mean"].notna()]
    metric = next((m for m in UNITS if (deltas["metric"] == m).any()), None)
    if metric is None:
        raise NoData("no label has a none baseline of the same seeds at its budgets")
    deltas = deltas[deltas["metric"] == metric]
    words = _verdicts(summary, runs.cell_keys, metric)
    x = "tokens" if deltas["tokens"].notna().all() else "fraction"  # budgets without tokens
    groups = list(deltas.groupby(runs.cell_keys, dropna=False, sort=False))
    fig, axes = panels(len(groups))
    for ax, (_, cell) in zip(axes, groups, strict=True):
        for label in strategy_order(cell["sharing"]):
            points = cell[cell["sharing"] == label].sort_values("fraction")
            key = cell_ids(points, runs.cell_keys).iloc[0] + "|" + label
            _line(ax, points, label, x, words.get(key, NOT_SETTLED))
        ax.axhline(0, color="0.6", linewidth=0.6, zorder=0)
        if x == "tokens":
            token_axis(ax.xaxis)
        ax.set_xlabel("target tokens trained (budget)" if x == "tokens" else "fraction of budget")
        ax.set_ylabel(UNITS[metric][1] if on_axis(cell["sharing"]) else UNITS[metric][0])
    title_panels(fig, axes, [cell.iloc[0] for _, cell in groups], runs.cell_keys)
    finish(fig, axes)  # lays out, then moves apart the verdicts of lines that end close
    return fig


def _verdicts(summary: pd.DataFrame, cell: list[str], metric: str) -> dict[str, str]:
    """Each comparison's verdict on `metric` (summary.csv's), keyed by cell id | label."""
    column = f"delta_{metric}_verdict"
    if summary.empty or column not in summary:
        return {}
    keys = cell_ids(summary, cell) + "|" + summary["sharing"].astype(str)
    return dict(zip(keys, summary[column], strict=True))


def _line(ax, points: pd.DataFrame, label: str, x: str, verdict: str) -> None:
    """One label's Δ at each budget, its 95% band, and its verdict by the last point."""
    style = style_of(label)
    color = style["color"]
    ax.plot(
        points[x].astype(float),
        points["mean"],
        color=color,
        marker=style["marker"],
        linestyle=style.get("linestyle", "-"),
        markersize=3,
        linewidth=1,
        label=label,
    )
    band = points[points["ci95"].notna()]
    if not band.empty:
        low, high = band["mean"] - band["ci95"], band["mean"] + band["ci95"]
        ax.fill_between(band[x].astype(float), low, high, color=color, alpha=0.15, linewidth=0)
    last = points.iloc[-1]
    data_label(ax, verdict, (float(last[x]), last["mean"]), color, fontsize=5.5, va="center")
