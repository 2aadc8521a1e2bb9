"""Tasks, tokenizers and the data cache."""

from __future__ import annotations

import itertools
import json
import warnings

import pytest
import torch
from conftest import tiny_cfg

from tiedharness.model.sharing import SharingConfig, build_model
from tiedharness.tasks import make_task
from tiedharness.tasks.data import build_task
from tiedharness.tasks.synthetic import Lexicon, SynthConfig
from tiedharness.tasks.tokenize import decode, encode, train_tokenizer
from tiedharness.vocab import EOS_ID, Vocab

SMALL_SYNTH = {
    "name": "synth_translation",
    "train_examples": 2000,
    "valid_examples": 100,
    "test_examples": 100,
}


def synth(**options) -> dict:
    return {**SMALL_SYNTH, **options}


# ---------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("name", ["copy", "reverse"])
def test_algorithmic_targets(name):
    splits = make_task({"name": name, "train_examples": 300, "valid_examples": 50}).load()
    for source, target in splits["train"] + splits["valid"]:
        symbols = source.split()
        assert target.split() == (symbols if name == "copy" else symbols[::-1])
        assert 4 <= len(symbols) <= 24
    sources = [s for split in splits.values() for s, _ in split]
    assert len(sources) == len(set(sources))  # no sequence in two splits


def test_synthetic_languages_are_deterministic_and_share_the_latent_sentences():
    a = make_task(synth(overlap=0.5)).load()
    assert a == make_task(synth(overlap=0.5)).load()
    zero, one = make_task(synth(overlap=0.0)).load(), make_task(synth(overlap=1.0)).load()
    # the source side and the latent sentences do not depend on the overlap knob
    assert (
        [s for s, _ in zero["train"]] == [s for s, _ in a["train"]] == [s for s, _ in one["train"]]
    )
    assert zero["train"] != one["train"]
    assert make_task(synth(seed=1)).load()["train"] != a["train"]


def test_synthetic_target_is_verb_final_and_disjoint_at_zero_overlap():
    pairs = make_task(synth(overlap=0.0)).load()["train"]
    source_chars = {c for s, _ in pairs for c in s} - {" "}
    target_chars = {c for _, t in pairs for c in t} - {" "}
    assert source_chars.isdisjoint(target_chars)
    # SOV: every target sentence ends in a verb stem carrying a tense suffix
    cfg = SynthConfig(**synth(overlap=0.0))
    lexicon = Lexicon(cfg)
    verbs = {
        lexicon.target[f"V{v}"] + lexicon.target[tense]
        for v in range(cfg.n_verbs)
        for tense in ("PRES", "PAST")
    }
    assert all(t.split()[-1] in verbs for _, t in pairs)
    assert not any(s.split()[-1] in verbs for s, _ in pairs)


def test_synthetic_overlap_rises_strictly_with_the_knob():
    overlaps = [build_task(synth(overlap=x)).stats["overlap"] for x in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert overlaps[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(overlaps)), overlaps


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_bible_script_shift_removes_all_overlap():
    plain = build_task({"name": "bible_mt"})
    shifted = build_task({"name": "bible_mt", "script_shift": True})
    assert plain.stats["overlap"] > 0.1
    assert shifted.stats["overlap"] == 0.0
    # scoring text is mapped back: references are the real Spanish
    assert shifted.texts["valid"]["tgt"] == plain.texts["valid"]["tgt"]
    ids = shifted.splits["valid"].tgt[0].tolist()
    on_target_side = decode(shifted.tgt_tokenizer, ids)
    assert all(0x4E00 <= ord(c) < 0x9E00 for c in on_target_side.replace(" ", ""))
    assert shifted.task.to_target_text(on_target_side) == decode(
        plain.tgt_tokenizer, plain.splits["valid"].tgt[0].tolist()
    )


def test_parallel_text_reads_line_aligned_files(tmp_path):
    for split, n in (("train", 40), ("valid", 5)):
        (tmp_path / f"{split}.en").write_text("".join(f"hello world {i}\n" for i in range(n)))
        (tmp_path / f"{split}.de").write_text("".join(f"hallo welt {i}\n" for i in range(n)))
    cfg = {
        "name": "parallel_text",
        "data_dir": str(tmp_path),
        "src_lang": "en",
        "tgt_lang": "de",
        "vocab_size": 60,
    }
    splits = make_task(cfg).load()
    assert splits["train"][3] == ("hello world 3", "hallo welt 3")
    assert splits["test"] == []
    data = build_task(cfg)
    assert data.stats["splits"]["train"]["examples"] == 40
    (tmp_path / "valid.de").write_text("only one line\n")
    with pytest.raises(ValueError, match=r"has 5 lines but .*valid\.de has 1"):
        make_task(cfg).load()


def test_bring_your_own_files_missing_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"needs task\.data_dir"):
        make_task({"name": "parallel_text"}).load()
    with pytest.raises(FileNotFoundError, match=r"train\.txt"):
        make_task({"name": "text_lm", "data_dir": str(tmp_path)}).load()


def test_lm_windows_predict_every_token_once(tmp_path):
    lines = [f"line {i} says something about {i % 7}" for i in range(200)]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    (tmp_path / "valid.txt").write_text("\n".join(lines[:20]))
    data = build_task(
        {"name": "text_lm", "data_dir": str(tmp_path), "block_size": 16, "vocab_size": 100}
    )
    tok = data.tgt_tokenizer
    stream = [t for ids in encode(tok, lines) for t in [*ids, EOS_ID]]
    windows = data.splits["train"].tgt.to_lists()
    assert all(len(w) == 17 for w in windows[:-1])
    predicted = [t for w in windows for t in w[1:]]
    assert predicted == stream[1:]
    assert data.stats["splits"]["train"]["tokens"] == len(stream) - 1
    assert data.vocab == Vocab.shared(tok.get_vocab_size())


def test_unknown_task_and_option_are_named():
    with pytest.raises(ValueError, match="unknown task 'wmt'; known: bible_lm"):
        make_task({"name": "wmt"})
    with pytest.raises(Exception, match=r"Key 'overlap' not in 'AlgorithmicConfig'"):
        make_task({"name": "copy", "overlap": 0.5})


# ---------------------------------------------------------------------------- tokenizers


def test_bpe_round_trips_text():
    data = build_task(synth())
    for text in data.texts["valid"]["src"][:50] + data.texts["valid"]["tgt"][:50]:
        assert decode(data.tgt_tokenizer, encode(data.tgt_tokenizer, [text])[0]) == text
    bible = build_task({"name": "bible_mt"})
    tok = bible.src_tokenizer
    texts = bible.texts["valid"]["src"][:200] + bible.texts["valid"]["tgt"][:200]
    for text, ids in zip(texts, encode(tok, texts), strict=True):
        if 3 not in ids:  # characters never seen in training become <unk>
            assert decode(tok, ids) == " ".join(text.split())


def test_word_tokenizer_round_trips_symbols():
    tok = train_tokenizer(["s1 s2 s3", "s3 s4"], "word", 20)
    assert decode(tok, encode(tok, ["s4 s1 s3"])[0]) == "s4 s1 s3"
    assert encode(tok, ["s9"])[0] == [3]  # unseen symbol → <unk>


def test_bpe_training_is_deterministic():
    texts = make_task(synth(train_examples=3000)).load()["train"]
    flat = [s for pair in texts for s in pair]
    specs = {train_tokenizer(flat, "bpe", 500).to_str() for _ in range(4)}
    assert len(specs) == 1
    spec = json.loads(specs.pop())
    assert [t["content"] for t in spec["added_tokens"]] == ["<pad>", "<s>", "</s>", "<unk>"]


def test_separate_vocabularies_have_one_tokenizer_per_side():
    data = build_task(synth(vocab="separate", src_vocab_size=300, tgt_vocab_size=400))
    assert data.src_tokenizer is not data.tgt_tokenizer
    assert data.vocab == Vocab(300, 400, joint=False)
    assert data.stats["vocab"] == {"src": 300, "tgt": 400, "joint": False, "tokenizer": "bpe"}
    assert 0 < data.stats["overlap"] < 1  # measured under a joint vocabulary all the same
    # and the model refuses to tie what cannot be tied
    with pytest.raises(ValueError, match=r"set task\.vocab=joint"):
        build_model(tiny_cfg(), data.vocab, SharingConfig.of("encdec_vocab"))


# ---------------------------------------------------------------------------- cache


def _tensors(data) -> dict:
    return {
        name: [t for p in (s.src, s.tgt) if p is not None for t in (p.data, p.offsets)]
        for name, s in data.splits.items()
    }


def _assert_same(a, b):
    for name in a.splits:
        for x, y in zip(_tensors(a)[name], _tensors(b)[name], strict=True):
            assert torch.equal(x, y)
    assert a.vocab == b.vocab and a.texts == b.texts


def test_second_build_is_a_cache_hit_with_identical_tensors(tmp_path):
    cfg = synth(cache_dir=str(tmp_path))
    first, second = build_task(cfg), build_task(cfg)
    assert not first.cache_hit and second.cache_hit
    assert first.cache_path == second.cache_path
    _assert_same(first, second)
    assert second.src_tokenizer.to_str() == first.src_tokenizer.to_str()


def test_rebuilding_without_the_cache_gives_identical_tensors():
    _assert_same(build_task(synth(), use_cache=False), build_task(synth(), use_cache=False))


@pytest.mark.slow
def test_bible_cache_hit_is_fast():
    build_task({"name": "bible_mt"})
    again = build_task({"name": "bible_mt"})
    assert again.cache_hit and again.build_s < 1.0
    _assert_same(again, build_task({"name": "bible_mt"}, use_cache=False))


def test_changing_an_option_misses_the_cache(tmp_path):
    a = build_task(synth(cache_dir=str(tmp_path)))
    b = build_task(synth(cache_dir=str(tmp_path), overlap=0.25))
    assert a.cache_path != b.cache_path and not b.cache_hit


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    cfg = synth(cache_dir=str(tmp_path))
    first = build_task(cfg)
    (first.cache_path / "tensors.pt").write_bytes(b"truncated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = build_task(cfg)
    assert any("rebuilding damaged data cache" in str(w.message) for w in caught)
    assert not rebuilt.cache_hit
    _assert_same(first, rebuilt)
    assert build_task(cfg).cache_hit


def test_a_cache_entry_missing_a_split_is_rebuilt(tmp_path):
    cfg = synth(cache_dir=str(tmp_path))
    first = build_task(cfg)
    texts_file = first.cache_path / "texts.json"
    texts = json.loads(texts_file.read_text())
    del texts["valid"]
    texts_file.write_text(json.dumps(texts))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = build_task(cfg)
    assert any("no valid split" in str(w.message) for w in caught)
    assert not rebuilt.cache_hit and rebuilt.references("valid") == first.references("valid")


def test_too_long_examples_are_dropped_and_counted():
    data = build_task(synth(max_len=12))
    stats = data.stats["splits"]["train"]
    assert stats["dropped_too_long"] > 0
    assert stats["examples"] + stats["dropped_too_long"] == 2000
    assert int(data.splits["train"].src.lengths.max()) + 1 <= 12


# Text whose characters are known: double spaces, non-ASCII, a letter written with a
# combining accent (NFC makes it one character for the tokenizer; the text has two).
LM_VALID = "alpha beta  gamma\nnaïve café — e\u0301clair, ok\nthe cat sat\non the mat.\nalpha\n"


def lm_corpus(folder) -> str:
    """A text_lm corpus in `folder` whose validation text is LM_VALID; its folder."""
    folder.mkdir(exist_ok=True)
    (folder / "train.txt").write_text(LM_VALID * 5 + "the mat is flat\n", encoding="utf-8")
    (folder / "valid.txt").write_text(LM_VALID, encoding="utf-8")
    return str(folder)


@pytest.mark.parametrize("block_size", [1, 3, 16, 1000])
def test_lm_windows_count_each_character_of_the_text_once(tmp_path, block_size):
    """Bits per character divide by the characters the predicted tokens stand for: over
    a split's windows, every character of its text once, each line break once, less the
    first token ("alpha" and its space), which no window predicts."""
    config = {"name": "text_lm", "data_dir": lm_corpus(tmp_path), "vocab_size": 500}
    data = build_task({**config, "block_size": block_size})
    assert data.tgt_tokenizer.encode("alpha beta").tokens[0] == "alpha</w>"
    chars = data.target_chars("valid")
    assert len(chars) == len(data.splits["valid"])
    assert int(chars.sum()) == len(LM_VALID) - len("alpha ")
    if block_size == 1:  # one predicted token a window: an end of line is one character
        predicted = [int(w[1]) for w in data.splits["valid"].tgt.to_lists()]
        assert [int(c) for c, t in zip(chars, predicted, strict=True) if t == EOS_ID] == [1] * 5
        assert int(chars[0]) == len("beta  ")  # a token and the whitespace after it


def _build_in_another_process(cfg: dict, queue) -> None:
    data = build_task(cfg)
    queue.put(bool(data.cache_hit))


def test_jobs_side_by_side_build_a_cache_entry_once(tmp_path):
    """Two processes asking for the same missing entry at once: one builds it, the other
    waits for it and reads it (both are held at the entry's lock until both have asked)."""
    import fcntl
    import multiprocessing
    import time

    from tiedharness.tasks.data import cache_key, cache_root

    cfg = synth(cache_dir=str(tmp_path))
    task = make_task(cfg)
    entry = cache_root(str(tmp_path)) / f"{task.name}-{cache_key(task)}"
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with open(entry.with_name(entry.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        workers = [context.Process(target=_build_in_another_process, args=(cfg, queue))]
        workers.append(context.Process(target=_build_in_another_process, args=(cfg, queue)))
        for worker in workers:
            worker.start()
        time.sleep(1.0)  # both now wait at the lock, the entry still missing
        assert not entry.exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    hits = sorted(queue.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(60)
    assert hits == [False, True]  # one build, one read
