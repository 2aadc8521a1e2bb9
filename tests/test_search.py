"""Hyperparameter search: one Optuna study per cell of a grid (tiedharness/sweep/search.py), and
Hydra's own Optuna sweeper over the training app, both as real Hydra multiruns."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math

import pandas as pd
import pytest
import yaml

from tests.conftest import sweep_records, train_cli
from tests.test_report import report_cli
from tiedharness.analysis.tuning import trial_rows
from tiedharness.sweep.grid import parse_grid, search_space
from tiedharness.sweep.pruning import make_pruner


def _hydras_optuna_sweeper_runs() -> bool:
    """Hydra's Optuna sweeper plugin is installed, beside the Optuna (<3) it needs."""
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        return False
    return int(importlib.metadata.version("optuna").split(".")[0]) < 3


def test_the_grid_is_split_into_cells_with_the_first_seed():
    grid = parse_grid(
        ["sharing=none,qkv", "task.vocab_size=100,200", "trainer.seed=3,4", "experiment=smoke"]
    )
    assert grid.cells == [
        ["sharing=none", "task.vocab_size=100"],
        ["sharing=none", "task.vocab_size=200"],
        ["sharing=qkv", "task.vocab_size=100"],
        ["sharing=qkv", "task.vocab_size=200"],
    ]
    assert grid.shared == ["trainer.seed=3", "experiment=smoke"] and grid.seeds == ["3", "4"]
    # the command line wins over the study's grid, as with Hydra's basic sweeper
    assert parse_grid(["sharing=none,qkv", "sharing=qkv"]).cells == [[]]
    with pytest.raises(ValueError, match=r"hydra\.sweeper\.search"):
        parse_grid(["trainer.lr=interval(1e-4, 1e-2)"])


def test_the_cells_do_not_depend_on_the_order_of_the_command_line():
    """A search started again with its overrides in another order finds the same cells,
    in the same order (job numbers, study names): the study's grid keys first, in the
    study's order, then the command line's by name."""
    import itertools

    study = ["sharing=none,qkv"]
    command = ["task.vocab_size=100,200", "model.d_model=32,64", "results_dir=x", "sharing=qkv,kv"]
    grids = [
        parse_grid(study + list(order), ("sharing",)) for order in itertools.permutations(command)
    ]
    assert all(g.cells == grids[0].cells and g.swept == grids[0].swept for g in grids)
    assert list(grids[0].swept) == ["sharing", "model.d_model", "task.vocab_size"]
    assert grids[0].swept["sharing"] == ["qkv", "kv"]  # the command line still wins
    assert grids[0].cells[0] == ["sharing=qkv", "model.d_model=32", "task.vocab_size=100"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["trainer.lr=1e-3,2e-3"], "trainer.lr is both set in the grid and searched: keep one"),
        (
            ["trainer.warmup_steps=interval(0, 10)"],
            "trainer.warmup_steps=interval(0, 10) is a search range: put it under",
        ),
        (
            ["hydra.sweeper.search_seed=2"],
            "hydra.sweeper.search_seed=2 is also a reporting seed (trainer.seed=0,1,2)",
        ),
        (
            ["hydra.sweeper.budget_fraction=0.5", "trainer.max_steps=6"],
            "trainer.max_steps=6 and hydra.sweeper.budget_fraction=0.5 both set the search's",
        ),
    ],
)
def test_a_bad_search_stops_before_any_job_and_says_what_to_change(tmp_path, settings, message):
    out = train_cli(
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        *settings,
        "logger=none",
        results=tmp_path,
    )
    assert out.returncode == 2 and f"error: {message}" in out.stderr
    assert "Traceback" not in out.stderr and "continue it with" not in out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.name.isdigit()]  # no job folder


def test_a_searched_key_added_on_the_command_line_arrives_nested_and_is_read_dotted():
    from tiedharness.sweep.search import StudyPerCellSweeper

    # +hydra.sweeper.search.model.dropout='interval(0, 0.3)' beside the preset's dotted keys
    search = {"trainer.lr": "interval(0.1, 0.3)", "model": {"dropout": "interval(0, 0.3)"}}
    sweeper = StudyPerCellSweeper(sampler=None, search=search)
    assert sweeper.search == {
        "trainer.lr": "interval(0.1, 0.3)",
        "model.dropout": "interval(0, 0.3)",
    }


def test_an_unknown_direction_is_refused():
    """The library raises; the plugin Hydra loads (the command's side) exits with 2."""
    from hydra_plugins.tiedharness_search import StudyPerCellSweeper as Plugin
    from tiedharness.sweep.search import SearchConfigError, StudyPerCellSweeper

    search = {"trainer.lr": "interval(0, 1)"}
    with pytest.raises(SearchConfigError, match="minimize or maximize"):
        StudyPerCellSweeper(sampler=None, direction="up", search=search)
    with pytest.raises(SystemExit) as stop:
        Plugin(sampler=None, direction="up", search=search)
    assert stop.value.code == 2


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_each_strategy_gets_a_study_of_its_own(tmp_path):
    # the acceptance command, on two of the smoke study's five strategies (without the
    # edge rule, test_search_coverage.py's: each cell keeps its 3 trials)
    out = train_cli(
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        "sharing=none,qkv",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.extend_edges=false",
        "logger=none",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sweep of 6 jobs" in out.stdout and "[6/6]" in out.stdout
    jobs = sweep_records(tmp_path)
    results = yaml.safe_load((jobs[0][0].parent / "optimization_results.yaml").read_text())
    assert [s["cell"] for s in results["studies"]] == [{"sharing": "none"}, {"sharing": "qkv"}]
    for study in results["studies"]:
        runs = [record for _, record in jobs if record["sharing"] == study["cell"]["sharing"]]
        assert len(runs) == 3 and {r["seed"] for r in runs} == {1000}  # the search's seed
        losses = [r["metrics"]["val_loss"] for r in runs]
        assert math.isfinite(study["best_value"]) and study["best_value"] == min(losses)
        best = jobs[study["best_job"]][1]["config"]["trainer"]
        assert best["lr"] == study["best_params"]["trainer.lr"]
        assert best["warmup_steps"] == study["best_params"]["trainer.warmup_steps"]
        assert 3e-4 <= best["lr"] <= 3e-2
    # the seeded sampler starts every cell's study from the same proposals: paired trials
    lrs = [[t["params"]["trainer.lr"] for t in s["trials"]] for s in results["studies"]]
    assert lrs[0] == lrs[1]
    assert all(s["search_budget"] == {"trainer.max_steps": 12} for s in results["studies"])
    assert f"tuned_from={jobs[0][0].parent}" in results["tuned"]
    assert "sharing=none,qkv" in results["tuned"] and "trainer.seed=0,1,2" in results["tuned"]

    # the second command of the workflow: every seed of each cell at the cell's best rate
    search, tuned_dir = jobs[0][0].parent, tmp_path / "tuned"
    grid = ["-m", "experiment=smoke", "sharing=none,qkv", "trainer.seed=0,1", "logger=none"]
    out = train_cli(*grid, f"tuned_from={search}", results=tuned_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    best = {s["cell"]["sharing"]: s["best_params"] for s in results["studies"]}
    tuned = [record for _, record in sweep_records(tuned_dir)]
    assert sorted((r["sharing"], r["seed"]) for r in tuned) == [
        ("none", 0),
        ("none", 1),
        ("qkv", 0),
        ("qkv", 1),
    ]
    for record in tuned:
        trainer = record["config"]["trainer"]
        assert trainer["lr"] == best[record["sharing"]]["trainer.lr"]
        assert trainer["warmup_steps"] == best[record["sharing"]]["trainer.warmup_steps"]
        assert record["config"]["tuned_from"] == str(search)
    # the report says at which rate each arm trained, and how the rate was found
    (tuned_sweep,) = (tuned_dir / "smoke").iterdir()
    out = report_cli(str(tuned_sweep))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = pd.read_csv(tuned_sweep / "report" / "summary.csv").set_index("sharing")
    tuning = pd.read_csv(tuned_sweep / "report" / "tuning.csv")  # one row per trial
    for sharing in ("none", "qkv"):
        assert summary.at[sharing, "lr"] == best[sharing]["trainer.lr"]
        trials = tuning[tuning["cell"] == f"sharing={sharing}"]
        assert len(trials) == 3 and trials["best"].sum() == 1
        assert trials.loc[trials["best"], "trainer.lr"].item() == best[sharing]["trainer.lr"]
    assert tuning["search_budget"].str.contains("trainer.max_steps=12").all()
    assert "How the settings were chosen" in (tuned_sweep / "report" / "summary.md").read_text()
    # a cell the search did not tune, or a tuned key also set by hand: stopped, with why
    out = train_cli(*grid[:2], "sharing=kv", f"tuned_from={search}", results=tmp_path / "x")
    assert out.returncode == 2 and "0 of its studies match" in out.stderr
    out = train_cli(*grid, "trainer.lr=0.001", f"tuned_from={search}", results=tmp_path / "y")
    assert out.returncode == 2 and "trainer.lr is set on the command line and tuned" in out.stderr


def test_the_lr_preset_tries_six_rates_an_octave_apart():
    """hparams_search=lr (hydra/sweeper/sampler=log_grid): the rates its comment promises,
    ends included, in the same order for every cell's study (each starts from a copy of
    the configured sampler)."""
    import optuna
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tiedharness.cli import CONF_DIR
    from tiedharness.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", ["experiment=smoke", "hparams_search=lr"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    lines = [f"{k}={v}" for k, v in OmegaConf.to_container(sweeper.search).items()]
    space, _ = search_space(lines)
    proposals = []
    for _ in range(2):  # two cells
        study = optuna.create_study(sampler=instantiate(sweeper.sampler))
        rates = []
        for _ in range(sweeper.n_trials):
            trial = study.ask(space)
            rates.append(trial.params["trainer.lr"])
            study.tell(trial, 1.0)
        proposals.append(rates)
    assert proposals[0] == proposals[1]
    assert sorted(proposals[0]) == [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
    assert sweeper.extend_edges and sweeper.max_extensions == 4 and sweeper.search_seed == 1000


def test_the_search_space_becomes_optunas_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = search_space(
        [
            "lr=tag(log, interval(3e-4, 3e-2))",
            "dropout=interval(0, 0.3)",
            "ends=interval(1, 10)",  # Hydra reads an interval's ends as floats
            "layers=range(2, 8, 2)",  # both ends included, as Hydra's Optuna sweeper has it
            "heads=range(1, 4)",
            "scale=range(0.5, 2.5, 0.5)",
            "warmup=choice(0, 25, 50)",
            "norm=choice(pre, post)",
            "task=copy",
        ]
    )
    assert space == {
        "lr": FloatDistribution(3e-4, 3e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.3),
        "ends": FloatDistribution(1.0, 10.0),
        "layers": IntDistribution(2, 8, step=2),
        "heads": IntDistribution(1, 4),
        "scale": FloatDistribution(0.5, 2.5, step=0.5),
        "warmup": CategoricalDistribution([0, 25, 50]),
        "norm": CategoricalDistribution(["pre", "post"]),
    }
    assert fixed == {"task": "copy"}


@pytest.mark.skipif(
    not _hydras_optuna_sweeper_runs(),
    reason="hydra-optuna-sweeper is not installed: it pins optuna<3, the project needs optuna>=3",
)
def test_hydras_optuna_sweeper_searches_the_training_app(tmp_path):
    out = train_cli(
        "-m",
        "experiment=smoke",
        "hydra/sweeper=optuna",
        "sharing=qkv",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "trainer.lr=tag(log, interval(1e-3, 1e-2))",
        "logger=none",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sweep_records(tmp_path)
    results = yaml.safe_load((jobs[0][0].parent / "optimization_results.yaml").read_text())
    losses = {r["config"]["trainer"]["lr"]: r["metrics"]["val_loss"] for _, r in jobs}
    assert len(losses) == 2 and results["best_value"] == min(losses.values())
    assert losses[results["best_params"]["trainer.lr"]] == results["best_value"]


def test_strategies_at_their_own_rates_are_compared_in_one_cell():
    """The tuned runs give each strategy its own tuned rate: a rate constant within a
    strategy is no cell key (the strategies stay paired), a rate that varies within one is."""
    import pandas as pd

    from tiedharness.analysis.aggregate import swept_keys

    def frame(rates: dict[str, list[float]]) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "task": "copy",
                    "model_preset": "tiny",
                    "sharing": sharing,
                    "seed": seed,
                    "cfg.trainer.lr": lr,
                }
                for sharing, lrs in rates.items()
                for seed, lr in enumerate(lrs)
            ]
        )

    assert swept_keys(frame({"none": [4e-3, 4e-3], "qkv": [2e-3, 2e-3]})) == []
    tuning = pd.concat([frame({"none": [4e-3]}), frame({"none": [2e-3]})])  # a search: seed 0
    assert swept_keys(tuning) == ["trainer.lr"]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_a_killed_search_continues_in_its_folder(tmp_path):
    """The seeded sampler proposes the same settings again from the same results, so a
    rerun keeps the finished trials, resumes the killed one and goes on: were a proposal
    different, its folder would refuse the other config and the trial would fail."""
    import signal

    from tests.test_resume import _wait_for_glob, start_cli, wait_for

    search = [
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.extend_edges=false",  # 3 trials, whatever they find
        "trainer.max_steps=30",
        "trainer.checkpoint_every=3",
        "logger=none",
        f"results_dir={tmp_path}",
        "sharing=qkv",  # after results_dir: the rerun below takes the rest in another order
    ]
    proc = start_cli(*search)
    (sweep_dir,) = _wait_for_glob(tmp_path / "smoke", proc)
    wait_for(sweep_dir / "1" / "checkpoint.pt", proc)  # the second trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = (sweep_dir / "0" / "run.json").read_bytes()

    # (train_cli adds results_dir itself, last: drop it by name, not by position)
    again = ["-m", *(a for a in reversed(search[1:]) if not a.startswith("results_dir="))]
    out = train_cli(*again, f"hydra.sweep.dir={sweep_dir}", results=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 kept  1 resumed  1 trained" in out.stdout, out.stdout[-3000:]
    jobs = sweep_records(tmp_path)
    assert [r["status"] for _, r in jobs] == ["completed"] * 3
    assert (sweep_dir / "0" / "run.json").read_bytes() == before
    assert len(jobs[1][1]["resumes"]) == 1
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    (study,) = results["studies"]  # one cell: Optuna's own top-level keys too
    assert results["best_value"] == study["best_value"] == min(t["value"] for t in study["trials"])
    for trial in study["trials"]:
        record = jobs[trial["job"]][1]
        assert record["config"]["trainer"]["lr"] == trial["params"]["trainer.lr"]
        assert trial["value"] == record["metrics"]["val_loss"]


@pytest.mark.parametrize(
    ("overrides", "jobs"),
    [
        (["task=copy"], 1),  # -m with nothing swept: one job
        (["task=copy", "sharing=none,qkv", "trainer.seed=0,1,2"], 6),  # a command-line grid
        (["experiment=smoke"], 5),  # the study's grid (hydra.sweeper.params)
        (["experiment=smoke", "trainer.seed=0,1"], 10),
    ],
)
def test_the_sweep_counts_its_jobs_before_the_first(overrides, jobs):
    from hydra import compose, initialize_config_dir

    import tiedharness.cli.train  # noqa: F401  (registers the th.new_folder resolver)
    from tiedharness.cli import CONF_DIR
    from tiedharness.sweep.summary import grid_size

    plain = [o for o in overrides if "," not in o]  # compose takes no sweeps: Hydra's
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = compose("train", overrides=plain, return_hydra_config=True)
    config.hydra.overrides.task = overrides  # the command line, as a multirun records it
    assert grid_size(config) == jobs


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_a_killed_search_with_a_database_runs_only_its_unfinished_trials(tmp_path):
    """With `hydra.sweeper.storage` the studies outlive the process: the rerun loads the
    cell's study, launches none of its finished trials, resumes the one left running."""
    import signal

    import optuna

    from tests.test_resume import _wait_for_glob, start_cli, wait_for

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    search = [
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        "sharing=none",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.extend_edges=false",  # 3 trials, whatever they find
        f"hydra.sweeper.storage={storage}",
        "trainer.max_steps=30",
        "trainer.checkpoint_every=3",
        "logger=none",
        f"results_dir={tmp_path}",
    ]
    proc = start_cli(*search)
    (sweep_dir,) = _wait_for_glob(tmp_path / "smoke", proc)
    wait_for(sweep_dir / "1" / "run.json", proc)  # the second trial: the first was told
    assert json.loads((sweep_dir / "0" / "run.json").read_text())["status"] == "completed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sweep_dir / "0" / "run.json"
    before = (first.read_bytes(), first.stat().st_mtime_ns)

    out = train_cli(*search[:-1], f"hydra.sweep.dir={sweep_dir}", results=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[1/3]" not in out.stdout and "[3/3]" in out.stdout  # job 0 not launched again
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    jobs = sweep_records(tmp_path)
    assert [r["status"] for _, r in jobs] == ["completed"] * 3
    study = optuna.load_study(study_name="search", storage=storage)  # one cell: no key
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    (cell,) = results["studies"]
    assert [t["job"] for t in cell["trials"]] == [0, 1, 2]
    assert [t["state"] for t in cell["trials"]] == ["complete"] * 3
    for trial in cell["trials"]:
        record = jobs[trial["job"]][1]
        assert record["config"]["trainer"]["lr"] == trial["params"]["trainer.lr"]
        assert trial["value"] == record["metrics"]["val_loss"]


# ---------------------------------------------------------------------------- pruning


def test_a_pruner_is_optunas_by_name_with_its_own_arguments():
    import optuna

    assert make_pruner("none", {"n_startup_trials": 2}) is None
    pruner = make_pruner("median", {"n_startup_trials": 2, "n_warmup_steps": 5})
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (2, 5)
    assert isinstance(
        make_pruner("ThresholdPruner", {"upper": 7.0}), optuna.pruners.ThresholdPruner
    )
    with pytest.raises(ValueError, match="not a pruner; use none, median, percentile"):
        make_pruner("mediam", {})
    with pytest.raises(ValueError, match="do not fit ThresholdPruner"):
        make_pruner("ThresholdPruner", {"n_startup_trials": 2})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["hydra.sweeper.pruner=mediam"], "hydra.sweeper.pruner=mediam: not a pruner"),
        (
            ["hydra.sweeper.pruner=median", "objective=bleu", "hydra.sweeper.direction=maximize"],
            "hydra.sweeper.pruner=median prunes on the validation losses the runs report, "
            "but the search maximizes bleu",
        ),
    ],
)
def test_a_pruner_that_cannot_work_stops_the_search_before_any_job(tmp_path, settings, message):
    out = train_cli(
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        *settings,
        "logger=none",
        results=tmp_path,
    )
    assert out.returncode == 2 and f"error: {message}" in out.stderr, out.stderr[-2000:]
    assert not [p for p in tmp_path.rglob("*") if p.name.isdigit()]  # no job folder


def _history(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow  # real search runs: about 10 s (the default run stays under 10 min)
def test_a_pruned_search_stops_the_trials_that_trail_at_a_validation(tmp_path):
    """A learning rate of 1e-5 barely moves the loss in 12 steps: once one trial at 3e-3
    has completed, the median pruner stops the 1e-5 trials at their first validation (step
    3). Pruned runs end `pruned`, their history at that validation; the study, in the sweep
    folder's optuna.db, holds them PRUNED with the losses the runs reported."""
    import optuna

    out = train_cli(
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        "sharing=qkv",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args.n_startup_trials=1",
        "hydra.sweeper.search={trainer.lr: 'choice(3e-3, 1e-5)', trainer.warmup_steps: 4}",
        "trainer.eval_every=3",
        "logger=none",
        f"hydra.sweep.dir={tmp_path / 'smoke' / 'not-made-yet'}",  # optuna.db's folder is made
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sweep_records(tmp_path)
    sweep_dir = jobs[0][0].parent
    assert sweep_dir == tmp_path / "smoke" / "not-made-yet"
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states and "COMPLETE" in states and "FAIL" not in states
    assert len(states) == 5 and f"{states.count('PRUNED')} pruned" in out.stdout
    for trial, (folder, record) in zip(study.trials, jobs, strict=True):
        history = _history(folder)
        reported = {r["step"]: r["val_loss"] for r in history if "val_loss" in r}
        assert record["config"]["trainer"]["lr"] == trial.params["trainer.lr"]
        if trial.state.name == "PRUNED":
            assert record["status"] == "pruned" and trial.params["trainer.lr"] == 1e-5
            assert record["error"].startswith("pruned at step 3 by the search's MedianPruner")
            assert record["metrics"]["steps"] == 3 and max(r["step"] for r in history) == 3
            assert "val_loss" not in record["metrics"] and trial.value == reported[3]
            assert not (folder / "checkpoint.pt").exists()
        else:  # trained to the end, every validation loss reported to the trial
            assert record["status"] == "completed" and record["metrics"]["steps"] == 12
            assert trial.value == record["metrics"]["val_loss"]
            assert {s: reported[s] for s in (3, 6, 9)} == trial.intermediate_values
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["pruner"] == {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    (cell,) = results["studies"]
    assert [t["state"] for t in cell["trials"]] == [s.lower() for s in states]
    assert jobs[cell["best_job"]][1]["status"] == "completed"
    rows = trial_rows(str(sweep_dir), results, cell)  # the report's tuning.csv rows
    assert [r["state"] for r in rows] == [s.lower() for s in states]
    assert [r["pruned_step"] for r in rows] == [3 if s == "PRUNED" else None for s in states]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_a_killed_pruned_search_continues_from_the_database_in_its_folder(tmp_path):
    """Without hydra.sweeper.storage a pruned search keeps its studies in optuna.db in the
    sweep folder: the same command with hydra.sweep.dir loads them, keeps the finished
    trial, resumes the killed one, and prunes the later ones against both."""
    import signal

    import optuna

    from tests.test_resume import _wait_for_glob, start_cli, wait_for

    search = [
        "-m",
        "experiment=smoke",
        "hparams_search=lr_warmup",
        "sharing=qkv",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args.n_startup_trials=1",
        "hydra.sweeper.search={trainer.lr: 'choice(3e-3, 1e-5)', trainer.warmup_steps: 4}",
        "trainer.max_steps=30",
        "trainer.eval_every=3",
        "trainer.checkpoint_every=3",
        "logger=none",
    ]
    proc = start_cli(*search, f"results_dir={tmp_path}")
    (sweep_dir,) = _wait_for_glob(tmp_path / "smoke", proc)
    wait_for(sweep_dir / "1" / "checkpoint.pt", proc)  # the second trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    out = train_cli(*search, f"hydra.sweep.dir={sweep_dir}", results=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[1/4]" not in out.stdout and "[4/4]" in out.stdout  # job 0 not launched again
    jobs = sweep_records(tmp_path)
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="search", storage=storage)
    # the rerun's sampler starts again from its seed: trial 2 is proposed 1e-5, as trial 0 was
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "PRUNED"] and len(states) == 4
    for trial, (_, record) in zip(study.trials, jobs, strict=True):
        slow = trial.number >= 2 and trial.params["trainer.lr"] == 1e-5  # behind trial 1
        assert trial.state.name == ("PRUNED" if slow else "COMPLETE")
        assert record["status"] == trial.state.name.lower().replace("complete", "completed")
        assert record["metrics"]["steps"] == (3 if slow else 30)
    assert len(jobs[1][1]["resumes"]) == 1
