"""A run's folder: the one owner of its files, and of the lock that says who trains in it.

Only this class knows the folder's file names; everything else asks it for a path or
hands it what to write:

| file | what | written |
|---|---|---|
| `run.json` | the run record (record.py) | `write_record`, atomically |
| `history.jsonl` | one JSON object a progress row | `append_history`, cut back by `cut_history` |
| `decoded-<split>.jsonl` | the decoded examples BLEU was computed on | `write_decoded` |
| `eval-<key>.jsonl` | tiedharness-eval's hypotheses | `write_eval` |
| `checkpoint.pt` | everything a resume needs (its layout: tiedharness/checkpoint.py) | `checkpoint` is its path |
| `.lock` | held while a job trains here | `acquire` / `release` |

A job owns its folder through an exclusive lock on `.lock` (fcntl.flock: released by the
kernel when the process dies, however it dies), so two processes never train the same
cell, and a `running` record whose lock nobody holds belongs to a dead process. What a new
start does in a folder that already holds a run is decided in start.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from tiedharness.atomic import finite, write_atomic, write_json_atomic
from tiedharness.tracking.record import RunRecord, RunStatus

RECORD_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = ".lock"
# left by rank 0 of a torchrun run in the folder it created, for the other ranks to find
TORCHRUN_MARKER = ".torchrun"
SPLITS = ("valid", "test")


class RunFolderError(RuntimeError):
    """The folder cannot be trained in now (another process owns it, or it holds another
    run); the message names the fix. Nothing in the folder was changed."""


class RunFolder:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @classmethod
    def every_below(cls, root: Path) -> list[RunFolder]:
        """Every folder below `root` (itself included) that holds a run record, job
        folders in numeric order (2 before 10)."""
        paths = sorted(Path(root).rglob(RECORD_FILE), key=_natural)
        return [cls(path.parent) for path in paths]

    # ------------------------------------------------------------------ paths

    @property
    def record(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def decoded(self, split: str) -> Path:
        return self.path / f"decoded-{split}.jsonl"

    def eval_output(self, key: str) -> Path:
        """tiedharness-eval's hypotheses for the entry `key` (`valid/beam4/lp0.6`)."""
        return self.path / f"eval-{key.replace('/', '-')}.jsonl"

    def holds_run(self) -> bool:
        return self.record.is_file()

    # ------------------------------------------------------------------ the record

    def read_record(self) -> RunRecord:
        """The record; ValueError naming the file when there is none or it is unreadable."""
        return RunRecord.read(self.record)

    def write_record(self, record: RunRecord) -> None:
        write_json_atomic(self.record, record.to_dict())

    def record_mtime(self) -> float | None:
        """When run.json was last written (seconds since the epoch); None: no file."""
        try:
            return self.record.stat().st_mtime
        except OSError:
            return None

    def previous_record(self) -> RunRecord | None:
        """The record a previous attempt left, or None. An unreadable run.json is kept
        aside as run.json.damaged (and said so), never overwritten."""
        if not self.record.is_file():
            return None
        try:
            return self.read_record()
        except ValueError as err:
            aside = self.record.with_name(RECORD_FILE + ".damaged")
            os.replace(self.record, aside)
            print(f"warning: {err}; kept as {aside}, training this run again", file=sys.stderr)
            return None

    # ------------------------------------------------------------------ history and outputs

    def append_history(self, row: dict) -> None:
        with self.history.open("a") as f:
            f.write(json.dumps(finite(row)) + "\n")

    def history_rows(self) -> int:
        if not self.history.is_file():
            return 0
        with self.history.open("rb") as f:
            return sum(1 for _ in f)

    def cut_history(self, rows: int) -> None:
        """Keep the first `rows` lines of the history: what was logged up to the
        checkpoint; what came after it will be logged again by the resumed run."""
        if not self.history.is_file():
            return
        with self.history.open("rb") as f:
            kept = [line for _, line in zip(range(rows), f, strict=False)]
        write_atomic(self.history, lambda out: out.writelines(kept), binary=True)

    def write_decoded(self, decoded: dict[str, list[dict]]) -> None:
        """Each split's decoded examples, one JSON object a line (index into the split,
        source, hypothesis, reference): what BLEU was computed on, for paired tests."""
        for split, rows in decoded.items():
            _write_jsonl(self.decoded(split), rows)

    def read_decoded(self, split: str) -> list[dict] | None:
        """The decoded examples of `split`; None where there are none to read."""
        return read_jsonl(self.decoded(split))

    def write_eval(self, key: str, rows: list[dict]) -> Path:
        path = self.eval_output(key)
        _write_jsonl(path, rows)
        return path

    def clear_attempt(self) -> None:
        """Remove what an attempt from the start replaces (W&B keeps its own runs)."""
        for path in (self.history, self.checkpoint, *map(self.decoded, SPLITS)):
            path.unlink(missing_ok=True)

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

    def observed_status(self, record: RunRecord) -> RunStatus:
        """The record's status, except that a `running` record whose job is dead (nobody
        holds the folder's lock) is `interrupted`."""
        if record.status == RunStatus.running and self.owner_alive() is False:
            return RunStatus.interrupted
        return record.status

    # ------------------------------------------------------------------ torchrun

    def mark_torchrun(self, run_id: str) -> None:
        (self.path / TORCHRUN_MARKER).write_text(run_id)

    @staticmethod
    def torchrun_folder(parent: Path, run_id: str) -> Path | None:
        """The folder in `parent` that rank 0 of torchrun run `run_id` marked, if any yet."""
        for marker in Path(parent).glob(f"*/{TORCHRUN_MARKER}"):
            if marker.read_text() == run_id:
                return marker.parent
        return None


def read_jsonl(path: Path | str) -> list[dict] | None:
    """The JSON objects of a JSON-lines file; None where it is missing or unreadable."""
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines()]
    except (OSError, ValueError, TypeError):
        return None


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(
        path, lambda f: f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    )


def _natural(path: Path) -> tuple:
    """Sort key: job folders in numeric order (2 before 10)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)
