"""A study's write-up checked for meaning against its comparisons table: each number and
verdict word against the row of `comparisons.csv` (arm, baseline, metric, split, endpoint,
…) the text says it is about, so that a number copied into the wrong sentence fails.
The rules (docs/reports.md, "Checking a write-up against its comparisons"):

- **Tag**: `<!-- claim: key=value … -->`, an HTML comment, invisible when rendered. Keys are
  identifying columns: every column but the value columns (mean, ci95, p, p_holm, n,
  primary, verdict). Quote a value with spaces (`model="small: d=64"`); `baseline=` selects
  an empty cell; a cell equals a value as text or, both numbers, as numbers (0.5, 0.50).
  The tag must select exactly one row. `<!-- claim: unchecked -->` marks context that is no
  comparison (timings): its numbers are not checked and it may hold no verdict word.
- **Covered text**: the text before the tag, back to the previous tag or to the start of
  its block (paragraph, list item, heading, table cell); several comparisons in one
  sentence take a tag each, after each one's numbers.
- **Checked numbers**, outside code spans, link targets and HTML comments: every number
  with a decimal point, an exponent or a sign (`0.120`, `3.2e-04`, `+7`, `−0.065`), and any
  after `±`, `p` or `n`. Not checked: other whole numbers (`3 seeds`, `1,200,004 tokens`),
  numbers glued to letters (`1.2M`, `600k`), an unsigned number equal to a value of the tag
  (`overlap 0.5` under `task.overlap=0.5`).
- **Columns**: after `±` ci95; after `p` or `p-value` p; after `Holm p`, `Holm-corrected p`
  or `p_holm` p_holm; after `n` n; any other number mean (the Δ, or an absolute row's
  value); with `%`, the column × 100.
- **Matching**: with no operator or `=`, the value rounded to the written digits (within
  half a unit of the last one: 0.1204 is 0.12, not 0.13); with `<`, `≤`, `>`, `≥` (`p <
  0.001`), the value stands in that relation.
- **Verdict words** (`VERDICT_WORDS`, any case, in backticks or not): each in a tagged text
  must be one of its row's verdicts (the column holds one or several, `;`-separated).
- **Untagged**: between `<!-- claims -->` and `<!-- /claims -->` (the whole document when it
  has neither), text with a checked number or a verdict word that no tag covers is a
  problem; so is a tag whose text has neither.

`check(markdown, table)` returns the problems (line, text, what differs);
`python -m tiedharness.analysis.claims WRITEUP.md comparisons.csv` prints them, exit 1.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

VALUE_COLUMNS = ("mean", "ci95", "p", "p_holm", "n", "primary", "verdict")
# Longest first, so that "not significant" is never read as "significant".
VERDICT_WORDS = ("not significant", "not settled", "significant", "shrinking", "growing", "stable")
UNCHECKED = "unchecked"

TAG = re.compile(r"<!--\s*claim:(?P<body>.*?)-->", re.DOTALL)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
OPEN, CLOSE = re.compile(r"<!--\s*claims\s*-->"), re.compile(r"<!--\s*/claims\s*-->")
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK_TARGET = re.compile(r"\]\([^)]*\)")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
HEADING = re.compile(r"^ {0,3}#{1,6}\s")
# A number not inside a word, a number or a version (ASCII letters only, so that "Δ+0.1"
# keeps its sign): +0.120, −0.065, 1,453,568, 3.2e-04, 19.4%; letters glued after it
# (1.2M, 600k) make it a name, not a measurement.
NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.,])(?P<sign>[-+−])?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:[eE](?P<exp>[-+−]?\d+))?(?P<after>%|[^\W\d_]+)?(?![\d.]\d)"
)
# What stands before a number and names its column: ±, p, Holm p, n, with an operator.
PREFIX = re.compile(
    r"(?:(?P<ci95>±)|(?P<p_holm>(?i:holm)(?:-corrected)?\s+p|p_holm)"
    r"|(?P<p>(?<![\w.])p(?:-value)?)|(?P<n>(?<![\w.])n))"
    r"\s*(?P<op><=|>=|[=<>≤≥])?\s*$"
)
VERDICT = re.compile(
    r"\b(" + "|".join(w.replace(" ", r"\s+") for w in VERDICT_WORDS) + r")\b", re.IGNORECASE
)
OPERATORS = {"": "=", "=": "=", "<": "<", ">": ">", "≤": "<=", "<=": "<=", "≥": ">=", ">=": ">="}


@dataclass(frozen=True)
class Stated:
    """A number as the text states it: which column, how it compares, to what."""

    column: str
    op: str  # =, <, <=, >, >=
    written: str  # as written, its prefix included ("p < 0.001", "± 0.009")
    number: float
    unit: float  # one unit of its last written digit
    percent: bool


@dataclass(frozen=True)
class Claim:
    """A tag: the row it selects, or why it cannot."""

    body: str
    keys: dict[str, str]
    error: str | None = None

    @property
    def unchecked(self) -> bool:
        return self.body == UNCHECKED


@dataclass(frozen=True)
class Span:
    """Text one tag covers (or that no tag covers: claim None)."""

    line: int  # the tag's line, or the text's first when untagged
    excerpt: str
    claim: Claim | None
    numbers: list[Stated]
    verdicts: list[str]
    in_claims: bool  # inside a claims section


def parse_tag(body: str) -> Claim:
    body = " ".join(body.split())
    if body == UNCHECKED:
        return Claim(body, {})
    try:
        tokens = shlex.split(body)
    except ValueError as err:
        return Claim(body, {}, f"cannot be read ({err})")
    keys: dict[str, str] = {}
    for token in tokens:
        key, equals, value = token.partition("=")
        if not equals or not key:
            return Claim(body, {}, f"{token!r} is not key=value")
        if key in keys:
            return Claim(body, {}, f"names {key} twice")
        keys[key] = value
    return Claim(body, keys, None if keys else "names no column")


def _as_float(text: str) -> float | None:
    try:
        return float(text.replace("−", "-"))
    except ValueError:
        return None


def stated_numbers(text: str, identifiers: Iterable[str] = ()) -> list[Stated]:
    """The checked numbers of `text` (code, link targets and comments already blanked),
    with the column each is about; `identifiers` are the tag's values."""
    ids = {x for x in map(_as_float, identifiers) if x is not None}
    found = []
    for m in NUMBER.finditer(text):
        if m["after"] and m["after"] != "%":
            continue  # 1.2M, 600k, 3x: a name or a unit, not a measurement
        prefix = PREFIX.search(text, 0, m.start())
        column = next((c for c in ("ci95", "p_holm", "p", "n") if prefix and prefix[c]), None)
        sign = (m["sign"] or "").replace("−", "-")
        number = float(sign + m["digits"].replace(",", "") + (f"e{m['exp']}" if m["exp"] else ""))
        measured = bool(sign or "." in m["digits"] or m["exp"])
        if column is None and (not measured or (not sign and number in ids)):
            continue  # a count, an overlap, a budget: part of what the claim is about
        decimals = len(m["digits"].partition(".")[2])
        exponent = int(m["exp"].replace("−", "-")) if m["exp"] else 0
        start = prefix.start() if column else m.start()
        found.append(
            Stated(
                column=column or "mean",
                op=OPERATORS[prefix["op"] or ""] if column else "=",
                written=" ".join(text[start : m.end()].split()),
                number=number,
                unit=10.0 ** (exponent - decimals),
                percent=m["after"] == "%",
            )
        )
    return found


def agrees(stated: Stated, value: float | None) -> bool:
    """Whether `value` is what `stated` says: equal once rounded as written, or in the
    written relation."""
    if value is None or not math.isfinite(value):
        return False
    value = value * 100 if stated.percent else value
    x = stated.number
    if stated.op == "=":  # half a unit either way; the factor absorbs binary noise
        return abs(value - x) <= stated.unit / 2 * (1 + 1e-9)
    return {"<": value < x, "<=": value <= x, ">": value > x, ">=": value >= x}[stated.op]


def verdict_words(text: str) -> list[str]:
    return [" ".join(m.group(1).lower().split()) for m in VERDICT.finditer(text)]


def _blank(text: str, pattern: re.Pattern) -> str:
    """`text` with every match of `pattern` turned into spaces, so offsets and lines hold."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blocks(base: str, plain: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph, list item, heading and table cell."""
    blocks, start, offset = [], None, 0
    for line in base.splitlines(keepends=True):
        end, stripped = offset + len(line), line.strip()
        table = stripped.startswith("|")
        if not stripped or table or LIST_ITEM.match(line) or HEADING.match(line):
            if start is not None:
                blocks.append((start, offset))
            start = None
        if table:  # a cell is a block: split where the code-blanked line has a |
            cells = re.finditer(r"[^|\n]+", plain[offset:end])
            blocks += [(offset + c.start(), offset + c.end()) for c in cells]
        elif HEADING.match(line):
            blocks.append((offset, end))
        elif stripped and start is None:
            start = offset
        offset = end
    if start is not None:
        blocks.append((start, offset))
    return blocks


def _sections(plain: str) -> tuple[list[tuple[int, int]], list[str]]:
    """The claims sections' (start, end), and what is wrong with their markers."""
    markers = sorted(
        [(m.start(), True) for m in OPEN.finditer(plain)]
        + [(m.start(), False) for m in CLOSE.finditer(plain)]
    )
    if not markers:
        return [(0, len(plain))], []
    ranges, problems, opened = [], [], None
    for offset, is_open in markers:
        where = f"line {_line(plain, offset)}"
        if is_open and opened is not None:
            problems.append(f"{where}: <!-- claims --> inside a claims section already open")
        elif is_open:
            opened = offset
        elif opened is None:
            problems.append(f"{where}: <!-- /claims --> with no <!-- claims --> before it")
        else:
            ranges.append((opened, offset))
            opened = None
    if opened is not None:
        problems.append(f"line {_line(plain, opened)}: <!-- claims --> is never closed")
        ranges.append((opened, len(plain)))
    return ranges, problems


def read_writeup(markdown: str) -> tuple[list[Span], list[str]]:
    """The write-up's spans, and the problems of its section markers."""
    base = _blank(markdown, FENCE)  # code blocks hold commands, not claims
    plain = _blank(base, CODE)  # where tags and markers are found
    shown = _blank(base, COMMENT)  # what a problem quotes
    numbers_text = _blank(_blank(shown, CODE), LINK_TARGET)
    # verdict words count in backticks too (`shrinking`): only the backticks go
    words_text = _blank(CODE.sub(lambda m: m[0].replace("`", " "), shown), LINK_TARGET)
    sections, problems = _sections(plain)
    spans = []
    for start, end in _blocks(base, plain):
        cursor = start
        tags = [(m.start(), m.end(), parse_tag(m["body"])) for m in TAG.finditer(plain, start, end)]
        for a, b, claim in [*tags, (end, end, None)]:
            first = cursor + len(plain[cursor:a]) - len(plain[cursor:a].lstrip())
            ids = claim.keys.values() if claim else ()
            numbers = stated_numbers(numbers_text[cursor:a], ids)
            verdicts = verdict_words(words_text[cursor:a])
            in_claims = any(s < a and cursor < e for s, e in sections)
            line = _line(plain, a if claim else first)
            spans.append(Span(line, _excerpt(shown[cursor:a]), claim, numbers, verdicts, in_claims))
            cursor = b
    return spans, problems


def _excerpt(text: str, most: int = 90) -> str:
    text = " ".join(text.split()).lstrip(",;:. ")  # the previous tag's punctuation
    return text if len(text) <= most else f"{text[:40]} … {text[-(most - 43) :]}"


def _cell(value: object) -> str:
    """A table cell as text; an empty or missing one as ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _same(cell: object, value: str) -> bool:
    text = _cell(cell)
    if text == value:
        return True
    a, b = _as_float(text), _as_float(value)
    return a is not None and b is not None and a == b


def select(table: pd.DataFrame, keys: dict[str, str]) -> tuple[pd.Series | None, str | None]:
    """The one row the keys select, or why there is not one."""
    for key in keys:
        if key in VALUE_COLUMNS:
            return None, f"{key} is a value column, not one that identifies a row"
        if key not in table.columns:
            return None, f"the table has no column {key!r}"
    mask = pd.Series(True, index=table.index)
    for key, value in keys.items():
        mask &= table[key].map(lambda cell, value=value: _same(cell, value)).astype(bool)
    rows = table[mask]
    if len(rows) == 1:
        return rows.iloc[0], None
    if rows.empty:
        return None, "no row of the table matches"
    values = {c: sorted(set(rows[c].map(_cell))) for c in rows.columns if c not in VALUE_COLUMNS}
    differ = "; ".join(f"{c} ({', '.join(v)})" for c, v in values.items() if len(v) > 1)
    return None, f"{len(rows)} rows match; they differ in {differ or 'nothing'}"


def row_verdicts(row: pd.Series) -> set[str]:
    return {" ".join(v.lower().split()) for v in _cell(row.get("verdict")).split(";") if v.strip()}


def check_span(span: Span, table: pd.DataFrame) -> list[str]:
    where = f"line {span.line}: {span.excerpt!r}"
    claim = span.claim
    if claim is None:
        found = [n.written for n in span.numbers] + span.verdicts
        return [f"{where}: untagged: {', '.join(found)}"] if span.in_claims and found else []
    if claim.error:
        return [f"{where}: tag [{claim.body}] {claim.error}"]
    if claim.unchecked:
        return [f"{where}: verdict word {w!r} in text tagged unchecked" for w in span.verdicts]
    if not span.numbers and not span.verdicts:
        return [f"{where}: tag [{claim.body}] checks nothing: no checked number or verdict word"]
    row, error = select(table, claim.keys)
    if row is None:
        return [f"{where}: tag [{claim.body}]: {error}"]
    problems = []
    for stated in span.numbers:
        value = _as_float(_cell(row.get(stated.column)))
        if not agrees(stated, value):
            shown = "empty" if value is None else f"{value:.4g}"
            problems.append(
                f"{where}: {stated.written} is not {stated.column} {shown} of [{claim.body}]"
            )
    verdicts = row_verdicts(row)
    for word in span.verdicts:
        if word not in verdicts:
            shown = "; ".join(sorted(verdicts)) or "empty"
            problems.append(f"{where}: {word!r} is not the verdict ({shown}) of [{claim.body}]")
    return problems


def check(markdown: str, table: pd.DataFrame) -> list[str]:
    """Every problem of the write-up against the comparisons table; empty when all agree."""
    spans, problems = read_writeup(markdown)
    for span in spans:
        problems += check_span(span, table)
    return problems


def read_table(path: str | Path) -> pd.DataFrame:
    """comparisons.csv with every cell as written ("none" and "" stay text)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("writeup", type=Path, help="the study's write-up (markdown)")
    parser.add_argument("table", type=Path, help="its comparisons.csv")
    args = parser.parse_args(argv)
    problems = check(args.writeup.read_text(), read_table(args.table))
    print("\n".join([*problems, f"{args.writeup}: {len(problems)} problems against {args.table}"]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
