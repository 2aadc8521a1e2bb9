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
    project: str = "tiedharness"  # W&B project the runs go to
    entity: str | None = None  # W&B team or user; null: your default entity
    tags: list[str] = field(default_factory=list)  # extra tags (task, strategy and model are added)
    # upload the final checkpoint.pt as a W&B model artifact (type `model`)
    log_checkpoint: bool = False
    # W&B's own console lines (sync progress, run summary); off: one line per run instead
    verbose: bool = False

    def __post_init__(self) -> None:
        coerce_choices(self, "logger.wandb")


@dataclass
class LoggerConfig:
    """Local files (run.json, history.jsonl) are always written; W&B when `wandb` is set."""

    wandb: WandbConfig | None = None
