"""One job of a sweep, or a single run: a plain config in, a run folder out.

The run folder always ends up with `run.json` (DESIGN.md's contract, written atomically)
whatever happens: `completed`, `diverged` (non-finite loss), `skipped` (a sweep cell
where the strategy does not apply) or `failed` (with the error and traceback). In a
sweep the job never raises, so one bad cell cannot stop the others; a single run
re-raises after recording, so the user sees the error.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import random
import subprocess
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tiedharness.model import ModelConfig
from tiedharness.params import count_params
from tiedharness.sharing import SharingConfig, SharingNotApplicable, build_model
from tiedharness.tracking import SCHEMA_VERSION, Trackers
from tiedharness.train import Trainer, TrainerConfig, resolve_device

STATUSES = ("completed", "failed", "diverged", "skipped")


@dataclass
class JobContext:
    """What the launcher knows about this job (cli.py reads it from Hydra)."""

    run_dir: Path
    experiment: str
    sweep_id: str
    job_num: int = 0
    multirun: bool = False
    choices: dict[str, str] = field(default_factory=dict)  # config group → chosen option
    parallel_jobs: int = 1  # jobs sharing this machine's cores (joblib workers)


def torch_threads(configured: int | None, parallel_jobs: int) -> int:
    """Divide the machine's cores among the jobs running side by side."""
    threads = configured or max(1, (os.cpu_count() or 1) // max(parallel_jobs, 1))
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def model_config_for(values: dict[str, Any], task) -> ModelConfig:
    """The model preset, with its architecture following the task (LM or seq2seq)."""
    cfg = replace(ModelConfig.from_dict(values), arch="lm" if task.kind == "lm" else "encdec")
    longest = task.cfg.block_size if task.kind == "lm" else task.cfg.max_len
    if cfg.max_len < longest:
        limit = "task.block_size" if task.kind == "lm" else "task.max_len"
        raise ValueError(
            f"model.max_len={cfg.max_len} is shorter than the task's sequences "
            f"({limit}={longest}): raise model.max_len or lower {limit}"
        )
    return cfg


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def new_record(config: dict, ctx: JobContext) -> dict:
    sharing = config.get("sharing") or {}
    try:
        sharing_name = SharingConfig.from_dict(sharing).name
    except ValueError:
        sharing_name = ctx.choices.get("sharing", "unknown")
    return {
        "schema": SCHEMA_VERSION,
        "run_id": f"{ctx.sweep_id}-{ctx.job_num}",
        "experiment": ctx.experiment,
        "sweep_id": ctx.sweep_id,
        "job_num": ctx.job_num,
        "task": (config.get("task") or {}).get("name", "unknown"),
        "sharing": sharing_name,
        "model": ctx.choices.get("model", "custom"),
        "seed": (config.get("trainer") or {}).get("seed"),
        "status": "running",
        "error": None,
        "traceback": None,
        "config": config,
        "params": {},
        "metrics": {},
        "data": {},  # the task's statistics: overlap, padding, vocabulary, examples
        "env": {},
        "run_dir": str(ctx.run_dir),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_job(config: dict, ctx: JobContext) -> dict:
    """Train one configuration and record it; returns the run record."""
    from tiedharness.tasks import build_task

    started = time.perf_counter()
    record = new_record(config, ctx)
    trackers = Trackers(ctx.run_dir, (config.get("logger") or {}).get("wandb"), quiet=ctx.multirun)
    trackers.local.write(record)
    try:
        trainer_cfg = TrainerConfig.from_dict(config["trainer"])
        record["env"] = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(resolve_device(trainer_cfg.device)),
            "threads": torch_threads(trainer_cfg.num_threads, ctx.parallel_jobs),
            "git_sha": git_sha(),
            "host": platform.node(),
        }
        seed_everything(trainer_cfg.seed, trainer_cfg.deterministic)
        data = build_task(config["task"])
        record["data"] = {k: data.stats[k] for k in ("overlap", "padding_fraction", "vocab")}
        record["data"]["examples"] = {k: v["examples"] for k, v in data.stats["splits"].items()}
        sharing = SharingConfig.from_dict(config["sharing"])
        model = build_model(model_config_for(config["model"], data.task), data.vocab, sharing)
        record["params"] = count_params(model, sharing.name).to_dict()
        trackers.start(record)
        result = Trainer(
            model, data, trainer_cfg, log=trackers.log, progress=not ctx.multirun
        ).run()
        record["status"], record["metrics"] = result.status, result.metrics
        record["metrics"]["wall_s"] = time.perf_counter() - started  # the whole job
    except SharingNotApplicable as err:
        record.update(status="skipped" if ctx.multirun else "failed", error=str(err))
        if not ctx.multirun:
            raise
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        record["traceback"] = traceback.format_exc()
        if not ctx.multirun:
            raise
    finally:
        record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        trackers.finish(record)
    return record
