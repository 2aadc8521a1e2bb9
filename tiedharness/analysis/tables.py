"""The report's tables: the per-cell summary, the runs, and what every report states
(budgets, seeds, convergence), as rows of strings for Markdown, LaTeX and HTML."""

from __future__ import annotations

import math

import pandas as pd

from tiedharness.analysis.aggregate import Runs
from tiedharness.analysis.stats import MIN_SEEDS, SIGNIFICANCE

WIDE_SPREAD = 0.25  # a time share whose interquartile range exceeds this fraction of it

# (metric, header, format): its mean, ± its 95% interval, and the paired Δ vs none.
QUALITY = [
    ("val_loss", "val loss", "{:.4f}"),
    ("val_bpc", "val bpc", "{:.4f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("exact_match", "EM", "{:.3f}"),
]
COSTS = [
    ("train_tokens_per_s_mean", "train tok/s", "{:,.0f}"),
    ("output_step_flops_share_mean", "output FLOP share", "{:.3f}"),
    ("output_step_time_share_mean", "output time share", "{:.3f}"),
]
FOOTNOTES = (
    f"† fewer than {MIN_SEEDS} seeds: the interval is unreliable or missing. "
    "‡ not every run of the cell converged (docs/metrics.md): its numbers are not final. "
    f"* the paired difference from none is significant (p < {SIGNIFICANCE}, paired t over "
    "seeds). ~ the time share's spread over repetitions is wide: a noisy measurement."
)


def _number(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _present(summary: pd.DataFrame, column: str) -> bool:
    return column in summary.columns and summary[column].notna().any()


def summary_table(runs: Runs, summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the per-cell summary, marks included (FOOTNOTES)."""
    keys = ["task", "model", *runs.swept, "sharing"]
    quality = [q for q in QUALITY if _present(summary, f"{q[0]}_mean")]
    costs = [c for c in COSTS if _present(summary, c[0])]
    header = [k.split(".")[-1] for k in keys] + ["n", "converged", "params", "Δparams"]
    for _, name, _ in quality:
        header += [name, f"Δ{name} vs none"]
    header += [name for _, name, _ in costs]
    rows = [
        [str(row[k]) for k in keys] + _row_cells(row, quality, costs)
        for _, row in summary.iterrows()
    ]
    return header, rows


def _row_cells(row: pd.Series, quality: list, costs: list) -> list[str]:
    converged = row.get("converged_frac", float("nan"))
    cells = [
        f"{row['n']}{'†' if row['n'] < MIN_SEEDS else ''}",
        "–" if pd.isna(converged) else f"{converged:.0%}{'' if converged == 1 else ' ‡'}",
        _number(row.get("params_total_mean"), "{:,.0f}"),
        _number(row.get("delta_params_total_mean"), "{:+,.0f}"),
    ]
    for metric, _, fmt in quality:
        cells.append(
            f"{_number(row[f'{metric}_mean'], fmt)} ± {_number(row[f'{metric}_ci95'], fmt)}"
        )
        delta = _number(row.get(f"delta_{metric}_mean"), fmt.replace("{:", "{:+"))
        interval = _number(row.get(f"delta_{metric}_ci95"), fmt)
        mark = "*" if row.get(f"delta_{metric}_significant") and row["sharing"] != "none" else ""
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
    not_converged = (
        int((~done["converged"].fillna(False).astype(bool)).sum()) if "converged" in done else 0
    )
    if not_converged:
        lines.append(
            f"{not_converged} of {len(done)} completed runs did not converge: "
            "their comparisons describe training in progress, not final quality"
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
