"""One job: a composed config in, a run folder out (the terms: docs/concepts.md).

The run folder always ends up with `run.json` whatever happens: `completed`, `diverged`
(non-finite loss), `skipped` (a sweep cell where the strategy does not apply) or
`failed` (with the error and traceback). In a sweep the job never raises, so one bad
cell cannot stop the others; a single run re-raises after recording, so the user sees
the error. The config is checked against its schemas before any data is built.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tiedharness.config import JobConfig
from tiedharness.interrupt import StopRequest
from tiedharness.model.params import count_params
from tiedharness.model.sharing import SharingNotApplicable, build_model
from tiedharness.tasks import make_task
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder, RunFolderError, Start, plan_start
from tiedharness.tracking.trackers import Trackers
from tiedharness.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tiedharness.training.config import TrainerConfig
from tiedharness.training.convergence import convergence
from tiedharness.training.costs import cached_profile, peak_flops, vocabulary_costs
from tiedharness.training.device import peak_memory_mb, reset_peak_memory, resolve_device
from tiedharness.training.distributed import Dist, init_distributed, shutdown
from tiedharness.training.evaluation import Evaluator
from tiedharness.training.loop import Trainer


@dataclass
class JobContext:
    """What the launcher knows about this job (the CLI reads it from Hydra)."""

    run_dir: Path
    experiment: str
    sweep_id: str
    job_num: int = 0
    multirun: bool = False
    choices: dict[str, str] = field(default_factory=dict)  # config group → chosen option
    parallel_jobs: int = 1  # jobs sharing this machine's cores (joblib workers)


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity (taskset, cgroups), and no more
    than SLURM allocated to the task (where SLURM does not bind CPUs), not the machine's
    count."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus


def torch_threads(configured: int | None, parallel_jobs: int) -> int:
    """Divide this process's CPUs among the jobs running side by side, never above a
    user's OMP_NUM_THREADS; `trainer.num_threads` overrides both."""
    threads = max(1, available_cpus() // max(parallel_jobs, 1))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        threads = min(threads, int(omp))
    threads = configured or threads
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_record(config: dict, ctx: JobContext) -> RunRecord:
    strategies = (config.get("sharing") or {}).get("strategies") or []
    return RunRecord(
        run_id=f"{ctx.sweep_id}-{ctx.job_num}",
        experiment=ctx.experiment,
        sweep_id=ctx.sweep_id,
        job_num=ctx.job_num,
        task=(config.get("task") or {}).get("name", "unknown"),
        model=ctx.choices.get("model", "custom"),
        sharing="+".join(strategies) or "none",
        seed=(config.get("trainer") or {}).get("seed"),
        config=config,
        run_dir=str(ctx.run_dir),
        started_at=_now(),
    )


def execute_job(config: DictConfig | dict, ctx: JobContext) -> RunRecord:
    """Train one configuration (composed by Hydra, or a plain dict of the same groups) and
    record it; returns the run record. A folder that already holds this run is continued
    (tiedharness/tracking/run_folder.py): kept when finished, resumed from its checkpoint,
    trained again when it failed before one was written."""
    started = time.perf_counter()
    plain = OmegaConf.to_container(OmegaConf.create(config), resolve=True, enum_to_str=True)
    dist = init_distributed(str((plain.get("trainer") or {}).get("device", "auto")))
    try:
        return _execute(config, plain, ctx, dist, started)
    finally:
        shutdown(dist)


def _execute(
    config: DictConfig | dict, plain: dict, ctx: JobContext, dist: Dist, started: float
) -> RunRecord:
    folder = RunFolder(ctx.run_dir)
    start, problem = None, None
    if dist.main:  # rank 0 owns the folder and decides; the other ranks follow
        try:
            folder.acquire()
            start = plan_start(folder, plain)
        except (RunFolderError, CheckpointError) as err:
            folder.release()
            problem = err
    start, problem = follow(dist, folder, start, problem)
    if problem is not None:
        if not ctx.multirun:
            raise problem
        print(f"job {ctx.job_num}: not run: {problem}", file=sys.stderr)
        return RunRecord(run_id=f"{ctx.sweep_id}-{ctx.job_num}", status=RunStatus.failed,
                         error=str(problem), run_dir=str(ctx.run_dir))  # fmt: skip
    if start.kind == "keep":
        folder.release()
        if dist.main:
            print(f"job {ctx.job_num}: already {start.previous.status} in {ctx.run_dir}, kept")
        return start.previous
    record = begin_record(plain, ctx, folder, start, write=dist.main)
    trackers = None
    with StopRequest() as stop:
        try:
            job = JobConfig.from_config(config)  # the schemas' checks, before any data is built
            trackers = Trackers(ctx.run_dir, job.logger.wandb, ctx.multirun, enabled=dist.main)
            record.status, record.metrics = train(job, record, trackers, ctx, start, stop, dist)
            record.metrics["wall_s"] = time.perf_counter() - started  # this start of the job
            if record.status == RunStatus.interrupted:
                steps = record.metrics.get("steps")
                record.error = f"stopped by {stop.name} at step {steps}, checkpoint written"
        except SharingNotApplicable as err:
            record.status, record.error = RunStatus.skipped, str(err)
            if not ctx.multirun:
                record.status = RunStatus.failed
                raise
        except Exception as err:
            record.status, record.error = RunStatus.failed, f"{type(err).__name__}: {err}"
            record.traceback = traceback.format_exc()
            if not ctx.multirun:
                raise
        finally:
            record.finished_at = _now()
            try:
                if trackers is None and dist.main:
                    record.write(ctx.run_dir)
                elif trackers is not None:
                    trackers.finish(record)
            finally:
                folder.release()
    if record.status == RunStatus.interrupted:
        stop.submitit_requeue()  # under submitit: requeued, and this process exits
    return record


def follow(
    dist: Dist, folder: RunFolder, start: Start | None, problem: Exception | None
) -> tuple[Start, Exception | None]:
    """Rank 0's decision on every rank: a resuming rank reads the checkpoint itself."""
    if not dist.active:
        return start, problem
    kind, message = dist.broadcast(
        (start.kind if start else None, str(problem) if problem else None)
    )
    if message is not None:
        return None, problem or RunFolderError(message)
    if dist.main:
        return start, None
    checkpoint = load_checkpoint(folder.path) if kind == "resume" else None
    previous = folder.previous_record() if kind in ("resume", "keep") else None
    return Start(kind, previous, checkpoint), None


def begin_record(
    plain: dict, ctx: JobContext, folder: RunFolder, start: Start, write: bool = True
) -> RunRecord:
    """The record this start of the job writes first: the previous one continued for a
    resume, a new one otherwise (a rerun's previous files removed). Other ranks than 0
    build it without writing anything."""
    if not write:
        return start.previous if start.kind == "resume" else new_record(plain, ctx)
    if start.kind == "resume":
        record = start.previous
        step = start.checkpoint["trainer"]["counters"]["step"]
        folder.cut_history(start.checkpoint["history_rows"])
        record.resumes.append({"from_step": step, "at": _now(), **process_identity()})
        record.status, record.error, record.traceback = RunStatus.running, None, None
        record.finished_at = None
    else:
        folder.clear_attempt()
        record = new_record(plain, ctx)
        if start.previous is not None:
            record.attempt = start.previous.attempt + 1
    record.host, record.pid = socket.gethostname(), os.getpid()
    record.write(ctx.run_dir)
    return record


def process_identity() -> dict:
    """Where this start of the job runs: enough to find its logs and its scheduler job
    (as squeue shows it: `<array job>_<task>` for a task of a job array)."""
    env = os.environ
    slurm = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        slurm = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm}


def train(
    job: JobConfig,
    record: RunRecord,
    trackers: Trackers,
    ctx: JobContext,
    start: Start,
    stop: StopRequest,
    dist: Dist,
) -> tuple[RunStatus, dict]:
    """Build the data and the model, measure costs, train (from the checkpoint of a
    resumed run), evaluate; fills `record`'s env, data and params and returns the status
    and metrics."""
    from tiedharness.tasks.data import build_task, cache_root  # tokenizers, tensors

    cfg = job.trainer

    def say(message: str) -> None:  # a single run says what it is doing; sweeps stay quiet
        if not ctx.multirun and dist.main:
            print(message, file=sys.stderr, flush=True)

    device = resolve_device(cfg.device)
    reset_peak_memory(device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    parallel = max(ctx.parallel_jobs, dist.local_world)  # processes sharing this machine
    record.env = environment(device, torch_threads(cfg.num_threads, parallel))
    record.env["world_size"] = dist.world
    seed_everything(cfg.seed, cfg.deterministic)
    task = make_task(job.task)
    model_cfg = job.model_for(task)
    say(f"building the data of task {task.name} (or reading it from the cache)…")
    data = build_task(task)
    record.data = {k: data.stats[k] for k in ("overlap", "padding_fraction", "vocab")}
    record.data["examples"] = {k: v["examples"] for k, v in data.stats["splits"].items()}
    model = build_model(model_cfg, data.vocab, job.sharing)
    record.params = count_params(model, job.sharing.name).to_dict()
    say(f"{len(data.splits['train']):,} training examples; model with "
        f"{record.params['total']:,} parameters (sharing: {record.sharing})")  # fmt: skip
    trackers.start(record)
    trainer = Trainer(model, data.splits["train"], data.max_tokens, cfg, device, trackers.log, dist)
    evaluator = Evaluator(trainer.model, data, cfg, device, dist)
    metrics = vocabulary_costs(model, data.vocab)
    if cfg.profile and not cfg.fsdp:  # a sharded model cannot run the profile on one rank
        say("measuring the output layer's share of a training step (cached per shape)…")
        batch, costs_dir = trainer.first_batch(), cache_root(job.task.cache_dir) / "costs"
        metrics.update(
            cached_profile(trainer.model, batch, cfg.label_smoothing, cfg.precision, costs_dir)
        )
        trainer.optimizer.zero_grad(set_to_none=True)
        # a step's FLOPs over the target tokens it trains (padding's work charged to them)
        metrics["train_flops_per_token"] = metrics["step_flops"] / batch.target_tokens
    curve: list[tuple[int, float]] = []  # (tokens, validation loss) of every evaluation
    if start.kind == "resume":  # after the profile: the checkpoint's RNG states win
        say(
            f"resuming from the checkpoint at step {start.checkpoint['trainer']['counters']['step']}"
        )
        trainer.load_state_dict(start.checkpoint["trainer"])
        curve = [tuple(point) for point in start.checkpoint["curve"]]

    def evaluate() -> dict[str, float]:
        row = evaluator.validation()
        curve.append((trainer.tokens, row["val_loss"]))
        return row

    def checkpoint() -> None:  # every rank takes part (FSDP2 gathers); rank 0 writes
        state = {"trainer": trainer.state_dict(), "curve": curve, "history_rows": trackers.rows}
        if dist.main:
            save_checkpoint(ctx.run_dir, state)

    result = trainer.fit(
        evaluate,
        progress=not ctx.multirun and dist.main,
        checkpoint=checkpoint,
        stop=lambda: bool(stop),
    )
    metrics.update(result.metrics)
    peak, record.env["peak_flops_source"] = peak_flops(device, cfg.precision, record.env["threads"])
    if peak and "train_flops_per_token" in metrics:
        # model FLOPs per second over the peak of every device the run used
        achieved = metrics["train_tokens_per_s"] * metrics["train_flops_per_token"]
        metrics["mfu"] = achieved / (peak * dist.world)
        metrics["peak_flops"] = peak
    if result.status == "completed":
        say("final evaluation: validation and test loss, decoding…")
        checkpoint()  # the final one: what tiedharness-eval and a rerun start from
        final = final_evaluation(evaluator, curve, trainer.tokens, cfg)
        metrics.update(final)
        trackers.log(trainer.progress_row(**final))
        if dist.main:
            write_decoded(ctx.run_dir, evaluator.decoded)
    metrics["peak_mem_mb"] = peak_memory_mb(device)
    return RunStatus(result.status), metrics


def final_evaluation(
    evaluator: Evaluator, curve: list[tuple[int, float]], tokens: int, cfg: TrainerConfig
) -> dict:
    """The end-of-run evaluation, and whether the validation curve had converged."""
    final = evaluator.final()
    curve.append((tokens, final["val_loss"]))
    window, rel, abs_ = cfg.converge_window, cfg.converge_tolerance, cfg.converge_tolerance_abs
    return {**final, **convergence(curve, window, rel, abs_)}


def write_decoded(run_dir: Path, decoded: dict[str, list[dict]]) -> None:
    """The decoded examples of each split, one JSON object a line (index into the split,
    hypothesis, reference): what BLEU was computed on, for paired tests between runs."""
    for split, rows in decoded.items():
        with (run_dir / f"decoded-{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def environment(device: torch.device, threads: int) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": threads,
        "git_sha": git_sha(),
        **process_identity(),
    }
