"""Schemas of the `logger` config group and of the `report` block: what a run logs, and
what its study's report treats as confirmatory (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from tiedharness.schema import Choice, coerce_choices, require


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


class Metric(Choice):
    loss = "loss"
    bpc = "bpc"
    bleu = "bleu"
    chrf = "chrf"
    exact_match = "exact_match"


class Endpoint(Choice):
    final = "final"  # the whole budget
    best = "best"  # each run at its own best budget (lowest validation loss)


@dataclass
class Comparison:
    """A comparison a study declares: `arm` against its cell's baseline (`none`, or
    `none@separate` on the vocabulary axis), Δ of `metric` on the test split."""

    arm: str = (
        MISSING  # a label as the report prints it: embed_output, qk+mask_self, three_way@joint
    )
    metric: Metric = Metric.loss
    endpoint: Endpoint = Endpoint.final
    # the cells it is read in, by their keys (task, task.overlap, task.src, …); {}: every cell
    where: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        coerce_choices(self, "report.primary")


@dataclass
class Contrast:
    """An interaction: Δ(first) − Δ(second), e.g. one arm at overlap 1 and at overlap 0,
    or on DE → EN and on ZH → EN. Both sides read the same metric at the same endpoint."""

    name: str = MISSING
    first: Comparison = field(default_factory=Comparison)
    second: Comparison = field(default_factory=Comparison)
    primary: bool = True  # a claim the study makes: corrected with the primary comparisons

    def __post_init__(self) -> None:
        same = (self.first.metric, self.first.endpoint) == (
            self.second.metric,
            self.second.endpoint,
        )
        require(
            same, f"report.contrasts.{self.name}", "", "both sides need one metric and endpoint"
        )


@dataclass
class ReportConfig:
    """What a study's report treats as its confirmatory tests (docs/reports.md): Holm's
    correction runs over every cell a primary comparison is read in, and every primary
    contrast; the rest is exploratory."""

    primary: list[Comparison] = field(default_factory=list)
    contrasts: list[Contrast] = field(default_factory=list)
    # a Δ whose change between the last two budgets lies, with its 95% interval, within
    # this (in the metric's units) is `stable`
    stable_tolerance: dict[str, float] = field(
        default_factory=lambda: {
            "loss": 0.02,
            "bpc": 0.02,
            "bleu": 0.5,
            "chrf": 0.5,
            "exact_match": 0.01,
        }
    )
