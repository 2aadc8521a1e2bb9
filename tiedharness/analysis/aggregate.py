"""Finished runs → one tidy pandas DataFrame, and the per-cell summary over seeds.

Reads run records (tiedharness/tracking/record.py, docs/run-record.md) from a local
results folder or from the W&B API, through the same `RunRecord` class, into the same columns. Failed, diverged and skipped runs stay in the frame with
their status, so they are counted and listed, never silently dropped; a run.json that
cannot be read is named in the warnings and left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import t as student_t

from tiedharness.tracking.record import IDENTITY, RunRecord

# Columns every row has, whatever the task.
ID_COLUMNS = [*IDENTITY, "status"]
# Config keys that identify a run without being a swept setting.
NOT_SWEPT = ("trainer.seed", "task.cache_dir", "task.name", "sharing.strategies", "results_dir")


@dataclass
class Runs:
    """All runs of a results folder: one row each, plus what could not be read."""

    frame: pd.DataFrame
    swept: list[str]  # config keys that vary between runs (besides task, model, sharing, seed)
    warnings: list[str] = field(default_factory=list)
    history: pd.DataFrame | None = None  # long format: run_id, step, tokens, metric columns

    @property
    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "completed"]

    @property
    def cell_keys(self) -> list[str]:
        return ["task", "model", "sharing", *self.swept]

    def status_counts(self) -> dict[str, int]:
        return self.frame["status"].value_counts().to_dict()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


def record_to_row(record: RunRecord) -> dict[str, Any]:
    """One run record (run.json, or the same built from W&B) → one flat row."""
    row = {**record.identity(), "status": str(record.status), "error": record.error}
    params = record.params
    for key in ("total", "untied_total", "saved", "reduction"):
        row[f"params_{key}"] = params.get(key)
    for component, n in (params.get("by_component") or {}).items():
        row[f"params.{component}"] = n
    row.update(record.metrics)
    row["overlap"] = record.data.get("overlap")
    config: dict[str, Any] = {}
    _flatten("", record.config, config)
    row.update({f"cfg.{k}": v for k, v in config.items()})
    row["run_dir"] = record.run_dir
    return row


def load_runs(results_dir: Path | str, with_history: bool = True) -> Runs:
    """Every run.json below `results_dir` (a sweep, an experiment, or all results)."""
    results_dir = Path(results_dir)
    rows, warnings, histories = [], [], []
    for path in sorted(results_dir.rglob("run.json"), key=_natural):
        try:
            record = RunRecord.read(path)
        except ValueError as err:
            warnings.append(f"skipped {err}")
            continue
        row = record_to_row(record)
        row["run_dir"] = str(path.parent)
        rows.append(row)
        history = path.parent / "history.jsonl"
        if with_history and history.exists():
            histories.append(_load_history(history, row["run_id"], warnings))
    if not rows:
        warnings.append(f"no run.json found below {results_dir}")
    return _runs(rows, warnings, histories)


def _natural(path: Path) -> tuple:
    """Sort key: job folders in numeric order (2 before 10)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def _load_history(path: Path, run_id: str, warnings: list[str]) -> pd.DataFrame:
    lines = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            warnings.append(f"skipped line {n} of {path}: not JSON")
    frame = pd.DataFrame(lines)
    frame["run_id"] = run_id
    return frame


def _runs(rows: list[dict], warnings: list[str], histories: list[pd.DataFrame]) -> Runs:
    frame = pd.DataFrame(
        rows, columns=list(dict.fromkeys([*ID_COLUMNS, *(k for r in rows for k in r)]))
    )
    swept = swept_keys(frame)
    for key in swept:
        frame[key] = frame[f"cfg.{key}"]
    history = pd.concat(histories, ignore_index=True) if histories else None
    return Runs(frame, swept, warnings, history)


def swept_keys(frame: pd.DataFrame) -> list[str]:
    """Config keys that are axes of their own: they take several values among runs of
    the same task, model, strategy and seed (task.overlap, task.vocab_size, …). Keys that
    merely follow the task or model choice (each task's default vocab_size) are not."""
    if frame.empty:
        return []
    identity = frame[["task", "model", "sharing", "seed"]].astype(str).agg("|".join, axis=1)
    keys = []
    for column in (c for c in frame.columns if c.startswith("cfg.")):
        if column[4:] in NOT_SWEPT:
            continue
        values = frame[column].map(lambda v: json.dumps(v, default=str))
        if (values.groupby(identity).nunique() > 1).any():
            keys.append(column[4:])
    return keys


def ci95(std: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a mean of n samples."""
    if n < 2 or not math.isfinite(std):
        return float("nan")
    return float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n)


DELTA_METRICS = ("params_total", "val_loss", "bleu", "exact_match")
SUMMARY_METRICS = (
    "params_total",
    "val_loss",
    "val_ppl",
    "bleu",
    "chrf",
    "exact_match",
    "test_bleu",
    "train_tokens_per_s",
    "infer_tokens_per_s",
    "softmax_flops_share",
    "softmax_time_share",
    "vocab_size_tgt",
    "overlap",
)


def summarize(runs: Runs) -> pd.DataFrame:
    """Per cell (task, model, sharing, other swept keys), over seeds of completed runs:
    mean, std, n and 95% CI of each metric, and the delta against `none` of the same cell."""
    done = runs.completed
    metrics = [m for m in SUMMARY_METRICS if m in done.columns and done[m].notna().any()]
    if done.empty or not metrics:
        return pd.DataFrame()
    keys = runs.cell_keys
    grouped = done.groupby(keys, dropna=False, sort=False)
    out = grouped.size().rename("n").to_frame()
    for m in metrics:
        stats = grouped[m].agg(["mean", "std", "count"])
        out[f"{m}_mean"] = stats["mean"]
        out[f"{m}_std"] = stats["std"]
        out[f"{m}_ci95"] = [
            ci95(s, int(c)) for s, c in zip(stats["std"], stats["count"], strict=True)
        ]
    out = out.reset_index()
    return _deltas_vs_none(out, [k for k in keys if k != "sharing"])


def _deltas_vs_none(out: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """Each metric's mean minus the mean of `none` in the same cell (NaN without one)."""
    metrics = [m for m in DELTA_METRICS if f"{m}_mean" in out.columns]
    base = out[out["sharing"] == "none"][[*cell, *(f"{m}_mean" for m in metrics)]]
    base = base.rename(columns={f"{m}_mean": f"{m}_none" for m in metrics})
    out = out.merge(base, on=cell, how="left")
    for m in metrics:
        out[f"{m}_delta_vs_none"] = out[f"{m}_mean"] - out.pop(f"{m}_none")
    return out


# ---------------------------------------------------------------------------- W&B source


def load_wandb_runs(path: str, group: str | None = None) -> Runs:
    """The same frame from the W&B API: ENTITY/PROJECT, optionally one sweep's group."""
    import wandb

    api = wandb.Api()
    filters = {"group": group} if group else {}
    rows, warnings = [], []
    for run in api.runs(path, filters=filters):
        try:
            record = record_from_wandb(dict(run.config), dict(run.summary), run.name, run.group)
            rows.append(record_to_row(record))
        except (KeyError, TypeError, ValueError) as err:
            warnings.append(f"skipped W&B run {run.name}: {err}")
    if not rows:
        warnings.append(f"no W&B runs found in {path}" + (f" group {group}" if group else ""))
    return _runs(rows, warnings, [])


def record_from_wandb(config: dict, summary: dict, name: str, group: str) -> RunRecord:
    """A run record rebuilt from a W&B run's config (the resolved Hydra config, plus the
    `run` block WandbTracker adds) and summary (final metrics, `params/*`, `data/*`,
    `status`), so W&B runs aggregate like local ones."""
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
