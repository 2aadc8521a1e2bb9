"""Tasks: each module registers its task families; `build_task` turns a config into data."""

from tiedharness.tasks import algorithmic, bible, files, synthetic  # noqa: F401  (registration)
from tiedharness.tasks.base import SPLITS, TASKS, Task, TaskConfig, make_task
from tiedharness.tasks.data import TaskData, build_task

__all__ = ["SPLITS", "TASKS", "Task", "TaskConfig", "TaskData", "build_task", "make_task"]
