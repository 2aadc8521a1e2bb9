"""Finished runs → one tidy pandas DataFrame, and the per-cell summary over seeds.

Reads run records (tiedharness/tracking/record.py, docs/run-record.md) from a local
results folder or from the W&B API, through the same `RunRecord` class, into the same
columns. Failed, diverged and skipped runs stay in the frame with their status, so they
are counted and listed, never silently dropped; a run record that cannot be read is named
in the warnings and left out.

Cells (docs/concepts.md): task, the model's effective shape, and every other key the
runs vary, with a placeholder where a run lacks the key. Sharing options are not cell
keys but part of the run's label (`qk+mask_self`, tiedharness/model/variants.py), so
`none` is the baseline of every variant. Where the runs vary `task.vocab` over joint and
separate, the vocabulary is part of the label too (`three_way@joint`) and `none@separate`
the baseline (tiedharness/analysis/vocab_axis.py). A second completed run of the same
cell, label and seed is not a replicate: it is flagged (`duplicate`) and left out of the
statistics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tiedharness.analysis.budgets import BUDGET_METRICS, with_verdicts
from tiedharness.analysis.endpoints import comparisons, declared, with_endpoints
from tiedharness.analysis.paired import bleu_bootstrap, paired_deltas
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.stats import MIN_SEEDS, ci95
from tiedharness.analysis.vocab_axis import missing_baselines, with_vocab_arms
from tiedharness.model.variants import variant_label
from tiedharness.tracking.record import IDENTITY, RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

# Columns every row has, whatever the task.
ID_COLUMNS = [*IDENTITY, "status"]
# The model settings its label shows (so they are no separate cell keys).
MODEL_SHAPE = (
    "model.d_model",
    "model.d_ff",
    "model.n_heads",
    "model.enc_layers",
    "model.dec_layers",
)
# Config keys (or prefixes) that are never cell keys: identity, paths, where logs go, and
# the sharing options, which are part of the label instead.
NOT_SWEPT = (
    "trainer.seed",
    "task.cache_dir",
    "task.name",
    "results_dir",
    "experiment_name",
    "scale.",  # a study's numbers: the keys they feed show what changed
    "sharing.",
    "logger.",
    "trainer.num_threads",
    *MODEL_SHAPE,
)
MISSING = "–"  # a cell key a run does not have


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


def model_label(preset: str | None, model: dict[str, Any], lm: bool) -> str:
    """The preset's name with the shape the run really had (overrides included)."""
    if not model:
        return str(preset)
    layers = (
        f"{model.get('dec_layers')}"
        if lm
        else f"{model.get('enc_layers')}+{model.get('dec_layers')}"
    )
    shape = f"d={model.get('d_model')}, ff={model.get('d_ff')}, {model.get('n_heads')} heads"
    return f"{preset}: {shape}, {layers} layers"


def record_to_row(record: RunRecord) -> dict[str, Any]:
    """One run record (from its folder, or the same built from W&B) → one flat row."""
    row = {**record.identity(), "status": str(record.status), "error": record.error}
    lm = (record.data.get("vocab") or {}).get(
        "src"
    ) is None and "vocab_size_src" not in record.metrics
    row["model"] = model_label(record.model, record.config.get("model") or {}, lm)
    row["model_preset"] = record.model
    row["strategy"] = record.sharing
    row["sharing"] = variant_label(record.sharing, record.config.get("sharing") or {})
    params = record.params
    for key in ("total", "untied_total", "saved", "reduction"):
        row[f"params_{key}"] = params.get(key)
    for component, n in (params.get("by_component") or {}).items():
        row[f"params.{component}"] = n
    row.update(record.metrics)
    row["step_ms"] = step_ms(record.metrics)
    row["overlap"] = record.data.get("overlap")
    config: dict[str, Any] = {}
    _flatten("", record.config, config)
    row.update({f"cfg.{k}": v for k, v in config.items()})
    row["run_dir"] = record.run_dir
    return row


def step_ms(metrics: dict[str, Any]) -> float | None:
    """Milliseconds a training step took: its tokens at the run's training throughput
    (tokens ÷ seconds inside training steps), per step."""
    tokens, rate, steps = (metrics.get(k) for k in ("tokens", "train_tokens_per_s", "steps"))
    if not (tokens and rate and steps):
        return None
    return 1000 * tokens / rate / steps


def load_runs(
    results_dir: Path | str, with_history: bool = True, scores: str | None = None
) -> Runs:
    """Every run record below `results_dir` (a sweep, an experiment, or all results).
    `scores`: a tiedharness-eval entry (`valid/beam4/lp1`) whose BLEU, chrF and exact
    match replace the training-time greedy ones (see `use_eval_scores`)."""
    rows, warnings, histories, records = [], [], [], []
    for folder in RunFolder.every_below(Path(results_dir)):
        try:
            record = folder.read_record()
        except ValueError as err:
            warnings.append(f"skipped {err}")
            continue
        record.status = folder.observed_status(record)  # a dead job's `running`
        record.run_dir = str(folder.path)
        records.append(record)
    if scores:
        use_eval_scores(records, scores, warnings)
    for record in records:
        row = record_to_row(record)
        row["decoded_valid"] = decoded_valid(record, scores)
        rows.append(row)
        history = RunFolder(record.run_dir).history
        if with_history and history.exists():
            histories.append(_load_history(history, row["run_id"], warnings))
    if not rows:
        warnings.append(f"no run record found below {results_dir}")
    runs = make_runs(rows, warnings, histories)
    runs.scores = scores_source(records, scores)
    runs.budgets = budget_rows(records)
    return runs


def budget_rows(records: list[RunRecord]) -> pd.DataFrame | None:
    """Every run's `budgets` entries, one row each with its run_id (None: no run has any).
    Always the runs' own greedy decoding: an eval entry scores the final checkpoint only."""
    rows = [
        {**entry, "run_id": r.run_id}
        for r in records
        for entry in (getattr(r, "budgets", None) or [])
        if isinstance(entry, dict) and entry.get("fraction") is not None
    ]
    return pd.DataFrame(rows) if rows else None


EVAL_SCORES = ("bleu", "chrf", "exact_match")


def use_eval_scores(records: list[RunRecord], key: str, warnings: list[str]) -> None:
    """Put each run's `eval[key]` scores in place of its training-time greedy ones (on the
    valid split `bleu`, `chrf`, `exact_match`; on test `test_bleu`, …). A run without that
    entry loses those scores, so no comparison mixes two decodings; the warnings name it.
    (`decoded_valid` gives the bootstrap the same entry's hypotheses.)"""
    if not any(key in r.eval for r in records):
        present = sorted({k for r in records for k in r.eval})
        raise ValueError(
            f"no run has a tiedharness-eval entry {key!r} "
            + (f"(entries found: {', '.join(present)})" if present else "(none has any)")
            + ": run `tiedharness-eval <sweep folder> beam=… lenpen=…` first"
        )
    names = [("test_" if key.startswith("test/") else "") + name for name in EVAL_SCORES]
    for record in records:
        entry = record.eval.get(key)
        scored = any(name in record.metrics for name in names)
        for name, score in zip(names, EVAL_SCORES, strict=True):
            record.metrics.pop(name, None)
            if entry is not None and isinstance(entry.get(score), int | float):
                record.metrics[name] = entry[score]
        if entry is None and scored and record.status == RunStatus.completed:
            warnings.append(f"run {record.run_id} has no eval {key}: its scores are left out")


def scores_source(records: list[RunRecord], key: str | None) -> str | None:
    """What a report says of its scores: the eval entry and its sacreBLEU signature(s)."""
    if not key:
        return None
    signatures = sorted(
        {str(r.eval[key].get("signatures", {}).get("bleu")) for r in records if key in r.eval}
    )
    return f"tiedharness-eval {key}; sacreBLEU BLEU signature {' / '.join(signatures)}"


def decoded_valid(record: RunRecord, scores: str | None) -> str | None:
    """The file of validation hypotheses whose BLEU the run's row holds (the bootstrap
    resamples its sentences)."""
    if scores and scores.startswith("valid/"):
        name = (record.eval.get(scores) or {}).get("hypotheses")
        return str(Path(record.run_dir) / name) if name else None
    return str(RunFolder(record.run_dir).decoded("valid"))


def _load_history(path: Path, run_id: str, warnings: list[str]) -> pd.DataFrame:
    lines = []
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(json.loads(line))
        except ValueError:  # also a line that is not UTF-8
            warnings.append(f"skipped line {n} of {path}: not JSON")
    frame = pd.DataFrame(lines)
    frame["run_id"] = run_id
    return frame


def make_runs(rows: list[dict], warnings: list[str], histories: list[pd.DataFrame]) -> Runs:
    frame = pd.DataFrame(
        rows, columns=list(dict.fromkeys([*ID_COLUMNS, *(k for r in rows for k in r)]))
    )
    frame, swept = with_vocab_arms(frame, swept_keys(frame))  # joint vs separate: an axis
    for key in swept:
        frame[key] = frame[f"cfg.{key}"].map(lambda v: MISSING if _is_missing(v) else v)
    frame["duplicate"] = _duplicates(frame, ["task", "model", *swept, "sharing", "seed"])
    for _, row in frame[frame["duplicate"]].iterrows():
        warnings.append(
            f"run {row['run_id']} repeats {row['sharing']} seed {row['seed']} of its cell: "
            "not a replicate, counted once"
        )
    history = pd.concat(histories, ignore_index=True) if histories else None
    runs = Runs(frame, swept, warnings, history)
    warnings.extend(missing_baselines(runs.completed, runs.cell_keys))
    return runs


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _duplicates(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """True for a completed run whose cell, label and seed an earlier completed run has."""
    if frame.empty:
        return pd.Series(dtype=bool)
    done = frame["status"] == "completed"
    key = frame[keys].astype(str).agg("|".join, axis=1)
    return done & key.where(done).duplicated(keep="first") & key.where(done).notna()


def swept_keys(frame: pd.DataFrame) -> list[str]:
    """Config keys that are axes of their own: they take several values among runs of
    the same task, strategy and seed (task.overlap, model.d_model, …). Keys that merely
    follow the task or model choice (each task's default vocab_size) are not."""
    if frame.empty:
        return []
    identity = frame[["task", "model_preset", "sharing", "seed"]].astype(str).agg("|".join, axis=1)
    # each arm's own tuned rate (tuned_from) is a setting of the arm, not an axis of the grid
    tuned = {key for keys in frame.get("cfg.tuned_keys", []) for key in _json_list(keys)}
    keys = []
    for column in (c for c in frame.columns if c.startswith("cfg.")):
        if column[4:].startswith(NOT_SWEPT) or column[4:] in tuned:
            continue
        values = frame[column].map(lambda v: json.dumps(v, default=str))
        if (values.groupby(identity).nunique() > 1).any():
            keys.append(column[4:])
    return keys


def _json_list(value: Any) -> list:
    """A list column of the frame (lists are stored as JSON text); [] where absent."""
    return json.loads(value) if isinstance(value, str) else []


# ---------------------------------------------------------------------------- summary

SUMMARY_METRICS = (
    "params_total",
    "val_loss",
    "val_bpc",
    "val_ppl",
    "bleu",
    "chrf",
    "exact_match",
    "test_loss",
    "test_bpc",
    "test_bleu",
    "test_chrf",
    "test_exact_match",
    "train_tokens_per_s",
    "infer_tokens_per_s",
    "train_flops_per_token",
    "step_ms",
    "output_step_flops_share",
    "output_step_time_share",
    "output_step_time_share_iqr",
    "vocab_size_tgt",
    "overlap",
    "steps",
    "tokens",
)
# validation and test; the test split's are what verdicts read (endpoints.py)
DELTA_METRICS = (*BUDGET_METRICS, "params_total")


def summarize(runs: Runs, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per cell and label, over the seeds of completed runs: n, mean, std and 95% CI of
    each metric, the share of converged runs among those whose convergence was measured
    (NaN where none was: an annealed schedule), the paired difference from the baseline of
    the same cell, `none` or, on the vocabulary axis, `none@separate` with the baseline's
    output-layer shares (mean over seeds both have, 95% CI, paired-t p-value, pairs) on
    the validation and the test split, the Δ-vs-budget verdicts (budgets.py), and from
    comparisons.csv (`table`; computed here when not given: endpoints.py) the Δ at the
    arms' best budgets and Holm's p of the study's primary comparisons."""
    done = runs.completed
    metrics = [m for m in SUMMARY_METRICS if m in done.columns and done[m].notna().any()]
    if done.empty or not metrics:
        return pd.DataFrame()
    keys = [*runs.cell_keys, "sharing"]
    grouped = done.groupby(keys, dropna=False, sort=False)
    out = grouped.size().rename("n").to_frame()
    out["few_seeds"] = out["n"] < MIN_SEEDS
    if "converged" in done:
        out["converged_frac"] = grouped["converged"].agg(measured_share)
    columns = {}
    for m in metrics:
        stats = grouped[m].agg(["mean", "std", "count"])
        columns[f"{m}_mean"], columns[f"{m}_std"] = stats["mean"], stats["std"]
        columns[f"{m}_ci95"] = pd.Series(
            [ci95(s, int(c)) for s, c in zip(stats["std"], stats["count"], strict=True)],
            index=stats.index,
        )
    for key in TRAINED_AT:  # each row's own rate: arms may be tuned apart (tuned_from)
        if f"cfg.trainer.{key}" in done:
            columns[key] = grouped[f"cfg.trainer.{key}"].agg(_the_one_value)
    # one concat, not a column at a time: pandas warns of a fragmented frame otherwise
    out = pd.concat([out, pd.DataFrame(columns)], axis=1).reset_index()
    out = paired_deltas(out, done, runs.cell_keys, list(DELTA_METRICS))
    if "bleu" in done and done["bleu"].notna().any():
        out["delta_bleu_bootstrap_p"] = bleu_bootstrap(out, done, runs.cell_keys)
    report = declared(runs)
    out = with_verdicts(out, runs, report.stable_tolerance)
    table = comparisons(runs, report) if table is None else table
    return with_endpoints(out, table, runs.cell_keys)


TRAINED_AT = ("lr", "warmup_steps")  # the settings a summary row states it trained at


def _the_one_value(values: pd.Series) -> Any:
    """The value every run of a row shares; NaN where they differ."""
    distinct = values.dropna().unique()
    return distinct[0] if len(distinct) == 1 else float("nan")


def measured_share(converged: pd.Series) -> float:
    """The share of True among the runs whose convergence was measured; NaN where none
    was (`converged` null: the schedule anneals to zero, so a flat tail proves nothing)."""
    measured = converged.dropna()
    return float(measured.astype(bool).mean()) if len(measured) else float("nan")
