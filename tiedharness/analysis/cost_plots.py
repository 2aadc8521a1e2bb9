"""The softmax-cost figure: the output layer's share of a training step (FLOPs and time)
and training throughput against vocabulary size, joint against separate vocabularies."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from tiedharness.analysis.runs import Runs
from tiedharness.analysis.style import NoData, finish, panel_title, panels, strategy_style
from tiedharness.analysis.tables import WIDE_SPREAD
from tiedharness.analysis.titles import short_task
from tiedharness.analysis.vocab_axis import split_vocab

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
        label = f"{short_task(task)}, {vocab_kind}, {split_vocab(sharing)[0]}"
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
    panel_title(share_ax, "output layer: o FLOPs, x time (grey: noisy timing)")
    speed_ax.set_ylabel("training target tokens/s")
    finish(fig, [share_ax, speed_ax])
    return fig
