"""A trainer's state as plain tensors and containers: what a checkpoint holds of it, and
what a budget branch keeps of the main run at its fork.

`core_state` is the training state proper (model with each tied tensor once, optimizer,
counters, data-order position, loss window, RNG streams); `trainer_state_dict` adds the
budget branches, so a run checkpointed inside a branch resumes inside it, bit for bit on
the CPU. The functions take the trainer (loop.py's `Trainer`) by its attributes.
"""

from __future__ import annotations

import random
from typing import Any

import torch

# The trainer's counters a state holds (the loop's position in its budget and data).
COUNTERS = ("step", "tokens", "epoch", "batch_in_epoch", "train_s")


def trainer_state_dict(trainer: Any) -> dict:
    """Everything a resumed run needs to continue exactly where `trainer` stopped."""
    return {**core_state(trainer), "branches": trainer.branches.state_dict()}


def load_trainer_state(trainer: Any, state: dict) -> None:
    load_core_state(trainer, state)
    trainer.branches.load_state_dict(state["branches"])


def core_state(trainer: Any) -> dict:
    """The training state proper: what a budget branch keeps of the main run."""
    if trainer.cfg.fsdp:
        from tiedharness.training.sharding import full_state

        model, optimizer = full_state(trainer.model, trainer.optimizer)
    else:
        model, optimizer = trainer.model.state_dict(), trainer.optimizer.state_dict()
    return {
        "model": model,
        "optimizer": optimizer,
        "counters": {name: getattr(trainer, name) for name in COUNTERS},
        "window": list(trainer.window),
        "pending": [float(x) for x in trainer.pending],  # step losses not yet logged
        "train_loss": trainer.train_loss,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        },
    }


def load_core_state(trainer: Any, state: dict) -> None:
    if trainer.cfg.fsdp:
        from tiedharness.training.sharding import load_full_state

        load_full_state(trainer.model, trainer.optimizer, state)
    else:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    for name, value in state["counters"].items():
        setattr(trainer, name, value)
    trainer.window, trainer.train_loss = list(state["window"]), state["train_loss"]
    trainer.pending = [torch.tensor(x, device=trainer.device) for x in state["pending"]]
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate(state["rng"]["python"])
