"""Runs: the runs of a results folder as one table, the shape every analysis reads.

aggregate.py fills it from run records and summarises it, partly through budgets.py;
budgets.py, the tables, the figures and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Runs:
    """All runs of a results folder: one row each, plus what could not be read."""

    frame: pd.DataFrame
    swept: list[str]  # config keys that vary between runs (besides task, model, sharing, seed)
    warnings: list[str] = field(default_factory=list)
    history: pd.DataFrame | None = None  # long format: run_id, step, tokens, metric columns
    # long format: run_id, fraction, step, tokens, metric columns (run.json's `budgets`)
    budgets: pd.DataFrame | None = None
    scores: str | None = None  # where BLEU/chrF/exact match come from, when not training-time

    @property
    def completed(self) -> pd.DataFrame:
        """Completed runs, each (cell, label, seed) once: the replicates."""
        done = self.frame[self.frame["status"] == "completed"]
        return done[~done["duplicate"]] if "duplicate" in done else done

    @property
    def cell_keys(self) -> list[str]:
        return ["task", "model", *self.swept]

    def status_counts(self) -> dict[str, int]:
        return self.frame["status"].value_counts().to_dict()
