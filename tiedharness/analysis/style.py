"""What every figure shares: single-column panels, 8-pt text, one colour and marker per
strategy, the legend under the panels, and `NoData` for a figure the runs cannot fill."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from tiedharness.analysis.aggregate import MISSING
from tiedharness.analysis.vocab_axis import DEFAULT_VOCAB, split_vocab
from tiedharness.model.labels import parse_label
from tiedharness.model.names import STRATEGY_NAMES

WIDTH = 3.4  # inches: one column of a two-column paper
PANEL_HEIGHT = 2.3
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 200,
}
_COLORS = plt.get_cmap("tab10").colors
_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">"]


class NoData(Exception):
    """The runs hold nothing this figure could show; the message says what is missing."""


def strategy_style(label: str) -> dict:
    """One colour and marker per label, the same in every figure and report: a strategy's
    by its place in STRATEGY_NAMES; a variant with options (qk+mask_self) keeps its
    strategy's colour with a marker and dashes of its own; a combination of strategies
    gets a stable style of its own. On the vocabulary axis (`three_way@joint`) the
    default vocabulary draws plain and `@separate` as a variant of its label."""
    label, vocab = split_vocab(label)
    strategies, options = parse_label(label)
    if vocab not in (None, DEFAULT_VOCAB):
        options = "+".join(o for o in (options, vocab) if o)
    order = list(STRATEGY_NAMES)
    i = order.index(strategies) if strategies in order else len(order) + sum(map(ord, strategies))
    style = {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[i % len(_MARKERS)]}
    if options:
        shift = 1 + sum(map(ord, options)) % (len(_MARKERS) - 1)
        style.update(marker=_MARKERS[(i + shift) % len(_MARKERS)], linestyle="--")
    return style


def strategy_order(names) -> list[str]:
    order = list(STRATEGY_NAMES)

    def rank(name: str) -> tuple[int, str]:
        strategy = split_vocab(name)[0]  # the vocabulary axis: a label's arms stay together
        return (order.index(strategy) if strategy in order else len(order), name)

    return sorted(set(names), key=rank)


MAX_ONE_COLUMN = 4  # panels: more go into two columns (a figure* of a two-column paper)


def panels(n: int) -> tuple[Figure, list]:
    """n panels, row by row: one column up to MAX_ONE_COLUMN, two beyond (an odd last
    slot is removed)."""
    columns = 1 if n <= MAX_ONE_COLUMN else 2
    rows = math.ceil(n / columns)
    fig, grid = plt.subplots(
        rows, columns, figsize=(WIDTH * columns, PANEL_HEIGHT * rows + 0.5), squeeze=False
    )
    axes = [ax for row in grid for ax in row]
    for spare in axes[n:]:
        fig.delaxes(spare)
    return fig, axes[:n]


def panel_title(ax, text: str, width: int = 58) -> None:
    """A panel's title, wrapped to the panel's width (cell labels run long)."""
    ax.set_title("\n".join(textwrap.wrap(text, width)))


def token_axis(axis) -> None:
    """Tick labels of token counts in k and M (200k, 1.2M), not 1e6 offsets."""
    axis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k")
    )


def legend(fig: Figure, axes: list) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
            labels[label] = label
    if handles:
        fig.legend(handles.values(), labels.values(), loc="lower center", ncol=4, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(handles) // 4), 1, 1))
    else:
        fig.tight_layout()


def cell_label(row: pd.Series, swept: list[str], with_model: bool = True) -> str:
    extra = ", ".join(
        f"{k.split('.')[-1]}={row[k]}" for k in swept if pd.notna(row.get(k)) and row[k] != MISSING
    )
    inside = ", ".join(x for x in (row["model"] if with_model else "", extra) if x)
    return f"{row['task']} ({inside})" if inside else str(row["task"])


def convergence_fill(row: pd.Series) -> str:
    """A summary cell's marker fill: full where every run whose convergence was measured
    converged, none (hollow) where one did not, bottom (half-filled) where no run's
    convergence was measured (an annealed schedule: `converged_frac` is NaN)."""
    share = row.get("converged_frac", 1.0)
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "bottom"
    return "full" if share >= 1.0 else "none"
