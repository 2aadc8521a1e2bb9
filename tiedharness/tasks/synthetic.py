"""synth_translation: two artificial languages realising one latent grammar.

A latent sentence (concepts in roles, number, tense, one of four constructions) is
written once in the source language and once in the target language:

  source (SVO, English-like): articles, adjective before noun, plural suffix, tense
      suffix plus plural agreement on the verb, a preposition for the recipient.
  target (SOV, head-final):   no articles, adjective after the noun and agreeing in
      number, accusative suffix on objects, a postposition for the recipient, tense
      suffix only, subordinate clause before its complementizer.

`overlap` ∈ [0, 1] is the fraction of target morphemes (stems, affixes, function words)
whose form is identical to the source form — cognates and shared subwords. The others
are drawn from a disjoint alphabet (Greek letters), so at overlap 0 the two sides share
no character. Each morpheme's cognate draw and both candidate forms come from the seed
alone, so raising `overlap` only turns more forms into cognates (the sets are nested)
and the latent sentences stay the same for every value: only surface overlap changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tiedharness.schema import require_fraction, require_positive
from tiedharness.tasks.base import SPLITS, Task, TaskConfig, register_task

SOURCE_ALPHABET = ("ptkbdgmnlrsvfh", "aeiou")
TARGET_ALPHABET = ("βγδζθκλμνξπρστφχψ", "αεηιουω")  # disjoint from the source's

FUNCTION_MORPHEMES = ("DEF", "INDEF", "PL", "PRES", "PAST", "AGR_PL", "TO", "THAT", "ACC")


@dataclass
class SynthConfig(TaskConfig):
    vocab_size: int = 2000
    overlap: float = 0.5  # share of target morphemes equal to the source's (0: no shared char)
    n_nouns: int = 300  # nouns of the latent grammar's lexicon
    n_verbs: int = 80  # verbs of the lexicon
    n_adjectives: int = 60  # adjectives of the lexicon
    train_examples: int = 20000  # sentence pairs generated for training
    valid_examples: int = 500  # sentence pairs generated for validation
    test_examples: int = 500  # sentence pairs generated for test

    def __post_init__(self) -> None:
        super().__post_init__()
        require_fraction(self, "task", "overlap")
        require_positive(self, "task", "n_nouns", "n_verbs", "n_adjectives", "train_examples")
        require_positive(self, "task", "valid_examples")


def _word(rng: random.Random, alphabet: tuple[str, str], syllables: int) -> str:
    consonants, vowels = alphabet
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))


class Lexicon:
    """Source and target forms of every morpheme, and which are cognates."""

    def __init__(self, cfg: SynthConfig) -> None:
        rng = random.Random(f"synth-lexicon:{cfg.seed}")
        morphemes = (
            [f"N{i}" for i in range(cfg.n_nouns)]
            + [f"V{i}" for i in range(cfg.n_verbs)]
            + [f"A{i}" for i in range(cfg.n_adjectives)]
            + list(FUNCTION_MORPHEMES)
        )
        self.source: dict[str, str] = {}
        self.target: dict[str, str] = {}
        used_source: set[str] = set()
        used_target: set[str] = set()
        for m in morphemes:
            length = 1 if m in FUNCTION_MORPHEMES else rng.randint(2, 3)
            source = self._fresh(rng, SOURCE_ALPHABET, length, used_source)
            fresh_target = self._fresh(rng, TARGET_ALPHABET, length, used_target)
            cognate = rng.random() < cfg.overlap  # drawn for every morpheme: nested sets
            self.source[m] = source
            self.target[m] = source if cognate else fresh_target

    @staticmethod
    def _fresh(rng: random.Random, alphabet: tuple[str, str], length: int, used: set[str]) -> str:
        while True:
            form = _word(rng, alphabet, length)
            if form not in used:
                used.add(form)
                return form


@dataclass(frozen=True)
class NounPhrase:
    noun: int
    plural: bool
    adjective: int | None
    definite: bool


@dataclass(frozen=True)
class Clause:
    subject: NounPhrase
    verb: int
    past: bool
    obj: NounPhrase | None = None
    recipient: NounPhrase | None = None
    complement: Clause | None = None


def sample_clause(rng: random.Random, cfg: SynthConfig, embed: bool = True) -> Clause:
    def np() -> NounPhrase:
        adjective = rng.randrange(cfg.n_adjectives) if rng.random() < 0.3 else None
        return NounPhrase(
            rng.randrange(cfg.n_nouns), rng.random() < 0.4, adjective, rng.random() < 0.6
        )

    construction = rng.choice(["intransitive", "transitive", "ditransitive", "complement"])
    if construction == "complement" and not embed:
        construction = "transitive"
    subject, verb, past = np(), rng.randrange(cfg.n_verbs), rng.random() < 0.5
    if construction == "intransitive":
        return Clause(subject, verb, past)
    if construction == "transitive":
        return Clause(subject, verb, past, obj=np())
    if construction == "ditransitive":
        return Clause(subject, verb, past, obj=np(), recipient=np())
    return Clause(subject, verb, past, complement=sample_clause(rng, cfg, embed=False))


def realise_source(c: Clause, lex: dict[str, str]) -> list[str]:
    """SVO: [art] [adj] noun-PL · verb-TENSE(-AGR) · object · TO recipient · THAT clause."""

    def np(p: NounPhrase) -> list[str]:
        words = [lex["DEF" if p.definite else "INDEF"]]
        if p.adjective is not None:
            words.append(lex[f"A{p.adjective}"])
        return [*words, lex[f"N{p.noun}"] + (lex["PL"] if p.plural else "")]

    verb = lex[f"V{c.verb}"] + lex["PAST" if c.past else "PRES"]
    if c.subject.plural and not c.past:
        verb += lex["AGR_PL"]
    words = [*np(c.subject), verb]
    if c.obj:
        words += np(c.obj)
    if c.recipient:
        words += [lex["TO"], *np(c.recipient)]
    if c.complement:
        words += [lex["THAT"], *realise_source(c.complement, lex)]
    return words


def realise_target(c: Clause, lex: dict[str, str]) -> list[str]:
    """SOV: noun-PL [adj-PL] · object-ACC · recipient TO · [clause THAT] · verb-TENSE."""

    def np(p: NounPhrase, case: str = "") -> list[str]:
        plural = lex["PL"] if p.plural else ""
        words = [lex[f"N{p.noun}"] + plural + case]
        if p.adjective is not None:
            words.append(lex[f"A{p.adjective}"] + plural)
        return words

    words = np(c.subject)
    if c.complement:
        words += [*realise_target(c.complement, lex), lex["THAT"]]
    if c.obj:
        words += np(c.obj, lex["ACC"])
    if c.recipient:
        words += [*np(c.recipient), lex["TO"]]
    return [*words, lex[f"V{c.verb}"] + lex["PAST" if c.past else "PRES"]]


@register_task
class SynthTranslation(Task):
    name = "synth_translation"
    kind = "seq2seq"
    Config = SynthConfig
    scores = ("exact_match", "bleu")
    cfg: SynthConfig

    def load(self) -> dict[str, list[tuple[str, str]]]:
        lexicon = Lexicon(self.cfg)
        rng = random.Random(f"synth-sentences:{self.cfg.seed}")  # independent of overlap
        sizes = {
            "train": self.cfg.train_examples,
            "valid": self.cfg.valid_examples,
            "test": self.cfg.test_examples,
        }
        seen: set[Clause] = set()
        splits: dict[str, list[tuple[str, str]]] = {}
        for split in SPLITS:
            pairs = []
            while len(pairs) < sizes[split]:
                clause = sample_clause(rng, self.cfg)
                if clause in seen:
                    continue  # no latent sentence in two splits (or twice in one)
                seen.add(clause)
                source = " ".join(realise_source(clause, lexicon.source))
                target = " ".join(realise_target(clause, lexicon.target))
                pairs.append((source, target))
            splits[split] = pairs
        return splits
