"""Runs → paper-style matplotlib figures. No training, no I/O beyond `save`.

Every figure function takes the aggregated runs and the per-cell summary and returns a
Figure, or raises `NoData` saying what is missing, so that a figure is never drawn empty.
Each strategy keeps one colour and one marker in every figure. Panels are stacked one
per row at single-column width (3.4 in), with 8-pt text.
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
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.style import (
    STYLE,
    NoData,
    cell_label,
    convergence_fill,
    legend,
    panel_title,
    panels,
    strategy_order,
    strategy_style,
    token_axis,
)
from tiedharness.analysis.tables import WIDE_SPREAD
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
        front = pareto_front(
            list(zip(panel["params_total_mean"] / 1e6, panel[col], strict=True)), maximize
        )
        ax.step(*zip(*front, strict=True), where="post", color="0.5", linewidth=0.8, zorder=0)
        with_model = panel["model"].nunique() == 1
        panel_title(ax, cell_label(panel.iloc[0], runs.swept, with_model))
        ax.set_xlabel("unique parameters (M)")
        ax.set_ylabel(label)
    legend(fig, axes)
    return fig


def tradeoff_loss(runs: Runs, summary: pd.DataFrame) -> Figure:
    """Unique parameters vs validation loss per task, with 95% CIs, the Pareto front, and
    lines across model sizes. Hollow markers: cells not every run of which converged;
    half-filled: convergence not measured (the schedule anneals to zero)."""
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
    for ax, ((task, model), rows) in zip(axes, groups, strict=True):
        rows = rows.drop_duplicates("sharing").set_index("sharing")
        names = strategy_order(rows.index)
        bottom = pd.Series(0.0, index=names)
        palette = plt.get_cmap("Set2").colors  # not the strategies' colours: these are parts
        for i, ((component, _), column) in enumerate(zip(COMPONENTS, columns, strict=True)):
            values = rows.loc[names, column].fillna(0) / 1e6
            ax.bar(
                names,
                values,
                bottom=bottom,
                label=component.replace("_", " "),
                width=0.7,
                color=palette[i % len(palette)],
            )
            bottom += values
        for i, name in enumerate(names):  # vs none (none@separate on the vocabulary axis)
            if (base := baseline_of(name, rows.index)) in rows.index:
                change = rows.loc[name, "params_total"] / rows.loc[base, "params_total"] - 1
                ax.text(
                    i, bottom[name], f"{100 * change:+.1f}%", ha="center", va="bottom", fontsize=5.5
                )
        ax.set_title(f"{task} ({model})")
        ax.set_ylabel("parameters (M)")
        ax.tick_params(axis="x", rotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    legend(fig, axes)
    return fig


COST_COLUMNS = [
    "output_step_flops_share",
    "output_step_time_share",
    "output_step_time_share_iqr",
    "train_tokens_per_s",
]


def _cost_runs(runs: Runs) -> pd.DataFrame:
    """Completed runs that measured the output layer's cost, of tasks run at two or more
    vocabulary sizes, with their vocabulary kind (joint or separate)."""
    done = runs.completed
    if done.empty or not {"vocab_size_tgt", *COST_COLUMNS} <= set(done.columns):
        raise NoData("no run measured the output layer's cost")
    sizes = done.groupby("task")["vocab_size_tgt"].nunique()
    done = done[done["task"].isin(sizes[sizes >= 2].index)]
    if done.empty:
        raise NoData("no task was run at two or more vocabulary sizes")
    kind = done.get("cfg.task.vocab", pd.Series("joint", index=done.index))
    return done.assign(vocab_kind=kind.fillna("joint"))


def softmax_cost(runs: Runs, summary: pd.DataFrame) -> Figure:
    """The output layer's (projection, softmax and loss) share of a training step in FLOPs
    and in time, and training throughput, vs vocabulary size (joint vocabularies solid,
    separate dashed; timings whose spread is wide are greyed)."""
    done = _cost_runs(runs)
    fig, (share_ax, speed_ax) = panels(2)
    for (task, vocab_kind, sharing), rows in done.groupby(
        ["task", "vocab_kind", "sharing"], sort=False
    ):
        rows = rows.groupby("vocab_size_tgt")[COST_COLUMNS].mean().reset_index()
        dash = "-" if vocab_kind == "joint" else "--"
        label = f"{task}, {vocab_kind}, {split_vocab(sharing)[0]}"
        line = {"color": strategy_style(sharing)["color"], "markersize": 3}
        x = rows["vocab_size_tgt"]
        share_ax.plot(
            x, rows["output_step_flops_share"], dash, marker="o", label=f"{label} (FLOPs)", **line
        )
        share_ax.plot(
            x, rows["output_step_time_share"], dash, marker="x", label=f"{label} (time)", **line
        )
        wide = rows["output_step_time_share_iqr"] > WIDE_SPREAD * rows["output_step_time_share"]
        noisy = rows[wide]
        share_ax.scatter(
            noisy["vocab_size_tgt"], noisy["output_step_time_share"], s=40, color="0.8", zorder=0
        )
        speed_ax.plot(x, rows["train_tokens_per_s"], dash, marker="o", label=label, **line)
    for ax in (share_ax, speed_ax):
        ax.set_xscale("log")
        ax.set_xlabel("target vocabulary size")
    share_ax.set_ylabel("output layer's share of a step")
    share_ax.set_title("output layer: o FLOPs, x time (grey: noisy timing)")
    speed_ax.set_ylabel("training target tokens/s")
    legend(fig, [share_ax, speed_ax])
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
        panel_title(ax, cell_label(cell.iloc[0], runs.swept))
        token_axis(ax.xaxis)
        ax.set_xlabel("target tokens seen")
        ax.set_ylabel("validation loss")
    legend(fig, axes)
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
                label=f"{sharing}, {task}",
            )
        if name != cost:
            ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set_xlabel("source-target subword overlap (Jaccard)")
        ax.set_ylabel(label)
    legend(fig, axes)
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
        panel_title(ax, cell_label(cell.iloc[0], runs.swept))
        ax.set_xlabel("training throughput (k target tokens/s)")
        ax.set_ylabel("validation loss")
    legend(fig, axes)
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


def describe(name: str) -> str:
    return (FIGURES[name].__doc__ or "").strip()
