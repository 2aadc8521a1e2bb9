"""The vocabulary as a comparison axis (issue 29): a sweep of two language pairs × joint
and separate vocabularies × none / encdec_vocab / three_way × 3 seeds, planted as run
records with known numbers, summarised by the library and by `tiedharness-report`; every
Δ is computed again here from the planted numbers (statistics, scipy)."""

from __future__ import annotations

import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from tiedharness.analysis.aggregate import load_runs, summarize
from tiedharness.analysis.budgets import budget_deltas
from tiedharness.analysis.style import strategy_order, strategy_style
from tiedharness.analysis.tables import summary_table
from tiedharness.tracking.record import SCHEMA_VERSION, RunRecord
from tiedharness.tracking.run_folder import RunFolder

SEEDS = (0, 1, 2)
PAIRS = {"de": 3.0, "zh": 4.0}  # none@separate's validation loss, before seed noise
BLEU = {"de": 30.0, "zh": 12.0}
# (strategy, vocabulary) → its effect on val loss and BLEU, and its per-seed noise
ARMS = {
    ("none", "separate"): (0.00, 0.0, (0.010, -0.020, 0.015), (0.3, -0.4, 0.2)),
    ("none", "joint"): (0.05, -0.5, (0.030, 0.010, 0.080), (0.1, -0.9, 0.5)),
    ("encdec_vocab", "joint"): (-0.02, 0.6, (-0.015, 0.000, -0.010), (0.9, 0.2, 0.7)),
    ("three_way", "joint"): (-0.06, 1.1, (-0.040, -0.070, -0.020), (1.5, 0.4, 1.9)),
}
# the output layer's share of a step's FLOPs: the joint vocabulary (8k) enlarges the
# softmax over the separate one's target side (4k)
FLOPS_SHARE = {"separate": {"de": 0.20, "zh": 0.22}, "joint": {"de": 0.31, "zh": 0.34}}
HALF_BUDGET = 0.4  # every run's val loss at half its budget is this much higher, plus noise
HALF_NOISE = {arm: tuple(0.5 * n for n in reversed(ARMS[arm][2])) for arm in ARMS}


def planted(pair: str, arm: tuple[str, str], seed: int) -> dict[str, float]:
    """One run's planted metrics."""
    loss_effect, bleu_effect, loss_noise, bleu_noise = ARMS[arm]
    flops = FLOPS_SHARE[arm[1]][pair] + (0.004 if arm[0] == "none" else 0.0) + 0.001 * seed
    bleu = BLEU[pair] + bleu_effect + bleu_noise[seed]
    return {
        "val_loss": PAIRS[pair] + loss_effect + loss_noise[seed],
        "bleu": bleu,
        "chrf": 1.5 * bleu + 10 + 0.05 * seed * seed,
        "output_step_flops_share": flops,
        "output_step_time_share": 1.1 * flops + 0.003 * seed,
        "output_step_time_share_iqr": 0.01,
        "train_tokens_per_s": 1000.0 - 500 * flops,
        "vocab_size_tgt": 8000 if arm[1] == "joint" else 4000,
        "half_val_loss": PAIRS[pair]
        + loss_effect
        + loss_noise[seed]
        + HALF_BUDGET
        + HALF_NOISE[arm][seed],
    }


def write_sweep(folder: Path, arms=ARMS, pairs=PAIRS) -> Path:
    """The planted sweep, one run folder each, through RunFolder.write_record."""
    job = 0
    for pair in pairs:
        for strategy, vocab in arms:
            for seed in SEEDS:
                write_run(folder / str(job), job, pair, (strategy, vocab), seed)
                job += 1
    return folder


def write_run(folder: Path, job: int, pair: str, arm: tuple[str, str], seed: int) -> None:
    strategy, vocab = arm
    metrics = planted(pair, arm, seed)
    half = metrics.pop("half_val_loss")
    record = RunRecord.from_dict(
        {
            "schema": SCHEMA_VERSION,
            "run_id": f"{pair}-{strategy}-{vocab}-{seed}",
            "experiment": "vocab_axis",
            "sweep_id": "vocab-sweep",
            "job_num": job,
            "task": "bible_pair",
            "model": "tiny",
            "sharing": strategy,
            "seed": seed,
            "status": "completed",
            "config": {
                "task": {"name": "bible_pair", "src": pair, "tgt": "en", "vocab": vocab},
                "trainer": {"seed": seed},
                "sharing": {"strategies": [] if strategy == "none" else [strategy]},
            },
            "params": {"total": 1000 if strategy == "none" else 800},
            "metrics": {**metrics, "steps": 100, "tokens": 25600},
            "budgets": [
                {"fraction": 0.5, "step": 50, "tokens": 12800, "val_loss": half},
                {"fraction": 1.0, "step": 100, "tokens": 25600, "val_loss": metrics["val_loss"]},
            ],
        }
    )
    folder.mkdir(parents=True)
    RunFolder(folder).write_record(record)


def expected(pair: str, arm: tuple[str, str], metric: str, base=("none", "separate")) -> dict:
    """The paired Δ arm − base over the seeds, computed from the planted numbers."""
    mine = [planted(pair, arm, s)[metric] for s in SEEDS]
    theirs = [planted(pair, base, s)[metric] for s in SEEDS]
    diffs = [a - b for a, b in zip(mine, theirs, strict=True)]
    t = stats.t.ppf(0.975, len(diffs) - 1)
    return {
        "mean": statistics.mean(diffs),
        "ci95": t * statistics.stdev(diffs) / math.sqrt(len(diffs)),
        "p": float(stats.ttest_rel(mine, theirs).pvalue),
        "n": len(diffs),
    }


def label(arm: tuple[str, str]) -> str:
    return f"{arm[0]}@{arm[1]}"


COMPARED = [arm for arm in ARMS if arm != ("none", "separate")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("vocab_sweep"))


def test_the_vocabulary_is_part_of_the_label_and_no_cell_key(sweep):
    runs = load_runs(sweep)
    assert runs.warnings == []
    assert runs.swept == ["task.src"]  # task.vocab is an axis of comparison, not of cells
    assert set(runs.frame["sharing"]) == {label(arm) for arm in ARMS}
    assert set(runs.frame["strategy"]) == {"none", "encdec_vocab", "three_way"}
    summary = summarize(runs)
    assert len(summary) == len(PAIRS) * len(ARMS)
    assert list(summary.columns).index("baseline") == list(summary.columns).index("sharing") + 1
    assert set(summary["baseline"]) == {"none@separate"}


@pytest.mark.parametrize("pair", list(PAIRS))
def test_each_arm_is_compared_with_none_on_the_separate_vocabulary(sweep, pair):
    summary = summarize(load_runs(sweep)).set_index(["task.src", "sharing"])
    for arm in COMPARED:
        row = summary.loc[(pair, label(arm))]
        for metric in ("val_loss", "bleu", "chrf"):
            want = expected(pair, arm, metric)
            for stat in ("mean", "ci95", "p"):
                got = row[f"delta_{metric}_{stat}"]
                assert got == pytest.approx(want[stat], rel=1e-9, abs=1e-12), (arm, metric, stat)
            assert row[f"delta_{metric}_n"] == 3
        assert row["delta_params_total_mean"] == (0 if arm[0] == "none" else -200)
    base = summary.loc[(pair, "none@separate")]
    assert base["delta_val_loss_mean"] == 0 and base["delta_val_loss_n"] == 3


@pytest.mark.parametrize("pair", list(PAIRS))
def test_each_row_states_its_own_and_its_baselines_output_layer_share(sweep, pair):
    summary = summarize(load_runs(sweep)).set_index(["task.src", "sharing"])
    base = [planted(pair, ("none", "separate"), s) for s in SEEDS]
    for arm in ARMS:
        row, own = summary.loc[(pair, label(arm))], [planted(pair, arm, s) for s in SEEDS]
        for share in ("output_step_flops_share", "output_step_time_share"):
            mean = statistics.mean(r[share] for r in own)
            assert row[f"{share}_mean"] == pytest.approx(mean, rel=1e-12)
            baseline = statistics.mean(r[share] for r in base)
            assert row[f"baseline_{share}_mean"] == pytest.approx(baseline, rel=1e-12)
    # the numbers the question needs, on one row: the joint softmax costs more, and
    # three_way still wins against none on separate vocabularies
    row = summary.loc[(pair, "three_way@joint")]
    assert row["output_step_flops_share_mean"] > row["baseline_output_step_flops_share_mean"]
    assert row["delta_val_loss_mean"] < 0


def test_the_paired_delta_at_every_budget_is_against_the_same_baseline(sweep):
    runs = load_runs(sweep)
    summary = summarize(runs).set_index(["task.src", "sharing"])
    deltas = budget_deltas(runs)
    base = deltas[deltas["sharing"] == "none@separate"]  # its own values, no Δ with itself
    assert len(base) and base["mean"].isna().all() and base["value_mean"].notna().all()
    assert set(deltas["baseline"]) == {"none@separate"}
    for pair in PAIRS:
        for arm in COMPARED:
            mine = [planted(pair, arm, s)["half_val_loss"] for s in SEEDS]
            theirs = [planted(pair, ("none", "separate"), s)["half_val_loss"] for s in SEEDS]
            half = statistics.mean(a - b for a, b in zip(mine, theirs, strict=True))
            row = summary.loc[(pair, label(arm))]
            assert row["delta_val_loss_mean_at_0.5"] == pytest.approx(half, rel=1e-9)
            assert row["delta_val_loss_p_at_0.5"] == pytest.approx(
                stats.ttest_rel(mine, theirs).pvalue, rel=1e-9
            )
            final = expected(pair, arm, "val_loss")["mean"]
            assert row["delta_val_loss_mean_at_1"] == pytest.approx(final, rel=1e-9)
            at = deltas[
                (deltas["task.src"] == pair)
                & (deltas["sharing"] == label(arm))
                & (deltas["metric"] == "val_loss")
            ].set_index("fraction")
            assert at.loc[0.5, "mean"] == pytest.approx(half, rel=1e-9)
            assert at.loc[1.0, "n"] == 3
        assert summary.loc[(pair, "none@separate"), "verdict"] == ""


def test_a_cell_without_none_on_separate_vocabularies_falls_back_to_none_joint(tmp_path):
    write_sweep(tmp_path / "de", pairs={"de": PAIRS["de"]})
    zh = {arm: v for arm, v in ARMS.items() if arm != ("none", "separate")}
    write_sweep(tmp_path / "zh", arms=zh, pairs={"zh": PAIRS["zh"]})
    runs = load_runs(tmp_path)
    assert runs.swept == ["task.src"]
    (warning,) = runs.warnings
    assert "src=zh" in warning and "no completed none@separate run" in warning
    assert "compared with none@joint" in warning
    summary = summarize(runs).set_index(["task.src", "sharing"])
    assert summary.loc[("de", "three_way@joint"), "baseline"] == "none@separate"
    row = summary.loc[("zh", "three_way@joint")]
    assert row["baseline"] == "none@joint"
    want = expected("zh", ("three_way", "joint"), "val_loss", base=("none", "joint"))
    assert row["delta_val_loss_mean"] == pytest.approx(want["mean"], rel=1e-9)
    assert row["delta_val_loss_p"] == pytest.approx(want["p"], rel=1e-9)
    joint = statistics.mean(
        planted("zh", ("none", "joint"), s)["output_step_flops_share"] for s in SEEDS
    )
    assert row["baseline_output_step_flops_share_mean"] == pytest.approx(joint, rel=1e-12)
    assert summary.loc[("zh", "none@joint"), "delta_val_loss_mean"] == 0  # its own baseline


def test_a_cell_without_any_none_is_warned_and_has_no_delta(tmp_path):
    write_sweep(tmp_path / "de", pairs={"de": PAIRS["de"]})
    tied = {arm: v for arm, v in ARMS.items() if arm[0] != "none"}
    write_sweep(tmp_path / "zh", arms=tied, pairs={"zh": PAIRS["zh"]})
    runs = load_runs(tmp_path)
    (warning,) = runs.warnings
    assert "src=zh" in warning and "no completed none@separate or none@joint run" in warning
    row = summarize(runs).set_index(["task.src", "sharing"]).loc[("zh", "three_way@joint")]
    assert row["delta_val_loss_n"] == 0 and math.isnan(row["delta_val_loss_mean"])
    assert math.isnan(row["baseline_output_step_flops_share_mean"])


def test_a_sweep_that_does_not_vary_the_vocabulary_keeps_todays_labels(tmp_path):
    joint = {arm: v for arm, v in ARMS.items() if arm[1] == "joint"}
    runs = load_runs(write_sweep(tmp_path, arms=joint))
    assert runs.swept == ["task.src"] and runs.warnings == []
    summary = summarize(runs)
    assert list(summary["sharing"]) == ["none", "encdec_vocab", "three_way"] * 2
    assert not any(c == "baseline" or c.startswith("baseline_") for c in summary.columns)
    row = summary.set_index(["task.src", "sharing"]).loc[("zh", "three_way")]
    want = expected("zh", ("three_way", "joint"), "val_loss", base=("none", "joint"))
    assert row["delta_val_loss_mean"] == pytest.approx(want["mean"], rel=1e-9)
    header, _ = summary_table(runs, summary)
    assert "Δval loss vs none" in header and "baseline" not in header


def test_figures_style_an_arm_by_its_strategy():
    assert strategy_style("three_way@joint") == strategy_style("three_way")
    assert strategy_style("none@joint") == strategy_style("none")
    separate = strategy_style("none@separate")
    assert separate["color"] == strategy_style("none")["color"]
    assert separate["marker"] != strategy_style("none")["marker"]
    assert separate.get("linestyle") == "--"
    labels = ["three_way@joint", "none@separate", "encdec_vocab@joint", "none@joint"]
    assert strategy_order(labels) == [
        "none@joint",
        "none@separate",
        "encdec_vocab@joint",
        "three_way@joint",
    ]


@pytest.mark.slow  # the whole report command: the default run stays under 10 minutes
def test_the_report_command_writes_the_vocabulary_rows(sweep, tmp_path):
    exe = shutil.which("tiedharness-report", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-report is not installed next to this Python"
    out = tmp_path / "report"
    result = subprocess.run(
        [exe, str(sweep), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "24 runs (24 completed)" in result.stdout
    summary = pd.read_csv(out / "summary.csv").set_index(["task.src", "sharing"])
    for pair in PAIRS:
        base = [planted(pair, ("none", "separate"), s) for s in SEEDS]
        for arm in COMPARED:
            row = summary.loc[(pair, label(arm))]
            assert row["baseline"] == "none@separate"
            for metric in ("val_loss", "bleu"):
                want = expected(pair, arm, metric)
                assert row[f"delta_{metric}_mean"] == pytest.approx(want["mean"], rel=1e-9)
                assert row[f"delta_{metric}_p"] == pytest.approx(want["p"], rel=1e-9)
            flops = statistics.mean(r["output_step_flops_share"] for r in base)
            assert row["baseline_output_step_flops_share_mean"] == pytest.approx(flops)
            time = statistics.mean(r["output_step_time_share"] for r in base)
            assert row["baseline_output_step_time_share_mean"] == pytest.approx(time)
    markdown = (out / "summary.md").read_text()
    header = next(x for x in markdown.splitlines() if x.startswith("| task |"))
    assert "| baseline |" in header and "Δval loss vs baseline" in header
    assert "baseline output FLOP share" in header
    assert "The vocabulary is a comparison axis" in markdown
    rows = [x for x in markdown.splitlines() if "| de | three_way@joint | none@separate |" in x]
    assert len(rows) == 1
    assert "three\\_way@joint" in (out / "summary.tex").read_text()
    budgets = pd.read_csv(out / "budgets.csv")
    compared = budgets[budgets["mean"].notna()]  # the baseline's own rows hold no Δ
    assert set(compared["sharing"]) == {label(arm) for arm in COMPARED}
    assert set(budgets["sharing"]) == {label(arm) for arm in COMPARED} | {"none@separate"}
    # the softmax-cost figure reads the suffixed labels (two target vocabularies per task)
    assert (out / "figures" / "softmax_cost.png").exists()
    assert (out / "figures" / "delta_vs_budget.png").exists()
