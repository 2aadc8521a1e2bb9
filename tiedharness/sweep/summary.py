"""Hydra callback that closes a sweep: one line per job, and a non-zero exit on failure.

Jobs never raise (see tiedharness/job.py), so Hydra's launchers run every cell; this callback then
reads each job's `run.json`, prints the table, says how many cells were kept from an
earlier start of the sweep, resumed or trained, prints the `wandb sync` command when runs
were logged offline, and exits with status 1 if any job failed (or left no record). A
sweep that stops before its end (Ctrl-C, a signal, an error) prints the command that
continues it in its folder.
"""

from __future__ import annotations

import atexit
import datetime as dt
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import observed_status


def read_sweep(sweep_dir: Path) -> list[tuple[Path, RunRecord | None]]:
    """(job folder, its record or None when missing or unreadable), by job number."""
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    jobs: list[tuple[Path, RunRecord | None]] = []
    for folder in sorted(folders, key=lambda p: int(p.name)):
        try:
            record = RunRecord.read(folder / "run.json")
        except ValueError:
            jobs.append((folder, None))
            continue
        record.status = observed_status(record, folder)
        jobs.append((folder, record))
    return jobs


def written_since(folder: Path, since: float) -> bool:
    """Whether the job's run.json was written after `since` (seconds since the epoch): the
    file's time, not the record's, whose timestamps count whole seconds only (a job kept
    from a start that ended in the same second would pass for a new one)."""
    try:
        return (folder / "run.json").stat().st_mtime >= since
    except OSError:
        return False


def how_started(folder: Path, record: RunRecord, since: float) -> str:
    """What this start of the sweep (begun at `since`, seconds since the epoch) did with
    the cell."""
    if record.status != RunStatus.running and not written_since(folder, since):
        return "kept"  # finished before this start: not trained again
    began = dt.datetime.fromtimestamp(int(since), dt.timezone.utc).isoformat()
    if record.resumes and record.resumes[-1].get("at", "") >= began:
        return "resumed"
    return "rerun" if record.attempt > 1 else "trained"


def continue_command(folder: Path, multirun: bool = True) -> str:
    """This process's command line, pointed at the folder of its sweep (or single run):
    the command that continues it there."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = [a for a in sys.argv[1:] if not a.startswith((f"{key}=", f"+{key}="))]
    return shlex.join(["tiedharness-train", *args, f"{key}={folder}"])


def summary_line(folder: Path, record: RunRecord | None) -> str:
    if record is None:
        return f"{folder.name:>4}  {'failed':<9} no readable run.json in {folder}"
    metrics = record.metrics
    total = record.params.get("total")
    cells = [
        f"{folder.name:>4}",
        f"{record.status:<9}",
        f"{record.task:<17}",
        f"{record.sharing:<16}",
        f"seed={record.seed}",
        f"params={total:,}" if isinstance(total, int) else "",
        f"val_loss={metrics['val_loss']:.4f}" if isinstance(metrics.get("val_loss"), float) else "",
        f"bleu={metrics['bleu']:.2f}" if isinstance(metrics.get("bleu"), float) else "",
    ]
    if record.error:
        cells.append(record.error.splitlines()[0][:160])
    return "  ".join(c for c in cells if c)


def grid_size(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch: for the basic sweeper the product of the swept
    values of the study's grid and the command line; for a search its trials (None for a
    sweeper that decides as it goes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from tiedharness.sweep.search import grid_lines, is_search, planned_jobs

    if is_search(config):
        return planned_jobs(config)
    if isinstance(config.hydra.sweeper.get("n_trials"), int):  # Hydra's Optuna sweeper
        return config.hydra.sweeper.n_trials
    try:
        lines = grid_lines(config)
        by_key = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(lines)}
    except Exception:  # another sweeper's settings: no fixed grid
        return None
    sweeps = [o for o in by_key.values() if o.is_sweep_override()]
    return math.prod(len(list(o.sweep_string_iterator())) for o in sweeps)


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.since = time.time()  # when this start of the sweep began
        self.ended = False
        self.clock, self.total = time.monotonic(), None
        self.job_clock = self.clock

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_clock = time.monotonic()

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """One line per finished job: index of total, outcome, time, what remains."""
        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        folder = Path(config.hydra.runtime.output_dir)
        try:
            record = RunRecord.read(folder / "run.json")
        except ValueError:
            record = None
        now = time.monotonic()  # system-wide: the sweep's clock also holds in joblib workers
        total = self.total or "?"
        line = f"[{config.hydra.job.num + 1}/{total}] {summary_line(folder, record).strip()}"
        line += f"  ({duration(now - self.job_clock)}; elapsed {duration(now - self.clock)}"
        if self.total:
            # counted from the folder: joblib's workers each hold a copy of this callback
            jobs = read_sweep(folder.parent)
            ended = [f for f, r in jobs if r and r.status != RunStatus.running]
            done_now = sum(written_since(f, self.since) for f in ended) or 1
            left = (now - self.clock) / done_now * max(self.total - len(ended), 0)
            line += f", about {duration(left)} left"
        print(line + ")", flush=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.since = time.time()
        self.clock, self.total = time.monotonic(), grid_size(config)
        if self.total:
            print(f"sweep of {self.total} jobs", flush=True)
        sweep_dir, pid = Path(config.hydra.sweep.dir).resolve(), os.getpid()

        def unfinished() -> None:  # at exit, unless on_multirun_end ran or no job started
            started = sweep_dir.is_dir() and any(p.name.isdigit() for p in sweep_dir.iterdir())
            if not self.ended and os.getpid() == pid and started:
                print(
                    f"\nsweep {sweep_dir} stopped before its end; continue it with:\n"
                    f"  {continue_command(sweep_dir)}",
                    file=sys.stderr,
                )

        atexit.register(unfinished)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.ended = True
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_sweep(sweep_dir) if sweep_dir.is_dir() else []
        print(f"\nsweep {sweep_dir}: {len(jobs)} jobs")
        for folder, record in jobs:
            print(summary_line(folder, record))
        statuses = [str(r.status) if r else str(RunStatus.failed) for _, r in jobs]
        counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
        print("  ".join(f"{n} {s}" for s, n in counts.items()))
        starts = [how_started(f, r, self.since) for f, r in jobs if r is not None]
        if any(s != "trained" for s in starts):
            kinds = ("kept", "resumed", "rerun", "trained")
            print("  ".join(f"{starts.count(k)} {k}" for k in kinds if starts.count(k)))
        if any(r and r.wandb and r.wandb.get("mode") == "offline" for _, r in jobs):
            print("W&B runs were logged offline; upload them with:")
            print(f"  wandb sync {sweep_dir}/*/wandb/offline-run-*")
        failed = counts.get("failed", 0)
        if failed:
            print(
                f"{failed} job(s) failed: see 'error' and 'traceback' in their run.json",
                file=sys.stderr,
            )
            sys.exit(1)
