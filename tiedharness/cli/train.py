"""tiedharness-train: one run, or a sweep with -m (e.g. -m experiment=smoke).

A run or sweep folder is created exclusively (`th.new_folder` in conf/train.yaml, from
tiedharness/host.py), so two started in the same second get two folders. Pointing
`hydra.run.dir` / `hydra.sweep.dir` at an existing folder continues what is there
(docs/running.md; docs/run-record.md).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tiedharness.cli import CONF_DIR, fail
from tiedharness.cli.help import run_app, unknown_in
from tiedharness.config import JobConfig  # registers the config schemas with Hydra
from tiedharness.host import available_cpus, new_folder

if TYPE_CHECKING:
    from tiedharness.job import JobContext

log = logging.getLogger("tiedharness.cli.train")

OmegaConf.register_new_resolver("th.new_folder", new_folder, use_cache=True, replace=True)


# joblib's loky executor (hydra/launcher=joblib), where psutil is installed, takes a worker
# whose memory grew by more than 300 MB after its first job for a leak: once that job has
# finished and returned, it replaces the worker and warns (loky's process_executor.py).
# A worker that runs many training jobs can grow that much without leaking (each job builds
# its own model and data; the allocator keeps freed pages); no job is lost or repeated.
# The old 30-job quick study showed it; this one message alone is known to be benign here.
LOKY_WORKER_REPLACED = "A worker stopped while some jobs were given to the executor"


def main() -> float | None:
    """The console script: `--help`, and the command line's keys checked against the
    schemas (tiedharness/cli/help.py), before Hydra composes anything."""
    warnings.filterwarnings("ignore", message=LOKY_WORKER_REPLACED, category=UserWarning)
    return run_app("train", app)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def app(cfg: DictConfig) -> float | None:
    """Train one job; returns its objective (`objective`, by default val_loss) for sweeper
    plugins, None when the run did not complete."""
    from tiedharness.checkpoint import CheckpointError
    from tiedharness.job import JobContext, execute_job  # torch loads only here
    from tiedharness.sweep.summary import continue_command, summary_line
    from tiedharness.tracking.record import RunStatus
    from tiedharness.tracking.run_folder import RunFolder, RunFolderError

    unknown = unknown_in(cfg)
    if unknown:  # added with `+`, or by a study's config: not a key of the schemas
        fail(
            f"unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)} (`--help` lists every key)"
        )
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    base_dir = Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir)
    launcher = OmegaConf.to_container(hydra_cfg.launcher, resolve=True)
    ctx = JobContext(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        experiment=cfg.experiment_name,
        sweep_id=f"{cfg.experiment_name}-{base_dir.name}",
        job_num=OmegaConf.select(hydra_cfg, "job.num", default=0) or 0,
        multirun=multirun,
        choices={k: str(v) for k, v in hydra_cfg.runtime.choices.items() if v is not None},
        parallel_jobs=parallel_jobs(launcher),
    )
    if cfg.get("tuned_from"):  # each cell at the settings its search found best
        apply_tuned(cfg, list(hydra_cfg.overrides.task))
    job = validated(cfg, ctx)
    if job is None:  # a sweep's cell with a bad value: said, and the sweep goes on
        return None
    recorded_in = RunFolder(ctx.run_dir).record
    try:
        record = execute_job(job, ctx)
    except (RunFolderError, CheckpointError) as err:  # nothing was written
        fail(str(err))
    except (ValueError, FileNotFoundError) as err:  # a single run's error, found building it
        print(f"run recorded in {recorded_in}", file=sys.stderr)
        fail(str(err))
    if not multirun and os.environ.get("RANK", "0") == "0":  # rank 0 speaks for the run
        log.info(summary_line(ctx.run_dir, record))  # the console, and the run's train.log
        log.info(f"run recorded in {recorded_in}")
    if record.status == RunStatus.interrupted and "BasicLauncher" in str(launcher.get("_target_")):
        # the signal was for this process: a sweep stops too (and says how to go on)
        print(record.error, file=sys.stderr)
        if not multirun:
            print(
                f"continue with:\n  {continue_command(base_dir.resolve(), False)}", file=sys.stderr
            )
        sys.exit(INTERRUPTED_EXIT)
    return objective(record, cfg.objective)


def validated(cfg: DictConfig, ctx: JobContext) -> JobConfig | None:
    """The job's config as objects, its values checked before any folder is claimed or
    record written. A bad value stops a single run (exit 2); a sweep's job says so in the
    sweep's log and returns None, so one bad cell does not stop the others."""
    try:
        return JobConfig.from_config(cfg)
    except ValueError as err:
        if not ctx.multirun:
            fail(str(err))
        log.warning(f"job {ctx.job_num}: not run: {err}")
        return None


def apply_tuned(cfg: DictConfig, job_overrides: list[str]) -> None:
    """Set the job's cell's best settings from the search in `cfg.tuned_from`."""
    from tiedharness.sweep.search import SearchConfigError, tuned_settings

    try:
        best = tuned_settings(cfg.tuned_from, job_overrides)
    except SearchConfigError as err:
        fail(str(err))
    for key, value in best.items():
        OmegaConf.update(cfg, key, value, merge=False)
    cfg.tuned_keys = sorted(best)


def objective(record, metric: str) -> float | None:
    """None, not NaN, for a run that did not complete: Optuna records None as a failed
    trial and goes on (NaN stops the Optuna sweeper with an error)."""
    from tiedharness.tracking.record import RunStatus

    value = record.metrics.get(metric) if record.status == RunStatus.completed else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


INTERRUPTED_EXIT = 3  # neither success (0) nor a configuration error (2)


def parallel_jobs(launcher: dict) -> int:
    """How many jobs share this machine: joblib's workers (-1: one per CPU it may use)."""
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 0:
        return available_cpus() if n_jobs < 0 else n_jobs
    return 1


if __name__ == "__main__":  # torchrun -m tiedharness.cli.train, python -m …
    main()
