"""One job's lifecycle: its folder, its run record, its status, its trackers (the terms:
docs/concepts.md).

The job receives its config already validated (`JobConfig`: the command turns its
arguments into it before any folder is claimed). The run folder always ends up with a run
record whatever happens: `completed`, `diverged` (non-finite loss), `interrupted` (a stop
signal; a checkpoint was written), `pruned` (a search's pruner stopped the trial at a
validation: tiedharness/sweep/pruning.py), `skipped` (a sweep cell where the strategy does
not apply) or `failed` (with the error and traceback). In a sweep the job never raises, so
one bad cell cannot stop the others; a single run re-raises after recording, so the user
sees the error. What is trained is built by tiedharness/build.py and trained by
tiedharness/training/session.py; the host's CPUs are claimed in tiedharness/host.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tiedharness.build import build
from tiedharness.checkpoint import CheckpointError, history_rows, load_checkpoint, save_checkpoint
from tiedharness.config import JobConfig
from tiedharness.host import CpuShare
from tiedharness.interrupt import StopRequest
from tiedharness.model.labels import strategy_label
from tiedharness.model.params import count_params
from tiedharness.model.sharing import SharingNotApplicable
from tiedharness.sweep.pruning import trial_reporter
from tiedharness.tasks.data import TaskData, cache_root
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder, RunFolderError
from tiedharness.tracking.start import Start, StartKind, plan_start
from tiedharness.tracking.trackers import Trackers
from tiedharness.training.costs import model_flops_utilisation
from tiedharness.training.device import (
    environment,
    job_device,
    peak_memory_mb,
    process_identity,
    reset_peak_memory,
)
from tiedharness.training.distributed import Dist, init_distributed, shutdown
from tiedharness.training.loop import Outcome
from tiedharness.training.metrics import signatures
from tiedharness.training.session import TrainingSession

log = logging.getLogger(__name__)


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
    speaks: bool = False  # says what it is doing (a single run's rank 0; sweeps stay quiet)

    def say(self, message: str) -> None:
        """Into the job's log (train.log); on the console too for a single run."""
        log.log(logging.INFO if self.speaks else logging.DEBUG, message)


@dataclass
class JobStart:
    """One start of a job in its folder: what each step of it reads, and the record it
    fills."""

    job: JobConfig
    ctx: JobContext
    folder: RunFolder
    start: Start
    record: RunRecord
    stop: StopRequest
    dist: Dist
    began: float  # time.perf_counter() when this start began
    trackers: Trackers | None = None
    decoded: dict[str, list[dict]] = field(default_factory=dict)  # split → decoded examples


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute_job(job: JobConfig, ctx: JobContext) -> RunRecord:
    """Train one validated configuration and record it; returns the run record. A folder
    that already holds this run is continued (tiedharness/tracking/start.py): kept when
    finished, resumed from its checkpoint, trained again when it failed before one was
    written."""
    began = time.perf_counter()
    dist = init_distributed(str(job.trainer.device))
    ctx.speaks = not ctx.multirun and dist.main
    try:
        folder = RunFolder(ctx.run_dir)
        start, problem = claim(folder, job.values, dist)
        if problem is not None:
            return not_run(problem, ctx)
        if start.kind is StartKind.keep:
            folder.release()
            if dist.main:
                log.info(
                    f"job {ctx.job_num}: already {start.previous.status} in {ctx.run_dir}, kept"
                )
            return start.previous
        record = begin_record(job.values, ctx, folder, start, write=dist.main)
        with StopRequest() as stop:
            try:
                run_and_record(JobStart(job, ctx, folder, start, record, stop, dist, began))
            finally:
                folder.release()
        if record.status == RunStatus.interrupted:
            stop.submitit_requeue()  # under submitit: requeued, and this process exits
        return record
    finally:
        shutdown(dist)


def claim(folder: RunFolder, values: dict, dist: Dist) -> tuple[Start | None, Exception | None]:
    """Take the folder and decide how this job starts in it: rank 0 decides, every rank
    follows (a resuming rank reads the checkpoint itself)."""
    start, problem = None, None
    if dist.main:
        try:
            folder.acquire()
            start = plan_start(folder, values)
        except (RunFolderError, CheckpointError) as err:
            folder.release()
            problem = err
    if not dist.active:
        return start, problem
    kind, message = dist.broadcast(
        (start.kind.value if start else None, str(problem) if problem else None)
    )
    if message is not None:
        return None, problem or RunFolderError(message)
    if dist.main:
        return start, None
    kind = StartKind(kind)
    checkpoint = load_checkpoint(folder.checkpoint) if kind is StartKind.resume else None
    keeps_record = kind in (StartKind.resume, StartKind.keep)
    return Start(kind, folder.previous_record() if keeps_record else None, checkpoint), None


def not_run(problem: Exception, ctx: JobContext) -> RunRecord:
    """A folder this job cannot train in: a single run raises, a sweep's job says so and
    returns a failed record (written nowhere: the folder is not this job's)."""
    if not ctx.multirun:
        raise problem
    log.warning(f"job {ctx.job_num}: not run: {problem}")
    return RunRecord(
        run_id=f"{ctx.sweep_id}-{ctx.job_num}",
        status=RunStatus.failed,
        error=str(problem),
        run_dir=str(ctx.run_dir),
    )


def run_and_record(run: JobStart) -> None:
    """Train and fill the record with how it ended; the record is written last, whatever
    happened (a single run then re-raises its error)."""
    record, dist = run.record, run.dist
    try:
        run.trackers = Trackers(run.folder, run.job.logger.wandb, run.ctx.multirun, dist.main)
        with (share := cpu_share(run)) as threads:
            record.status, record.metrics = build_and_train(run, threads)
        record.env["cpu_wait_s"] = round(share.waited_s, 3)  # within wall_s: queued, not run
        record.metrics["wall_s"] = time.perf_counter() - run.began  # this start of the job
        if record.status == RunStatus.interrupted:
            steps = record.metrics.get("steps")
            record.error = f"stopped by {run.stop.name} at step {steps}, checkpoint written"
    except SharingNotApplicable as err:
        record.status, record.error = RunStatus.skipped, str(err)
        if not run.ctx.multirun:
            record.status = RunStatus.failed
            raise
    except Exception as err:
        record.status, record.error = RunStatus.failed, f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc()
        if not run.ctx.multirun:
            raise
    finally:
        record.finished_at = _now()
        try:
            if run.trackers is not None:
                run.trackers.finish(record, run.decoded)
        finally:
            if dist.main:
                run.folder.write_decoded(run.decoded)
                run.folder.write_record(record)


def new_record(values: dict, ctx: JobContext) -> RunRecord:
    strategies = (values.get("sharing") or {}).get("strategies") or []
    return RunRecord(
        run_id=f"{ctx.sweep_id}-{ctx.job_num}",
        experiment=ctx.experiment,
        sweep_id=ctx.sweep_id,
        job_num=ctx.job_num,
        task=(values.get("task") or {}).get("name", "unknown"),
        model=ctx.choices.get("model", "custom"),
        sharing=strategy_label(strategies),
        seed=(values.get("trainer") or {}).get("seed"),
        config=values,
        run_dir=str(ctx.run_dir),
        started_at=_now(),
    )


def begin_record(
    values: dict, ctx: JobContext, folder: RunFolder, start: Start, write: bool = True
) -> RunRecord:
    """The record this start of the job writes first, which marks the folder `running`:
    the previous one continued for a resume, a new one otherwise (a rerun's previous files
    removed). Other ranks than 0 build it without writing anything."""
    resume = start.kind is StartKind.resume
    if not write:
        return start.previous if resume else new_record(values, ctx)
    if resume:
        record = start.previous
        folder.cut_history(history_rows(start.checkpoint))
        record.resumes.append({"from_step": start.step, "at": _now(), **process_identity()})
        record.status, record.error, record.traceback = RunStatus.running, None, None
        record.finished_at = None
    else:
        folder.clear_attempt()
        record = new_record(values, ctx)
        if start.previous is not None:
            record.attempt = start.previous.attempt + 1
    record.host, record.pid = socket.gethostname(), os.getpid()
    folder.write_record(record)
    return record


def cpu_share(run: JobStart) -> CpuShare:
    """This job's claim on the host's CPUs (tiedharness/host.py): a fair share, or
    trainer.num_threads, or for a resumed run the count it was recorded with (its numbers
    then go on as if never stopped)."""
    resumed = run.start.kind is StartKind.resume
    recorded = (run.start.previous.env or {}).get("threads") if resumed else None
    return CpuShare(
        run.ctx.run_dir,
        fixed=run.job.trainer.num_threads or recorded,
        parallel_jobs=max(run.ctx.parallel_jobs, run.dist.local_world),
        wait=not run.dist.active,
        say=run.ctx.say if run.ctx.speaks else log.warning,
    )


def build_and_train(run: JobStart, threads: int) -> tuple[RunStatus, dict]:
    """Build, measure costs, train (from the checkpoint of a resumed run) on `threads` CPU
    threads, evaluate; fills the record's env, data, params and budgets and returns the
    status and metrics."""
    job, record, dist, say = run.job, run.record, run.dist, run.ctx.say
    cfg = job.trainer
    device = job_device(cfg.device, dist.local_rank if dist.active else None)
    reset_peak_memory(device)
    record.env = environment(device, threads, dist.world)
    say(f"building the data of task {job.task.name} (or reading it from the cache)…")
    _, data, model = build(job)  # seeds torch and Python's random right before the model
    record.data = data_summary(data)
    record.params = count_params(model, job.sharing.name).to_dict()
    say(
        f"{len(data.splits['train']):,} training examples; model with "
        f"{record.params['total']:,} parameters (sharing: {record.sharing})"
    )
    run.trackers.start(record)
    if dist.main:  # once more, with what the job built and the W&B run id
        run.folder.write_record(record)

    def write_checkpoint(checkpoint: dict) -> None:
        save_checkpoint(run.folder.checkpoint, checkpoint)

    session = TrainingSession(
        model, data, cfg, run.trackers, write_checkpoint, device=device, dist=dist
    )
    if cfg.profile:
        say("measuring the output layer's share of a training step (cached per shape)…")
    metrics = session.costs(cache_root(job.task.cache_dir) / "costs")
    if run.start.kind is StartKind.resume:
        say(f"resuming from the checkpoint at step {run.start.step}")
    reporter = trial_reporter() if dist.main else None  # a pruned search's trial
    trained = session.run(
        lambda: bool(run.stop),
        resume_from=run.start.checkpoint if run.start.kind is StartKind.resume else None,
        progress=run.ctx.speaks,
        say=say,
        on_validation=reporter,
    )
    if trained.outcome is Outcome.pruned and reporter is not None:  # rank 0's record says why
        record.error = reporter.reason()
    metrics.update(trained.metrics)
    record.budgets, run.decoded = trained.budgets, trained.decoded
    utilisation, record.env["peak_flops_source"] = model_flops_utilisation(
        metrics, device, cfg.precision, threads, dist.world
    )
    metrics.update(utilisation)
    metrics["peak_mem_mb"] = peak_memory_mb(device)
    return RunStatus(trained.outcome.value), metrics


def data_summary(data: TaskData) -> dict:
    """What a run record keeps of its data: overlap, padding, vocabulary, examples, and
    for a translation task sacreBLEU's signatures of its scores."""
    summary = {k: data.stats[k] for k in ("overlap", "padding_fraction", "vocab")}
    summary["examples"] = {k: v["examples"] for k, v in data.stats["splits"].items()}
    if "bleu" in data.task.scores:  # how its BLEU and chrF are computed, for this target
        summary["signatures"] = signatures(data.task.bleu_tokenizer())
    return summary
