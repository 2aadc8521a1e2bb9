"""The report's tables: the per-cell summary, the runs, and what every report states
(budgets, seeds, convergence), as rows of strings for Markdown, LaTeX and HTML."""

from __future__ import annotations

import math

import pandas as pd

from tiedharness.analysis.budgets import VERDICT_NOTE
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.stats import BOOTSTRAP_SAMPLES, MIN_SEEDS, SIGNIFICANCE
from tiedharness.analysis.vocab_axis import BASELINE

WIDE_SPREAD = 0.25  # a time share whose interquartile range exceeds this fraction of it

# (metric, header, format): its mean, ± its 95% interval, and the paired Δ vs none. The
# test split's first: verdicts read it; validation's beside it.
QUALITY = [
    ("test_loss", "test loss", "{:.4f}"),
    ("test_bleu", "test BLEU", "{:.2f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("val_bpc", "val bpc", "{:.4f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("chrf", "chrF", "{:.2f}"),
    ("exact_match", "EM", "{:.3f}"),
]
COSTS = [
    ("train_tokens_per_s_mean", "train tok/s", "{:,.0f}"),
    ("output_step_flops_share_mean", "output FLOP share", "{:.3f}"),
    ("output_step_time_share_mean", "output time share", "{:.3f}"),
]
# on the vocabulary axis (vocab_axis.py): the output layer's shares of the row's baseline
BASELINE_COSTS = [
    ("baseline_output_step_flops_share_mean", "baseline output FLOP share", "{:.3f}"),
    ("baseline_output_step_time_share_mean", "baseline output time share", "{:.3f}"),
]
VOCAB_NOTE = (
    "The vocabulary is a comparison axis: each label ends in its vocabulary (@joint, "
    "@separate) and every Δ (and its *) is against the row's baseline, none@separate of "
    "its cell (none@joint where the cell has no none@separate: see the warnings); the "
    "baseline's output-layer FLOP and time shares of a step stand beside the row's own."
)
ANNEALED = ("cosine", "wsd")  # schedules that anneal the learning rate to zero
FOOTNOTES = (
    f"† fewer than {MIN_SEEDS} seeds: the interval is unreliable or missing. "
    "‡ not every run of the cell converged (docs/metrics.md): its numbers are not final. "
    "n/a: convergence not measured (the schedule anneals to zero, so a flat tail proves "
    "nothing): see the verdict. "
    f"* the paired difference from none is significant (p < {SIGNIFICANCE}, paired t over "
    "seeds; never the BLEU bootstrap's p). ~ the time share's spread over repetitions is "
    "wide: a noisy measurement."
)
BOOTSTRAP_NOTE = (
    "delta_bleu_bootstrap_p (summary.csv): sacreBLEU's paired bootstrap "
    f"({BOOTSTRAP_SAMPLES} resamples) of the decoded sentences pooled over seeds. It "
    "measures the variance of decoding fixed, trained systems, not training variance: "
    "the marks and the verdicts use the paired t over seeds."
)


def _number(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _present(summary: pd.DataFrame, column: str) -> bool:
    return column in summary.columns and summary[column].notna().any()


def summary_table(runs: Runs, summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the per-cell summary, marks included (FOOTNOTES)."""
    axis = "baseline" in summary.columns  # the vocabulary is an axis: vocab_axis.py
    keys = ["task", "model", *runs.swept, "sharing", *(["baseline"] if axis else [])]
    quality = [q for q in QUALITY if _present(summary, f"{q[0]}_mean")]
    costs = [c for c in COSTS + BASELINE_COSTS if _present(summary, c[0])]
    header = [k.split(".")[-1] for k in keys] + ["n", "converged", "params", "Δparams"]
    for _, name, _ in quality:
        header += [name, f"Δ{name} vs {'baseline' if axis else 'none'}"]
    verdicts = "verdict" in summary.columns
    header += ["verdict"] if verdicts else []
    header += [name for _, name, _ in costs]
    rows = []
    for _, row in summary.iterrows():
        cells = _row_cells(row, quality, costs)
        if verdicts:
            cells.insert(len(cells) - len(costs), str(row["verdict"] or ""))
        rows.append([str(row[k]) for k in keys] + cells)
    return header, rows


def summary_notes(runs: Runs, summary: pd.DataFrame) -> list[str]:
    """The lines under the summary table: budgets and convergence, what the verdict and the
    bootstrap are, what the marks mean."""
    notes = budget_lines(runs)
    if "verdict" in summary.columns:
        notes.append(VERDICT_NOTE)
    if "delta_bleu_bootstrap_p" in summary.columns:
        notes.append(BOOTSTRAP_NOTE)
    if "baseline" in summary.columns:
        notes.append(VOCAB_NOTE)
    return [*notes, FOOTNOTES]


def _converged_cell(row: pd.Series) -> str:
    """The share of converged runs; n/a where no run's convergence was measured."""
    if "converged_frac" not in row.index:
        return "–"
    share = row["converged_frac"]
    if pd.isna(share):
        return "n/a"
    return f"{share:.0%}{'' if share == 1 else ' ‡'}"


def _row_cells(row: pd.Series, quality: list, costs: list) -> list[str]:
    cells = [
        f"{row['n']}{'†' if row['n'] < MIN_SEEDS else ''}",
        _converged_cell(row),
        _number(row.get("params_total_mean"), "{:,.0f}"),
        _number(row.get("delta_params_total_mean"), "{:+,.0f}"),
    ]
    for metric, _, fmt in quality:
        cells.append(
            f"{_number(row[f'{metric}_mean'], fmt)} ± {_number(row[f'{metric}_ci95'], fmt)}"
        )
        delta = _number(row.get(f"delta_{metric}_mean"), fmt.replace("{:", "{:+"))
        interval = _number(row.get(f"delta_{metric}_ci95"), fmt)
        compared = row["sharing"] != row.get("baseline", BASELINE)
        mark = "*" if row.get(f"delta_{metric}_significant") and compared else ""
        cells.append(f"{delta} ± {interval}{mark}")
    for column, _, fmt in costs:
        cell = _number(row[column], fmt)
        if column.startswith("output_step_time_share") and _wide_spread(row):
            cell += " ~"
        cells.append(cell)
    return cells


def _wide_spread(row: pd.Series) -> bool:
    share, iqr = row.get("output_step_time_share_mean"), row.get("output_step_time_share_iqr_mean")
    return bool(share and iqr is not None and not pd.isna(iqr) and iqr > WIDE_SPREAD * share)


def budget_lines(runs: Runs) -> list[str]:
    """What every report states: per task, the steps and target tokens its runs trained,
    and how many seeds its cells have."""
    done = runs.completed
    lines = []
    for task, group in done.groupby("task", sort=False):
        steps, tokens = group.get("steps"), group.get("tokens")
        if steps is None or tokens is None:
            continue
        seeds = group.groupby([*runs.cell_keys, "sharing"], dropna=False).size()
        lines.append(
            f"{task}: {_span(steps, '{:,.0f}')} steps, {_span(tokens, '{:,.0f}')} target tokens "
            f"per run; seeds per cell: {_span(seeds, '{:.0f}')}"
        )
    if any(m in done and done[m].notna().any() for m in ("bleu", "chrf", "exact_match")):
        lines.append(
            f"BLEU, chrF and exact match: {runs.scores}"
            if runs.scores
            else "BLEU, chrF and exact match: the runs' own greedy decoding during training"
        )
    return lines + convergence_lines(done)


def convergence_lines(done: pd.DataFrame) -> list[str]:
    """How many completed runs did not converge, and how many were not measured (`converged`
    null): an annealed schedule's flat tail is forced by the schedule, not convergence."""
    if "converged" not in done:
        return []
    measured = done["converged"].dropna().astype(bool)
    lines = []
    if (~measured).any():
        lines.append(
            f"{int((~measured).sum())} of {len(done)} completed runs did not converge: "
            "their comparisons describe training in progress, not final quality"
        )
    unmeasured = done[done["converged"].isna()]
    if len(unmeasured):
        schedule = unmeasured.get("cfg.trainer.schedule", pd.Series(dtype=object))
        notes = unmeasured.get("convergence_note", pd.Series(dtype=object))
        annealed = schedule.isin(ANNEALED).any() or notes.notna().any()
        why = "the schedule anneals to zero" if annealed else "no convergence test recorded"
        lines.append(
            f"{len(unmeasured)} of {len(done)} completed runs: convergence not measured: "
            f"{why}; see the Δ-vs-budget verdicts (verdict column, delta_vs_budget figure)"
        )
    return lines


def _span(values: pd.Series, fmt: str) -> str:
    low, high = values.min(), values.max()
    return fmt.format(low) if low == high else f"{fmt.format(low)}–{fmt.format(high)}"


def runs_table(runs: Runs) -> tuple[list[str], list[list[str]]]:
    """Every run with its status, swept keys and main numbers; integers as integers."""
    frame = runs.frame
    columns = [
        "run_id",
        "task",
        "model",
        *runs.swept,
        "sharing",
        "seed",
        "status",
        "duplicate",
        "steps",
        "tokens",
        "params_total",
        "val_loss",
        "val_bpc",
        "converged",
        "error",
    ]
    present = [c for c in columns if c in frame.columns]
    rows = [[_cell(v) for v in r] for r in frame[present].itertuples(index=False)]
    if "converged" in present:  # null: not measured (an annealed schedule), not "no"
        at, status = present.index("converged"), present.index("status")
        for row in rows:
            row[at] = row[at] or ("n/a" if row[status] == "completed" else "")
    return [c.split(".")[-1] for c in present], rows


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return f"{int(value)}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_latex(header: list[str], rows: list[list[str]]) -> str:
    """A booktabs table (\\usepackage{booktabs})."""

    def tex(cell: str) -> str:
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("_", r"\_"),
            ("%", r"\%"),
            ("&", r"\&"),
            ("#", r"\#"),
            ("±", r"$\pm$"),
            ("Δ", r"$\Delta$"),
            ("–", "--"),
            ("†", r"$^\dagger$"),
            ("‡", r"$^\ddagger$"),
            ("~", r"\textasciitilde{}"),
        ):
            cell = cell.replace(a, b)
        return cell

    spec = "l" * 3 + "r" * (len(header) - 3)
    lines = [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(map(tex, header)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(tex, r)) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
