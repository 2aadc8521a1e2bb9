"""How the runs' settings were chosen: the searches they were tuned by.

Runs trained with `tuned_from=<search folder>` (docs/studies.md) name their search in
their config; this reads each search's `optimization_results.yaml` back into one row per
tuned cell: its best settings, best value, how many trials it took (and how many failed),
and the search's budget, so that a report shows at which rate each arm was compared and how that rate was found.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from tiedharness.analysis.runs import Runs

RESULTS_FILE = "optimization_results.yaml"  # what tiedharness/sweep/search.py writes
TUNED_FROM = "cfg.tuned_from"


def tuning_table(runs: Runs) -> pd.DataFrame:
    """One row per cell of every search the runs were tuned by; an unreadable search is
    named in `runs.warnings` and left out."""
    if TUNED_FROM not in runs.frame:
        return pd.DataFrame()
    rows = []
    for folder in sorted(runs.frame[TUNED_FROM].dropna().astype(str).unique()):
        try:
            results = OmegaConf.to_container(OmegaConf.load(Path(folder) / RESULTS_FILE))
        except (OSError, ValueError) as err:
            runs.warnings.append(f"tuned_from={folder}: {RESULTS_FILE} unreadable ({err})")
            continue
        rows += [study_row(folder, results, study) for study in results.get("studies", [])]
    return pd.DataFrame(rows)


def study_row(folder: str, results: dict, study: dict) -> dict:
    trials = study.get("trials") or []
    budget = results.get("search_budget") or {}
    row = {
        "search": folder,
        "cell": " ".join(f"{k}={v}" for k, v in study["cell"].items()) or "(one cell)",
        "objective": results.get("objective"),
        "best_value": study.get("best_value"),
        "trials": len(trials),
        "pruned": sum(t.get("state") == "pruned" for t in trials),
        "failed": sum(t.get("state") not in ("complete", "pruned") for t in trials),
        "search_budget": ", ".join(f"{k}={v}" for k, v in budget.items() if v is not None),
    }
    return {**row, **(study.get("best_params") or {})}


def tuning_notes(table: pd.DataFrame) -> list[str]:
    """The table in words, one line per search: what it tuned, on what budget."""
    lines = []
    for folder, rows in table.groupby("search", sort=False):
        tuned = [c for c in rows.columns if c.startswith(("trainer.", "model.", "task."))]
        lines.append(
            f"Settings tuned per cell by the search in {folder}: {', '.join(tuned)}; "
            f"{int(rows['trials'].sum())} trials over {len(rows)} cells "
            f"({int(rows['pruned'].sum())} pruned, {int(rows['failed'].sum())} failed), "
            f"on a budget of "
            f"{rows['search_budget'].iloc[0] or 'the study’s own'} (tuning.csv)."
        )
    return lines
