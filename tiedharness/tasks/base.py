"""The task interface: a task turns its config into raw text splits; everything after
that (tokenizers, encoding, caching, batching, statistics) is shared, in `data.py`.

A task is a registered `Task` subclass with a config dataclass (its schema: every option
and its default, registered with Hydra by tiedharness/config.py) and `conf/task/<name>.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tiedharness.schema import Choice, coerce_choices, from_values, require, require_positive

SPLITS = ("train", "valid", "test")

# seq2seq tasks give (source, target) pairs; LM tasks give lines of text.
Pair = tuple[str, str]
RawSplits = dict[str, list[Pair]] | dict[str, list[str]]


class VocabMode(Choice):
    joint = "joint"  # one tokenizer for both sides (needed by encdec_vocab, three_way)
    separate = "separate"


class TokenizerKind(Choice):
    bpe = "bpe"
    word = "word"  # one token per whitespace-separated symbol


@dataclass
class TaskConfig:
    """Options every task has; a task's own config dataclass adds its knobs."""

    name: str = ""  # the task family (task=NAME sets it)
    vocab: VocabMode = VocabMode.joint  # one tokenizer for both sides (joint) or one per side
    # joint: its size; null: the two separate vocabularies' sizes (as trained) added up.
    # Separate: each side's size, unless src/tgt_vocab_size are set.
    vocab_size: int | None = 8000
    src_vocab_size: int | None = None  # source vocabulary when separate (default: vocab_size)
    tgt_vocab_size: int | None = None  # target vocabulary when separate (default: vocab_size)
    tokenizer: TokenizerKind = TokenizerKind.bpe  # bpe (subwords) or word (one token per symbol)
    max_len: int = 256  # longer examples (in tokens, specials included) are dropped
    max_tokens: int = 4096  # batch budget: examples × longest side, padding included
    seed: int = 0  # data generation and splitting; training has its own seed
    cache_dir: str | None = None  # default: $TIEDHARNESS_CACHE or ~/.cache/tiedharness

    def __post_init__(self) -> None:
        coerce_choices(self, "task")
        require_positive(
            self, "task", "vocab_size", "src_vocab_size", "tgt_vocab_size", "max_len", "max_tokens"
        )

        require(
            self.vocab_size is not None
            or (self.src_vocab_size is not None and self.tgt_vocab_size is not None),
            "task.vocab_size",
            None,
            "null sizes a joint vocabulary from the two sides: set task.src_vocab_size "
            "and task.tgt_vocab_size too, or give task.vocab_size a number",
        )

    def side_vocab_sizes(self) -> tuple[int, int]:
        return (self.src_vocab_size or self.vocab_size, self.tgt_vocab_size or self.vocab_size)


@dataclass
class LMConfig(TaskConfig):
    """Options of language-modelling tasks: the text is cut into windows."""

    block_size: int = 128  # tokens per training sequence, cut from the running text

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "task", "block_size")
        require(
            self.vocab_size is not None, "task.vocab_size", None, "a language model needs a number"
        )


class Task:
    """Subclasses set `name`, `kind` and `Config`, and implement `load`."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "seq2seq" | "lm"
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    # quality scores of decoded outputs: "exact_match" and/or "bleu" (BLEU and chrF)
    scores: ClassVar[tuple[str, ...]] = ()
    # BPE pre-splits Han characters and kana runs (Chinese and Japanese have no spaces)
    splits_cjk: ClassVar[bool] = False

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def load(self) -> RawSplits:
        """Raw text for each of SPLITS (test may be empty)."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What besides the config decides the data (input files, their versions).
        It goes into the cache key."""
        return {}

    def longest_sequence(self) -> tuple[str, int]:
        """The most tokens a sequence of this task can have, and the setting that bounds
        it (what a model's max_len must hold)."""
        if self.kind == "lm":
            return "task.block_size", self.cfg.block_size
        return "task.max_len", self.cfg.max_len

    def to_target_text(self, text: str) -> str:
        """Map detokenized target-side text back to how references are written
        (e.g. undo a script shift) before scoring."""
        return text

    def bleu_tokenizer(self) -> str | None:
        """sacreBLEU's tokenizer for the target side (None: no BLEU, chrF only)."""
        return "13a"

    def side_names(self) -> tuple[str, str]:
        """The file suffixes of the two sides when the text is exported (`export_pairs`)."""
        return "src", "tgt"

    @classmethod
    def catalogue(cls) -> str | None:
        """What the task can read, as a table (`tiedharness-data catalogue=true`)."""
        return None


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def task_schema(name: str) -> TaskConfig:
    """The registered task's config with its defaults (its `name` filled in)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name].Config(name=name)


def make_task(config: TaskConfig | dict[str, Any]) -> Task:
    """A task from its config object, or from a dict of options (typos rejected by name)."""
    if isinstance(config, dict):
        config = from_values(task_schema(config.get("name", "")), config)
    return TASKS[config.name](config)
