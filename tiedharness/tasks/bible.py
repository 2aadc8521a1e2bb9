"""Real parallel text: English Bibles → Reina-Valera 1909 Spanish, from SWORD modules.

Verses are read with pysword, cleaned of OSIS markup, aligned by (book, chapter, verse),
and split by whole chapters: validation and test hold out entire chapters (chosen by a
seeded hash of the chapter's name), never single verses, and any training verse whose
text also occurs in a held-out chapter is dropped, so repeated formulas ("And the LORD
spake unto Moses, saying,") cannot leak into evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tiedharness.schema import Choice, require, require_fraction
from tiedharness.tasks.base import SPLITS, LMConfig, Task, TaskConfig, register_task
from tiedharness.tasks.script import shift_script, unshift_script

Key = tuple[str, int, int]  # (OSIS book, chapter, verse)

# Module names: Debian's packages (eBible.org builds) first, CrossWire's repository second.
MODULES = {
    "kjv": ("King James Version", "sword-text-kjv", ("engKJV2006eb", "KJV")),
    "web": ("World English Bible", "sword-text-web", ("engWEB2015eb", "WEB")),
    "sparv": ("Reina-Valera 1909", "sword-text-sparv", ("spaRV1909eb", "SpaRV1909", "SpaRV")),
}


def sword_paths(configured: str | None) -> list[Path]:
    """Where SWORD modules may live: task.sword_path alone when it is set, else
    $SWORD_PATH, ~/.sword and /usr/share/sword."""
    if configured:
        return [Path(configured).expanduser()]
    candidates = [os.environ.get("SWORD_PATH"), "~/.sword", "/usr/share/sword"]
    return [Path(p).expanduser() for p in candidates if p]


@dataclass(frozen=True)
class ModuleLocation:
    root: Path  # folder holding mods.d/ and modules/
    name: str
    conf: Path


def find_module(bible: str, configured_path: str | None) -> ModuleLocation:
    title, package, names = MODULES[bible]
    roots = sword_paths(configured_path)
    for root in roots:
        confs = {p.stem.lower(): p for p in (root / "mods.d").glob("*.conf")}
        for name in names:
            if name.lower() in confs:
                return ModuleLocation(root, name, confs[name.lower()])
    needed = " ".join(sorted({MODULES["kjv"][1], MODULES["sparv"][1], package}))
    raise FileNotFoundError(
        f"the SWORD module of the {title} ({' or '.join(names)}) is not in "
        f"{', '.join(str(r) for r in roots)}. On Debian or Ubuntu: `apt-get install {needed}`. "
        f"Elsewhere: install the module from the CrossWire repository into ~/.sword "
        f"(e.g. `installmgr -ri CrossWire {names[-1]}`), or set task.sword_path to the "
        "folder holding mods.d/ and modules/"
    )


def read_module(location: ModuleLocation) -> dict[Key, str]:
    """Every verse of a module, with its OSIS markup, in canonical order."""
    from pysword.modules import SwordModules

    modules = SwordModules(str(location.root))
    modules.parse_modules()
    bible = modules.get_bible_from_module(location.name)
    # pysword decompresses a whole block for every verse it reads; remembering the last
    # few blocks makes reading a Bible ~100× faster (blocks are read in order).
    bible._decompressed_text = functools.lru_cache(maxsize=8)(bible._decompressed_text)
    verses: dict[Key, str] = {}
    for books in bible.get_structure().get_books().values():
        for book in books:
            texts = iter(bible.get_iter(books=[book.osis_name], clean=False))
            for chapter, n_verses in enumerate(book.chapter_lengths, start=1):
                for verse in range(1, n_verses + 1):
                    verses[(book.osis_name, chapter, verse)] = next(texts)
    return verses


_NOTE = re.compile(r"<note\b[^>]*/>|<note\b.*?</note>", re.DOTALL)
_CANONICAL_TITLE = re.compile(r'<title\b[^>]*canonical="true"[^>]*>(.*?)</title>', re.DOTALL)
_OTHER_TITLE = re.compile(r"<title\b[^>]*>.*?</title>", re.DOTALL)
_MILESTONE = re.compile(r"<[^>]*/>")  # self-closing: line, paragraph, division markers
_TAG = re.compile(r"<[^>]*>")  # inline: <w>, <transChange>, <divineName>, <q>, …
_USFM_MARKER = re.compile(r"\\\+?[a-z]+\d*\*?")  # stray USFM such as \nd or \+nd*


def clean_verse(markup: str) -> str:
    """OSIS verse → plain text. Notes become a space (they sit between words); canonical
    psalm titles are kept, since the Spanish side carries them in the verse too; other
    headings go; inline tags go without a trace, since they wrap parts of words."""
    text = _NOTE.sub(" ", markup)
    text = _CANONICAL_TITLE.sub(r"\1 ", text)
    text = _OTHER_TITLE.sub(" ", text)
    text = _MILESTONE.sub(" ", text)
    text = _TAG.sub("", text)
    text = _USFM_MARKER.sub("", text).replace("¶", " ")
    return " ".join(unicodedata.normalize("NFC", text).split())


def align(
    source: dict[Key, str], target: dict[Key, str]
) -> tuple[list[tuple[Key, str, str]], list]:
    """Pairs of cleaned verses, and the (book, chapter)s dropped.

    A chapter is kept only when both sides number the same verses and none of them is
    empty: where one side moves verses across a chapter boundary (Spanish leaves the
    moved slots empty), pairing the rest by number would misalign them.
    """
    chapters: dict[tuple[str, int], list[Key]] = {}
    for key in [*source, *target]:  # canonical order: the source's, then any extra chapters
        chapters.setdefault(key[:2], []).append(key)
    pairs, dropped = [], []
    for chapter, keys in chapters.items():
        keys = sorted(set(keys), key=lambda k: k[2])
        texts = [(k, clean_verse(source.get(k, "")), clean_verse(target.get(k, ""))) for k in keys]
        if all(k in source and k in target and s and t for k, s, t in texts):
            pairs.extend(texts)
        else:
            dropped.append(chapter)
    return pairs, dropped


def chapter_draw(key: str) -> float:
    """A uniform number in [0, 1) for a chapter's seeded key: it never depends on which
    other chapters exist or were dropped."""
    digest = hashlib.sha1(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def chapter_split(book: str, chapter: int, valid: float, test: float, seed: int) -> str:
    """The split of a whole chapter, by a seeded hash."""
    u = chapter_draw(f"{seed}:{book}.{chapter}")
    return "valid" if u < valid else "test" if u < valid + test else "train"


def kept_for_training(book: str, chapter: int, fraction: float, seed: int) -> bool:
    """Whether a training chapter is among the `fraction` kept: a draw of its own (not the
    split's), so a smaller fraction keeps a subset of a larger one's chapters, spread over
    every book."""
    return chapter_draw(f"{seed}:train:{book}.{chapter}") < fraction


def split_by_chapter(
    items: list, key_of, texts_of, valid: float, test: float, seed: int, train: float = 1.0
) -> dict:
    """Assign items to splits by chapter, keep the share `train` of the training chapters,
    then drop from train (and from test) any item whose text already occurs in a held-out
    split."""
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for item in items:
        book, chapter, _ = key_of(item)
        split = chapter_split(book, chapter, valid, test, seed)
        if split != "train" or train >= 1.0 or kept_for_training(book, chapter, train, seed):
            splits[split].append(item)
    held_out = {t for item in splits["valid"] for t in texts_of(item)}
    splits["test"] = [i for i in splits["test"] if held_out.isdisjoint(texts_of(i))]
    held_out |= {t for item in splits["test"] for t in texts_of(item)}
    splits["train"] = [i for i in splits["train"] if held_out.isdisjoint(texts_of(i))]
    return splits


class BibleSource(Choice):
    kjv = "kjv"  # King James Version
    web = "web"  # World English Bible


@dataclass
class BibleConfig(TaskConfig):
    source: BibleSource = BibleSource.kjv  # the English text: kjv or web
    valid_fraction: float = 0.03  # of chapters
    test_fraction: float = 0.03  # share of chapters held out for test
    sword_path: str | None = None  # a folder with mods.d/ and modules/; default: see sword_paths
    # share of the training chapters kept (drawn by a seeded hash, across every book):
    # a data-limited regime; validation and test stay as they are
    train_fraction: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_fraction(self, "task", "valid_fraction", "test_fraction", "train_fraction")
        require(
            self.train_fraction > 0, "task.train_fraction", self.train_fraction, "must be above 0"
        )


class _BibleTask(Task):
    Config = BibleConfig
    cfg: BibleConfig

    def _modules(self) -> list[ModuleLocation]:
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """The modules' conf files carry their versions; sizes catch a changed text."""
        prints = {}
        for loc in self._modules():
            data = sorted((loc.root / "modules").rglob("*"))
            texts = [p for p in data if p.is_file() and loc.name.lower() in str(p).lower()]
            prints[loc.name] = {
                "conf": hashlib.sha1(loc.conf.read_bytes()).hexdigest(),
                "bytes": sum(p.stat().st_size for p in texts),
            }
        return prints


@dataclass
class BibleMTConfig(BibleConfig):
    # Map every non-space character of the Spanish side into a disjoint script: the
    # same content with zero surface overlap, the distant-language control.
    script_shift: bool = False


@register_task
class BibleMT(_BibleTask):
    """English (KJV or WEB) → Spanish (Reina-Valera 1909), verse by verse."""

    name = "bible_mt"
    kind = "seq2seq"
    Config = BibleMTConfig
    scores = ("bleu",)
    cfg: BibleMTConfig

    def _modules(self) -> list[ModuleLocation]:
        return [
            find_module(self.cfg.source, self.cfg.sword_path),
            find_module("sparv", self.cfg.sword_path),
        ]

    def load(self) -> dict[str, list[tuple[str, str]]]:
        source, target = (read_module(loc) for loc in self._modules())
        pairs, _ = align(source, target)
        splits = split_by_chapter(
            pairs,
            key_of=lambda p: p[0],
            texts_of=lambda p: (p[1], p[2]),
            valid=self.cfg.valid_fraction,
            test=self.cfg.test_fraction,
            seed=self.cfg.seed,
            train=self.cfg.train_fraction,
        )
        shift = shift_script if self.cfg.script_shift else (lambda t: t)
        return {name: [(s, shift(t)) for _, s, t in items] for name, items in splits.items()}

    def to_target_text(self, text: str) -> str:
        return unshift_script(text) if self.cfg.script_shift else text


@dataclass
class BibleLMConfig(BibleConfig, LMConfig):
    """The Bible options plus the LM window."""


@register_task
class BibleLM(_BibleTask):
    """Language modelling on the English Bible, for embed_output à la Press & Wolf."""

    name = "bible_lm"
    kind = "lm"
    Config = BibleLMConfig

    def _modules(self) -> list[ModuleLocation]:
        return [find_module(self.cfg.source, self.cfg.sword_path)]

    def load(self) -> dict[str, list[str]]:
        verses = read_module(self._modules()[0])
        items = [(k, clean_verse(v)) for k, v in verses.items()]
        items = [(k, t) for k, t in items if t]
        splits = split_by_chapter(
            items,
            key_of=lambda item: item[0],
            texts_of=lambda item: (item[1],),
            valid=self.cfg.valid_fraction,
            test=self.cfg.test_fraction,
            seed=self.cfg.seed,
            train=self.cfg.train_fraction,
        )
        return {name: [t for _, t in items] for name, items in splits.items()}
