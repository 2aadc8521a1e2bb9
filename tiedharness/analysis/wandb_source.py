"""Runs read back from the W&B API into the same table as local run records."""

from __future__ import annotations

from typing import Any

from tiedharness.analysis.aggregate import Runs, make_runs, record_to_row
from tiedharness.tracking.record import RunRecord


def load_wandb_runs(path: str, group: str | None = None) -> Runs:
    """The same frame from the W&B API: ENTITY/PROJECT, optionally one sweep's group."""
    import wandb

    from tiedharness.tracking.trackers import wandb_api_key_configured

    if not wandb_api_key_configured():
        raise ValueError(
            "--source wandb reads the W&B API, and no W&B credentials are configured: run "
            "`wandb login` or set WANDB_API_KEY (or report the local folder instead)"
        )
    filters = {"group": group} if group else {}
    rows, warnings = [], []
    try:
        runs = list(wandb.Api().runs(path, filters=filters))
    except (wandb.errors.Error, ValueError) as err:
        raise ValueError(f"cannot read W&B runs of {path!r}: {err}") from None
    for run in runs:
        try:
            record = record_from_wandb(dict(run.config), dict(run.summary), run.name, run.group)
            rows.append(record_to_row(record))
        except (KeyError, TypeError, ValueError) as err:
            warnings.append(f"skipped W&B run {run.name}: {err}")
    if not rows:
        warnings.append(f"no W&B runs found in {path}" + (f" group {group}" if group else ""))
    return make_runs(rows, warnings, [])


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
        }
    )
