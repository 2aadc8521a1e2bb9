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

The schema nodes are not options: the commands refuse `sharing=schema` and leave them out
of `--help` and tab completion (tiedharness/cli/help.py), and refuse an unknown key with or
without `+`. Composition then rejects unknown keys, wrong types and choices outside an enum, naming
the key; the value checks run when `JobConfig.from_config` builds the objects, which
every job does before it builds any data.

`tiedharness-params` and `tiedharness-data` put a root schema first in their primary
config (`params_schema`: ParamsConfig, `data_schema`: DataConfig), so their own keys
(`format`, the vocabulary sizes) are typed and checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from tiedharness.model.config import Arch, ModelConfig, SharingConfig
from tiedharness.schema import Choice, from_values
from tiedharness.tasks import TASKS, Task, TaskConfig, task_schema
from tiedharness.tracking.config import LoggerConfig, ReportConfig
from tiedharness.training.config import TrainerConfig

GROUP_SCHEMAS = {
    "model": ModelConfig,
    "sharing": SharingConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
}


class OutputFormat(Choice):
    table = "table"
    json = "json"


@dataclass
class ParamsConfig:
    """Root of `tiedharness-params` (conf/params.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sharing: SharingConfig | None = None  # unset: report every strategy
    vocab_size: int = 8000  # one joint vocabulary for both sides
    src_vocab_size: int | None = None  # set both of these for separate vocabularies
    tgt_vocab_size: int | None = None  # the target side's, with src_vocab_size
    format: OutputFormat = OutputFormat.table  # table: one row a strategy; json: an object


@dataclass
class DataConfig:
    """Root of `tiedharness-data` (conf/data.yaml)."""

    task: Any = MISSING  # each task's own schema (conf/task/)
    format: OutputFormat = OutputFormat.table  # table: one row a split; json: an object
    catalogue: bool = False  # print what the task can read (bible_pair: its translations)
    # a folder: write the splits' text there, as task=parallel_text reads it
    export: str | None = None


ROOT_SCHEMAS = {"params_schema": ParamsConfig, "data_schema": DataConfig}


def register_schemas() -> None:
    """Store every group's schema, and the commands' root schemas, in Hydra's
    ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)
    for name in TASKS:
        store.store(group="task", name=f"schema_{name}", node=task_schema(name))
    for name, schema in ROOT_SCHEMAS.items():
        store.store(name=name, node=schema)


@dataclass
class JobConfig:
    """The composed config as objects: each group's schema, with its checks run, and the
    whole config as plain resolved values (`values`: what the run record keeps, and what
    tells whether a folder holds the same run)."""

    task: TaskConfig
    model: ModelConfig
    sharing: SharingConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    report: ReportConfig = field(default_factory=ReportConfig)  # read by the study's report
    values: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: DictConfig | dict) -> JobConfig:
        """Each group merged onto its schema (a composed config already is; a plain dict
        is checked the same way) and built, which runs the value checks. Interpolations
        are resolved against the whole config first (a cell's `${scale.…}`): merged alone
        onto its schema, a group could not see them. ValueError names a bad value."""
        values = OmegaConf.to_container(OmegaConf.create(config), resolve=True, enum_to_str=True)
        schemas = {"task": task_schema(values["task"]["name"]), **GROUP_SCHEMAS}
        groups = {group: from_values(schema, values[group]) for group, schema in schemas.items()}
        # checked here, so that a typo fails before training, not when the study reports
        report = from_values(ReportConfig, values.get("report"))
        return cls(**groups, report=report, values=values)

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
