"""A run's checkpoint: `checkpoint.pt` in its folder, everything a resumed run needs.

What it holds (format 1): the trainer's state (`Trainer.state_dict`: model with each tied
tensor once, optimizer, schedule, step and token counters, data-order position, loss
window, RNG states), the job's evaluation curve (for convergence), and how many lines of
`history.jsonl` had been written, so a resumed run cuts the history back to that point.
It is written to a temporary file and renamed, so a kill mid-write leaves the previous
checkpoint whole, and read with `weights_only=True`: only tensors and plain containers.
The contract: docs/run-record.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and the fix."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    path = checkpoint_path(run_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{CHECKPOINT_FILE}.", dir=run_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())  # on a cluster file system, durable before the rename
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a cluster's other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint in `run_dir`, or None when there is none."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    fix = f"delete {path} to train this run from the start"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"unreadable checkpoint {path} ({err}); {fix}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} has format {found!r}, this tiedharness reads "
            f"{FORMAT_VERSION}; {fix}, or resume it with the tiedharness that wrote it"
        )
    return state
