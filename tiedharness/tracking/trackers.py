"""Where metrics go. Computing them is the training package's job; this only records them.

One `Trackers` container per run fans each `log(...)` out to its backends:
- local (always on): the run folder's history, one JSON object per log call, appended as
  training goes (the run record itself is the job's to write, through its RunFolder);
- W&B (`logger=wandb`), imported only when used; online when an API key is configured,
  offline otherwise, `logger.wandb.mode` decides when set;
- none (`logger=none`): local files only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from pathlib import Path

from tiedharness.atomic import finite
from tiedharness.tracking.config import WandbConfig
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

log = logging.getLogger(__name__)


class LocalTracker:
    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        # history rows so far: a checkpoint keeps the count, so a resume cuts back to it
        self.rows = folder.history_rows()

    def start(self, record: RunRecord) -> None:
        """Nothing to open."""

    def log(self, row: dict) -> None:
        self.folder.append_history(row)
        self.rows += 1

    def finish(self, record: RunRecord, decoded: dict[str, list[dict]]) -> None:
        """Nothing to close: the job writes the record and the decoded examples."""


def wandb_api_key_configured() -> bool:
    """Whether W&B itself finds credentials for its host, as `wandb.init` would: an API key
    in WANDB_API_KEY, or a netrc entry for the configured host — api.wandb.ai, or the one
    `wandb login --host` saved (or WANDB_BASE_URL names). Asked without a prompt and
    without a request to the server."""
    import wandb

    silent = os.environ.get("WANDB_SILENT")
    os.environ["WANDB_SILENT"] = "true"  # login would say "API key is configured"
    try:
        return bool(wandb.login(prompt=False, verify=False))
    finally:
        if silent is None:
            del os.environ["WANDB_SILENT"]
        else:
            os.environ["WANDB_SILENT"] = silent


def wandb_mode(configured: str | None = None) -> str:
    mode = configured or os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if wandb_api_key_configured() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of online, offline, disabled")
    return mode


def open_wandb_run(
    run_dir: Path, mode: str, quiet: bool = True, console: str | None = None, **options
):
    """`wandb.init` as every W&B run of tiedharness opens it (a training run, its later
    evaluations, a report): W&B's files under `run_dir`, in `mode`, silent when `quiet`;
    console capture `console` (default: off when quiet). `options` are wandb.init's
    (project, id, group, …)."""
    import wandb  # lazily: runs without W&B never import it

    console = console or ("off" if quiet else "auto")
    # requirements.txt is written below, from a list read once per process: W&B would read
    # every installed package's metadata again at each run of a sweep (0.4 s here)
    settings = wandb.Settings(silent=quiet, console=console, x_save_requirements=False)
    run = wandb.init(dir=str(run_dir), mode=mode, settings=settings, **options)
    if mode != "disabled":
        requirements = Path(run.dir) / "requirements.txt"
        requirements.write_text(installed_packages())
        run.save(str(requirements), base_path=run.dir, policy="now")
    return run


def log_eval_entry(record: RunRecord, key: str, entry: dict, run_dir: Path) -> None:
    """tiedharness-eval's entry into the run's own W&B run (its id, resume="allow"), as
    eval/<key>/<score>; W&B's files go to the run folder where it is now (it may have
    moved since training). Nothing when the run was not logged to W&B."""
    if not record.wandb or not record.wandb.get("id"):
        return
    logger = (record.config.get("logger") or {}).get("wandb") or {}
    mode = record.wandb.get("mode", "offline")
    options = {"project": logger.get("project"), "entity": logger.get("entity")}
    with open_wandb_run(run_dir, mode, id=record.wandb["id"], resume="allow", **options) as run:
        run.summary.update(
            {f"eval/{key}/{k}": v for k, v in entry.items() if isinstance(v, int | float)}
        )


@functools.cache
def installed_packages() -> str:
    """`name==version` of every installed distribution, sorted: W&B's requirements.txt."""
    from importlib.metadata import distributions

    names = set()
    for dist in distributions():
        name = dist.metadata["Name"]  # None where a distribution's metadata is broken
        if name:
            names.add(f"{name}=={dist.version}")
    return "".join(f"{line}\n" for line in sorted(names, key=str.lower))


# Which way is better for the metrics whose W&B summary is their best value.
SUMMARY_BEST = {
    **dict.fromkeys(
        ("train_loss", "val_loss", "val_ppl", "val_bpc", "test_loss", "test_bpc"), "min"
    ),
    **dict.fromkeys(
        ("bleu", "chrf", "exact_match", "test_bleu", "test_chrf", "test_exact_match"), "max"
    ),
}


def wandb_run_id(record: RunRecord) -> str:
    """Stable across resumes of one attempt; new for a run trained again from the start
    (its first start time differs), and for another folder with the same run id."""
    digest = hashlib.sha1(f"{record.run_dir}|{record.started_at}".encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{record.run_id[:48]}-{digest}")


class WandbTracker:
    """One W&B run: grouped by sweep, typed by task, tagged with task, strategy and model."""

    def __init__(self, options: WandbConfig, folder: RunFolder, quiet: bool) -> None:
        self.options = options
        self.folder = folder
        self.quiet = quiet  # in sweeps: no console capture, and not even our one line
        self.mode = wandb_mode(options.mode and str(options.mode))
        self.run = None

    def start(self, record: RunRecord) -> None:
        tags = [record.task, record.sharing, record.model, *self.options.tags]
        self.run = open_wandb_run(
            self.folder.path,
            self.mode,
            not self.options.verbose,
            console="off" if self.quiet else "auto",
            # the same id across restarts of the job, so a resume continues the same run
            # (offline, `wandb sync` joins the parts)
            id=wandb_run_id(record),
            resume="allow",
            project=self.options.project,
            entity=self.options.entity,
            group=record.sweep_id,
            job_type=record.task,
            name=f"{record.task}/{record.sharing}/s{record.seed}",  # the cell, at a glance
            tags=[t for t in tags if t],
            # the resolved config, plus who this run is (read back by the aggregator)
            config={**record.config, "run": record.identity()},
            reinit="finish_previous",
        )
        # the dashboard plots everything against steps; tokens are logged alongside
        self.run.define_metric("step")
        self.run.define_metric("tokens")
        self.run.define_metric("*", step_metric="step")
        # a run's summary shows its best loss and score, not the last logged
        for name, best in SUMMARY_BEST.items():
            self.run.define_metric(name, step_metric="step", summary=best)
        record.wandb = {
            "mode": self.mode,
            "id": self.run.id,
            "dir": str(self.folder.path / "wandb"),
        }
        if not self.quiet and not self.options.verbose:  # W&B itself stays silent
            if self.mode == "offline":
                where = f"offline; upload with: wandb sync {Path(self.run.dir).parent}"
            else:
                where = self.run.url or self.mode
            log.info(f"W&B run {self.run.name}: {where}")

    def log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log(finite(row))

    def finish(self, record: RunRecord, decoded: dict[str, list[dict]]) -> None:
        if self.run is None:
            return
        params = record.params
        summary = {f"params/{k}": v for k, v in params.items() if not isinstance(v, dict)}
        for component, n in (params.get("by_component") or {}).items():
            summary[f"params/by_component/{component}"] = n
        # the best-of metrics keep the summary W&B computed from their history (shown as
        # `val_loss.min`); the run's final values, what the run record holds, go under final/
        metrics = finite(record.metrics)
        summary.update({k: v for k, v in metrics.items() if k not in SUMMARY_BEST})
        summary.update({f"final/{k}": v for k, v in metrics.items() if k in SUMMARY_BEST})
        overlap = record.data.get("overlap")
        if overlap is not None:
            summary["data/overlap"] = overlap
        summary["status"] = str(record.status)
        self.run.summary.update(summary)
        self._log_samples(decoded)
        if self.options.log_checkpoint and record.status == RunStatus.completed:
            self._log_checkpoint(record)
        # a pruned trial ended as its search asked: not a crash in W&B's view
        succeeded = record.status in (RunStatus.completed, RunStatus.diverged, RunStatus.pruned)
        self.run.finish(exit_code=0 if succeeded else 1)
        self.run = None

    def _log_samples(self, decoded: dict[str, list[dict]], rows: int = 100) -> None:
        """The decoded examples of each split (source, reference, hypothesis) as a table in
        the summary, `samples/<split>`: the first `rows` of what BLEU / exact match was
        computed on."""
        import wandb

        for split, examples in decoded.items():
            columns = ["index", "source", "reference", "hypothesis"]
            data = [[row.get(c) for c in columns] for row in examples[:rows]]
            # in the summary, not the history: the run's curves keep one row per log
            self.run.summary[f"samples/{split}"] = wandb.Table(columns=columns, data=data)

    def _log_checkpoint(self, record: RunRecord) -> None:
        """The final checkpoint as a model artifact, with the run's final metrics."""
        import wandb

        path = self.folder.checkpoint
        if not path.is_file():
            return
        keep = ("steps", "tokens", "val_loss", "val_bpc", "bleu", "chrf", "exact_match")
        metadata = {k: record.metrics[k] for k in keep if k in record.metrics}
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"model-{self.run.id}")
        artifact = wandb.Artifact(name, type="model", metadata=finite(metadata))
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)


class Trackers:
    """The run's trackers behind one interface; local first, so its files exist even when
    W&B fails to start. `enabled=False` (the other ranks of a data-parallel run) records
    nothing."""

    def __init__(
        self,
        folder: RunFolder,
        wandb_options: WandbConfig | None,
        quiet: bool = False,
        enabled: bool = True,
    ) -> None:
        self.local = LocalTracker(folder) if enabled else None
        self.backends: list = [self.local] if enabled else []
        if wandb_options is not None and enabled:
            self.backends.append(WandbTracker(wandb_options, folder, quiet))

    def start(self, record: RunRecord) -> None:
        for backend in self.backends:
            backend.start(record)

    def log(self, row: dict) -> None:
        for backend in self.backends:
            backend.log(row)

    @property
    def rows(self) -> int:
        """Lines in history.jsonl so far."""
        return self.local.rows if self.local is not None else 0

    def finish(self, record: RunRecord, decoded: dict[str, list[dict]]) -> None:
        """Close every backend, even if one of them raises; `decoded`: each split's decoded
        examples, for W&B's sample tables."""
        errors = []
        for backend in reversed(self.backends):
            try:
                backend.finish(record, decoded)
            except Exception as err:  # recorded, re-raised once all are closed
                errors.append(err)
        if errors:
            raise errors[0]
