"""Panel titles that name only what differs between a figure's panels, in a few words
("synth MT · d=64 · overlap 0.5"), and the caption sentence that says once what they
share, so that a figure reads as it would in a paper (docs/reports.md).

A panel is described by facets: its task, the parts of its model's shape (d, ff, heads,
layers, preset) and each swept config key. A title names a facet only when it varies
between the panels and is not already fixed by the facets named before it (ff follows d,
layers follow the task); a value most panels share is left to the caption too
("unless a title says otherwise"). The caption names the rest.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from tiedharness.analysis.aggregate import MISSING

TITLE_LIMIT = 60  # characters, the line breaks included
LINE = 40  # characters of a title line: wider runs past a single-column panel
SEP = " · "
TASKS = {
    "bible_lm": "Bible LM",
    "bible_mt": "Bible MT",
    "bible_pair": "Bible pair",
    "synth_translation": "synth MT",
    "text_lm": "text LM",
    "parallel_text": "parallel text",
}
# the model label's parts (aggregate.model_label: "small: d=64, ff=256, 4 heads, 2+2 layers")
MODEL_PARTS = (
    ("d", r"d=\S+"),
    ("ff", r"ff=\S+"),
    ("heads", r"\d+ heads"),
    ("layers", r".* layers"),
)
USUAL_SHARE = 0.75  # a value this many of the panels share is the caption's "usual" one


def count(value: float) -> str:
    """1000 → 1k, 1200000 → 1.2M, 750 → 750."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    return f"{value / 1e3:.3g}k" if value >= 1e3 else f"{value:g}"


def _fraction(value: float) -> str:
    return "all data" if value == 1 else f"{100 * value:g}% data"


def _branches(value) -> str:
    points = json.loads(value) if isinstance(value, str) else list(value)
    return "branch " + "/".join(f"{p:g}" for p in points)


# a config key's value in a title; any other key reads "<last part of the key> <value>"
SHORT = {
    "task.vocab_size": lambda v: f"{count(float(v))} types",
    "task.overlap": lambda v: f"overlap {float(v):g}",
    "task.train_fraction": lambda v: _fraction(float(v)),
    "model.init": lambda v: f"{v} init",
    "trainer.max_train_tokens": lambda v: f"{count(float(v))} tokens",
    "trainer.max_steps": lambda v: f"{count(float(v))} steps",
    "trainer.branch_at": _branches,
    "trainer.lr": lambda v: f"lr {float(v):g}",
}


def short_task(task) -> str:
    return TASKS.get(str(task), str(task))


def short_value(key: str, value) -> str:
    try:
        return SHORT[key](value)
    except (KeyError, TypeError, ValueError):  # a key without a short form, or an odd value
        return f"{key.rsplit('.', 1)[-1]} {value}"


@dataclass(frozen=True)
class Facet:
    long: str  # in the caption: "task.overlap=0.5", "4 heads"; "" where the panel lacks it
    short: str  # in a title: "overlap 0.5"


def _model_facets(label: str) -> dict[str, Facet]:
    """ "small: d=64, ff=256, 4 heads, 2 layers" → the preset and each part of the shape."""
    preset, _, shape = str(label).partition(": ")
    parts = dict.fromkeys([name for name, _ in MODEL_PARTS], Facet("", ""))
    for part in shape.split(", ") if shape else []:
        name = next((n for n, pattern in MODEL_PARTS if re.fullmatch(pattern, part)), part)
        parts[name] = Facet(part, part)
    return {"preset": Facet(f"preset {preset}", preset), **parts}


def facets(row: pd.Series, keys: list[str]) -> dict[str, Facet]:
    """One panel's facets, in the order titles name them: task, model, swept keys (the
    trainer's last: they mostly follow the design of the cell)."""
    out: dict[str, Facet] = {}
    for key in sorted(keys, key=lambda k: (k.startswith("trainer."), keys.index(k))):
        value = row.get(key)
        if key == "task":
            out[key] = Facet(str(value), short_task(value))
        elif key == "model":
            out.update(_model_facets(value))
        elif value is None or value == MISSING or (isinstance(value, float) and value != value):
            out[key] = Facet("", "")
        else:
            out[key] = Facet(f"{key}={value}", short_value(key, value))
    if {"d", "preset"} <= out.keys():  # the shape before the preset's name
        out["preset"] = out.pop("preset")
    return out


def _follows(panels: list[dict[str, Facet]], named: list[str], key: str) -> bool:
    """Whether the facets already named fix this one's value on every panel."""
    seen: dict[tuple, str] = {}
    for panel in panels:
        at = tuple(panel[k].long for k in named)
        if seen.setdefault(at, panel[key].long) != panel[key].long:
            return False
    return True


def _usual(panels: list[dict[str, Facet]], key: str) -> str | None:
    """The value of a swept key that nearly every panel has, the others each a one-off
    that its panel's title names; None when there is none, and for the task and model."""
    values = [p[key].long for p in panels if p[key].long]
    if "." not in key or len(values) < 4:
        return None
    counts = Counter(values)
    (value, n), *others = counts.most_common()
    # the others must be one-offs (a variant of one cell), not a second level of an axis
    return value if n >= USUAL_SHARE * len(values) and all(m == 1 for _, m in others) else None


def _lines(parts: list[str]) -> str:
    """Parts joined by SEP, broken into lines of at most LINE characters, within
    TITLE_LIMIT (the end cut with … where they cannot be)."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(SEP) + len(part) <= LINE:
            lines[-1] += SEP + part
        else:
            lines.append(part)
    text = "\n".join(lines)
    return text if len(text) <= TITLE_LIMIT else text[: TITLE_LIMIT - 1].rstrip(" ·\n") + "…"


@dataclass
class Named:
    titles: list[str]  # one per panel, in order
    caption: str  # what the titles leave out: what the panels share


def name_panels(rows: list[pd.Series], keys: list[str]) -> Named:
    """Titles for panels of the given cell keys (one row of each panel), and the caption
    sentence naming what they share."""
    panels = [facets(row, keys) for row in rows]
    order = list(dict.fromkeys(k for panel in panels for k in panel))
    panels = [{k: panel.get(k, Facet("", "")) for k in order} for panel in panels]
    varying = [k for k in order if len({p[k].long for p in panels}) > 1]
    named: list[str] = []
    for key in varying:
        if not _follows(panels, named, key):
            named.append(key)
    usual = {k: value for k in named if (value := _usual(panels, k))}
    titles = [
        _lines([p[k].short for k in named if p[k].short and p[k].long != usual.get(k)])
        for p in panels
    ]
    shared = [panels[0][k].long for k in order if k not in varying and panels[0][k].long]
    following = [k if "." in k or k == "task" else f"model {k}" for k in varying if k not in named]
    sentences = [
        f"{'Every panel' if len(rows) > 1 else 'The cell'}: {', '.join(shared)}." if shared else "",
        f"Unless a title says otherwise: {', '.join(usual.values())}." if usual else "",
        f"Also differing, fixed by what the titles name: {', '.join(following)}."
        if following
        else "",
    ]
    return Named(titles, " ".join(s for s in sentences if s))


def title_panels(fig: Figure, axes: list, rows: list[pd.Series], keys: list[str]) -> None:
    """Each panel titled by what sets it apart; what they share kept for the caption."""
    named = name_panels(rows, keys)
    for ax, title in zip(axes, named.titles, strict=True):
        ax.set_title(title)
    fig.shared_caption = named.caption  # read by plots.describe(name, fig)


def shared_caption(fig: Figure | None) -> str:
    return getattr(fig, "shared_caption", "")
