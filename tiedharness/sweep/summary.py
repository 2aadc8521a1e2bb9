"""Hydra callback that reports a sweep: a line per job as it ends, and a closing summary.

Jobs never raise (see tiedharness/job.py), so Hydra's launchers run every cell. After each
job the callback reads that job's `run.json` (nothing else of the sweep), says what the
job did with its cell (trained, resumed, rerun, kept, or left to another process that
holds it) and appends one JSON line saying so to the sweep's `progress.jsonl`. At the end
it reads that file once and each job's `run.json` once, prints the table, says how many
cells this start of the sweep trained, resumed or kept and how many another process
resuming the same sweep trained meanwhile, prints the `wandb sync` command when runs were
logged offline, and exits with status 1 if any job failed (or left no record). A sweep
that stops before its end (Ctrl-C, a signal, an error) prints the command that continues
it in its folder.

Each start of a sweep has a token, made in `on_multirun_start` and exported as
TIEDHARNESS_SWEEP_START before the launcher starts its workers (joblib's workers and
submitit's jobs each hold a copy of this callback): every progress line names the start
that wrote it. Lines are appended with O_APPEND in one write, so concurrent processes do
not interleave them; the reader skips a line cut short by a process that died. The
progress line's estimate of what remains comes from `.progress-tally.json`, a few counts
per start updated under a lock, so each job's bookkeeping costs the same in a sweep of
ten cells or of ten thousand (benchmarks/sweep_bookkeeping.py).
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import json
import math
import os
import shlex
import socket
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RECORD_FILE, RunFolder
from tiedharness.tracking.start import FINISHED

PROGRESS_FILE = "progress.jsonl"  # one line per job that ended, from every start
TALLY_FILE = ".progress-tally.json"  # per start: jobs passed, worked on, kept
START_ENV = "TIEDHARNESS_SWEEP_START"  # "<token> <since>", inherited by the workers
WORK = ("resumed", "rerun", "trained")  # what a start did to a cell when it trained it
# A job's outcome in its progress line, where the bare word would not read well.
SAYS = {"busy": "another process is training it", "other": "finished by another process"}


def append_progress(sweep_dir: Path, entry: dict) -> None:
    """Add one line to the sweep's progress file: one write with O_APPEND, so lines of
    concurrent processes never interleave (a write to a local file is not split)."""
    data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    fd = os.open(sweep_dir / PROGRESS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_progress(sweep_dir: Path) -> list[dict]:
    """Every whole line of the progress file, oldest first; a line cut short (a process
    killed in its write) or otherwise unreadable is skipped."""
    try:
        raw = (sweep_dir / PROGRESS_FILE).read_bytes()
    except OSError:
        return []
    entries = []
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("job"), int):
            entries.append(entry)
    return entries


def bump_tally(sweep_dir: Path, start: str, did: str) -> dict[str, int]:
    """Count one more job of start `start` (passed, worked on, kept) in the sweep's tally,
    under an exclusive lock; returns the start's counts. A damaged tally starts again."""
    fd = os.open(sweep_dir / TALLY_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 1 << 20, 0)
        try:
            tally = json.loads(raw or b"{}")
        except ValueError:
            tally = None
        if not isinstance(tally, dict) or not isinstance(tally.get(start, {}), dict):
            tally = {}
        mine = tally.setdefault(start, {})
        mine["passed"] = mine.get("passed", 0) + 1
        mine["worked"] = mine.get("worked", 0) + (did in WORK)
        mine["kept"] = mine.get("kept", 0) + (did == "kept")
        data = json.dumps(tally).encode()
        os.pwrite(fd, data.ljust(len(raw)), 0)  # spaces over a longer past: no truncate
        return dict(mine)
    finally:
        os.close(fd)  # also drops the lock


def read_sweep(sweep_dir: Path) -> list[tuple[Path, RunRecord | None]]:
    """(job folder, its record or None when missing or unreadable), by job number."""
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    jobs: list[tuple[Path, RunRecord | None]] = []
    for folder in sorted(folders, key=lambda p: int(p.name)):
        try:
            record = RunFolder(folder).read_record()
        except ValueError:
            jobs.append((folder, None))
            continue
        record.status = RunFolder(folder).observed_status(record)
        jobs.append((folder, record))
    return jobs


def written_since(folder: Path, since: float) -> bool:
    """Whether the job's record was written after `since` (seconds since the epoch): the
    file's time, not the record's, whose timestamps count whole seconds only (a job kept
    from a start that ended in the same second would pass for a new one)."""
    written = RunFolder(folder).record_mtime()
    return written is not None and written >= since


def how_started(folder: Path, record: RunRecord, since: float) -> str:
    """What this start of the sweep (begun at `since`, seconds since the epoch) did with
    the cell."""
    if record.status != RunStatus.running and not written_since(folder, since):
        return "kept"  # finished before this start: not trained again
    began = dt.datetime.fromtimestamp(int(since), dt.timezone.utc).isoformat()
    if record.resumes and record.resumes[-1].get("at", "") >= began:
        return "resumed"
    return "rerun" if record.attempt > 1 else "trained"


def what_job_did(folder: Path, record: RunRecord | None, since: float) -> str:
    """What the job that just ended in `folder` did with its cell, in this process, from
    its record alone: "trained", "resumed", "rerun" (it wrote the record: this host and
    process, since this start began), "kept" (finished before this start), "busy" (another
    live process holds the folder), "other" (another process finished it since this start
    began) or "failed" (no readable record)."""
    if record is None:
        return "busy" if RunFolder(folder).owner_alive() else "failed"
    ours = record.host == socket.gethostname() and record.pid == os.getpid()
    if ours and written_since(folder, since):
        return how_started(folder, record, since)
    if record.status == RunStatus.running:
        return "busy"
    return "other" if written_since(folder, since) else "kept"


def closing_counts(
    jobs: list[tuple[Path, RunRecord | None]], progress: list[dict], start: str, since: float
) -> tuple[Counter, Counter, int]:
    """What this start did with the sweep's cells (kept, resumed, rerun, trained), what
    other processes did with them while it ran, and how many other processes did so: from
    the progress lines (this start's, and other starts' written since `since`); a cell
    without a line of this start (it never reached it) is judged by its record alone."""
    mine = {e["job"]: e.get("did") for e in progress if e.get("start") == start}
    theirs, others_starts = {}, set()
    for e in progress:
        if e.get("start") != start and e.get("did") in WORK and e.get("at", 0) >= since:
            theirs[e["job"]] = e["did"]
            others_starts.add(e.get("start"))
    ours, others = Counter(), Counter()
    for folder, record in jobs:
        if record is None:
            continue  # counted as failed by the status line
        n, did = int(folder.name), mine.get(int(folder.name))
        if did in WORK or did == "kept":
            ours[did] += 1
        elif n in theirs:
            others[theirs[n]] += 1
        elif did in ("busy", "other"):  # no line from it yet: still training, or killed
            others["running" if record.status == RunStatus.running else "ended"] += 1
        else:
            ours[how_started(folder, record, since)] += 1
    return ours, others, max(len(others_starts), 1 if others else 0)


def counts_line(ours: Counter, others: Counter, other_starts: int) -> str | None:
    """`3 kept  1 resumed  2 trained` for a start alone on its sweep (None when it trained
    every cell); with other processes on the sweep, whose cells are whose, e.g.
    `this process: 3 trained; another process: 2 trained; 1 kept`."""

    def listed(counts: Counter, kinds: tuple[str, ...]) -> str:
        return "  ".join(f"{counts[k]} {k}" for k in kinds if counts[k]) or "none"

    if not others:
        if set(ours) <= {"trained"}:
            return None
        return listed(ours, ("kept", *WORK))
    who = "another process" if other_starts == 1 else f"{other_starts} other processes"
    theirs = listed(others, (*WORK, "running", "ended"))
    kept = f"; {ours['kept']} kept" if ours["kept"] else ""
    return f"this process: {listed(ours, WORK)}; {who}: {theirs}{kept}"


def continue_command(folder: Path, multirun: bool = True) -> str:
    """This process's command line, pointed at the folder of its sweep (or single run):
    the command that continues it there."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = [a for a in sys.argv[1:] if not a.startswith((f"{key}=", f"+{key}="))]
    return shlex.join(["tiedharness-train", *args, f"{key}={folder}"])


def summary_line(folder: Path, record: RunRecord | None) -> str:
    if record is None:
        return f"{folder.name:>4}  {'failed':<9} no readable {RECORD_FILE} in {folder}"
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

    from tiedharness.sweep.grid import grid_lines, is_search, planned_jobs

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
        self.start = ""  # this start's token (on_multirun_start)
        self.ended = False
        self.clock, self.total = time.monotonic(), None
        self.job_clock = self.clock
        self.finished_before = 0  # cells the sweep's earlier starts finished

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_clock = time.monotonic()

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """One line per finished job: index of total, outcome, what the job did, time, what
        remains; and the job's line in the progress file (rank 0 of a job writes it)."""
        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        folder = Path(config.hydra.runtime.output_dir)
        try:
            record = RunFolder(folder).read_record()
            record.status = RunFolder(folder).observed_status(record)
        except ValueError:
            record = None
        start, since = self.start, self.since
        if not start and os.environ.get(START_ENV):  # a copy made before on_multirun_start
            start, _, at = os.environ[START_ENV].partition(" ")
            since = float(at)
        did = what_job_did(folder, record, since)
        now = time.monotonic()  # system-wide: the sweep's clock also holds in joblib workers
        total = self.total or "?"
        line = f"[{config.hydra.job.num + 1}/{total}] {summary_line(folder, record).strip()}"
        line += f"  ({SAYS.get(did, did)}; {duration(now - self.job_clock)}"
        line += f"; elapsed {duration(now - self.clock)}"
        if os.environ.get("RANK", "0") == "0":  # one line per job, not one per rank
            line += self.note_progress(config.hydra.job.num, folder.parent, start, did, record)
        print(line + ")", flush=True)

    def note_progress(
        self, job: int, sweep_dir: Path, start: str, did: str, record: RunRecord | None
    ) -> str:
        """Append the job's line to the progress file and count it in the tally; returns
        what remains of the sweep, estimated from this start's counts (empty when the
        files cannot be written: the bookkeeping never stops a sweep)."""
        entry = {"job": job, "start": start, "did": did, "at": time.time()}
        entry["status"] = str(record.status) if record else str(RunStatus.failed)
        try:
            append_progress(sweep_dir, entry)
            tally = bump_tally(sweep_dir, start, did)
        except OSError as err:
            print(f"warning: the sweep's progress files: {err}", file=sys.stderr)
            return ""
        if not self.total:
            return ""
        ahead = max(self.finished_before - tally["kept"], 0)  # to be kept: no time
        left = max(self.total - tally["passed"] - ahead, 0)
        per_job = (time.monotonic() - self.clock) / max(tally["worked"], 1)
        return f", about {duration(per_job * left)} left"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.since = time.time()
        self.start = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.environ[START_ENV] = f"{self.start} {self.since!r}"  # for workers spawned later
        self.clock, self.total = time.monotonic(), grid_size(config)
        if self.total:
            print(f"sweep of {self.total} jobs", flush=True)
        sweep_dir, pid = Path(config.hydra.sweep.dir).resolve(), os.getpid()
        finished: dict[int, bool] = {}  # job → finished, by the last line of each job
        for entry in read_progress(sweep_dir):
            finished[entry["job"]] = entry.get("status") in FINISHED
        self.finished_before = sum(finished.values())

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
        progress = read_progress(sweep_dir) if jobs else []
        line = counts_line(*closing_counts(jobs, progress, self.start, self.since))
        if line:
            print(line)
        if any(r and r.wandb and r.wandb.get("mode") == "offline" for _, r in jobs):
            print("W&B runs were logged offline; upload them with:")
            print(f"  wandb sync {sweep_dir}/*/wandb/offline-run-*")
        failed = counts.get("failed", 0)
        if failed:
            print(
                f"{failed} job(s) failed: see 'error' and 'traceback' in their {RECORD_FILE}",
                file=sys.stderr,
            )
            sys.exit(1)
