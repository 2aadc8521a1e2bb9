"""Encoded data in memory, and batches formed by token budget with length bucketing.

Sequences of a split live in one flat tensor with offsets (no per-example objects). A
batch holds as many examples of similar length as fit a budget of `max_tokens`, counted
as fairseq does: examples × the longest side, padding included. Batches are shuffled,
examples within them are not re-ordered, and every example lands in exactly one batch
per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tiedharness.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Packed:
    """Variable-length sequences: sequence i is data[offsets[i]:offsets[i + 1]]."""

    data: Tensor  # (total tokens,) int64
    offsets: Tensor  # (n + 1,) int64

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> Packed:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        data = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
        return cls(data, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __getitem__(self, i: int) -> Tensor:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def to_lists(self) -> list[list[int]]:
        return [self[i].tolist() for i in range(len(self))]


@dataclass
class EncodedSplit:
    """One split. seq2seq: source and target ids without special tokens. LM: `tgt`
    holds windows of block_size + 1 tokens and `src` is None."""

    src: Packed | None
    tgt: Packed

    def __len__(self) -> int:
        return len(self.tgt)

    def sizes(self) -> tuple[Tensor, Tensor]:
        """Model-side lengths per example (source with EOS, target with BOS/EOS)."""
        if self.src is None:
            lengths = self.tgt.lengths - 1  # input and output are the window shifted by one
            return torch.zeros_like(lengths), lengths
        return self.src.lengths + 1, self.tgt.lengths + 1


@dataclass
class Batch:
    src: Tensor | None  # (B, S) source + EOS, right-padded; None for an LM
    tgt_in: Tensor  # (B, T) BOS + target (seq2seq) or window[:-1] (LM)
    tgt_out: Tensor  # (B, T) target + EOS (seq2seq) or window[1:] (LM)
    indices: Tensor  # (B,) example indices in the split
    # predicted (non-pad) target tokens, counted on the host when the batch is built, so
    # that reading it never waits on a device
    target_tokens: int = -1

    def __post_init__(self) -> None:
        if self.target_tokens < 0:
            self.target_tokens = int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device | str, pin: bool = False) -> Batch:
        """On `device`; `pin` stages through pinned host memory so that the non-blocking
        copy to a GPU really overlaps."""

        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return (t.pin_memory() if pin else t).to(device, non_blocking=True)

        moved = (move(self.src), move(self.tgt_in), move(self.tgt_out))
        return Batch(*moved, self.indices, self.target_tokens)


def token_batches(
    src_sizes: Tensor, tgt_sizes: Tensor, max_tokens: int, shuffle: bool, seed: int = 0
) -> list[Tensor]:
    """Index batches whose `len × max(longest source, longest target)` ≤ max_tokens.

    Examples are sorted by (target, source) length — ties in random order when
    shuffling — and cut greedily, then the batch order is shuffled.
    """
    n = len(tgt_sizes)
    cost = torch.maximum(src_sizes, tgt_sizes)
    if n and int(cost.max()) > max_tokens:
        raise ValueError(
            f"an example of {int(cost.max())} tokens exceeds the batch budget "
            f"task.max_tokens={max_tokens}: raise task.max_tokens or lower task.max_len"
        )
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    order = order[torch.argsort(src_sizes[order], stable=True)]
    order = order[torch.argsort(tgt_sizes[order], stable=True)]
    batches, start, longest = [], 0, 0
    # costs as Python ints: indexing the tensor once per example made this loop 4x slower
    for pos, example_cost in enumerate(cost[order].tolist()):
        longest_with = max(longest, example_cost)
        if (pos - start + 1) * longest_with > max_tokens:
            batches.append(order[start:pos])
            start, longest_with = pos, example_cost
        longest = longest_with
    if start < n:
        batches.append(order[start:])
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def _pad(rows: list[Tensor]) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD_ID)


def collate(split: EncodedSplit, indices: Tensor) -> Batch:
    rows = [split.tgt[i] for i in indices.tolist()]
    if split.src is None:
        return Batch(None, _pad([r[:-1] for r in rows]), _pad([r[1:] for r in rows]), indices)
    bos, eos = torch.tensor([BOS_ID]), torch.tensor([EOS_ID])
    src = _pad([torch.cat([split.src[i], eos]) for i in indices.tolist()])
    return Batch(
        src,
        _pad([torch.cat([bos, r]) for r in rows]),
        _pad([torch.cat([r, eos]) for r in rows]),
        indices,
    )


def padding_fraction(src_sizes: Tensor, tgt_sizes: Tensor, batches: list[Tensor]) -> float:
    """Share of the batch tensors' slots (source and target) that hold padding."""
    slots = real = 0
    for idx in batches:
        for sizes in (src_sizes, tgt_sizes):
            s = sizes[idx]
            if int(s.max()) > 0:
                slots += len(idx) * int(s.max())
                real += int(s.sum())
    return 1 - real / slots if slots else 0.0
