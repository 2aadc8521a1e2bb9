"""Where a run computes: device choice, seeds, autocast, synchronisation,
peak memory, and the environment a run records."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import resource
import socket
import subprocess
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """`auto`: cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def job_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device a job trains on: `name` resolved, and under data parallelism on GPUs
    the rank's own GPU (`local_rank`)."""
    device = resolve_device(name)
    if local_rank is not None and device.type == "cuda":
        return torch.device("cuda", local_rank)
    return device


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


def process_identity() -> dict:
    """Where this process runs: enough to find its logs and its scheduler job (as squeue
    shows it: `<array job>_<task>` for a task of a job array)."""
    env = os.environ
    slurm = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        slurm = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm}


def environment(device: torch.device, threads: int, world_size: int = 1) -> dict:
    """What a run record's `env` holds: versions, device, threads, code, process."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": threads,
        "git_sha": git_sha(),
        **process_identity(),
        "world_size": world_size,
    }


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast when asked for (on CPU too); otherwise nothing."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start a job's peak-memory count: several jobs may share one process (a sweep on
    the basic launcher), and the peak must be this job's, not the process's lifetime's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: "5" resets the peak resident set (VmHWM); elsewhere the lifetime peak stays
    with contextlib.suppress(OSError):
        PROC_CLEAR_REFS.write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """The CUDA allocator's peak, or on CPU the peak resident set since the last
    `reset_peak_memory` (Linux; elsewhere the process's lifetime peak)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB → MiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB → MiB
