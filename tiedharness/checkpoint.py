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

from pathlib import Path

import torch

from tiedharness.atomic import write_atomic

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and the fix."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    return write_atomic(
        checkpoint_path(run_dir),
        lambda f: torch.save({"format": FORMAT_VERSION, **state}, f),
        binary=True,
    )


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
