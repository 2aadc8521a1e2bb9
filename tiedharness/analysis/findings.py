"""The report's opening: what the runs show, in sentences generated from the summary.

A reader should learn first what a sweep can and cannot carry: which strategies save how
many parameters, which differences in quality stand out from seed noise at this budget and
which do not, and why some cannot be read (one seed, a baseline at BLEU's floor, verdicts
not settled, runs not converged). The rules (docs/reports.md, "What the runs show"): Δs
on the test split where the runs have one, else validation, the split named; bits per
character for loss on the vocabulary axis (loss per token does not compare across
vocabularies); a declared primary comparison is distinguishable from zero only by its
Holm-corrected p (endpoints.py), any other by its 95% interval (excluding 0 ⇔ paired-t
p < 0.05), called exploratory where the study declared primaries; no ranking, "not
distinguishable" where an interval holds 0; numbers rounded as the tables round them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from tiedharness.analysis.budgets import STABLE, budgeted_runs
from tiedharness.analysis.endpoints import CONTRAST, declared, metric_column
from tiedharness.analysis.paired import cell_ids
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.stats import SIGNIFICANCE
from tiedharness.analysis.vocab_axis import BASELINE

# A baseline below this BLEU scores mostly chance n-gram matches: differences of arms
# against it say nothing about translation quality, so they are not read.
BLEU_FLOOR = 5.0
# metric → (its name in a sentence, unit, decimals)
METRICS = {
    "loss": ("loss", "nats", 3),
    "bpc": ("bits per character", "bits", 3),
    "bleu": ("BLEU", "points", 2),
}
SPLIT_NAMES = {"test": "test", "valid": "validation"}


@dataclass
class Findings:
    savings: list[str] = field(default_factory=list)  # parameters saved per cell
    deltas: list[str] = field(default_factory=list)  # quality: distinguishable or not
    caveats: list[str] = field(default_factory=list)  # why some of it cannot be read

    @property
    def sentences(self) -> list[str]:
        return [*self.savings, *self.deltas, *self.caveats]


@dataclass(frozen=True)
class Delta:
    """One comparison of an arm with its cell's baseline, as summary.csv states it."""

    cell: str
    arm: str
    baseline: str
    metric: str  # loss, bpc, bleu
    split: str  # test, valid
    best: bool  # at each arm's best budget (a primary comparison there), else final
    mean: float
    ci95: float
    n: int
    p_holm: float  # NaN where the comparison is not primary

    @property
    def primary(self) -> bool:
        return not math.isnan(self.p_holm)

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.ci95)

    @property
    def distinguishable(self) -> bool:
        if self.primary:  # a declared comparison: only its corrected p decides
            return self.p_holm < SIGNIFICANCE
        return self.has_interval and abs(self.mean) > self.ci95


def findings(runs: Runs, summary: pd.DataFrame) -> Findings:
    """The sentences the report opens with, from the per-cell summary (aggregate.py)."""
    out = Findings()
    if summary.empty or "sharing" not in summary:
        return out
    summary = summary[~summary["sharing"].astype(str).str.startswith(CONTRAST)]
    names = cell_names(summary, runs.cell_keys)
    floors = bleu_floors(summary, runs.cell_keys, names)
    loss = "bpc" if "baseline" in summary and _has_delta(summary, "bpc") else "loss"
    report = declared(runs)  # where the study declares primaries, the rest is exploratory
    exploratory = bool(report.primary) or any(c.primary for c in report.contrasts)
    deltas = []
    for cell_id, rows in summary.groupby(cell_ids(summary, runs.cell_keys), sort=False):
        base = _baseline_row(rows)
        if base is not None:
            out.savings += savings(rows, base, names[cell_id])
        metrics = [loss] + (["bleu"] if cell_id not in floors else [])
        deltas += [d for _, row in _arms(rows) for d in row_deltas(row, names[cell_id], metrics)]
    out.deltas = delta_sentences(deltas, exploratory)
    out.caveats = seed_caveats(summary, runs.cell_keys, names, loss)
    out.caveats += list(floors.values())
    out.caveats += settled_caveats(runs, summary, names)
    out.caveats += convergence_caveats(runs)
    if next(_arms(summary), None) is None:  # only baselines: say so rather than nothing
        out.caveats.insert(0, "Only baselines ran: no strategy is compared with one.")
    return out


# ---------------------------------------------------------------------------- cells


def cell_names(summary: pd.DataFrame, keys: list[str]) -> dict[str, str]:
    """Cell id → how a sentence names it: the task, and where the task has several cells,
    the fewest of their settings that tell them apart (`bible_lm (d=64, vocab_size=1000)`)."""
    cells = summary[keys].copy()  # a fresh frame: the summary is too fragmented to assign to
    cells["_cell"] = cell_ids(summary, keys).to_numpy()
    names = {}
    for task, mine in cells.drop_duplicates("_cell").groupby("task", sort=False, dropna=False):
        split = mine["model"].astype(str).map(lambda m: re.split(r": |, ", m))
        aligned = split.map(len).nunique() == 1  # the same preset layout: compare piece by piece
        parts = {
            row["_cell"]: [
                *(pieces if aligned else [str(row["model"])]),
                *(f"{k.split('.')[-1]}={row[k]}" for k in keys[2:]),
            ]
            for pieces, (_, row) in zip(split, mine.iterrows(), strict=True)
        }
        shown = _telling_apart(list(parts.values()))
        for cell, mine_parts in parts.items():
            named = ", ".join(mine_parts[i] for i in shown)
            names[cell] = f"{task} ({named})" if named else str(task)
    return names


def _telling_apart(parts: list[list[str]]) -> list[int]:
    """The positions of the parts to name, in order: each one added only where it tells
    more cells apart than those before it (so `ff=256` does not follow `d=64`)."""
    chosen: list[int] = []
    distinct = 1
    for i in range(len(parts[0]) if parts else 0):
        now = len({tuple(p[j] for j in [*chosen, i]) for p in parts})
        if now > distinct:
            chosen, distinct = [*chosen, i], now
    return chosen


def _baseline_of(row: pd.Series) -> str:
    """The label a summary row is compared with: its `baseline` on the vocabulary axis."""
    value = row.get("baseline")
    return str(value) if isinstance(value, str) and value else BASELINE


def _baseline_row(rows: pd.DataFrame) -> pd.Series | None:
    """The baseline's row of a cell: the row compared with itself (None: no such run)."""
    return next((row for _, row in rows.iterrows() if row["sharing"] == _baseline_of(row)), None)


def _arms(rows: pd.DataFrame):
    """(index, row) of every row compared with a baseline (not the baseline's own)."""
    return ((i, row) for i, row in rows.iterrows() if row["sharing"] != _baseline_of(row))


# ---------------------------------------------------------------------------- parameters


def savings(rows: pd.DataFrame, base: pd.Series, cell: str) -> list[str]:
    """One sentence per cell: every arm's parameters against the baseline's, the largest
    saving first (counts do not vary by seed, so the means are the counts)."""
    total = _value(base, "params_total_mean")
    if not math.isfinite(total) or total <= 0:
        return []
    changes = []
    for _, row in _arms(rows):
        arm = _value(row, "params_total_mean")
        if math.isfinite(arm):
            changes.append((round(total - arm), str(row["sharing"])))
    parts = []
    for saved, arm in sorted(changes, key=lambda c: (-c[0], c[1])):
        if saved > 0:
            parts.append(f"{arm} saves {saved:,} ({100 * saved / total:.1f}%)")
        elif saved < 0:
            parts.append(f"{arm} adds {-saved:,} (+{-100 * saved / total:.1f}%)")
        else:
            parts.append(f"{arm} saves none")
    against = f"On {cell}, against {base['sharing']}'s {round(total):,} parameters"
    return [f"{against}: {', '.join(parts)}."] if parts else []


# ---------------------------------------------------------------------------- quality


def row_deltas(row: pd.Series, cell: str, metrics: list[str]) -> list[Delta]:
    """The arm's Δs to state: per metric, at the whole budget on the test split where it
    has one (else validation), and at the arms' best budgets where that is primary."""
    out = []
    for metric in metrics:
        split = _split(row, metric)
        if split is None:
            continue
        column = metric_column(metric, split)
        for best in (False, True):
            prefix = f"{'best_' if best else ''}delta_{column}"
            p_holm = _value(row, f"{prefix}_p_holm")
            if best and math.isnan(p_holm):  # the best endpoint is stated where declared
                continue
            mean = _value(row, f"{prefix}_mean")
            if math.isnan(mean):
                continue
            n = _value(row, f"{prefix}_n")
            out.append(
                Delta(
                    cell, str(row["sharing"]), _baseline_of(row), metric, split, best, mean,
                    _value(row, f"{prefix}_ci95"), int(n) if math.isfinite(n) else 0, p_holm,
                )
            )  # fmt: skip
    return out


def _split(row: pd.Series, metric: str) -> str | None:
    """test where the row has a Δ on it, else valid; None where it has neither."""
    for split in ("test", "valid"):
        if math.isfinite(_value(row, f"delta_{metric_column(metric, split)}_mean")):
            return split
    return None


def delta_sentences(deltas: list[Delta], exploratory: bool) -> list[str]:
    """Per cell and metric (in the summary's order): one sentence per distinguishable Δ,
    the largest first, then one per seed count naming the arms that are not."""
    groups: dict[tuple, list[Delta]] = {}
    for d in deltas:
        groups.setdefault((d.cell, d.metric, d.best), []).append(d)
    out = []
    for mine in groups.values():
        shown = sorted((d for d in mine if d.distinguishable), key=lambda d: (-abs(d.mean), d.arm))
        out += [distinguishable_sentence(d, exploratory) for d in shown]
        unclear: dict[tuple, list[str]] = {}
        for d in mine:
            if d.has_interval and not d.distinguishable:
                unclear.setdefault((d.baseline, d.split, d.n, d.primary), []).append(d.arm)
        for (baseline, split, n, primary), arms in unclear.items():
            d = mine[0]
            after = " after Holm's correction" if primary else ""
            what = f"{SPLIT_NAMES[split]} {METRICS[d.metric][0]}{_endpoint(d.best)}"
            out.append(
                f"{what[0].upper()}{what[1:]} on {d.cell}, not distinguishable from {baseline} "
                f"at {n} seeds{after}: {', '.join(arms)}."
            )
    return out


def distinguishable_sentence(d: Delta, exploratory: bool) -> str:
    name, unit, decimals = METRICS[d.metric]
    value = f"{_signed(d.mean, decimals)} ± {d.ci95:.{decimals}f} {unit}"
    head = f"{d.arm}: {SPLIT_NAMES[d.split]} {name}{_endpoint(d.best)} {value}"
    if d.primary:
        return (
            f"{head} against {d.baseline} on {d.cell}, Holm-corrected p {d.p_holm:.2g} (primary)."
        )
    tail = " (exploratory, uncorrected)" if exploratory else ""
    return f"{head} against {d.baseline} on {d.cell}, 95% interval excluding 0{tail}."


def _endpoint(best: bool) -> str:
    return " at each arm's best budget" if best else ""


def _signed(value: float, decimals: int) -> str:
    text = f"{value:+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text  # no "-0.000"


# ---------------------------------------------------------------------------- caveats


def seed_caveats(summary: pd.DataFrame, keys: list[str], names: dict, loss: str) -> list[str]:
    """A single seed gives no interval: no Δ can be told from seed noise."""
    if (summary["n"] < 2).all():
        return [
            "A single seed per cell: no Δ has an interval, so no difference in quality can "
            "be told from seed noise; train at least 2 seeds (trainer.seed=0,1,2; 3 for a "
            "usable interval)."
        ]
    out = []
    for cell_id, rows in summary.groupby(cell_ids(summary, keys), sort=False):
        lonely: dict[tuple[str, bool], list[str]] = {}
        for _, row in _arms(rows):
            split = _split(row, loss) or "valid"
            n = _value(row, f"delta_{metric_column(loss, split)}_n")
            if not n >= 2:  # NaN too: no paired seed at all
                lonely.setdefault((_baseline_of(row), n >= 1), []).append(str(row["sharing"]))
        out += [
            f"One seed paired with {baseline} on {names[cell_id]}, so no interval and no Δ "
            f"read: {', '.join(arms)}."
            if paired
            else f"No {baseline} run of the same seed on {names[cell_id]} to compare with: "
            f"{', '.join(arms)}."
            for (baseline, paired), arms in lonely.items()
        ]
    return out


def bleu_floors(summary: pd.DataFrame, keys: list[str], names: dict) -> dict[str, str]:
    """Cell id → the caveat of a cell whose baseline's BLEU is below BLEU_FLOOR (on the
    split its Δs would be read on); those cells' BLEU Δs are not stated."""
    out = {}
    for cell_id, rows in summary.groupby(cell_ids(summary, keys), sort=False):
        base = _baseline_row(rows)
        if base is None:  # no baseline, no Δ to withhold
            continue
        split = "test" if math.isfinite(_value(base, "test_bleu_mean")) else "valid"
        bleu = _value(base, f"{metric_column('bleu', split)}_mean")
        if math.isfinite(bleu) and bleu < BLEU_FLOOR:
            out[cell_id] = (
                f"{base['sharing']}'s {SPLIT_NAMES[split]} BLEU on {names[cell_id]} is "
                f"{bleu:.2f}, below {BLEU_FLOOR:g}: BLEU differences there are meaningless at "
                "this budget and are not read here; train longer, or read the loss."
            )
    return out


def settled_caveats(runs: Runs, summary: pd.DataFrame, names: dict) -> list[str]:
    """Where the runs were evaluated at two or more budgets: the comparisons whose Δ had
    not settled by the final one (budgets.py's verdict: anything but stable)."""
    if not budgeted_runs(runs) or "verdict" not in summary:
        return []
    out = []
    for cell_id, rows in summary.groupby(cell_ids(summary, runs.cell_keys), sort=False):
        moving: dict[str, list[str]] = {}
        for _, row in _arms(rows):
            verdict = row.get("verdict")
            test = bool(row.get("delta_test_loss_verdict"))
            n = _value(row, f"delta_{'test_loss' if test else 'val_loss'}_n")
            if isinstance(verdict, str) and verdict and verdict != STABLE and n >= 2:
                split = "test" if test else "valid"
                moving.setdefault(split, []).append(f"{row['sharing']} ({verdict})")
        out += [
            f"Δ {SPLIT_NAMES[split]} loss on {names[cell_id]} had not settled over the last "
            f"two budgets: {', '.join(arms)}; a longer budget may change these comparisons."
            for split, arms in moving.items()
        ]
    return out


def convergence_caveats(runs: Runs) -> list[str]:
    """Runs whose validation loss was still falling at the end (converged False; null,
    not measured under an annealed schedule, is left to the verdicts)."""
    done = runs.completed
    if "converged" not in done:
        return []
    measured = done["converged"].dropna().astype(bool)
    if measured.all():
        return []
    return [
        f"{int((~measured).sum())} of {len(done)} completed runs had not converged (their "
        "validation loss was still falling): these comparisons describe training in "
        "progress."
    ]


# ---------------------------------------------------------------------------- helpers


def _value(row: pd.Series, column: str) -> float:
    """A number of a summary row; NaN where the column is absent or empty."""
    value = row.get(column)
    return float("nan") if value is None or pd.isna(value) else float(value)


def _has_delta(summary: pd.DataFrame, metric: str) -> bool:
    columns = [f"delta_{metric_column(metric, s)}_mean" for s in ("test", "valid")]
    return any(c in summary and summary[c].notna().any() for c in columns)
