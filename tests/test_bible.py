"""Real SWORD Bible text: markup cleaning, alignment, the drop rule, splits."""

from __future__ import annotations

import pytest

from tiedharness.tasks import make_task
from tiedharness.tasks.bible import align, clean_verse, find_module, read_module, split_by_chapter
from tiedharness.tasks.script import shift_script, unshift_script


@pytest.fixture(scope="module")
def modules() -> dict[str, dict]:
    return {name: read_module(find_module(name, None)) for name in ("kjv", "web", "sparv")}


JOHN_3_16 = {
    "kjv": "For God so loved the world, that he gave his only begotten Son, that whosoever "
    "believeth in him should not perish, but have everlasting life.",
    # the WEB's footnote on "only born" sits between two words: it becomes a space
    "web": "For God so loved the world, that he gave his only born Son, that whoever believes "
    "in him should not perish, but have eternal life.",
    "sparv": "Porque de tal manera amó Dios al mundo, que ha dado á su Hijo unigénito, para que "
    "todo aquel que en él cree, no se pierda, mas tenga vida eterna.",
}


@pytest.mark.parametrize("bible", list(JOHN_3_16))
def test_john_3_16_is_cleaned_to_the_exact_text(modules, bible):
    raw = modules[bible][("John", 3, 16)]
    assert "<w " in raw  # the module really carries Strong's markup
    assert clean_verse(raw) == JOHN_3_16[bible]


def test_psalm_titles_are_kept_and_notes_dropped(modules):
    assert clean_verse(modules["kjv"][("Ps", 3, 1)]) == (
        "A Psalm of David, when he fled from Absalom his son. LORD, how are they increased "
        "that trouble me! many are they that rise up against me."
    )
    assert clean_verse(modules["sparv"][("Ps", 3, 1)]).startswith("Salmo de David, cuando huía")
    # a KJV note holding a stray USFM marker (\\+nd*) disappears with the note
    exodus = modules["kjv"][("Exod", 6, 2)]
    assert "\\+nd*" in exodus and "JEHOVAH" in exodus
    assert clean_verse(exodus) == "And God spake unto Moses, and said unto him, I am the LORD:"


def test_cleaning_rules_on_fragments():
    assert clean_verse(
        "¶ <w lemma='x'>In</w> the <transChange type='added'>be</transChange>gin"
    ) == ("In the begin")
    assert clean_verse("light.<note placement='foot'>Heb. between</note>And") == "light. And"
    assert clean_verse("<title>Heading</title>Text<lb/>more") == "Text more"
    assert clean_verse("<divineName>Lord</divineName>’s \\nd word") == "Lord’s word"


def test_chapters_with_empty_spanish_verses_are_dropped_whole(modules):
    kjv, sparv = modules["kjv"], modules["sparv"]
    empty = [k for k, v in sparv.items() if not clean_verse(v)]
    assert len(empty) == 18  # where RV1909 moves verses across a chapter boundary
    pairs, dropped = align(kjv, sparv)
    assert set(dropped) == {k[:2] for k in empty}
    kept_chapters = {k[:2] for k, _, _ in pairs}
    assert kept_chapters.isdisjoint(dropped)
    expected = {k for k in kjv if k[:2] not in set(dropped)}
    assert {k for k, _, _ in pairs} == expected  # every verse of every other chapter
    assert len(pairs) >= 30_000


def test_drop_rule_on_a_small_example():
    source = {("Gen", 1, 1): "a", ("Gen", 1, 2): "b", ("Gen", 2, 1): "c", ("Gen", 3, 1): "d"}
    target = {
        ("Gen", 1, 1): "A",
        ("Gen", 1, 2): "B",
        ("Gen", 2, 1): "",
        ("Gen", 3, 1): "D",
        ("Gen", 3, 2): "E",
    }
    pairs, dropped = align(source, target)
    assert pairs == [(("Gen", 1, 1), "a", "A"), (("Gen", 1, 2), "b", "B")]
    assert dropped == [("Gen", 2), ("Gen", 3)]  # empty slot; verse numbering differs


def test_web_alignment_drops_books_spanish_lacks(modules):
    pairs, dropped = align(modules["web"], modules["sparv"])
    assert ("Tob", 1) in dropped
    books = {k[0] for k, _, _ in pairs}
    assert "Tob" not in books and "John" in books
    assert len(pairs) >= 30_000


@pytest.fixture(scope="module")
def bible_splits() -> dict:
    task = make_task({"name": "bible_mt"})
    return task.load()


def test_no_verse_appears_in_two_splits(bible_splits):
    sizes = {name: len(pairs) for name, pairs in bible_splits.items()}
    assert sum(sizes.values()) >= 30_000 and sizes["valid"] > 300 and sizes["test"] > 300
    for side in (0, 1):
        seen: dict[str, str] = {}
        for name, pairs in bible_splits.items():
            for pair in pairs:
                assert seen.setdefault(pair[side], name) == name, f"{pair[side]!r} in two splits"


def test_held_out_splits_are_whole_chapters(modules):
    pairs, _ = align(modules["kjv"], modules["sparv"])
    splits = split_by_chapter(
        pairs, key_of=lambda p: p[0], texts_of=lambda p: p[1:], valid=0.03, test=0.03, seed=0
    )
    chapters = {name: {p[0][:2] for p in items} for name, items in splits.items()}
    assert chapters["valid"].isdisjoint(chapters["train"] | chapters["test"])
    assert chapters["test"].isdisjoint(chapters["train"])
    verses = {name: {p[0] for p in items} for name, items in splits.items()}
    # validation keeps every verse of its chapters; the task's loader gives the same texts
    assert verses["valid"] == {k for k, _, _ in pairs if k[:2] in chapters["valid"]}
    loaded = make_task({"name": "bible_mt"}).load()
    assert loaded["valid"] == [(s, t) for _, s, t in splits["valid"]]
    assert loaded["train"] == [(s, t) for _, s, t in splits["train"]]


def test_a_training_fraction_keeps_whole_chapters_across_the_books(modules):
    """task.train_fraction: a data-limited regime with the same validation and test."""
    pairs, _ = align(modules["kjv"], modules["sparv"])

    def splits(train: float) -> dict:
        return split_by_chapter(
            pairs, lambda p: p[0], lambda p: p[1:], valid=0.03, test=0.03, seed=0, train=train
        )

    full, tenth, twentieth = splits(1.0), splits(0.1), splits(0.05)
    assert tenth["valid"] == full["valid"] and tenth["test"] == full["test"]
    chapters = {p[0][:2] for p in full["train"]}
    kept = {p[0][:2] for p in tenth["train"]}
    assert 0.08 < len(kept) / len(chapters) < 0.12
    # whole chapters, in canonical order, from most books
    assert tenth["train"] == [p for p in full["train"] if p[0][:2] in kept]
    assert len({book for book, _ in kept}) > 40
    # a smaller share keeps a subset of a larger one's chapters
    assert {p[0][:2] for p in twentieth["train"]} < kept
    # the task's option reaches the loader
    tenth_lm = make_task({"name": "bible_lm", "train_fraction": 0.1}).load()["train"]
    assert 0.08 < len(tenth_lm) / len(make_task({"name": "bible_lm"}).load()["train"]) < 0.12
    with pytest.raises(ValueError, match=r"task\.train_fraction=0\.0: must be above 0"):
        make_task({"name": "bible_lm", "train_fraction": 0.0})


def test_script_shift_is_a_bijection_onto_a_disjoint_script():
    text = JOHN_3_16["sparv"] + " ¿Qué? ¡Sí! 1909 «x» —"
    shifted = shift_script(text)
    assert unshift_script(shifted) == text
    assert shifted.count(" ") == text.count(" ")
    english = set(JOHN_3_16["kjv"] + JOHN_3_16["web"])
    assert not set(shifted.replace(" ", "")) & english
    assert len(set(shifted)) == len(set(text))


def test_missing_modules_name_the_fix(tmp_path):
    task = make_task({"name": "bible_mt", "sword_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError) as err:
        task.load()
    message = str(err.value)
    assert "apt-get install sword-text-kjv sword-text-sparv" in message
    assert "~/.sword" in message and str(tmp_path) in message


def test_bible_lm_bits_per_character_count_each_character_once():
    """The validation windows of bible_lm stand for every character of its verses and one
    line break after each, counted once (each line break was once counted twice: as the
    space decoding put there and as its end-of-line token), less the first token."""
    from tiedharness.tasks.data import build_task

    data = build_task({"name": "bible_lm"})
    verses = data.references("valid")
    first = data.tgt_tokenizer.encode(verses[0], add_special_tokens=False).offsets[1][0]
    text = "".join(verse + "\n" for verse in verses)
    assert int(data.target_chars("valid").sum()) == len(text) - first
