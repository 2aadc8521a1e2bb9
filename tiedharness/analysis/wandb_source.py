"""Runs read back from the W&B API into the same table as local run records, with their
logged history, so every figure (learning curves included) can be drawn from W&B alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from tiedharness.analysis.aggregate import (
    Runs,
    make_runs,
    record_to_row,
    scores_source,
    use_eval_scores,
)
from tiedharness.tracking.record import SCHEMA_VERSION, RunRecord


def load_wandb_runs(path: str, group: str | None = None, scores: str | None = None) -> Runs:
    """The same frame from the W&B API: ENTITY/PROJECT, optionally one sweep's group;
    `scores` as for `load_runs`."""
    import wandb

    from tiedharness.tracking.trackers import wandb_api_key_configured

    if not wandb_api_key_configured():
        raise ValueError(
            "--source wandb reads the W&B API, and no W&B credentials are configured: run "
            "`wandb login` or set WANDB_API_KEY (or report the local folder instead)"
        )
    filters = {"group": group} if group else {}
    records, warnings, histories = [], [], []
    try:
        runs = list(wandb.Api().runs(path, filters=filters))
    except (wandb.errors.Error, ValueError) as err:
        raise ValueError(f"cannot read W&B runs of {path!r}: {err}") from None
    for run in runs:
        try:
            records.append(
                record_from_wandb(dict(run.config), dict(run.summary), run.name, run.group)
            )
        except (KeyError, TypeError, ValueError) as err:
            warnings.append(f"skipped W&B run {run.name}: {err}")
            continue
        # every logged row, unsampled (run.history() samples 500 of them)
        histories.append(history_from_wandb(run.scan_history(), records[-1].run_id))
    if not records:
        warnings.append(f"no W&B runs found in {path}" + (f" group {group}" if group else ""))
    if scores:
        use_eval_scores(records, scores, warnings)
    runs = make_runs([record_to_row(r) for r in records], warnings, histories)
    runs.scores = scores_source(records, scores)
    return runs


def history_from_wandb(rows: Iterable[dict], run_id: str) -> pd.DataFrame:
    """A run's W&B history → the frame its history.jsonl gives (W&B's own `_step`,
    `_runtime` and `_timestamp` dropped)."""
    frame = pd.DataFrame([{k: v for k, v in row.items() if not k.startswith("_")} for row in rows])
    frame["run_id"] = run_id
    return frame


def record_from_wandb(config: dict, summary: dict, name: str, group: str) -> RunRecord:
    """A run record rebuilt from a W&B run's config (the resolved Hydra config, plus the
    `run` block WandbTracker adds) and summary (final metrics, `params/*`, `data/*`,
    `status`), so W&B runs aggregate like local ones. Losses and scores whose summary is
    their best value (`{"min": …}`) are read from `final/<metric>`, the run's final value."""
    run = config.get("run") or {}
    params: dict[str, Any] = {"by_component": {}}
    for key, value in summary.items():
        if key.startswith("params/by_component/"):
            params["by_component"][key.rsplit("/", 1)[1]] = value
        elif key.startswith("params/"):
            params[key.split("/", 1)[1]] = value
    data = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("data/")}
    skip = ("status", "step", "tokens", "lr")
    metrics = {
        k: v
        for k, v in summary.items()
        if "/" not in k and not k.startswith("_") and k not in skip and isinstance(v, int | float)
    }
    metrics.update({k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("final/")})
    evals: dict[str, dict] = {}  # tiedharness-eval's eval/<split>/beam<k>/lp<x>[/len<n>]/<score>
    for k, v in summary.items():
        if k.startswith("eval/") and k.count("/") >= 4:
            entry, score = k[len("eval/") :].rsplit("/", 1)
            evals.setdefault(entry, {})[score] = v
    return RunRecord.from_dict(
        {
            **run,
            "run_id": run.get("run_id", name),
            "sweep_id": group,
            "task": run["task"],
            "sharing": run["sharing"],
            "status": summary.get("status", "completed"),
            "config": {k: v for k, v in config.items() if k != "run"},
            "params": params,
            "metrics": metrics,
            "data": data,
            "eval": evals,
            "schema": SCHEMA_VERSION,  # built here from W&B's fields, not read from a file
        }
    )
