"""How the runs' settings were chosen: the searches they were tuned by.

Runs trained with `tuned_from=<search folder>` (docs/studies.md) name their search in
their config, and a report on a search's own folder reads that search; this reads each
search's `optimization_results.yaml` back into one row per trial: its cell, settings,
state, value and, for a pruned trial, the step it stopped at; which trial is its cell's
best, which ones the edge rule added, and whether the best is still at an edge of the
values tried (`lr_at_edge`); with the search's seed and budget, so that a report shows
at which rate each arm was compared and how that rate was found.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from tiedharness.analysis.runs import Runs

RESULTS_FILE = "optimization_results.yaml"  # what tiedharness/sweep/search.py writes
TUNED_FROM = "cfg.tuned_from"
LR = "trainer.lr"


def search_folders(runs: Runs) -> list[str]:
    """The searches the runs were tuned by, and those the runs are the trials of (each
    once, however its path is written)."""
    folders = []
    if TUNED_FROM in runs.frame:
        folders += list(runs.frame[TUNED_FROM].dropna().astype(str).unique())
    if "run_dir" in runs.frame:
        parents = {str(Path(d).parent) for d in runs.frame["run_dir"].dropna().astype(str)}
        folders += [p for p in sorted(parents) if (Path(p) / RESULTS_FILE).is_file()]
    by_place = {}
    for folder in folders:
        by_place.setdefault(Path(folder).resolve(), folder)
    return sorted(by_place.values())


def tuning_table(runs: Runs) -> pd.DataFrame:
    """One row per trial of every search the runs were tuned by or belong to; an
    unreadable search is named in `runs.warnings` and left out."""
    rows = []
    for folder in search_folders(runs):
        try:
            results = OmegaConf.to_container(OmegaConf.load(Path(folder) / RESULTS_FILE))
        except (OSError, ValueError) as err:
            runs.warnings.append(f"tuned_from={folder}: {RESULTS_FILE} unreadable ({err})")
            continue
        for study in results.get("studies", []):
            rows += trial_rows(folder, results, study)
    return pd.DataFrame(rows)


def trial_rows(folder: str, results: dict, study: dict) -> list[dict]:
    """A study's trials, one row each, with what the study says of them."""
    edges = study.get("param_at_edge") or {}
    # a search written before budgets were stated per cell kept one for all
    budget = study.get("search_budget") or results.get("search_budget") or {}
    cell = " ".join(f"{k}={v}" for k, v in study["cell"].items()) or "(one cell)"
    rows = []
    for trial in study.get("trials") or []:
        best = study.get("best_job") is not None and trial.get("job") == study["best_job"]
        rows.append(
            {
                "search": folder,
                "cell": cell,
                "job": trial.get("job"),
                **(trial.get("params") or {}),
                "state": trial.get("state"),
                "value": trial.get("value"),
                "pruned_step": trial.get("pruned_step"),
                "best": best,
                "extends": trial.get("extends") or "",
                "at_edge": ", ".join(f"{k} {side}" for k, side in edges.items()),
                "lr_at_edge": LR in edges,
                "objective": results.get("objective"),
                "search_seed": results.get("search_seed"),
                "search_budget": ", ".join(f"{k}={v}" for k, v in budget.items() if v is not None),
                "budget_fraction": study.get("budget_fraction"),
            }
        )
    return rows


def tuning_notes(table: pd.DataFrame) -> list[str]:
    """The table in words, one line per search: what it tuned, on what seed and budget,
    and the cells whose best is still at an edge of the values tried."""
    lines = []
    for folder, rows in table.groupby("search", sort=False):
        tuned = [c for c in rows.columns if c.startswith(("trainer.", "model.", "task."))]
        states = rows["state"].value_counts()
        failed = len(rows) - states.get("complete", 0) - states.get("pruned", 0)
        seed = rows["search_seed"].iloc[0]
        seed = (
            "the grid's first seed"
            if pd.isna(seed)
            else f"seed {int(seed)} (none of the tuned runs' seeds)"
        )
        lines.append(
            f"Settings tuned per cell by the search in {folder}: {', '.join(tuned)}; "
            f"{len(rows)} trials over {rows['cell'].nunique()} cells "
            f"({int((rows['extends'] != '').sum())} added by the edge rule, "
            f"{states.get('pruned', 0)} pruned, {failed} failed), on {seed}, "
            f"{budget_words(rows)} (tuning.csv: every trial; `best` marks each cell's)."
        )
        edge = rows[rows["at_edge"] != ""].drop_duplicates("cell")
        if not edge.empty:
            cells = "; ".join(f"{r.cell} ({r.at_edge})" for r in edge.itertuples())
            lines.append(
                f"Best value at an edge of those tried, not bracketed (lr_at_edge where it is "
                f"the learning rate): {cells}."
            )
    return lines


def budget_words(rows: pd.DataFrame) -> str:
    """The search's budget: a fraction of each cell's own, and the budgets themselves."""
    budgets = [b for b in rows["search_budget"].unique() if b]
    named = budgets[0] if len(budgets) == 1 else "per cell in tuning.csv"
    fractions = rows["budget_fraction"].dropna().unique()
    if len(fractions) == 1:
        share = "" if fractions[0] == 1 else f"{fractions[0]:.3g} of "
        return f"at {share}each cell's own budget ({named})"
    return f"on a budget of {named}" if budgets else "on the study's own budget"
