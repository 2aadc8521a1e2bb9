"""What the sweep's progress line and closing summary cost per job, by the sweep's size.

Drives the real SweepSummary callback (tiedharness/sweep/summary.py) as Hydra does over a
synthetic sweep: `on_multirun_start` with the sweep's composed config (the smoke study's
five strategies times a range of seeds), then for each job a `run.json` written through
RunRecord with the job's resolved config (what the job itself would leave; not timed)
and `on_job_start` / `on_job_end` with the job's config, then `on_multirun_end`. Each job's
callback time, and the closing summary's time divided by the number of jobs, should not
grow with the sweep: the script prints both for each size and the ratio of the largest
size's to the smallest's (acceptance: within 2x). The callbacks' printed lines go to
/dev/null. Timings are only comparable within one run of this script: the machine is
shared.

    python benchmarks/sweep_bookkeeping.py [--sizes 100 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

import tiedharness.cli.train  # noqa: F401  (registers th.new_folder, which conf/train.yaml uses)
from tiedharness.cli import CONF_DIR
from tiedharness.sweep.summary import SweepSummary
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

STRATEGIES = 5  # the smoke study's grid: none,embed_output,encdec_vocab,positional,qkv


def configs(sweep_dir: Path, jobs: int) -> tuple[DictConfig, DictConfig]:
    """The sweep's config (for on_multirun_start/end) and one job's (for on_job_*): the
    smoke study swept over `jobs // 5` seeds, as Hydra composes them."""
    seeds = f"trainer.seed=range(0,{jobs // STRATEGIES})"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        overrides = ["experiment=smoke", "logger=none", f"hydra.sweep.dir={sweep_dir}"]
        sweep = compose("train", overrides=overrides, return_hydra_config=True)
        job = compose("train", overrides=[*overrides, "sharing=none"], return_hydra_config=True)
    for config in (sweep, job):
        with open_dict(config):
            config.hydra.mode = RunMode.MULTIRUN
            config.hydra.overrides.task = ["experiment=smoke", "logger=none", seeds]
    return sweep, job


def job_record(job: DictConfig, num: int, folder: Path) -> RunRecord:
    """The record a completed job of this sweep leaves (this process as its writer)."""
    plain = OmegaConf.to_container(job, resolve=False)
    plain.pop("hydra")
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return RunRecord(
        run_id=f"smoke-bench-{num}",
        experiment="smoke",
        sweep_id="smoke-bench",
        job_num=num,
        task="synth_translation",
        model="tiny",
        sharing="none",
        seed=num // STRATEGIES,
        status=RunStatus.completed,
        config=plain,
        params={"total": 123_456},
        metrics={"val_loss": 2.5 + num * 1e-4, "bleu": 12.5, "steps": 12},
        run_dir=str(folder),
        started_at=now,
        finished_at=now,
        host=os.uname().nodename,
        pid=os.getpid(),
    )


def one_sweep(jobs: int, root: Path) -> dict[str, float]:
    """Seconds the callback spent: each job's (on_job_start + on_job_end), the start,
    and the closing summary."""
    sweep_dir = root / f"sweep-{jobs}"
    sweep_dir.mkdir()
    sweep, job = configs(sweep_dir, jobs)
    callback, per_job = SweepSummary(), []
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        started = time.perf_counter()
        callback.on_multirun_start(config=sweep)
        opening = time.perf_counter() - started
        for num in range(jobs):
            folder = sweep_dir / str(num)
            with open_dict(job):
                job.hydra.job.num = num
                job.hydra.runtime.output_dir = str(folder)
            started = time.perf_counter()
            callback.on_job_start(config=job)
            folder.mkdir()  # the job: its folder and its record
            RunFolder(folder).write_record(job_record(job, num, folder))
            job_started = time.perf_counter()
            callback.on_job_end(config=job, job_return=None)
            per_job.append(time.perf_counter() - job_started)
        started = time.perf_counter()
        callback.on_multirun_end(config=sweep)
        closing = time.perf_counter() - started
    return {
        "job_mean": statistics.fmean(per_job),
        "job_median": statistics.median(per_job),
        "job_max": max(per_job),
        "opening": opening,
        "closing_per_job": closing / jobs,
        "all_per_job": (opening + sum(per_job) + closing) / jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000])
    args = parser.parse_args()
    sizes = [n - n % STRATEGIES for n in args.sizes]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in sizes:
            results[jobs] = one_sweep(jobs, Path(tmp))
            r = results[jobs]
            print(
                f"{jobs:>6} jobs: on_job_end {r['job_mean'] * 1e3:.2f} ms/job "
                f"(median {r['job_median'] * 1e3:.2f}, max {r['job_max'] * 1e3:.2f}); "
                f"closing summary {r['closing_per_job'] * 1e3:.2f} ms/job; "
                f"all callbacks {r['all_per_job'] * 1e3:.2f} ms/job"
            )
    small, large = results[sizes[0]], results[sizes[-1]]
    for key, name in (("job_mean", "on_job_end"), ("all_per_job", "all callbacks")):
        ratio = large[key] / small[key]
        verdict = "within 2x" if ratio <= 2 else "NOT within 2x"
        print(f"{name} per job, {sizes[-1]} vs {sizes[0]} jobs: {ratio:.2f}x ({verdict})")


if __name__ == "__main__":
    main()
