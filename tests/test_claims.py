"""The write-up checker (tiedharness/analysis/claims.py) on a fixture: a write-up whose every
number and verdict word carries a tag naming its row of a comparisons table. The correct
write-up passes; each broken copy is made from it by one string replacement (asserted to
happen, so no test passes on an unchanged text) and must fail, naming the text it broke."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tiedharness.analysis.claims import (
    VERDICT_WORDS,
    agrees,
    check,
    main,
    read_table,
    read_writeup,
    stated_numbers,
)

DATA = Path(__file__).parent / "data" / "claims"
WRITEUP = (DATA / "writeup.md").read_text()
TABLE = read_table(DATA / "comparisons.csv")

# the tags of the fixture's sentences, to break them one at a time
TEST_FINAL = "task=bible_lm arm=embed_output baseline=none metric=loss split=test endpoint=final"
QK_MASKED = 'arm="qk+mask_self" metric=loss'


def variant(*replacements: tuple[str, str], text: str = WRITEUP) -> str:
    """`text` with each `old` replaced by `new`; each `old` occurs exactly once."""
    for old, new in replacements:
        assert text.count(old) == 1, f"the fixture holds {old!r} {text.count(old)} times"
        text = text.replace(old, new)
    return text


def test_the_correct_writeup_agrees_with_its_table():
    assert check(WRITEUP, TABLE) == []
    spans, problems = read_writeup(WRITEUP)
    tagged = [s for s in spans if s.claim is not None and not s.claim.unchecked]
    assert problems == [] and len(tagged) >= 15  # the fixture does check something
    assert sum(len(s.numbers) for s in tagged) >= 30


def test_a_table_read_with_pandas_defaults_agrees_too():
    """The report may hand over its DataFrame as it is: NaN for empty cells, floats for
    overlaps (a tag's 0.5 or 1 against the cell's 0.5 or 1.0), numbers as numbers."""
    table = pd.read_csv(DATA / "comparisons.csv")
    assert table["task.overlap"].dtype == float and table["baseline"].isna().any()
    assert check(WRITEUP, table) == []


@pytest.mark.parametrize(
    ("moves", "names", "wrong"),
    [
        # qkv's Δ into the masked qk sentence (and the masked one's into qkv's)
        (
            [
                ("`qkv` costs +0.104", "`qkv` costs −0.013"),
                ("self-mask\n  −0.013", "self-mask\n  +0.104"),
            ],
            "self-mask",
            "+0.104 is not mean -0.0131",
        ),
        # the final budget's Δ into the quarter budget's phrase: same arm, another endpoint
        ([("down from +0.209", "down from +0.120")], "down from", "+0.120 is not mean 0.2093"),
        # the validation Δ into the test sentence: another split
        (
            [("costs\n  +0.120 ±", "costs\n  +0.119 ±")],
            "(a) Tied LM embeddings",
            "+0.119 is not mean 0.1204",
        ),
        # BLEU's interval into the loss sentence: another metric
        (
            [("−0.167 ± 0.036", "−0.167 ± 13.18")],
            "at overlap 1, `growing`",
            "± 13.18 is not ci95 0.0361",
        ),
        # the overlap-0 arm's p into the overlap-1 sentence: another cell
        ([("(p 0.003,\n  Holm p 0.011)", "(p 0.182,\n  Holm p 0.011)")], "at overlap 1", "p 0.182"),
    ],
)
def test_a_number_moved_into_another_comparisons_sentence_fails(moves, names, wrong):
    problems = check(variant(*moves), TABLE)
    assert problems, "the moved number passed"
    assert any(names in p and wrong in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "word"),
    [
        ("(p 4.5e-04), `shrinking`", "(p 4.5e-04), `growing`", "'growing'"),
        ("at overlap 1, `growing`", "at overlap 1, `shrinking`", "'shrinking'"),
        ("is `not significant` and `stable`", "is `significant` and `stable`", "'significant'"),
        ("is `not significant` and `stable`", "is `not significant` and `not settled`", "settled"),
        ("(p 0.094), is not significant", "(p 0.094), is significant", "'significant'"),
    ],
)
def test_a_swapped_verdict_word_fails(old, new, word):
    problems = check(variant((old, new)), TABLE)
    assert len(problems) == 1, problems
    assert word in problems[0] and "is not the verdict" in problems[0], problems


@pytest.mark.parametrize(
    ("printed", "passes"),
    [
        ("+0.12 ±", True),
        ("+0.1204 ±", True),
        ("+0.13 ±", False),
        ("+0.1 ±", True),
        ("0.120 ±", True),
    ],
)
def test_rounding_as_printed(printed, passes):
    """The row's mean is 0.1204: any number it rounds to, at the printed digits, is it."""
    problems = check(variant(("+0.120 ±", printed)), TABLE)
    assert (problems == []) is passes, problems


@pytest.mark.parametrize(
    ("written", "value", "expected"),
    [
        ("0.12", 0.1204, True),
        ("0.13", 0.1204, False),
        ("−0.065", -0.0654, True),
        ("+0.065", -0.0654, False),  # the sign is part of the number
        ("0.125", 0.12549, True),
        ("0.12", 0.125, True),  # a tie rounds either way
        ("0.13", 0.125, True),
        ("3.2e-04", 0.000324, True),
        ("3.2e-04", 0.000326, False),
        ("+17", 17.4, True),
        ("19.4%", 0.1942, True),
        ("19.4%", 0.1934, False),
        ("−16,640", -16640.0, True),
    ],
)
def test_a_number_matches_its_value_rounded_as_written(written, value, expected):
    (stated,) = stated_numbers(written)
    assert agrees(stated, value) is expected


@pytest.mark.parametrize(
    ("text", "column", "op"),
    [
        ("+0.12", "mean", "="),
        ("4.039", "mean", "="),
        ("± 0.009", "ci95", "="),
        ("(p 0.003)", "p", "="),
        ("p=0.003", "p", "="),
        ("p-value 0.003", "p", "="),
        ("p < 0.001", "p", "<"),
        ("p ≤ 0.001", "p", "<="),
        ("p > 0.05", "p", ">"),
        ("Holm p 0.002", "p_holm", "="),
        ("Holm-corrected p < 0.01", "p_holm", "<"),
        ("p_holm 0.002", "p_holm", "="),
        ("n = 3", "n", "="),
    ],
)
def test_each_written_form_names_its_column(text, column, op):
    (stated,) = stated_numbers(text)
    assert (stated.column, stated.op) == (column, op)


def test_identifiers_and_counts_are_not_checked():
    text = "at overlap 0.5, 3 seeds, 1,200,004 tokens, 1.2M tokens, 600k, d=64, 2026-11-28"
    assert stated_numbers(text, ["0.5"]) == []
    assert [s.written for s in stated_numbers(text)] == ["0.5"]  # not one of the tag's values


ROW = pd.DataFrame(
    [
        {
            "arm": "a",
            "metric": "loss",
            "mean": "0.1",
            "p": "0.00032",
            "p_holm": "0.0019",
            "primary": "True",
            "verdict": "significant",
        }
    ]
)


@pytest.mark.parametrize(
    ("written", "passes"),
    [
        ("p < 0.001", True),
        ("p 3.2e-04", True),
        ("p = 0.0003", True),
        ("p 0.0004", False),
        ("p > 0.001", False),
        ("p ≤ 0.0003", False),  # 0.00032 is not at most 0.0003
        ("p < 0.0001", False),
        ("p 0.002", False),  # the Holm-corrected value under the plain p
        ("Holm p 0.002", True),
        ("p_holm 0.002", True),
        ("Holm p < 0.01", True),
        ("Holm p 0.0003", False),
    ],
)
def test_p_forms(written, passes):
    problems = check(f"The tie costs +0.1 ({written}). <!-- claim: arm=a metric=loss -->", ROW)
    assert (problems == []) is passes, problems


def test_holm_p_on_a_row_without_one_fails():
    text = "+0.209 ± 0.046 (p 0.003)"
    problems = check(variant((text, text.replace("(p", "(Holm p"))), TABLE)
    assert len(problems) == 1 and "Holm p 0.003 is not p_holm empty" in problems[0], problems


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            TEST_FINAL,
            TEST_FINAL.replace(" split=test", ""),
            "2 rows match; they differ in split (test, valid)",
        ),
        (
            TEST_FINAL,
            TEST_FINAL.replace("embed_output", "embed_outptu"),
            "no row of the table matches",
        ),
        (TEST_FINAL, TEST_FINAL.replace("split=", "spilt="), "the table has no column 'spilt'"),
        (TEST_FINAL, TEST_FINAL + " mean=0.12", "mean is a value column"),
        (TEST_FINAL, TEST_FINAL.replace("arm=", "arm "), "'arm' is not key=value"),
        (TEST_FINAL, TEST_FINAL + " task=bible_lm", "names task twice"),
        (QK_MASKED, 'arm="qk+mask_self metric=loss', "cannot be read"),
        ("metric=params_total", "metric=params_total task=bible_mt", "no row of the table matches"),
    ],
)
def test_an_ambiguous_or_dangling_tag_fails_naming_it(old, new, message):
    problems = check(variant((old, new)), TABLE)
    assert len(problems) == 1, problems
    assert message in problems[0] and "tag [" in problems[0], problems


def test_a_number_no_tag_covers_is_untagged():
    # a sentence added after a bullet's last tag, a tag dropped at the end of a bullet
    added = variant(
        (
            "ms a step <!-- claim: unchecked -->.",
            "ms a step <!-- claim: unchecked -->. Dropout adds +0.05.",
        )
    )
    (problem,) = check(added, TABLE)
    assert "Dropout adds +0.05" in problem and "untagged: +0.05" in problem
    dropped = variant((" <!-- claim: task.overlap=0.5 arm=qkv metric=loss --> |", " |"))
    (problem,) = check(dropped, TABLE)
    assert "untagged: +0.104" in problem
    worded = variant(
        (
            "measured 125.0, 125.7 and 157.6 ms a step <!-- claim: unchecked -->.",
            "measured 125.0, 125.7 and 157.6 ms a step <!-- claim: unchecked -->. It is `stable`.",
        )
    )
    assert "untagged: stable" in check(worded, TABLE)[0]


def test_outside_the_claims_section_nothing_is_untagged_but_without_markers_all_is():
    assert any(s.numbers and not s.in_claims for s in read_writeup(WRITEUP)[0])
    unmarked = variant(("<!-- claims -->\n", ""), ("<!-- /claims -->\n", ""))
    problems = check(unmarked, TABLE)
    assert any("untagged: 2.69e-2, 1.13e-2" in p for p in problems), problems
    assert any("untagged: 0.4, 1.2, +0.05" in p for p in problems), problems
    unclosed = variant(("<!-- /claims -->\n", ""))
    assert any("<!-- claims --> is never closed" in p for p in check(unclosed, TABLE))


def test_a_tag_that_checks_nothing_fails_and_unchecked_text_holds_no_verdict():
    empty = variant(("19.4% of a step's", "most of a step's"))
    (problem,) = check(empty, TABLE)
    assert "checks nothing" in problem and "metric=output_flops_share" in problem
    verdict = variant(("157.6 ms a step", "157.6 ms a step, `stable`"))
    (problem,) = check(verdict, TABLE)
    assert "'stable' in text tagged unchecked" in problem


def test_a_problem_names_its_line():
    problems = check(variant(("down from +0.209", "down from +0.210")), TABLE)
    line = next(i for i, text in enumerate(WRITEUP.splitlines(), 1) if "endpoint=300000" in text)
    assert len(problems) == 1 and problems[0].startswith(f"line {line}: "), problems


def test_the_verdict_words_are_a_closed_list_that_holds_every_verdict_of_the_fixture():
    verdicts = {v.strip() for cell in TABLE["verdict"] for v in cell.split(";") if v.strip()}
    assert verdicts <= set(VERDICT_WORDS)


def test_the_command_exits_1_with_the_problems(tmp_path, capsys):
    table = str(DATA / "comparisons.csv")
    assert main([str(DATA / "writeup.md"), table]) == 0
    broken = tmp_path / "writeup.md"
    broken.write_text(variant(("(p 4.5e-04), `shrinking`", "(p 4.5e-04), `growing`")))
    assert main([str(broken), table]) == 1
    assert "'growing' is not the verdict" in capsys.readouterr().out
