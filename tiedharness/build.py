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
    cache) and the model with its ties. The model's initial weights come from torch's
    RNG as it stands: seed it first for a repeatable model."""
    from tiedharness.model.sharing import build_model  # torch and tokenizers load here
    from tiedharness.tasks.data import build_task

    task = make_task(job.task)
    model_cfg = job.model_for(task)  # fails on a model that cannot hold the task
    data = build_task(task)
    return Built(task, data, build_model(model_cfg, data.vocab, job.sharing))
