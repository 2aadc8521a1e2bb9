"""Tokenizers from HF `tokenizers`, trained on the training split only.

Every tokenizer reserves ids 0–3 for <pad>, <s>, </s>, <unk>, matching
`tiedharness.model.PAD_ID/BOS_ID/EOS_ID`.

`bpe` splits on whitespace only and marks word ends with a `</w>` suffix (the original
Sennrich et al. scheme): punctuation stays inside its word, detokenizing restores the
text up to runs of whitespace, and no token is ever a bare word boundary — so two sides
written in disjoint scripts share no token at all (a SentencePiece-style `▁` can stand
alone and would be shared). `word` is a whitespace word-level vocabulary for the
algorithmic tasks. HF's Unigram trainer is left out: it gives a different model on
every run, and the same config must give the same tensors.
"""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tiedharness.vocab import SPECIAL_TOKENS

SPECIALS = list(SPECIAL_TOKENS)
WORD_END = "</w>"


def train_tokenizer(
    texts: list[str], kind: str, vocab_size: int, split_cjk: bool = False
) -> Tokenizer:
    """Train a `kind` tokenizer of about `vocab_size` types (BPE keeps every character
    it saw, so a very small size may be exceeded). Same texts → same tokenizer.
    `split_cjk`: BPE units never cross a Han character or a run of kana (see `CJK_UNITS`)."""
    if kind == "bpe":
        return _train_bpe(texts, vocab_size, split_cjk)
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return tok
    raise ValueError(f"task.tokenizer={kind!r} is not one of bpe, word")


# Chinese and Japanese are written without spaces: split on whitespace alone, a clause
# would be one "word". Each Han character is a unit of its own, and a run of hiragana or
# katakana is cut into units of at most 4 (a katakana name would otherwise merge whole);
# BPE merges within a unit only. Other scripts are untouched.
CJK_UNITS = r"\p{Han}|\p{Hiragana}{1,4}|[\p{Katakana}ー]{1,4}"


def _pre_tokenizer(split_cjk: bool):
    if not split_cjk:
        return pre_tokenizers.WhitespaceSplit()
    units = pre_tokenizers.Split(Regex(CJK_UNITS), behavior="isolated")
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), units])


def _train_bpe(texts: list[str], vocab_size: int, split_cjk: bool = False) -> Tokenizer:
    # The trainer numbers word-final symbols ("a</w>") in hash-map order, and ties
    # between equally frequent merges are broken by those numbers, so plain training
    # differs from run to run. Registering every word-final symbol up front, in sorted
    # order, fixes their ids and with them every tie. They are then demoted from
    # "special" back to ordinary vocabulary entries.
    normalizer = normalizers.NFC()
    pre_tokenizer = _pre_tokenizer(split_cjk)
    final, inner = _character_positions(texts, normalizer, pre_tokenizer)
    # The trainer also keeps the bare form of every character it saw. A character that
    # never occurs inside a word (every Han character once split_cjk isolates it, or
    # "," in Latin text) can only ever be emitted as "c</w>", so its bare form would be
    # an entry the encoder never produces: 3,191 of a ZH-EN joint 8k vocabulary. Ask for
    # that many entries more and drop them afterwards, so `vocab_size` buys merges.
    never_inner = (final | inner) - inner
    tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix=WORD_END))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.BPEDecoder(suffix=WORD_END)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(never_inner),
        special_tokens=SPECIALS + [c + WORD_END for c in sorted(final)],
        end_of_word_suffix=WORD_END,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = spec["added_tokens"][: len(SPECIALS)]
    kept = sorted((i, t) for t, i in spec["model"]["vocab"].items() if t not in never_inner)
    spec["model"]["vocab"] = {t: new_id for new_id, (_, t) in enumerate(kept)}
    return Tokenizer.from_str(json.dumps(spec))


def _character_positions(texts, normalizer, pre_tokenizer) -> tuple[set[str], set[str]]:
    """The characters that end some word, and those that occur before a word's end."""
    final: set[str] = set()
    inner: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            final.add(word[-1])
            inner.update(word[:-1])
    return final, inner


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def decode(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True)


def token_types(sequences: list[list[int]]) -> set[int]:
    """Token ids used, special tokens excluded."""
    used: set[int] = set()
    for ids in sequences:
        used.update(ids)
    return used - set(range(len(SPECIALS)))


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0
