"""tiedharness-train: one run, or a sweep with -m (e.g. -m experiment=smoke)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import tiedharness.config  # noqa: F401  (registers the config schemas with Hydra)
from tiedharness.cli import CONF_DIR, fail


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    from tiedharness.job import JobContext, execute_job  # torch loads only here
    from tiedharness.tracking.sweep import summary_line

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
    try:
        record = execute_job(cfg, ctx)
    except (ValueError, FileNotFoundError) as err:  # a single run's configuration error
        print(f"run recorded in {ctx.run_dir / 'run.json'}", file=sys.stderr)
        fail(str(err))
    if not multirun:
        print(summary_line(ctx.run_dir, record))
        print(f"run recorded in {ctx.run_dir / 'run.json'}")


def parallel_jobs(launcher: dict) -> int:
    """How many jobs share this machine: joblib's workers (-1: one per core)."""
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 0:
        return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs
    return 1
