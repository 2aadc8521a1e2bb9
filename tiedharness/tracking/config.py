"""Schema of the `logger` config group (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiedharness.schema import Choice, coerce_choices


class WandbMode(Choice):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbConfig:
    mode: WandbMode | None = None  # null: online with an API key (or $WANDB_MODE), else offline
    project: str = "tiedharness"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        coerce_choices(self, "logger.wandb")


@dataclass
class LoggerConfig:
    """Local files (run.json, history.jsonl) are always written; W&B when `wandb` is set."""

    wandb: WandbConfig | None = None
