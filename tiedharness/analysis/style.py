"""What every figure shares: single-column panels, 8-pt text, one colour and marker per
strategy, the legend under the panels with the data labels placed apart (`finish`), and
`NoData` for a figure the runs cannot fill. Panel titles: titles.py."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from tiedharness.analysis.labels_layout import spread_labels
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


LEGEND_COLUMNS = 4
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


def finish(fig: Figure, axes: list) -> None:
    """The legend under the panels (one entry per label, in as many columns as fit the
    figure's width), the layout around it, then the data labels placed apart: they need
    the final layout."""
    handles: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    bottom = 0.0
    if handles:
        renderer = fig.canvas.get_renderer()
        for ncol in range(min(LEGEND_COLUMNS, len(handles)), 0, -1):
            box = fig.legend(
                list(handles.values()), list(handles), loc="lower center", ncol=ncol, frameon=False
            )
            extent = box.get_window_extent(renderer)
            if extent.width <= 0.95 * fig.bbox.width or ncol == 1:
                break
            box.remove()  # wider than the figure: fewer columns
        bottom = (extent.height + renderer.points_to_pixels(4)) / fig.bbox.height
    fig.tight_layout(rect=(0, bottom, 1, 1))
    if _wrap_ylabels(fig, axes):
        fig.tight_layout(rect=(0, bottom, 1, 1))
    spread_labels(fig)


def _wrap_ylabels(fig: Figure, axes: list) -> bool:
    """A y label longer than its panel is tall, broken into lines that fit (else stacked
    panels' labels run into each other); whether any was."""
    renderer = fig.canvas.get_renderer()
    wrapped = False
    for ax in axes:
        label = ax.yaxis.label
        long, room = label.get_window_extent(renderer).height, ax.get_window_extent(renderer).height
        if label.get_text() and long > room:
            width = int(len(label.get_text()) * room / long)
            label.set_text("\n".join(textwrap.wrap(label.get_text(), max(width, 10))))
            wrapped = True
    return wrapped


def convergence_fill(row: pd.Series) -> str:
    """A summary cell's marker fill: full where every run whose convergence was measured
    converged, none (hollow) where one did not, bottom (half-filled) where no run's
    convergence was measured (an annealed schedule: `converged_frac` is NaN)."""
    share = row.get("converged_frac", 1.0)
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "bottom"
    return "full" if share >= 1.0 else "none"
