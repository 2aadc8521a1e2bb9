"""A search that covers its range (tiedharness/sweep/coverage.py, search.py): points spread
evenly on the log scale, the edge rule that extends a cell's search past a best value at
the edge of those tried, the search's own seed and budget, and tuning.csv with every
trial. The edge rule is checked on a planted objective and on short real runs."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tests.conftest import sweep_records, train_cli
from tests.test_report import report_cli
from tiedharness.analysis.tuning import trial_rows
from tiedharness.sweep.coverage import LogGridSampler, edge_batches, spread
from tiedharness.sweep.search import StudyPerCellSweeper, study_result

LR = "trainer.lr"
SPACE = {LR: FloatDistribution(1e-3, 4e-3, log=True)}


def test_a_log_grid_is_evenly_spaced_on_the_log_scale_with_both_ends():
    octaves = spread(FloatDistribution(2e-3, 6.4e-2, log=True), 6)
    assert octaves == [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]  # exact: no rounding noise
    points = spread(FloatDistribution(1e-5, 3e-2, log=True), 7)
    assert points[0] == 1e-5 and points[-1] == 3e-2
    steps = np.diff(np.log(points))
    assert steps == pytest.approx([math.log(3e-2 / 1e-5) / 6] * 6)
    assert spread(FloatDistribution(1e-4, 1e-2, log=True), 1) == pytest.approx([1e-3])
    # a linear range evenly, on its step; a choice's values in turn
    assert spread(FloatDistribution(0.0, 0.3), 4) == pytest.approx([0, 0.1, 0.2, 0.3])
    assert spread(IntDistribution(0, 200, step=50), 3) == [0, 100, 200]
    assert spread(CategoricalDistribution([0, 25, 50]), 4) == [0, 25, 50, 0]


def test_the_log_grid_sampler_tries_each_point_once_in_the_same_order_in_every_cell():
    space = {LR: FloatDistribution(2e-3, 6.4e-2, log=True), "warmup": IntDistribution(0, 50)}
    orders = []
    for _ in range(2):  # two cells' studies
        study = optuna.create_study(sampler=LogGridSampler(n_points=6, seed=0))
        trials = [study.ask(space) for _ in range(6)]
        orders.append([(t.params[LR], t.params["warmup"]) for t in trials])
    assert orders[0] == orders[1]
    rates, warmups = zip(*orders[0], strict=True)
    assert sorted(rates) == spread(space[LR], 6) and sorted(warmups) == [0, 10, 20, 30, 40, 50]
    assert list(rates) != sorted(rates)  # a seeded order, not low to high
    # each parameter in an order of its own (a Latin hypercube), not the diagonal
    assert [sorted(rates).index(r) for r in rates] != [sorted(warmups).index(w) for w in warmups]


class Jobs:
    """A launcher stand-in: a job's value is a planted function of its rate (None for a
    failed run), so the sweeper's own batching and edge rule run without training."""

    def __init__(self, loss) -> None:
        self.loss, self.launched = loss, []

    def launch(self, overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        returns = []
        for job in overrides:
            lr = float(next(o for o in job if o.startswith(f"{LR}=")).split("=")[1])
            self.launched.append(lr)
            value = self.loss(lr)
            ret = JobReturn(status=JobStatus.COMPLETED)
            ret.return_value = value  # None: the run did not complete, a failed trial
            returns.append(ret)
        return returns


def planted_search(loss, n_trials=3, **options) -> tuple[dict, list[float]]:
    """One cell searched by the sweeper's own loop (sweep() without Hydra): its regular
    trials, then the edge rule's; returns the study's results and the rates launched."""
    sweeper = StudyPerCellSweeper(
        sampler=LogGridSampler(n_trials), n_trials=n_trials, search={LR: "x"}, **options
    )
    jobs = Jobs(loss)
    sweeper.launcher = jobs
    study = sweeper.open_study([])
    cap = sweeper.max_extensions if sweeper.extend_edges else 0
    for batch in sweeper.batches(study, SPACE):
        sweeper.launch(study, batch, [], 0)
    for batch in edge_batches(study, SPACE, sweeper.n_jobs, cap):
        sweeper.launch(study, batch, [], 0)
    return study_result([], study, 0, SPACE), jobs.launched


def bowl(best_lr: float):
    return lambda lr: (math.log2(lr) - math.log2(best_lr)) ** 2


def test_the_edge_rule_extends_an_octave_at_a_time_until_the_best_is_bracketed():
    result, rates = planted_search(bowl(1.6e-2))  # best: 2 octaves above the range's top
    assert sorted(rates[:3]) == [1e-3, 2e-3, 4e-3]
    assert rates[3:] == [8e-3, 1.6e-2, 3.2e-2]  # ×2 each, until one above the best
    assert result["best_params"] == {LR: 1.6e-2} and result["param_at_edge"] == {}
    assert [t["extends"] for t in result["trials"]][3:] == [f"{LR} highest"] * 3
    result, rates = planted_search(bowl(2.5e-4))  # below: ÷2
    assert rates[3:] == [5e-4, 2.5e-4, 1.25e-4] and result["best_params"] == {LR: 2.5e-4}
    result, rates = planted_search(bowl(2e-3))  # bracketed by the grid: nothing added
    assert len(rates) == 3 and result["param_at_edge"] == {}


def test_a_best_at_the_edge_is_flagged_when_the_rule_is_capped_or_off():
    result, rates = planted_search(bowl(1.0), max_extensions=2)
    assert rates[3:] == [8e-3, 1.6e-2] and result["param_at_edge"] == {LR: "highest"}
    result, rates = planted_search(bowl(1e-6), extend_edges=False)
    assert len(rates) == 3 and result["param_at_edge"] == {LR: "lowest"}
    rows = pd.DataFrame(trial_rows("s", {"objective": "val_loss"}, result))
    assert rows["lr_at_edge"].all() and (rows["at_edge"] == f"{LR} lowest").all()
    assert rows.loc[rows["best"], LR].tolist() == [1e-3] and rows["extends"].eq("").all()
    # one trial: its rate is both ends of those tried, so the rule tries both sides
    result, rates = planted_search(bowl(2e-3), n_trials=1)  # the range's middle on a log scale
    assert rates == [2e-3, 1e-3, 4e-3] and result["best_params"] == {LR: 2e-3}


def test_a_failed_trial_is_tried_but_never_the_best():
    """A rate that diverged (no value) past the best brackets it; it is not the best."""
    result, rates = planted_search(lambda lr: None if lr > 5e-3 else bowl(1.0)(lr))
    assert rates[3:] == [8e-3]  # tried, failed: 4e-3 is bracketed
    assert result["best_params"] == {LR: 4e-3} and result["param_at_edge"] == {}
    assert [t["state"] for t in result["trials"]][3:] == ["fail"]


def test_a_pruned_trial_brackets_the_best_with_its_step_in_the_results():
    """A pruned trial was tried (it brackets the best) but is never the best, even when
    the last loss it reported is the lowest; its results hold the step it stopped at."""
    study = optuna.create_study(sampler=LogGridSampler(3))
    losses = {1e-3: 3.0, 2e-3: 2.0, 4e-3: None}  # 4e-3: pruned
    for _ in losses:
        trial = study.ask(SPACE)
        if loss := losses[trial.params[LR]]:
            study.tell(trial, loss)
        else:
            trial.report(1.0, 6)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    result = study_result([], study, 10, SPACE)
    (pruned,) = [t for t in result["trials"] if t["state"] == "pruned"]
    assert pruned["pruned_step"] == 6 and pruned["value"] == 1.0
    assert result["best_params"] == {LR: 2e-3} and result["best_job"] == 10 + [
        t["params"][LR] for t in result["trials"]
    ].index(2e-3)
    assert result["param_at_edge"] == {}  # 4e-3 was tried


# ---------------------------------------------------------------------------- real runs


def smoke_search(tmp_path, *overrides):
    out = train_cli(
        "-m",
        "experiment=smoke",
        "hparams_search=lr",
        "sharing=none",
        "trainer.decode_examples=0",
        "trainer.test_examples=0",
        "trainer.profile=false",
        "logger=none",
        *overrides,
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sweep_records(tmp_path)
    results = yaml.safe_load((jobs[0][0].parent / "optimization_results.yaml").read_text())
    return out, jobs, results


@pytest.mark.slow  # real search runs: about 15 s (the default run stays under 10 min)
def test_a_cell_whose_best_rate_lies_above_the_range_is_searched_until_bracketed(tmp_path):
    """Acceptance: on the smoke study's 12 steps the best rate lies above 1.28e-2 …
    2.56e-2 (about 5e-2); the search goes past the highest rate first tried, an octave at
    a time, until its best has a higher and a lower rate tried; tuning.csv
    (tiedharness-report on the search's folder) shows every trial."""
    search = "hydra.sweeper.search={trainer.lr: 'tag(log, interval(1.28e-2, 2.56e-2))'}"
    out, jobs, results = smoke_search(tmp_path, "hydra.sweeper.n_trials=2", search)
    assert {r["config"]["trainer"]["seed"] for _, r in jobs} == {1000}  # no reporting seed
    assert results["search_seed"] == 1000
    (study,) = results["studies"]
    assert study["budget"] == study["search_budget"] == {"trainer.max_steps": 12}
    assert study["budget_fraction"] == 1

    out = report_cli(str(jobs[0][0].parent))
    assert out.returncode == 0, out.stderr[-3000:]
    report = jobs[0][0].parent / "report"
    tuning = pd.read_csv(report / "tuning.csv")
    assert len(tuning) == len(jobs) and (tuning["state"] == "complete").all()
    first = tuning.loc[tuning["extends"].isna(), LR]
    assert sorted(first) == [1.28e-2, 2.56e-2]
    above = tuning[tuning[LR] > first.max()]
    assert len(above) >= 2 and (above["extends"] == f"{LR} highest").all()
    (best,) = tuning.loc[tuning["best"], LR]
    assert best > first.max()
    assert (tuning[LR] > best).any() and (tuning[LR] < best).any()  # bracketed
    assert not tuning["lr_at_edge"].any()
    recorded = {i: r["metrics"]["val_loss"] for i, (_, r) in enumerate(jobs)}
    assert dict(zip(tuning["job"], tuning["value"], strict=True)) == recorded
    assert "added by the edge rule" in (report / "summary.md").read_text()


@pytest.mark.slow  # real search runs: about 6 s (the default run stays under 10 min)
def test_the_search_trains_on_a_stated_fraction_of_the_cells_budget(tmp_path):
    _, jobs, results = smoke_search(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.budget_fraction=0.5",
        "hydra.sweeper.extend_edges=false",
    )
    ((_, record),) = jobs
    assert record["metrics"]["steps"] == 6 and record["config"]["trainer"]["max_steps"] == 6
    (study,) = results["studies"]
    assert study["budget"] == {"trainer.max_steps": 12}  # the study's, which the verdicts read
    assert study["search_budget"] == {"trainer.max_steps": 6} and study["budget_fraction"] == 0.5
    assert study["param_at_edge"] == {LR: "lowest and highest"}  # one rate: nothing brackets it
    assert "trainer.max_steps" not in results["tuned"]
