"""The task interface: a task turns its config into raw text splits; everything after
that (tokenizers, encoding, caching, batching, statistics) is shared, in `data.py`.

A task is a registered `Task` subclass with a config dataclass and `conf/task/<name>.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tiedharness.config import reject_unknown

SPLITS = ("train", "valid", "test")

# seq2seq tasks give (source, target) pairs; LM tasks give lines of text.
Pair = tuple[str, str]
RawSplits = dict[str, list[Pair]] | dict[str, list[str]]


@dataclass
class TaskConfig:
    """Options every task has; a task's own config dataclass adds its knobs."""

    name: str = ""
    vocab: str = "joint"  # joint (one tokenizer for both sides) | separate
    vocab_size: int = 8000  # per side when separate, unless src/tgt_vocab_size are set
    src_vocab_size: int | None = None
    tgt_vocab_size: int | None = None
    tokenizer: str = "bpe"  # bpe | word (whitespace-separated symbols)
    max_len: int = 256  # longer examples (in tokens, specials included) are dropped
    max_tokens: int = 4096  # batch budget: examples × longest side, padding included
    seed: int = 0  # data generation and splitting; training has its own seed
    cache_dir: str | None = None  # default: $TIEDHARNESS_CACHE or ~/.cache/tiedharness

    def __post_init__(self) -> None:
        if self.vocab not in ("joint", "separate"):
            raise ValueError(f"task.vocab={self.vocab!r} is not one of joint, separate")
        if self.tokenizer not in ("bpe", "word"):
            raise ValueError(f"task.tokenizer={self.tokenizer!r} is not one of bpe, word")

    def side_vocab_sizes(self) -> tuple[int, int]:
        return (self.src_vocab_size or self.vocab_size, self.tgt_vocab_size or self.vocab_size)


class Task:
    """Subclasses set `name`, `kind` and `Config`, and implement `load`."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "seq2seq" | "lm"
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    # quality scores of decoded outputs: "exact_match" and/or "bleu" (BLEU and chrF)
    scores: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def load(self) -> RawSplits:
        """Raw text for each of SPLITS (test may be empty)."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What besides the config decides the data (input files, their versions).
        It goes into the cache key."""
        return {}

    def to_target_text(self, text: str) -> str:
        """Map detokenized target-side text back to how references are written
        (e.g. undo a script shift) before scoring."""
        return text


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def make_task(values: dict[str, Any]) -> Task:
    """A task from its config dict (the `task` group), with clear errors for typos."""
    name = values.get("name")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    reject_unknown(f"task {name}", values, cls.Config)
    return cls(cls.Config(**values))
