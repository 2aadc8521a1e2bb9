"""What the jobs on one host settle among themselves: their share of its CPUs, and the
run folder the ranks of one torchrun run share.

**The CPUs**, shared fairly between the tiedharness jobs running on the host.

torch takes every core it may use. Two processes doing so on one machine (two sweeps, or
two processes resuming one sweep) each get a fraction of a core per thread and OpenMP's
spinning threads slow both far below one-after-the-other. So a job claims its threads in
a registry of running jobs (one small JSON file per job under a lock): a fair share of
this process's CPUs among the jobs running or waiting there, never more than are free. A
job that finds every CPU taken waits, first come first served, until one is free.

A run keeps one count from its first step to its last and records it (`env.threads`); a
resumed run claims the count it was recorded with. torch's CPU kernels round differently
with different counts (1 vs 2 threads: the quick cell's training loss 1.8e-4 apart after
80 steps), so `trainer.num_threads=<env.threads>` is what repeats a run exactly.

The registry is per user and per host (`$TIEDHARNESS_CPU_REGISTRY`, default
`<tmp>/tiedharness-cpus-<uid>`): on a cluster it must not sit on a shared filesystem, whose
locks and process ids are not this host's.

**The torchrun hand-off**: every rank of a torchrun run resolves the run folder's name
from its own clock; rank 0 creates the folder and marks it with the run's id, and the
other ranks wait for that mark and train in the folder it is in (`new_folder`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tiedharness.tracking.run_folder import RunFolder

POLL_S = 0.5


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


def new_folder(path: str) -> str:
    """`path`, created by this call; when another run or sweep created it first, the
    first free of `path-2`, `path-3`, … (the `th.new_folder` resolver of conf/train.yaml,
    cached by OmegaConf, so a sweep resolves it once). The ranks of one torchrun run
    share rank 0's folder (it leaves the run's id in it)."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidates = (
        base if n == 1 else base.with_name(f"{base.name}-{n}") for n in itertools.count(1)
    )
    run_id = (
        os.environ.get("TORCHELASTIC_RUN_ID") if int(os.environ.get("WORLD_SIZE", 1)) > 1 else None
    )
    if run_id and os.environ.get("RANK", "0") != "0":
        return str(torchrun_folder(base, run_id))
    for candidate in candidates:
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        if run_id:
            RunFolder(candidate).mark_torchrun(run_id)
        return str(candidate)
    raise AssertionError("unreachable")


def torchrun_folder(base: Path, run_id: str, timeout_s: float = 300) -> Path:
    """The folder rank 0 of torchrun run `run_id` created next to `base` (its time stamp
    may be another second's: each rank reads the clock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := RunFolder.torchrun_folder(base.parent, run_id):
            return found
        time.sleep(0.1)
    raise RuntimeError(f"rank 0 of torchrun run {run_id} created no folder in {base.parent}")


def registry_dir() -> Path | None:
    """Where the host's claims are kept; None (`TIEDHARNESS_CPU_REGISTRY=none`): nowhere,
    each job takes its share of this process's CPUs as if it were alone."""
    configured = os.environ.get("TIEDHARNESS_CPU_REGISTRY", "")
    if configured.lower() == "none":
        return None
    if configured:
        return Path(configured).expanduser()
    return Path(tempfile.gettempdir()) / f"tiedharness-cpus-{os.getuid()}"


def proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (Linux): state, parent, …; None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid it names one
    process, not a later one that reused the number."""
    stat = proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


@dataclass
class Claim:
    """One job's entry: how many threads it runs with (or wants, while waiting)."""

    pid: int
    started: str | None  # the process's start time: see process_start
    threads: int
    waiting_since: float | None  # seconds since the epoch; None once it runs
    run_dir: str

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        stat = proc_stat(self.pid)
        if stat is None:  # no /proc: the signal's answer is all there is
            return True
        return stat[0] != "Z" and self.started in (None, stat[19])  # Z: ended, not yet reaped

    def ahead_of(self, mine: Claim) -> bool:
        """Whether this claim's threads are spoken for before `mine` may start: it runs, or
        it waits since before `mine` did."""
        if self.waiting_since is None:
            return True
        return mine.waiting_since is not None and self.waiting_since < mine.waiting_since


class CpuRegistry:
    """The host's running and waiting jobs, one `<pid>-<n>.json` file each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.path / "registry.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def others(self, mine: Path) -> list[Claim]:
        """Every live claim but `mine`; the files of ended processes are removed."""
        claims = []
        for file in self.path.glob("*.json"):
            if file == mine:
                continue
            try:
                claim = Claim(**json.loads(file.read_text()))
            except (OSError, ValueError, TypeError):
                claim = None  # half-written by a process that died: stale
            if claim is not None and claim.alive():
                claims.append(claim)
            else:
                file.unlink(missing_ok=True)
        return claims

    def write(self, file: Path, claim: Claim) -> None:
        part = file.with_suffix(".part")
        part.write_text(json.dumps(asdict(claim)))
        part.replace(file)


def omp_limit() -> int | None:
    """A user's OMP_NUM_THREADS: a job's share never exceeds it."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else None


def free_cpus(cpus: int, others: list[Claim], mine: Claim) -> int:
    """The CPUs not spoken for by the claims ahead of `mine`."""
    return cpus - sum(c.threads for c in others if c.ahead_of(mine))


class CpuShare:
    """`with CpuShare(...) as threads:` — the job's claim, held while the job trains.

    `fixed` (trainer.num_threads, or a resumed run's recorded count) is claimed as it is,
    once that many CPUs are free. `wait=False` (the ranks of one data-parallel job, which
    wait for each other) takes a share at once even where that oversubscribes."""

    def __init__(
        self,
        run_dir: Path,
        *,
        fixed: int | None = None,
        parallel_jobs: int = 1,
        wait: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        path = registry_dir()
        self.registry = CpuRegistry(path) if path else None
        self.file = (path or Path()) / f"{socket.gethostname()}-{os.getpid()}-{id(self)}.json"
        self.fixed, self.parallel_jobs, self.wait, self.say = fixed, parallel_jobs, wait, say
        self.claim = Claim(os.getpid(), process_start(os.getpid()), 1, time.time(), str(run_dir))
        self.waited_s = 0.0

    def __enter__(self) -> int:
        cpus, began, told = available_cpus(), time.monotonic(), False
        while self.registry is not None:
            with self.registry.locked():
                others = self.registry.others(self.file)
                threads = self.grant(cpus, others)
                if threads is not None or not self.wait:
                    self.claim.threads = threads or self.claim.threads
                    self.claim.waiting_since = None
                self.registry.write(self.file, self.claim)  # running, or queued with its wish
            if self.claim.waiting_since is None:
                break
            if not told:
                self.say(waiting_line(cpus, others))
                told = True
            time.sleep(POLL_S)
        if self.registry is None:
            self.claim.threads = self.grant(cpus, []) or 1
        self.waited_s = time.monotonic() - began
        import torch  # here, not at import: the command line reads this module first

        torch.set_num_threads(self.claim.threads)
        return self.claim.threads

    def grant(self, cpus: int, others: list[Claim]) -> int | None:
        """The threads this job may start with now (None: not yet); its claim holds its
        wish meanwhile. The wish is the fixed count, or a fair share: this process's CPUs
        divided among all claims (at least among the jobs its launcher runs side by side),
        no more than OMP_NUM_THREADS; a share shrinks to the free CPUs, a fixed count waits."""
        share = max(1, cpus // max(len(others) + 1, self.parallel_jobs))
        self.claim.threads = self.fixed or min(share, omp_limit() or share)
        free = free_cpus(cpus, others, self.claim)
        if self.fixed is not None:
            return self.fixed if free >= min(self.fixed, cpus) else None
        return min(self.claim.threads, free) if free >= 1 else None

    def __exit__(self, *exc: object) -> None:
        if self.registry is None:
            return
        with self.registry.locked():
            self.file.unlink(missing_ok=True)


def waiting_line(cpus: int, others: list[Claim]) -> str:
    running = [c for c in others if c.waiting_since is None]
    pids = ", ".join(str(c.pid) for c in running[:4]) + (" …" if len(running) > 4 else "")
    return (
        f"waiting for a CPU: the {cpus} this job may use are taken by {len(running)} other "
        f"tiedharness job(s) on this host (pid {pids}); it starts when one ends "
        f"(TIEDHARNESS_CPU_REGISTRY=none: start now, sharing nothing)"
    )
