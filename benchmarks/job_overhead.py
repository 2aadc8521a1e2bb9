"""How much a job costs beyond its training steps.

Runs the quick study's old bible_mt cell (sharing=none: 32 steps of a d=128 model) as a
whole job — data from the cache, model, cost profile (cached after the first job of a
shape, as in a sweep), training with its evaluations, final evaluation and decoding,
run record, W&B offline files, as a sweep runs it (quiet: no progress bar, no console
capture) — and a bare loop that trains the same model on the same batches for the same
steps and does nothing else. After one warm-up job the two alternate, a bare loop first
and last; each job is compared with the mean of the bare loops just before and just
after it, and the ratio is the median over the jobs (on a shared host either time moves
by ±15% from one minute to the next; the loops on both sides share the job's minute and
cancel a steady drift). Timings are only comparable within one run of this script.

It also prints the part of the job spent in the evaluations the cell asks for (validation
losses, decoding, test scores: the record's `eval_s`), so that what the job adds is split
into that evaluation and the rest (start-up, data, profile, records, W&B).

    python benchmarks/job_overhead.py [--reps 9] [--steps 32]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from tiedharness.build import build
from tiedharness.cli import CONF_DIR
from tiedharness.config import JobConfig
from tiedharness.host import available_cpus
from tiedharness.job import JobContext, execute_job
from tiedharness.tasks.batching import collate
from tiedharness.training.device import seed_everything
from tiedharness.training.loop import Trainer


def quick_cell(steps: int):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            # the quick study's bible_mt cell as it was when the figures of
            # benchmarks/README.md were measured (the demo has since changed its grid)
            overrides=[
                "task=bible_mt",
                "sharing=none",
                "model=small",
                "model.d_model=128",
                "model.d_ff=512",
                "model.dropout=0.1",
                "task.vocab_size=4000",
                "task.max_len=128",
                "task.max_tokens=2048",
                f"trainer.max_steps={steps}",
                "trainer.max_train_tokens=null",
                "trainer.warmup_steps=8",
                "trainer.lr=2e-3",
                "trainer.eval_every=16",
                "trainer.eval_examples=128",
                "trainer.log_every=4",
                "trainer.decode_examples=12",
                "trainer.test_examples=0",
                "trainer.precision=bf16",
                "trainer.profile_reps=4",
                "logger=wandb",
                "logger.wandb.mode=offline",
            ],
        )


def whole_job(config, folder: Path) -> tuple[float, float]:
    """The job's wall time and the part of it spent evaluating (its record's eval_s)."""
    started = time.perf_counter()
    job = JobConfig.from_config(config)
    record = execute_job(job, JobContext(folder, "quick", "benchmark", multirun=True))
    elapsed = time.perf_counter() - started
    assert record.status == "completed", record.error
    return elapsed, record.metrics["eval_s"]


def bare_loop(config, steps: int) -> float:
    """The same model on the same batches, in the simplest loop that trains it."""
    job = JobConfig.from_config(config)
    seed_everything(job.trainer.seed, job.trainer.deterministic)
    _, data, model = build(job)
    trainer = Trainer(model, data, job.trainer, device=torch.device("cpu"))
    batches = trainer.batches(0)[:steps]
    started = time.perf_counter()
    for indices in batches:
        trainer.update([collate(data.splits["train"], indices)])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    config = quick_cell(args.steps)
    torch.set_num_threads(available_cpus())  # what a job alone on the host claims
    with tempfile.TemporaryDirectory() as tmp:
        whole_job(config, Path(tmp) / "warm-up")  # builds the data cache and the cost profile
        jobs, evaluations, bares = [], [], [bare_loop(config, args.steps)]
        for rep in range(args.reps):
            job_s, evaluation_s = whole_job(config, Path(tmp) / f"job-{rep}")
            jobs.append(job_s)
            evaluations.append(evaluation_s)
            bares.append(bare_loop(config, args.steps))
    # each job's bare-loop time: the mean of the loops just before and just after it
    beside = [(before + after) / 2 for before, after in itertools.pairwise(bares)]
    job_s, bare_s = statistics.median(jobs), statistics.median(bares)
    evaluation_s = statistics.median(evaluations)
    print(f"quick cell, {args.steps} steps, {torch.get_num_threads()} threads, {args.reps} reps")
    print(f"whole job   median {job_s:6.2f} s   ({', '.join(f'{t:.2f}' for t in jobs)})")
    print(f"  of which evaluation (validation, decoding, test) median {evaluation_s:6.2f} s")
    print(f"bare loop   median {bare_s:6.2f} s   ({', '.join(f'{t:.2f}' for t in bares)})")
    ratios = [j / b for j, b in zip(jobs, beside, strict=True)]
    without = [(j - e) / b for j, e, b in zip(jobs, evaluations, beside, strict=True)]
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"ratio whole job / bare loops beside it, median of {args.reps} jobs: "
        f"{statistics.median(ratios):.2f}"
    )
    print(f"  each job's: {listed}")
    print(f"ratio whole job without its evaluation / bare loop: {statistics.median(without):.2f}")


if __name__ == "__main__":
    main()
