"""Text labels beside data that never overlap: a label drawn by `data_label` (a verdict at
the end of a line, a value above a bar) is moved apart from the labels it would collide
with once the figure's layout is final (`spread_labels`), vertically and as little as
possible, keeping a thin leader line to its point when it had to move.

Labels are compared in display coordinates (the renderer's extents), and moved by an
offset in points, so what is placed apart on the screen stays apart at any dpi.
"""

from __future__ import annotations

import itertools

from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

LABEL = "data-label"  # the gid of a text spread_labels may move
GAP = 1.5  # points between two labels
MOVED = 0.5  # points: a label moved further than this shows its leader line


def data_label(ax, text: str, xy: tuple[float, float], color, *, offset=(3, 0), **kw) -> Annotation:
    """A label `offset` points from a data point; its leader line shows once it is moved.
    relpos is where the leader meets the text (the side that faces the point)."""
    relpos = kw.pop("relpos", (0, 0.5))
    line = {"arrowstyle": "-", "color": color, "linewidth": 0.4, "shrinkA": 0, "shrinkB": 2}
    label = ax.annotate(
        text,
        xy,
        xytext=offset,
        textcoords="offset points",
        color=color,
        arrowprops={**line, "relpos": relpos},
        **kw,
    )
    label.set_gid(LABEL)
    label.arrow_patch.set_visible(False)
    return label


def text_extent(text: Text, renderer):
    """The text's own box in display coordinates: an annotation's without its leader."""
    if isinstance(text, Annotation):
        text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def pack(wanted: list[float], heights: list[float], gap: float) -> list[float]:
    """Centres as close to `wanted` (ascending) as they can be with each label at least
    `gap` above the one below: pool adjacent violators, each pooled run of labels stacked
    tight and centred on its labels' wishes (least squares)."""
    offsets = [0.0]
    for below, above in itertools.pairwise(heights):  # a tight stack's centres, from its first
        offsets.append(offsets[-1] + below / 2 + gap + above / 2)
    blocks: list[list] = []  # [first, last, base]: label i sits at base + offsets[i]
    for i, want in enumerate(wanted):
        blocks.append([i, i, want - offsets[i]])
        while len(blocks) > 1:
            (a0, a1, a_base), (b0, _, b_base) = blocks[-2], blocks[-1]
            top = a_base + offsets[a1] + heights[a1] / 2
            if b_base + offsets[b0] - heights[b0] / 2 >= top + gap:
                break
            last = blocks.pop()[1]
            wishes = [wanted[k] - offsets[k] for k in range(a0, last + 1)]
            blocks[-1] = [a0, last, sum(wishes) / len(wishes)]
    return [base + offsets[i] for first, last, base in blocks for i in range(first, last + 1)]


def _columns(boxes: list) -> list[list[int]]:
    """Indices of the labels that share horizontal room, directly or through another
    (labels that do not can never collide, whatever their heights)."""
    columns: list[list[int]] = []
    right = None
    for i in sorted(range(len(boxes)), key=lambda i: boxes[i].x0):
        if right is None or boxes[i].x0 >= right:
            columns.append([])
            right = boxes[i].x1
        columns[-1].append(i)
        right = max(right, boxes[i].x1)
    return columns


def _within(centres: list[float], heights: list[float], low: float, high: float) -> list[float]:
    """The stack shifted back inside [low, high] where it spills over one end, as far as
    the other end has room (a stack taller than the axes stays as it is)."""
    top = max(c + h / 2 for c, h in zip(centres, heights, strict=True))
    bottom = min(c - h / 2 for c, h in zip(centres, heights, strict=True))
    shift = 0.0
    if top > high:
        shift = -min(top - high, max(bottom - low, 0.0))
    elif bottom < low:
        shift = min(low - bottom, max(high - top, 0.0))
    return [c + shift for c in centres]


def spread_labels(fig: Figure) -> None:
    """Move every axes' data labels apart, vertically, within the axes where they fit.
    Call it once the layout is final: it reads positions on the screen."""
    renderer = fig.canvas.get_renderer()
    point = renderer.points_to_pixels(1.0)
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == LABEL and t.get_text()]
        boxes = [text_extent(label, renderer) for label in labels]
        frame = ax.get_window_extent(renderer)
        for column in _columns(boxes):
            column.sort(key=lambda i: boxes[i].y0 + boxes[i].y1)
            wanted = [(boxes[i].y0 + boxes[i].y1) / 2 for i in column]
            heights = [boxes[i].height for i in column]
            centres = pack(wanted, heights, GAP * point)
            if len(column) > 1:  # a stack: kept off the title and the axis below
                centres = _within(centres, heights, frame.y0, frame.y1)
            for i, want, centre in zip(column, wanted, centres, strict=True):
                dx, dy = labels[i].xyann
                labels[i].xyann = (dx, dy + (centre - want) / point)
                labels[i].arrow_patch.set_visible(abs(centre - want) > MOVED * point)
