"""The run record: what one job leaves in its run folder, typed.

The run folder (run_folder.py) writes and reads it; the sweep summary, the aggregator and
the W&B reader all get it through this one class. Every field is described in
docs/run-record.md. One schema version is read: a record of another version is refused,
naming it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tiedharness.schema import Choice

SCHEMA_VERSION = 5  # 5: every budget holds the test split's metrics too


class RunStatus(Choice):
    running = "running"  # written when the job starts, replaced when it ends (or dies)
    completed = "completed"
    failed = "failed"  # raised: `error` and `traceback` say why
    diverged = "diverged"  # the training loss became non-finite
    skipped = "skipped"  # a sweep cell where the strategy does not apply (`error` says why)
    interrupted = "interrupted"  # stopped before its budget was spent (a signal, a dead job)
    pruned = "pruned"  # a search's trial stopped early by its pruner (`error` says at which step)


# Who a run is: the W&B config's `run` block and the first columns of every table.
IDENTITY = ("run_id", "experiment", "sweep_id", "task", "model", "sharing", "seed")


@dataclass
class RunRecord:
    run_id: str
    experiment: str | None = None
    sweep_id: str | None = None
    job_num: int = 0
    task: str = "unknown"
    model: str | None = None
    sharing: str = "unknown"
    seed: int | None = None
    status: RunStatus = RunStatus.running
    error: str | None = None
    traceback: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the resolved Hydra config
    params: dict[str, Any] = field(default_factory=dict)  # tiedharness.model.params.ParamReport
    metrics: dict[str, Any] = field(default_factory=dict)  # docs/metrics.md
    data: dict[str, Any] = field(default_factory=dict)  # the task's statistics
    env: dict[str, Any] = field(default_factory=dict)  # torch, device, threads, git sha, host
    wandb: dict[str, Any] | None = None  # mode, id, dir when logged to W&B
    run_dir: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    host: str | None = None  # the machine and process that last ran the job
    pid: int | None = None
    attempt: int = 1  # starts from step 0 (a failed run trained again is attempt 2)
    # one per resume from a checkpoint: from_step, at, host, pid, slurm_job_id
    resumes: list[dict[str, Any]] = field(default_factory=list)
    # tiedharness-eval's scores, keyed "<split>/beam<k>/lp<x>"
    eval: dict[str, Any] = field(default_factory=dict)
    # the run's metrics at each budget it was evaluated at, smallest first: one entry per
    # budget branch (trainer.branch_at) and one for the whole budget (fraction 1.0); each
    # holds fraction, step, tokens and the validation and test metrics (docs/run-record.md)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    def identity(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in IDENTITY}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        """A record from its JSON form; raises ValueError for anything else."""
        if not isinstance(values, dict) or "run_id" not in values or "status" not in values:
            raise ValueError("not a run record (no run_id or status)")
        schema = values.get("schema", 1)
        if schema != SCHEMA_VERSION:
            raise ValueError(
                f"run record schema {schema}: this tiedharness reads schema {SCHEMA_VERSION} "
                "only; train the run again, or aggregate it with the release that wrote it"
            )
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in values.items() if k in known})
        record.status = RunStatus(values["status"])
        return record

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """The record in `path`; ValueError naming the file when it is not one."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"unreadable run record {path}: {err}") from err
