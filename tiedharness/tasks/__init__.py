"""Tasks: each module registers its task families. Importing this package is torch-free;
`tiedharness.tasks.data.build_task` turns a task config into tensors."""

from tiedharness.tasks import (  # noqa: F401  (registration)
    algorithmic,
    bible,
    bible_pair,
    files,
    synthetic,
)
from tiedharness.tasks.base import SPLITS, TASKS, Task, TaskConfig, make_task, task_schema

__all__ = ["SPLITS", "TASKS", "Task", "TaskConfig", "make_task", "task_schema"]
