"""Where a run computes: device choice, autocast, synchronisation, peak memory."""

from __future__ import annotations

import contextlib
import resource
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
