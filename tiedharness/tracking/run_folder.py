"""A run folder across the lives of its job: who owns it, and what a new start should do.

A job owns its folder through an exclusive lock on `.lock` (fcntl.flock: released by the
kernel when the process dies, however it dies), so two processes never train the same
cell, and a `running` record whose lock nobody holds belongs to a dead process. When a job
starts in a folder that already holds a run (a rerun of a sweep into its folder, a
requeued SLURM job, the same command with the same `hydra.run.dir`), `plan_start` decides:

- the same config, finished (`completed`, `diverged`, `skipped`): keep it, train nothing;
- the same config with a checkpoint: resume from it, the history cut back to it;
- the same config, no checkpoint (`failed`, `interrupted` early, a dead `running`): train
  it again from the start (the previous attempt's files are removed);
- a different config: refuse, and leave everything as it is.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from dataclasses import dataclass
from enum import auto
from pathlib import Path

from tiedharness.atomic import write_atomic
from tiedharness.schema import Choice
from tiedharness.tracking.record import RunRecord, RunStatus

LOCK_FILE = ".lock"
HISTORY_FILE = "history.jsonl"
FINISHED = (RunStatus.completed, RunStatus.diverged, RunStatus.skipped, RunStatus.pruned)
# Files of an attempt that a new attempt from the start replaces (W&B keeps its own runs).
ATTEMPT_FILES = (HISTORY_FILE, "checkpoint.pt", "decoded-valid.jsonl", "decoded-test.jsonl")


class RunFolderError(RuntimeError):
    """The folder cannot be trained in now (another process owns it, or it holds another
    run); the message names the fix. Nothing in the folder was changed."""


# Settings that change how a run is carried out, not what it computes: a resume may differ.
RESUMABLE_CHANGES = (
    "logger",
    "results_dir",
    "scale",  # a study's numbers: what they change shows in the groups that use them
    "objective",
    "trainer.checkpoint_every",
    "trainer.checkpoint_every_s",
    "trainer.num_threads",
)


def same_config(a: dict, b: dict) -> bool:
    """Whether two resolved configs train the same run."""

    def strip(config: dict) -> dict:
        out = {
            group: dict(values) if isinstance(values, dict) else values
            for group, values in config.items()
        }
        for key in RESUMABLE_CHANGES:
            group, _, name = key.partition(".")
            if name and isinstance(out.get(group), dict):
                out[group].pop(name, None)
            elif not name:
                out.pop(group, None)
        return out

    return strip(a) == strip(b)


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ ownership

    def acquire(self) -> None:
        """Take the folder's lock; RunFolderError when another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(
                f"{self.path} is being trained by another process ({holder}); "
                "wait for it, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host={socket.gethostname()} pid={os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None

    def owner_alive(self) -> bool | None:
        """Whether a live process holds the folder's lock (None: no lock file, so this
        cannot tell)."""
        lock = self.path / LOCK_FILE
        if not lock.is_file():
            return None
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # also releases the probe's lock
        return False

    # ------------------------------------------------------------------ contents

    def previous_record(self) -> RunRecord | None:
        """The record a previous attempt left, or None. An unreadable run.json is kept
        aside as run.json.damaged (and said so), never overwritten."""
        path = self.path / "run.json"
        if not path.is_file():
            return None
        try:
            return RunRecord.read(path)
        except ValueError as err:
            aside = path.with_name("run.json.damaged")
            os.replace(path, aside)
            print(f"warning: {err}; kept as {aside}, training this run again", file=sys.stderr)
            return None

    def history_rows(self) -> int:
        path = self.path / HISTORY_FILE
        if not path.is_file():
            return 0
        with path.open("rb") as f:
            return sum(1 for _ in f)

    def cut_history(self, rows: int) -> None:
        """Keep the first `rows` lines of history.jsonl: what was logged up to the
        checkpoint; what came after it will be logged again by the resumed run."""
        path = self.path / HISTORY_FILE
        if not path.is_file():
            return
        with path.open("rb") as f:
            kept = [line for _, line in zip(range(rows), f, strict=False)]
        write_atomic(path, lambda out: out.writelines(kept), binary=True)

    def clear_attempt(self) -> None:
        for name in ATTEMPT_FILES:
            (self.path / name).unlink(missing_ok=True)


def observed_status(record: RunRecord, folder: Path) -> RunStatus:
    """The record's status, except that a `running` record whose job is dead (nobody
    holds the folder's lock; for folders from before the lock, a process id that no
    longer exists on this host) is `interrupted`."""
    if record.status != RunStatus.running:
        return record.status
    alive = RunFolder(folder).owner_alive()
    if alive is None and record.pid and record.host == socket.gethostname():
        try:
            os.kill(record.pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:  # someone else's live process
            alive = True
    return RunStatus.interrupted if alive is False else record.status


class StartKind(Choice):
    new = auto()  # an empty folder
    rerun = auto()  # the same run, trained again from its first step
    resume = auto()  # the same run, continued from its checkpoint
    keep = auto()  # the same run, finished: nothing to do


@dataclass
class Start:
    """How a job starts in its folder, with what the folder held."""

    kind: StartKind
    previous: RunRecord | None = None
    checkpoint: dict | None = None

    @property
    def step(self) -> int:
        """The step a resume continues from."""
        return self.checkpoint["trainer"]["counters"]["step"] if self.checkpoint else 0


def plan_start(folder: RunFolder, config: dict) -> Start:
    """What a job with this resolved `config` does in `folder` (see the module's doc).
    Raises RunFolderError for a folder holding another configuration's run and
    CheckpointError for a checkpoint that cannot be read."""
    from tiedharness.checkpoint import checkpoint_path, load_checkpoint  # torch loads here

    previous = folder.previous_record()
    if previous is None:
        if checkpoint_path(folder.path).is_file():
            raise RunFolderError(
                f"{folder.path} holds a checkpoint but no readable run.json; move the "
                "folder away, or choose another hydra.run.dir / hydra.sweep.dir"
            )
        return Start(StartKind.new)
    if not same_config(previous.config, config):
        raise RunFolderError(
            f"{folder.path} holds a run of another configuration ({previous.run_id}, "
            f"{previous.status}); choose another hydra.run.dir / hydra.sweep.dir, or "
            "delete that folder to replace it"
        )
    if previous.status in FINISHED:
        return Start(StartKind.keep, previous)
    checkpoint = load_checkpoint(folder.path)
    if checkpoint is None:
        return Start(StartKind.rerun, previous)
    return Start(StartKind.resume, previous, checkpoint)
