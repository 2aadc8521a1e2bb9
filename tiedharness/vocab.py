"""Token ids and vocabulary sizes: what the tokenizers, the batches and the model agree on.

Torch-free, so that the data pipeline, the model and the analysis code can all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every tokenizer reserves ids 0–3 for these, in this order.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))


@dataclass(frozen=True)
class Vocab:
    """Vocabulary sizes the model is built for. `joint` means one tokenizer serves both
    sides, so token id i is the same subword in source and target (needed to tie them)."""

    src_size: int
    tgt_size: int
    joint: bool

    @classmethod
    def shared(cls, size: int) -> Vocab:
        return cls(size, size, joint=True)

    @classmethod
    def separate(cls, src_size: int, tgt_size: int) -> Vocab:
        return cls(src_size, tgt_size, joint=False)
