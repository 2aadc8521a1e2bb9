"""The Δ-vs-budget view: sweeps of run records with budgets (warmup-stable-decay runs that
forked decay branches at 0.25 and 0.5 of their budget) → budgets.csv, the verdicts of
summary.csv and summary.md, and the delta_vs_budget figure, through the real CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from tiedharness.analysis import plots
from tiedharness.analysis.aggregate import load_runs, summarize
from tiedharness.analysis.budgets import verdict
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

FRACTIONS = (0.25, 0.5, 1.0)
STEPS = {0.25: 40, 0.5: 80, 1.0: 160}
BASE_LOSS = {0.25: 4.0, 0.5: 3.5, 1.0: 3.2}  # none's validation loss at each budget
NONE_NOISE = (0.011, -0.007, 0.002)  # per seed, the same at every budget
# the tied runs' seed noise at each budget: mean 0 at every budget, so Δ's mean is exact
TIED_NOISE = {
    0.25: (0.004, -0.003, -0.001),
    0.5: (0.004, -0.003, -0.001),
    1.0: (-0.002, 0.005, -0.003),
}
# Δ val_loss (embed_output − none) at 0.25, 0.5, 1.0 of the budget, and the verdict it earns
SWEEPS = {
    "stable": ((0.30, 0.20, 0.20), "stable"),  # the same Δ at the last two budgets
    "flip": ((0.10, 0.10, -0.10), "not settled"),  # a sign change between the last two
    "shrinking": ((0.60, 0.50, 0.10), "shrinking"),  # significant at both, |Δ| falls a lot
    "growing": ((0.05, 0.10, 0.40), "growing"),
}


def report_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tiedharness-report", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-report is not installed next to this Python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def losses(sharing: str, seed: int, deltas: tuple[float, ...]) -> dict[float, float]:
    """The run's validation loss at each budget fraction."""
    out = {}
    for fraction, delta in zip(FRACTIONS, deltas, strict=True):
        loss = BASE_LOSS[fraction] + NONE_NOISE[seed]
        out[fraction] = loss + delta + TIED_NOISE[fraction][seed] if sharing != "none" else loss
    return out


def write_run(folder: Path, job: int, sharing: str, seed: int, deltas: tuple) -> None:
    """One wsd run's run.json (budget entries, convergence not measured) and its
    history.jsonl (main-run rows, and the rows of its decay branches)."""
    loss = losses(sharing, seed, deltas)
    budgets = [
        {
            "fraction": f,
            "step": STEPS[f],
            "tokens": 256 * STEPS[f],
            "val_loss": loss[f],
            "val_ppl": math.exp(loss[f]),
            "val_bpc": loss[f] / math.log(2) / 4,
        }
        for f in FRACTIONS
    ]
    record = RunRecord(
        run_id=f"budgets-{job}",
        experiment="budgets",
        sweep_id="budgets-sweep",
        job_num=job,
        task="bible_lm",
        model="tiny",
        sharing=sharing,
        seed=seed,
        status=RunStatus.completed,
        config={
            "task": {"name": "bible_lm"},
            "trainer": {"seed": seed, "schedule": "wsd", "branch_at": [0.25, 0.5]},
            "sharing": {"strategies": [] if sharing == "none" else [sharing]},
        },
        params={"total": 1000 if sharing == "none" else 800},
        metrics={
            **{k: v for k, v in budgets[-1].items() if k != "fraction"},
            "steps": 160,
            "converged": None,
            "convergence_note": "the schedule anneals the learning rate to zero",
        },
        budgets=budgets,
    )
    (folder / str(job)).mkdir(parents=True)
    RunFolder(folder / str(job)).write_record(record)
    rows = [{"step": s, "tokens": 256 * s, "val_loss": loss[1.0] + 1 / s} for s in (40, 80, 160)]
    rows += [{"step": 35, "tokens": 256 * 35, "val_loss": 9.0, "branch": 0.25}]  # a branch's
    (folder / str(job) / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_sweep(folder: Path, deltas: tuple) -> Path:
    for job, (sharing, seed) in enumerate(
        (s, seed) for s in ("none", "embed_output") for seed in range(3)
    ):
        write_run(folder, job, sharing, seed, deltas)
    return folder


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Each sweep of SWEEPS reported by tiedharness-report; name → its report folder."""
    out = {}
    for name, (deltas, _) in SWEEPS.items():
        sweep = write_sweep(tmp_path_factory.mktemp(name), deltas)
        result = report_cli(str(sweep))
        assert result.returncode == 0, result.stderr
        assert "6 runs (6 completed)" in result.stdout
        assert f"table (budgets): {sweep / 'report' / 'budgets.csv'}" in result.stdout
        out[name] = sweep / "report"
    return out


@pytest.mark.parametrize("name", list(SWEEPS))
def test_the_verdict_in_summary_csv(reports, name):
    summary = pd.read_csv(reports[name] / "summary.csv", keep_default_na=False).set_index("sharing")
    expected = SWEEPS[name][1]
    assert summary.loc["embed_output", "verdict"] == expected
    assert summary.loc["embed_output", "delta_val_loss_verdict"] == expected
    # bits per character here are loss ÷ (4 ln 2): the same Δ up to a factor, the same verdict
    assert summary.loc["embed_output", "delta_val_bpc_verdict"] == expected
    assert summary.loc["none", "verdict"] == ""  # the baseline is not compared with itself
    markdown = (reports[name] / "summary.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| bible_lm | tiny |"))
    header = next(x for x in markdown.splitlines() if x.startswith("| task |"))
    assert "verdict" in header
    line = next(line for line in markdown.splitlines() if "| embed_output |" in line)
    assert f"| {expected} |" in line and row.count("|") == line.count("|")
    assert "verdict (Δ vs budget, docs/metrics.md): shrinking / growing = " in markdown


@pytest.mark.parametrize("name", ["stable", "flip"])
def test_budgets_csv_holds_the_paired_t_at_every_budget(reports, name):
    deltas = pd.read_csv(reports[name] / "budgets.csv")
    assert {"task", "model", "sharing", "fraction", "tokens", "metric"} <= set(deltas.columns)
    assert {"mean", "ci95", "p", "n"} <= set(deltas.columns)
    assert {"baseline", "value_mean", "value_ci95", "value_n"} <= set(deltas.columns)
    every = deltas[deltas["metric"] == "val_loss"]
    assert set(every["sharing"]) == {"none", "embed_output"}
    for label in ("none", "embed_output"):  # each arm's own loss at each budget, both arms
        mine = every[every["sharing"] == label].set_index("fraction")
        for fraction in FRACTIONS:
            values = [losses(label, s, SWEEPS[name][0])[fraction] for s in range(3)]
            assert mine.loc[fraction, "value_mean"] == pytest.approx(sum(values) / 3, abs=1e-12)
            assert mine.loc[fraction, "value_n"] == 3
    assert every[every["sharing"] == "none"]["mean"].isna().all()  # no Δ against itself
    loss = every[every["sharing"] == "embed_output"].set_index("fraction")
    assert sorted(loss.index) == list(FRACTIONS)
    for fraction in FRACTIONS:
        tied = [losses("embed_output", s, SWEEPS[name][0])[fraction] for s in range(3)]
        none = [losses("none", s, SWEEPS[name][0])[fraction] for s in range(3)]
        diffs = [t - n for t, n in zip(tied, none, strict=True)]
        sd = stats.tstd(diffs)
        row = loss.loc[fraction]
        assert row["p"] == pytest.approx(stats.ttest_rel(tied, none).pvalue, rel=1e-9)
        assert row["mean"] == pytest.approx(sum(diffs) / 3, abs=1e-12)
        assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3), rel=1e-9)
        assert row["n"] == 3 and row["tokens"] == 256 * STEPS[fraction]
        assert row["step"] == STEPS[fraction]


@pytest.mark.parametrize("name", ["stable", "shrinking"])
def test_summary_csv_states_each_comparison_at_every_budget(reports, name):
    """The budgets of budgets.csv, one row per comparison: tokens and Δ (mean, interval,
    paired-t p) at each budget fraction, from scipy here."""
    summary = pd.read_csv(reports[name] / "summary.csv").set_index("sharing")
    for fraction in FRACTIONS:
        tied = [losses("embed_output", s, SWEEPS[name][0])[fraction] for s in range(3)]
        none = [losses("none", s, SWEEPS[name][0])[fraction] for s in range(3)]
        at = f"at_{fraction:g}"
        row = summary.loc["embed_output"]
        assert row[f"tokens_{at}"] == 256 * STEPS[fraction]
        assert row[f"delta_val_loss_mean_{at}"] == pytest.approx(
            (sum(tied) - sum(none)) / 3, abs=1e-12
        )
        assert row[f"delta_val_loss_p_{at}"] == pytest.approx(
            stats.ttest_rel(tied, none).pvalue, rel=1e-9
        )
        assert math.isnan(summary.loc["none", f"delta_val_loss_mean_{at}"])
    # the whole budget's Δ is the summary's own
    assert summary.loc["embed_output", "delta_val_loss_mean_at_1"] == pytest.approx(
        summary.loc["embed_output", "delta_val_loss_mean"], abs=1e-12
    )


def test_the_delta_vs_budget_figure_is_drawn_and_in_the_report(reports):
    figures = reports["stable"] / "figures"
    assert (figures / "delta_vs_budget.png").stat().st_size > 1000
    assert (figures / "delta_vs_budget.pdf").read_bytes().startswith(b"%PDF")
    page = (reports["stable"] / "report.html").read_text()
    assert '<img alt="delta_vs_budget"' in page
    assert "delta_vs_budget" in plots.FIGURES


def test_convergence_is_not_measured_under_an_annealed_schedule(reports):
    summary = pd.read_csv(reports["stable"] / "summary.csv")
    assert summary["converged_frac"].isna().all()  # neither converged nor not converged
    markdown = (reports["stable"] / "summary.md").read_text()
    assert "did not converge" not in markdown and "‡" not in markdown.split("\n\n")[0]
    assert "6 of 6 completed runs: convergence not measured: the schedule anneals to zero" in (
        markdown
    )
    assert "| 3 | n/a |" in markdown
    page = (reports["stable"] / "report.html").read_text()
    assert "class=unfinished" not in page  # not greyed as unfinished either


def test_learning_curves_draw_the_main_run_only(tmp_path):
    runs = load_runs(write_sweep(tmp_path, SWEEPS["stable"][0]))
    fig = plots.draw("learning_curves", runs, summarize(runs))
    xs = {x for ax in fig.axes for line in ax.lines for x in line.get_xdata()}
    ys = [y for ax in fig.axes for line in ax.lines for y in line.get_ydata()]
    assert xs == {256 * 40, 256 * 80, 256 * 160} and max(ys) < 9.0  # no branch row


def test_no_budgets_no_figure(tmp_path):
    """Runs evaluated at one budget only (any schedule without branches): nothing to draw,
    and every comparison is `not settled`."""
    sweep = write_sweep(tmp_path, SWEEPS["stable"][0])
    for path in sweep.glob("*/run.json"):
        record = RunFolder(path.parent).read_record()
        record.budgets = record.budgets[-1:]
        RunFolder(path.parent).write_record(record)
    runs = load_runs(sweep)
    summary = summarize(runs).set_index("sharing")
    assert summary.loc["embed_output", "verdict"] == "not settled"
    with pytest.raises(plots.NoData, match="two or more budgets"):
        plots.draw("delta_vs_budget", runs, summary.reset_index())


def test_verdict_rules():
    """The verdict tests the paired change of Δ between the last two budgets (per seed)."""

    def seeds(*budgets):
        """(fraction, per-seed Δs) → the long rows verdict() reads."""
        return pd.DataFrame(
            [(f, seed, d) for f, ds in budgets for seed, d in enumerate(ds)],
            columns=["fraction", "seed", "delta"],
        )

    noise = (0.004, -0.003, -0.001)

    def shifted(base: float) -> tuple[float, ...]:  # the same seed noise at every budget
        return tuple(base + e for e in noise)

    # no change beyond seed noise: per-seed changes -0.006, 0.008, -0.002, mean 0, 95%
    # interval ±0.0179 (t 4.30 × sd 0.00721 / √3), within 0.02 but not within 0.01
    moved = (0.5, (0.204, 0.197, 0.199)), (1.0, (0.198, 0.205, 0.197))
    assert verdict(seeds(*moved), 0.02) == "stable"
    assert verdict(seeds(*moved), 0.01) == "not settled"
    # every seed moves by exactly 0.005: a tiny change, but a certain one
    assert verdict(seeds((0.5, shifted(0.2)), (1.0, shifted(0.205))), 0.02) == "growing"
    assert verdict(seeds((0.5, shifted(-0.2)), (1.0, shifted(-0.1))), 0.02) == "shrinking"
    assert verdict(seeds((0.5, shifted(-0.1)), (1.0, shifted(-0.2))), 0.02) == "growing"
    # the issue's -0.26 → -0.11 → -0.17, labelled `growing` by the old rule, with seeds that
    # disagree on the last change: not significant, and its interval is wider than 0.02
    noisy = seeds((0.25, (-0.26,) * 3), (0.5, (-0.05, -0.11, -0.17)), (1.0, (-0.20, -0.10, -0.21)))
    assert verdict(noisy, 0.02) == "not settled"
    assert verdict(noisy, 1.0) == "stable"  # within a (very) generous tolerance
    assert verdict(seeds((0.5, shifted(0.2)), (1.0, shifted(-0.2))), 0.02) == "not settled"
    assert verdict(seeds((1.0, shifted(0.2))), 0.02) == "not settled"
    assert verdict(seeds((0.5, (0.2,)), (1.0, (0.3,))), 0.02) == "not settled"  # one seed
    # only the last two budgets count, whatever came before
    early = (0.25, (-1.0, 0.5, 2.0))
    assert verdict(seeds(early, (0.5, shifted(0.2)), (1.0, shifted(0.2))), 0.02) == "stable"
