"""The config layer: each group's schema registered with Hydra, and a job's whole config
as objects (`JobConfig`). Torch-free.

Each group's options in `conf/<group>/` start from the group's schema (`defaults:
[schema, _self_]`; a task's from `schema_<task name>`) and hold only what differs from
it, so every default is written once, in its dataclass:

| group     | schema                                            |
|-----------|---------------------------------------------------|
| `task`    | each task's Config (tiedharness/tasks/*.py)       |
| `model`   | ModelConfig (tiedharness/model/config.py)         |
| `sharing` | SharingConfig (tiedharness/model/config.py)       |
| `trainer` | TrainerConfig (tiedharness/training/config.py)    |
| `logger`  | LoggerConfig (tiedharness/tracking/config.py)     |

Composition then rejects unknown keys, wrong types and choices outside an enum, naming
the key; the value checks run when `JobConfig.from_config` builds the objects, which
every job does before it builds any data.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from tiedharness.model.config import Arch, ModelConfig, SharingConfig
from tiedharness.schema import from_values
from tiedharness.tasks import TASKS, Task, TaskConfig, task_schema
from tiedharness.tracking.config import LoggerConfig
from tiedharness.training.config import TrainerConfig

GROUP_SCHEMAS = {
    "model": ModelConfig,
    "sharing": SharingConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
}


def register_schemas() -> None:
    """Store every group's schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)
    for name in TASKS:
        store.store(group="task", name=f"schema_{name}", node=task_schema(name))


@dataclass
class JobConfig:
    """The composed config as objects: each group's schema, with its checks run."""

    task: TaskConfig
    model: ModelConfig
    sharing: SharingConfig
    trainer: TrainerConfig
    logger: LoggerConfig

    @classmethod
    def from_config(cls, config: DictConfig | dict) -> JobConfig:
        """Each group merged onto its schema (a composed config already is; a plain dict
        is checked the same way) and built, which runs the value checks."""
        schemas = {"task": task_schema(config["task"]["name"]), **GROUP_SCHEMAS}
        return cls(
            **{group: from_values(schema, config[group]) for group, schema in schemas.items()}
        )

    def model_for(self, task: Task) -> ModelConfig:
        """The model config with its architecture following the task, checked to hold
        the task's longest sequence."""
        cfg = self.model.resolved(Arch.lm if task.kind == "lm" else Arch.encdec)
        limit, longest = task.longest_sequence()
        if cfg.max_len < longest:
            raise ValueError(
                f"model.max_len={cfg.max_len} is shorter than the task's sequences "
                f"({limit}={longest}): raise model.max_len or lower {limit}"
            )
        return cfg


register_schemas()  # on import, so that every composition (the CLI's, a test's) sees them
