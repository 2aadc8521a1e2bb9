"""Runs → paper-style matplotlib figures. No training, no I/O beyond `save`.

Every figure function takes the aggregated runs and the per-cell summary and returns a
Figure, or raises `NoData` saying what is missing, so that a figure is never drawn empty.
Each strategy keeps one colour and one marker in every figure. Panels are stacked one
per row at single-column width (3.4 in), with 8-pt text; their titles name only what sets
each apart (titles.py: the rest is in the caption, describe(name, fig)), and labels beside
the data are placed apart (labels_layout.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from tiedharness.analysis.budget_plots import delta_vs_budget
from tiedharness.analysis.cost_plots import softmax_cost
from tiedharness.analysis.labels_layout import data_label
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.style import (
    STYLE,
    NoData,
    convergence_fill,
    finish,
    panels,
    strategy_order,
    strategy_style,
    token_axis,
)
from tiedharness.analysis.titles import shared_caption, short_task, title_panels
from tiedharness.analysis.vocab_axis import baseline_of, split_vocab
from tiedharness.model.names import COMPONENTS


def pareto_front(points: list[tuple[float, float]], maximize: bool = False) -> list[tuple]:
    """Points not dominated by another with no more parameters and better quality."""
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if maximize else p[1])):
        if best is None or (y > best if maximize else y < best):
            front.append((x, y))
            best = y
    return front


def established(panel: pd.DataFrame, col: str, maximize: bool) -> list[tuple[float, float]]:
    """The Pareto front (parameters in millions, quality) through the points whose order is
    established: walking the front from the fewest parameters, a point whose 95% interval
    overlaps the last kept one's is left out (seed noise could swap them; so is a point
    without an interval). Fewer than two points: no front is drawn."""
    ci = f"{col.removesuffix('_mean')}_ci95"
    widths = panel[ci] if ci in panel else pd.Series(float("nan"), index=panel.index)
    points = zip(panel["params_total_mean"] / 1e6, panel[col], strict=True)
    half = dict(zip(points, widths, strict=True))
    kept: list[tuple[float, float]] = []
    for point in pareto_front(list(half), maximize):
        width = half.get(point)
        if width is None or pd.isna(width):
            return []
        if kept and abs(point[1] - kept[-1][1]) <= width + half[kept[-1]]:
            continue
        kept.append(point)
    return kept


# ---------------------------------------------------------------------------- figures


def _point(ax, row: pd.Series, x: str, x_scale: float, y: str) -> None:
    """One summary cell as a marker with its 95% CIs (where there are several seeds)."""

    def ci(metric: str, scale: float = 1.0) -> float | None:
        value = row.get(f"{metric}_ci95")
        return value / scale if pd.notna(value) else None

    style = {**strategy_style(row["sharing"]), "linestyle": "none"}
    fill = convergence_fill(row)  # hollow: not converged; half-filled: not measured
    if fill == "none":
        style["markerfacecolor"] = "none"
    elif fill == "bottom":
        style.update(fillstyle="bottom", markerfacecoloralt="white")
    ax.errorbar(
        row[f"{x}_mean"] / x_scale,
        row[f"{y}_mean"],
        xerr=ci(x, x_scale),
        yerr=ci(y),
        capsize=2,
        markersize=5,
        label=row["sharing"],
        **style,
    )


def _tradeoff(summary: pd.DataFrame, runs: Runs, metric: str, label: str, maximize: bool) -> Figure:
    """One panel per task (and swept setting); a point per model and label, and a line
    joining each label's points across model sizes, so labels compare at equal parameters."""
    col = f"{metric}_mean"
    if summary.empty or col not in summary or summary[col].notna().sum() < 2:
        raise NoData(f"fewer than two completed cells report {metric}")
    data = summary[summary[col].notna()]
    groups = list(data.groupby(["task", *runs.swept], dropna=False, sort=False))
    fig, axes = panels(len(groups))
    for ax, (_, panel) in zip(axes, groups, strict=True):
        for _, row in panel.iterrows():
            _point(ax, row, "params_total", 1e6, metric)
        for sharing in strategy_order(panel["sharing"]):
            sizes = panel[panel["sharing"] == sharing].sort_values("params_total_mean")
            if len(sizes) > 1:
                style = strategy_style(sharing)
                line = {"color": style["color"], "linestyle": style.get("linestyle", "-")}
                ax.plot(sizes["params_total_mean"] / 1e6, sizes[col], linewidth=0.9, **line)
        front = established(panel, col, maximize)
        if len(front) > 1:
            ax.step(*zip(*front, strict=True), where="post", color="0.5", linewidth=0.8, zorder=0)
        ax.set_xlabel("unique parameters (M)")
        ax.set_ylabel(label)
    one_model = all(panel["model"].nunique() == 1 for _, panel in groups)  # else it is in the panel
    keys = ["task", *(["model"] if one_model else []), *runs.swept]
    title_panels(fig, axes, [panel.iloc[0] for _, panel in groups], keys)
    finish(fig, axes)
    return fig


def tradeoff_loss(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Unique parameters vs validation loss per task, with 95% CIs, the Pareto front
    through points whose intervals are apart (none where they overlap: their order is not
    established), and lines across model sizes. Hollow markers: cells not every run of
    which converged; half-filled: convergence not measured (the schedule anneals to zero)."""
    return _tradeoff(summary, runs, "val_loss", "validation loss (nats/token)", maximize=False)


def tradeoff_bpc(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Unique parameters vs validation bits per character (comparable across
    tokenizations), as tradeoff_loss."""
    return _tradeoff(summary, runs, "val_bpc", "validation bits per character", maximize=False)


def tradeoff_bleu(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Unique parameters vs BLEU per translation task, as tradeoff_loss."""
    return _tradeoff(summary, runs, "bleu", "BLEU (valid subset)", maximize=True)


def param_budget(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Stacked parameters by component per strategy, labelled with the reduction vs none."""
    columns = [f"params.{c}" for c, _ in COMPONENTS]
    have = runs.frame.dropna(subset=["params_total"])
    if have.empty or not set(columns) <= set(have.columns):
        raise NoData("no run recorded its parameter counts")
    groups = list(have.groupby(["task", "model"], sort=False))
    fig, axes = panels(len(groups))
    for ax, (_, rows) in zip(axes, groups, strict=True):
        rows = rows.drop_duplicates("sharing").set_index("sharing")
        names = strategy_order(rows.index)
        left = pd.Series(0.0, index=names)
        palette = plt.get_cmap("Set2").colors  # not the strategies' colours: these are parts
        # bars across, one row per label: the names read level and never run into each other
        for i, ((component, _), column) in enumerate(zip(COMPONENTS, columns, strict=True)):
            values = rows.loc[names, column].fillna(0) / 1e6
            label = component.replace("_", " ")
            ax.barh(
                names, values, left=left, label=label, height=0.7, color=palette[i % len(palette)]
            )
            left += values
        for i, name in enumerate(names):  # vs none (none@separate on the vocabulary axis)
            if (base := baseline_of(name, rows.index)) in rows.index:
                change = rows.loc[name, "params_total"] / rows.loc[base, "params_total"] - 1
                text = f"{100 * change:+.1f}%"
                data_label(ax, text, (left[name], i), "0.2", va="center", fontsize=5.5)
        ax.set_xlim(right=1.25 * left.max())  # room for the labels beside the bars
        ax.invert_yaxis()  # the strategies' order, top down
        ax.set_xlabel("parameters (M)")
    title_panels(fig, axes, [rows.iloc[0] for _, rows in groups], ["task", "model"])
    finish(fig, axes)
    return fig


def learning_curves(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Validation loss vs tokens seen, mean ± std over seeds, per strategy (the main run's
    evaluations only: a budget branch's rows are left out)."""
    history = runs.history
    if history is not None and "branch" in history:
        history = history[history["branch"].isna()]
    if history is None or "val_loss" not in history or history["val_loss"].notna().sum() == 0:
        raise NoData("no run logged validation loss during training")
    evals = history[history["val_loss"].notna()].merge(
        runs.completed[["run_id", *runs.cell_keys, "sharing"]], on="run_id"
    )
    if evals.empty:
        raise NoData("no completed run logged validation loss")
    groups = list(evals.groupby(["task", "model", *runs.swept], dropna=False, sort=False))
    fig, axes = panels(len(groups))
    for ax, (_, cell) in zip(axes, groups, strict=True):
        for sharing in strategy_order(cell["sharing"]):
            curve = (
                cell[cell["sharing"] == sharing]
                .groupby("step")
                .agg(tokens=("tokens", "mean"), mean=("val_loss", "mean"), std=("val_loss", "std"))
            )
            style = strategy_style(sharing)
            ax.plot(
                curve["tokens"],
                curve["mean"],
                color=style["color"],
                marker=style["marker"],
                markersize=3,
                linewidth=1,
                label=sharing,
            )
            if curve["std"].notna().any():
                ax.fill_between(
                    curve["tokens"],
                    curve["mean"] - curve["std"],
                    curve["mean"] + curve["std"],
                    color=style["color"],
                    alpha=0.15,
                )
        token_axis(ax.xaxis)
        ax.set_xlabel("target tokens seen")
        ax.set_ylabel("validation loss")
    title_panels(fig, axes, [cell.iloc[0] for _, cell in groups], runs.cell_keys)
    finish(fig, axes)
    return fig


def vocab_overlap(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Gain of encdec_vocab and three_way over none (paired over seeds, 95% CI) vs
    source-target subword overlap, one line per task. Bits per character, so that
    different tokenizations compare. Beside it, what each vocabulary costs: the output
    layer's (softmax's) share of a training step's FLOPs, none included."""
    metric = "val_bpc" if "delta_val_bpc_mean" in summary else "val_loss"
    needed = {"overlap_mean", f"delta_{metric}_mean"}
    if summary.empty or not needed <= set(summary.columns):
        raise NoData("no run recorded its task's overlap together with a none baseline")
    strategy = summary["sharing"].map(lambda label: split_vocab(label)[0])
    rows = summary[strategy.isin(["encdec_vocab", "three_way"])]
    rows = rows.dropna(subset=list(needed))
    if rows["overlap_mean"].nunique() < 2:
        raise NoData("encdec_vocab / three_way ran against none at fewer than two overlaps")
    unit = "bits/char" if metric == "val_bpc" else "nats/token"
    metrics = [(metric, f"Δ validation {unit} vs none (lower is better)")]
    if "delta_bleu_mean" in rows and rows["delta_bleu_mean"].notna().any():
        metrics.append(("bleu", "Δ BLEU vs none"))
    cost = "output_step_flops_share"
    costs = summary[strategy.isin(["none", "encdec_vocab", "three_way"])]
    if f"{cost}_mean" in costs and costs[f"{cost}_mean"].notna().any():
        metrics.append((cost, "output layer's share of a step's FLOPs"))
    fig, axes = panels(len(metrics))
    for ax, (name, label) in zip(axes, metrics, strict=True):
        shown = costs if name == cost else rows
        value = f"{name}_mean" if name == cost else f"delta_{name}_mean"
        for (task, sharing), group in shown.dropna(subset=[value, "overlap_mean"]).groupby(
            ["task", "sharing"], sort=False
        ):
            group = group.sort_values("overlap_mean")
            style = strategy_style(sharing)
            ax.errorbar(
                group["overlap_mean"],
                group[value],
                yerr=group[value.replace("_mean", "_ci95")].fillna(0),
                color=style["color"],
                marker=style["marker"],
                markersize=4,
                linewidth=1,
                capsize=2,
                linestyle="-" if task == rows["task"].iloc[0] else ":",
                label=f"{sharing}, {short_task(task)}",
            )
        if name != cost:
            ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set_xlabel("source-target subword overlap (Jaccard)")
        ax.set_ylabel(label)
    finish(fig, axes)
    return fig


def quality_vs_throughput(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Validation loss vs training throughput, per task."""
    needed = {"train_tokens_per_s_mean", "val_loss_mean"}
    if summary.empty or not needed <= set(summary.columns) or len(summary) < 2:
        raise NoData("fewer than two completed cells report throughput and loss")
    groups = list(summary.groupby(["task", "model", *runs.swept], dropna=False, sort=False))
    fig, axes = panels(len(groups))
    for ax, (_, cell) in zip(axes, groups, strict=True):
        for _, row in cell.iterrows():
            _point(ax, row, "train_tokens_per_s", 1e3, "val_loss")
        ax.set_xlabel("training throughput (k target tokens/s)")
        ax.set_ylabel("validation loss")
    title_panels(fig, axes, [cell.iloc[0] for _, cell in groups], runs.cell_keys)
    finish(fig, axes)
    return fig


FIGURES: dict[str, Callable[[Runs, pd.DataFrame], Figure]] = {
    "tradeoff_loss": tradeoff_loss,
    "tradeoff_bpc": tradeoff_bpc,
    "tradeoff_bleu": tradeoff_bleu,
    "param_budget": param_budget,
    "softmax_cost": softmax_cost,
    "learning_curves": learning_curves,
    "vocab_overlap": vocab_overlap,
    "quality_vs_throughput": quality_vs_throughput,
    "delta_vs_budget": delta_vs_budget,
}


def draw(name: str, runs: Runs, summary: pd.DataFrame) -> Figure:
    with plt.rc_context(STYLE):
        return FIGURES[name](runs, summary)


def save(fig: Figure, folder: Path, name: str) -> dict[str, Path]:
    """PNG and PDF side by side; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{name}.{ext}" for ext in ("png", "pdf")}
    with plt.rc_context(STYLE):
        for path in paths.values():
            fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return paths


def describe(name: str, fig: Figure | None = None) -> str:
    """The figure's caption: what it shows and, given the drawn figure, what its panels
    share (their titles name only what sets each apart)."""
    return " ".join(x for x in ((FIGURES[name].__doc__ or "").strip(), shared_caption(fig)) if x)


def caption(name: str, runs: Runs, summary: pd.DataFrame) -> str:
    """describe(name, fig) for a caller that no longer holds the figure: drawn again."""
    fig = draw(name, runs, summary)
    plt.close(fig)
    return describe(name, fig)
