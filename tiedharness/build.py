"""A job's config turned into what it trains: the task, its data, the model.

The one place the sequence task → data → model is written; the job, tiedharness-eval, the
benchmarks and the tests all build through it, so they build the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from tiedharness.config import JobConfig
from tiedharness.tasks import Task, make_task

if TYPE_CHECKING:
    from tiedharness.model.transformer import Transformer
    from tiedharness.tasks.data import TaskData


class Built(NamedTuple):
    task: Task
    data: TaskData
    model: Transformer


def build(job: JobConfig) -> Built:
    """The task (its config checked against the model), its data (built, or read from the
    cache) and the model with its ties. torch and Python's `random` are seeded from
    `trainer.seed` right before the model is built, so its initial weights depend on the
    seed alone, never on what building the data drew (a cold cache trains tokenizers and
    generates examples, a warm one reads them)."""
    from tiedharness.model.sharing import build_model  # torch and tokenizers load here
    from tiedharness.tasks.data import build_task
    from tiedharness.training.device import seed_everything

    task = make_task(job.task)
    model_cfg = job.model_for(task)  # fails on a model that cannot hold the task
    data = build_task(task)
    seed_everything(job.trainer.seed, job.trainer.deterministic)
    return Built(task, data, build_model(model_cfg, data.vocab, job.sharing))
