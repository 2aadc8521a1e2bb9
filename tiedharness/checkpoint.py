"""A run's checkpoint: everything a resumed run needs, and the accessors that read it.

What it holds (format 1): the trainer's state (`training/state.py`: model with each tied
tensor once, optimizer, schedule, step and token counters, data-order position, loss
window, RNG states, budget branches), the job's evaluation curve (for convergence), and
how many lines of the run's history had been written, so a resumed run cuts the history
back to that point. Resume (tiedharness/job.py) and tiedharness-eval read it only through
the accessors below. It is written to a temporary file and renamed, so a kill mid-write
leaves the previous checkpoint whole, and read with `weights_only=True`: only tensors and
plain containers. Where it lies is the run folder's business (tracking/run_folder.py). The
contract: docs/run-record.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tiedharness.atomic import write_atomic

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and the fix."""


def make_checkpoint(trainer: dict, curve: list, history_rows: int) -> dict:
    """The checkpoint of a trainer state, its validation curve and the history's length."""
    return {"trainer": trainer, "curve": curve, "history_rows": history_rows}


def trainer_state(checkpoint: dict) -> dict:
    return checkpoint["trainer"]


def model_state(checkpoint: dict) -> dict:
    """The model's state dict (each tied tensor once)."""
    return checkpoint["trainer"]["model"]


def checkpoint_step(checkpoint: dict) -> int:
    """The optimizer step the checkpoint was written after."""
    return checkpoint["trainer"]["counters"]["step"]


def curve(checkpoint: dict) -> list[tuple[int, float]]:
    """The validation curve: (tokens, validation loss) points."""
    return [tuple(point) for point in checkpoint["curve"]]


def history_rows(checkpoint: dict) -> int:
    """Lines of the history written when the checkpoint was."""
    return checkpoint["history_rows"]


def save_checkpoint(path: Path, checkpoint: dict) -> Path:
    return write_atomic(
        Path(path), lambda f: torch.save({"format": FORMAT_VERSION, **checkpoint}, f), binary=True
    )


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at `path`, or None when there is none."""
    path = Path(path)
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
