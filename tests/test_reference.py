"""The literature study's write-up (results/reference/literature_cpu/README.md) and the
README's five-line summary of it ("## Reference results") against the committed report:
every measured number they state (every number written with a decimal point or an
exponent: Δs, their intervals, p-values, BLEU, chrF, losses, learning rates) is a value of
the committed summary.csv, rounded as written; and they link only committed files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "literature_cpu"
STUDY = REFERENCE / "README.md"  # the write-up, next to its report
SECTION = "## Reference results"  # the README's summary of it
# +0.012, −0.3, 0.0004, 45.2, 5.7e-3, 2.1e-05 (a unicode minus is a minus)
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+\.\d+(?:e[-+−]?\d+)?|(?<![\w.])[-+−]?\d+e[-+−]?\d+")


def section(readme: str) -> str:
    """The README's "## Reference results" section, up to the next heading of its level."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def texts() -> dict[Path, str]:
    """Each checked text, keyed by the folder its relative links start from."""
    return {STUDY.parent: STUDY.read_text(), ROOT: section((ROOT / "README.md").read_text())}


def stated_numbers(text: str) -> list[str]:
    """The decimal numbers of the text, links and file names left out."""
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"`[^`]*`", "", text)  # code: commands, file names, keys
    return [m.replace("−", "-") for m in NUMBER.findall(text)]


def matches(written: str, value: float) -> bool:
    """Whether `value` is `written` once rounded as it is written."""
    if not math.isfinite(value):
        return False
    number = float(written)
    if "e" in written:  # k digits after the mantissa's point
        digits = len(written.split("e")[0].split(".")[1]) if "." in written else 0
        return float(f"{value:.{digits}e}") == number
    decimals = len(written.split(".")[1])
    return round(value, decimals) == number or f"{value:.{decimals}f}" == f"{number:.{decimals}f}"


def summary_values() -> list[float]:
    summary = pd.read_csv(REFERENCE / "summary.csv")
    values = summary.select_dtypes("number").to_numpy().ravel()
    return [float(v) for v in values if math.isfinite(v)]


def test_every_number_of_the_reference_results_is_in_the_committed_summary():
    values = summary_values()
    for base, text in texts().items():
        numbers = stated_numbers(text)
        least = 30 if base == STUDY.parent else 3  # the write-up; the README's five lines
        assert len(numbers) >= least, f"{base}: states the study's numbers"
        missing = [n for n in numbers if not any(matches(n, v) for v in values)]
        assert not missing, f"numbers of {base} not in {REFERENCE / 'summary.csv'}: {missing}"


def test_the_reference_results_link_committed_files():
    for base, text in texts().items():
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith("http"):
                assert (base / target).exists(), f"{base}: {target}"


def test_every_synthetic_baseline_is_off_bleus_floor_and_ceiling():
    summary = pd.read_csv(REFERENCE / "summary.csv")
    baselines = summary[(summary["task"] == "synth_translation") & (summary["sharing"] == "none")]
    assert len(baselines) >= 3
    assert baselines["bleu_mean"].between(10, 90).all(), baselines["bleu_mean"].tolist()


def test_the_summary_has_what_a_reviewer_reads():
    summary = pd.read_csv(REFERENCE / "summary.csv", keep_default_na=False)
    for column in ("verdict", "lr", "delta_val_loss_p", "delta_val_bpc_p", "delta_bleu_p"):
        assert column in summary.columns, column
    compared = summary[summary["sharing"] != "none"]
    assert (compared["verdict"] != "").all() and (summary["n"] >= 3).all()
    assert sum(c.startswith("tokens_at_") for c in summary.columns) >= 3  # the budgets


@pytest.mark.parametrize(
    ("written", "value", "expected"),
    [
        ("+0.012", 0.01249, True),
        ("0.012", 0.0126, False),
        ("-0.31", -0.3149, True),
        ("5.7e-3", 0.005656854, True),
        ("2.1e-05", 2.149e-05, True),
        ("45.2", 45.25001, False),
    ],
)
def test_matching_rounds_as_written(written, value, expected):
    assert matches(written, value) is expected


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_a_committed_cell_and_seed_reproduces_its_validation_loss(tmp_path):
    """The write-up's rerun command for the study's cheapest cell, seed 1 (dropout on, as in
    the study): the validation loss runs.csv holds, to 1e-6, from a cold data cache and
    again from the warm one it leaves."""
    import json
    import os
    import subprocess
    import sys

    summary = pd.read_csv(REFERENCE / "summary.csv")
    runs = pd.read_csv(REFERENCE / "runs.csv")

    def cheapest(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[
            (frame["task"] == "bible_lm")
            & (frame["sharing"] == "none")
            & frame["model"].str.startswith("small: d=64,")
            & (frame["task.vocab_size"].astype(str) == "1000")
            & (frame["model.init"] == "fairseq")
        ]

    (lr,) = cheapest(summary)["lr"]
    expected = cheapest(runs[runs["status"] == "completed"]).set_index("seed").loc[1, "val_loss"]
    env = {**os.environ, "TIEDHARNESS_CACHE": str(tmp_path / "cache")}  # empty: cold
    for cache in ("cold", "warm"):
        run_dir = tmp_path / cache
        command = [
            sys.executable, "-m", "tiedharness.cli.train",
            "experiment=literature_cpu", "cell=lm_narrow_smallvocab_none", "trainer.seed=1",
            f"trainer.lr={lr!r}", "logger=none", f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=1800, cwd=tmp_path, env=env
        )
        assert out.returncode == 0, out.stderr[-3000:]
        record = json.loads((run_dir / "run.json").read_text())
        assert record["metrics"]["val_loss"] == pytest.approx(expected, abs=1e-6), cache
