"""Reviewer-grade endpoints on planted runs (issue 30, acceptance 1): run folders with known
per-seed validation and test losses at three budgets, on two tasks. Each arm's best budget
is picked on validation per seed, the Δ at the arms' own best budgets is read on test,
Holm's correction runs over the declared primary comparisons, a contrast across tasks is
Welch's test of the per-seed Δs, and the trend verdict tests the change between budgets.
Every expected value is computed here from the planted numbers with scipy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from tiedharness.analysis.aggregate import load_runs, summarize
from tiedharness.analysis.endpoints import comparisons
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

FRACTIONS = (0.25, 0.5, 1.0)
SEEDS = (0, 1, 2, 3)
NONE_VAL = {0.25: 4.0, 0.5: 3.6, 1.0: 3.5}  # none keeps improving: best at the whole budget
TEST_OFFSET = 0.05  # test loss = validation loss + this, for none
NONE_NOISE = (0.01, -0.02, 0.005, 0.0)
QK_NOISE = (0.012, -0.010, 0.009, -0.011)  # sd 0.0122: Δ 0.02 has raw p ≈ 0.046
# per arm and task: Δ validation loss and Δ test loss at each budget (before seed noise)
PLANTED = {
    ("embed_output", "related"): ({0.25: -0.1, 0.5: -0.35, 1.0: -0.05}, {0.25: -0.1, 0.5: -0.30, 1.0: -0.10}),
    ("embed_output", "distant"): ({0.25: -0.05, 0.5: -0.08, 1.0: -0.05}, {0.25: -0.05, 0.5: -0.05, 1.0: -0.05}),
    ("qk", "related"): ({f: 0.02 for f in FRACTIONS}, {f: 0.02 for f in FRACTIONS}),
    ("qk", "distant"): ({f: 0.02 for f in FRACTIONS}, {f: 0.02 for f in FRACTIONS}),
}  # fmt: skip
EMBED_NOISE = {0.25: (0.004, -0.003, 0.002, -0.001), 0.5: (0.003, 0.001, -0.004, 0.0), 1.0: (-0.002, 0.004, 0.0, -0.003)}  # fmt: skip
REPORT = {
    "primary": [{"arm": "embed_output"}, {"arm": "qk"}],  # loss, final, every cell: 4 tests
    "contrasts": [
        {
            "name": "related_minus_distant",
            "first": {"arm": "embed_output", "where": {"task": "related"}},
            "second": {"arm": "embed_output", "where": {"task": "distant"}},
        }
    ],
}


def planted(arm: str, task: str, seed: int, fraction: float) -> tuple[float, float]:
    """A run's (validation loss, test loss) at a budget."""
    val = NONE_VAL[fraction] + NONE_NOISE[seed]
    test = val + TEST_OFFSET
    if arm == "none":
        return val, test
    d_val, d_test = PLANTED[(arm, task)]
    noise = QK_NOISE[seed] if arm == "qk" else EMBED_NOISE[fraction][seed]
    return val + d_val[fraction] + noise, test + d_test[fraction] + noise


def write_sweep(folder: Path) -> Path:
    job = 0
    for task in ("related", "distant"):
        for arm in ("none", "embed_output", "qk"):
            for seed in SEEDS:
                budgets = []
                for fraction in FRACTIONS:
                    val, test = planted(arm, task, seed, fraction)
                    budgets.append(
                        {"fraction": fraction, "step": int(100 * fraction),
                         "tokens": int(25600 * fraction), "val_loss": val, "test_loss": test}
                    )  # fmt: skip
                record = RunRecord(
                    run_id=f"planted-{job}", experiment="planted", sweep_id="planted",
                    job_num=job, task=task, model="tiny", sharing=arm, seed=seed,
                    status=RunStatus.completed,
                    config={"task": {"name": task}, "trainer": {"seed": seed},
                            "sharing": {"strategies": [] if arm == "none" else [arm]},
                            "report": REPORT},
                    params={"total": 1000},
                    metrics={**{k: v for k, v in budgets[-1].items() if k != "fraction"}, "steps": 100},
                    budgets=budgets,
                )  # fmt: skip
                (folder / str(job)).mkdir(parents=True)
                RunFolder(folder / str(job)).write_record(record)
                job += 1
    return folder


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    return comparisons(load_runs(write_sweep(tmp_path_factory.mktemp("planted"))))


def row(table, arm, task, endpoint="final", split="test", metric="loss") -> pd.Series:
    mine = table[
        (table["arm"] == arm) & (table["endpoint"] == endpoint) & (table["split"] == split)
        & (table["metric"] == metric) & (table["task"] == task if task else True)
    ]  # fmt: skip
    assert len(mine) == 1, (arm, task, endpoint, split)
    return mine.iloc[0]


def test_the_best_budget_is_each_runs_lowest_validation_loss(table):
    """embed_output on `related` is best at half its budget (it overfits after), none at its
    whole budget; the Δ at both arms' best reads the arm at 0.5 against none at 1.0."""
    best = row(table, "embed_output", "related", endpoint="best")
    assert best["arm_fraction"] == 0.5 and best["baseline_fraction"] == 1.0
    arm = [planted("embed_output", "related", s, 0.5)[1] for s in SEEDS]
    base = [planted("none", "related", s, 1.0)[1] for s in SEEDS]
    assert best["mean"] == pytest.approx(sum(arm) / 4 - sum(base) / 4, abs=1e-12)  # −0.20
    assert best["p"] == pytest.approx(stats.ttest_rel(arm, base).pvalue, rel=1e-9)
    final = row(table, "embed_output", "related")
    arm_final = [planted("embed_output", "related", s, 1.0)[1] for s in SEEDS]
    assert final["mean"] == pytest.approx(sum(arm_final) / 4 - sum(base) / 4, abs=1e-12)
    # on `distant` the arm keeps improving: its best is its whole budget
    assert row(table, "embed_output", "distant", endpoint="best")["arm_fraction"] == 1.0


def test_holm_keeps_exactly_the_planted_survivors(table):
    """Five primary tests (embed_output and qk in both cells, and the contrast): qk's raw
    p < 0.05 does not survive the correction; embed_output's and the contrast's do."""
    primary = table[table["primary"]]
    assert len(primary) == 5 and (primary["holm_family"] == 5).all()
    assert set(primary["split"]) == {"test"} and set(primary["endpoint"]) == {"final"}
    # Holm by hand: sort the p-values, multiply the i-th smallest by (m − i), running max
    ps = primary["p"].sort_values()
    expected, running = {}, 0.0
    for i, (index, p) in enumerate(ps.items()):
        running = max(running, min(1.0, (len(ps) - i) * p))
        expected[index] = running
    assert primary["p_holm"].to_dict() == pytest.approx(expected, rel=1e-9)
    qk = row(table, "qk", "related")
    # the verdict's first word reads p_holm; after it, the Δ-vs-budget trend
    assert qk["p"] < 0.05 < qk["p_holm"] and qk["verdict"].startswith("not significant; ")
    assert row(table, "embed_output", "related")["verdict"] == "significant; shrinking"
    # what was not declared is exploratory, uncorrected
    valid = row(table, "embed_output", "related", split="valid")
    assert not valid["primary"] and valid["verdict"].startswith("exploratory; ")


def test_a_contrast_across_tasks_is_welchs_test_of_the_per_seed_deltas(table):
    contrast = row(table, "contrast:related_minus_distant", None)

    def deltas(task):
        return [
            planted("embed_output", task, s, 1.0)[1] - planted("none", task, s, 1.0)[1]
            for s in SEEDS
        ]

    related, distant = deltas("related"), deltas("distant")
    welch = stats.ttest_ind(related, distant, equal_var=False)
    assert contrast["test"] == "Welch t"
    assert contrast["mean"] == pytest.approx(sum(related) / 4 - sum(distant) / 4, abs=1e-12)
    assert contrast["mean"] < 0  # the planted sign: a larger gain on the related pair
    assert contrast["p"] == pytest.approx(welch.pvalue, rel=1e-9)
    low, high = welch.confidence_interval(0.95)
    assert contrast["ci95"] == pytest.approx((high - low) / 2, rel=1e-9)


def test_trend_verdicts_on_planted_runs(tmp_path):
    """The change of Δ test loss between the last two budgets: embed_output on `related`
    moves from −0.30 to −0.10 in every seed (shrinking); qk's Δ does not move beyond its
    noise (stable or not settled, never growing or shrinking)."""
    summary = summarize(load_runs(write_sweep(tmp_path)))
    summary = summary.set_index(["task", "sharing"])
    assert summary.loc[("related", "embed_output"), "verdict"] == "shrinking"
    assert summary.loc[("related", "embed_output"), "delta_test_loss_verdict"] == "shrinking"
    for task in ("related", "distant"):
        assert summary.loc[(task, "qk"), "verdict"] in ("stable", "not settled")
    # summary.csv: the test Δ, Holm's p and the Δ at the arms' best budgets, side by side
    embed = summary.loc[("related", "embed_output")]
    assert embed["best_delta_test_loss_mean"] == pytest.approx(-0.20, abs=0.01)
    assert embed["delta_test_loss_mean"] == pytest.approx(-0.10, abs=0.01)
    assert embed["delta_test_loss_p_holm"] >= embed["delta_test_loss_p"]
    assert embed["best_fraction_mean"] == 0.5


@pytest.mark.slow  # a real 6-job sweep and its report: about 30 s (the default run stays under 10 min)
def test_a_real_sweep_reports_test_deltas_holm_and_the_best_budget(tmp_path):
    """Acceptance 2: tiedharness-report on a real 6-job sweep whose experiment file declares
    two primary comparisons writes the test-split Δ, its Holm p over those two and the Δ at
    the arms' best budgets into summary.csv, every comparison into comparisons.csv, and
    each arm's own validation and test losses at both budgets into budgets.csv."""
    from conftest import train_cli
    from test_budget_report import report_cli

    conf = Path(__file__).parent / "data" / "conf"
    out = train_cli(
        "-m", f"hydra.searchpath=[file://{conf}]", "experiment=primary_fixture", results=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "primary_fixture").iterdir()
    report = report_cli(str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    folder = sweep / "report"
    summary = pd.read_csv(folder / "summary.csv").set_index("sharing")
    tied = summary.loc["embed_output"]
    for column in ("delta_test_loss_mean", "delta_test_loss_p", "delta_test_loss_p_holm",
                   "best_delta_test_loss_mean", "best_delta_test_loss_p_holm",
                   "delta_val_loss_mean", "best_fraction_mean"):  # fmt: skip
        assert pd.notna(tied[column]), column
    # Holm over the declared two: p_holm is p × 2 for the smaller, capped at 1
    ps = sorted([tied["delta_test_loss_p"], tied["best_delta_test_loss_p"]])
    assert min(tied["delta_test_loss_p_holm"], tied["best_delta_test_loss_p_holm"]) == (
        pytest.approx(min(1.0, 2 * ps[0]))
    )
    table = pd.read_csv(folder / "comparisons.csv")
    assert table["primary"].sum() == 2 and (table.loc[table["primary"], "holm_family"] == 2).all()
    budgets = pd.read_csv(folder / "budgets.csv")
    for metric in ("val_loss", "test_loss"):
        mine = budgets[budgets["metric"] == metric]
        assert set(zip(mine["sharing"], mine["fraction"], strict=True)) == {
            (arm, f) for arm in ("none", "embed_output") for f in (0.5, 1.0)
        }
        assert (mine["value_n"] == 3).all()
    # the whole budget's test loss in budgets.csv is the runs' own final test loss
    runs = pd.read_csv(folder / "runs.csv")
    none_final = budgets[(budgets["metric"] == "test_loss") & (budgets["sharing"] == "none")
                         & (budgets["fraction"] == 1.0)]["value_mean"].item()  # fmt: skip
    assert none_final == pytest.approx(runs[runs["sharing"] == "none"]["test_loss"].mean())


def test_a_contrast_waits_for_missing_runs_and_refuses_an_ambiguous_side(tmp_path):
    """A study reported while it runs: a contrast whose side has no runs yet gets an empty
    row and a warning. A side whose `where` picks several cells is a declaration to fix."""
    from tiedharness.tracking.config import Comparison, Contrast, ReportConfig

    runs = load_runs(write_sweep(tmp_path))
    missing = Contrast(
        name="later",
        first=Comparison(arm="embed_output", where={"task": "related"}),
        second=Comparison(arm="embed_output", where={"task": "not_run_yet"}),
    )
    table = comparisons(runs, ReportConfig(contrasts=[missing]))
    row = table[(table["arm"] == "contrast:later") & (table["split"] == "test")].iloc[0]
    assert pd.isna(row["p"]) and not row["primary"]
    assert any("no completed runs yet" in w and "not_run_yet" in w for w in runs.warnings)
    ambiguous = Contrast(
        name="both",
        first=Comparison(arm="qk"),
        second=Comparison(arm="qk", where={"task": "distant"}),
    )
    with pytest.raises(ValueError, match="read in 2 cells; its `where` must pick exactly one"):
        comparisons(runs, ReportConfig(contrasts=[ambiguous]))
