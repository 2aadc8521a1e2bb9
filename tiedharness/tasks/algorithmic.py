"""Algorithmic sequence-to-sequence tasks, scored by exact match: copy and reverse.

Sequences are random strings over `n_symbols` symbols written as words ("s12 s3 s40"),
so the word-level tokenizer maps each symbol to one token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tiedharness.schema import require_positive
from tiedharness.tasks.base import SPLITS, Task, TaskConfig, TokenizerKind, register_task


@dataclass
class AlgorithmicConfig(TaskConfig):
    tokenizer: TokenizerKind = TokenizerKind.word  # one token per symbol
    vocab_size: int = 128  # room for every symbol plus the 4 special tokens
    n_symbols: int = 64  # the alphabet of the random strings
    min_len: int = 4  # shortest string, in symbols
    max_seq_len: int = 24  # symbols per sequence, before special tokens
    train_examples: int = 20000  # strings generated for training
    valid_examples: int = 500  # strings generated for validation
    test_examples: int = 500  # strings generated for test

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "task", "n_symbols", "train_examples", "valid_examples")
        if not 1 <= self.min_len <= self.max_seq_len:
            raise ValueError(
                f"task.min_len={self.min_len} and task.max_seq_len={self.max_seq_len} "
                "must satisfy 1 ≤ min_len ≤ max_seq_len"
            )
        if self.tokenizer == "word" and self.vocab_size < self.n_symbols + 4:
            raise ValueError(
                f"task.vocab_size={self.vocab_size} cannot hold {self.n_symbols} symbols and "
                f"4 special tokens: set task.vocab_size ≥ {self.n_symbols + 4}"
            )


class _Algorithmic(Task):
    kind = "seq2seq"
    Config = AlgorithmicConfig
    scores = ("exact_match",)
    cfg: AlgorithmicConfig

    def transform(self, symbols: list[str]) -> list[str]:
        raise NotImplementedError

    def longest_sequence(self) -> tuple[str, int]:
        """With word tokens a sequence is its symbols plus BOS or EOS (and longer ones are
        dropped at task.max_len)."""
        setting, longest = super().longest_sequence()
        if self.cfg.tokenizer == TokenizerKind.word and self.cfg.max_seq_len + 1 < longest:
            return "task.max_seq_len", self.cfg.max_seq_len + 1
        return setting, longest

    def load(self) -> dict[str, list[tuple[str, str]]]:
        """Distinct random sequences; no source appears in two splits."""
        c = self.cfg
        rng = random.Random(f"{self.name}:{c.seed}")
        sizes = {"train": c.train_examples, "valid": c.valid_examples, "test": c.test_examples}
        possible = sum(c.n_symbols**n for n in range(c.min_len, c.max_seq_len + 1))
        if sum(sizes.values()) > possible // 2:
            raise ValueError(
                f"{sum(sizes.values())} distinct sequences requested but only {possible} exist: "
                "raise task.n_symbols or task.max_seq_len, or ask for fewer examples"
            )
        seen: set[str] = set()
        splits: dict[str, list[tuple[str, str]]] = {}
        for split in SPLITS:
            pairs = []
            while len(pairs) < sizes[split]:
                length = rng.randint(c.min_len, c.max_seq_len)
                symbols = [f"s{rng.randrange(c.n_symbols)}" for _ in range(length)]
                source = " ".join(symbols)
                if source not in seen:
                    seen.add(source)
                    pairs.append((source, " ".join(self.transform(symbols))))
            splits[split] = pairs
        return splits


@register_task
class Copy(_Algorithmic):
    name = "copy"

    def transform(self, symbols: list[str]) -> list[str]:
        return symbols


@register_task
class Reverse(_Algorithmic):
    name = "reverse"

    def transform(self, symbols: list[str]) -> list[str]:
        return symbols[::-1]
