"""Tune each cell of a study's grid on its own: one Optuna study per cell.

A fair ablation compares every sharing strategy at its own best learning rate. Hydra's
Optuna sweeper runs a single study, so a grid value such as `sharing: none,qkv,...` would
become one more searched parameter and the study would find the best (strategy, rate)
pair, not each strategy's best rate. This sweeper keeps the two apart:

- `hydra.sweeper.params` (and the command line) is the grid, read as Hydra's basic sweeper
  reads it; every combination of its values is a cell with a study of its own. Seeds are
  not cells: every trial trains on `hydra.sweeper.search_seed` (default 1000), which is
  refused when it is one of the seeds the tuned runs report.
- `hydra.sweeper.search` is what each study tunes, in the Optuna sweeper's override syntax
  (`tag(log, interval(1e-4, 1e-2))`, `interval(...)`, `range(...)`, `choice(...)`), read
  by grid.py's `search_space` into Optuna's distributions.
- `hydra.sweeper.budget_fraction` (default 1): trials train for that share of their
  cell's own budget (or for a budget the command line gives); each study states both.
- The edge rule (coverage.py: `extend_edges`, `max_extensions`) brackets each cell's
  best value of a log-scaled parameter, trying an octave past it while it is at an edge.
- `hydra.sweeper.storage` (a database URL such as `sqlite:///search.db`; null: in memory)
  keeps each cell's study under `<study_name>-<cell's key=value…>`: a search started
  again with the same command loads its studies, runs none of their finished trials again,
  resumes the trials a killed start left running, and goes on to `n_trials`.
- `hydra.sweeper.pruner` (`none`; `median`, …: tiedharness/sweep/pruning.py) stops trials
  whose validation losses trail their study's completed ones; the study keeps them PRUNED.

Each trial is an ordinary job of the sweep folder (numbered on across cells), so the
report, resume and the closing summary treat it as any other. A trial that did not
complete (the app returns None) is a failed trial and the search goes on. At the end the
sweep folder holds `optimization_results.yaml`: per cell, its best settings and every
trial, and the command that compares the cells at their best settings over several seeds.
"""

from __future__ import annotations

import copy
import itertools
import logging
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.errors import HydraException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tiedharness.sweep.grid import SEED_KEY, Grid, flat_keys, parse_grid, search_space
from tiedharness.sweep.pruning import PRUNING_DB, TrialIdentity, make_pruner, pruning_problem, tell

log = logging.getLogger(__name__)
# Optuna imports alembic, which logs seven INFO lines on import (Hydra shows INFO)
logging.getLogger("alembic").setLevel(logging.WARNING)

# A search's own budget overrides, left out of the tuned runs and of a cell's own budget.
BUDGET_KEYS = ("trainer.max_steps", "trainer.max_train_tokens", "trainer.max_time_s")
BUDGET_GIVEN = tuple(f"{k}=" for k in BUDGET_KEYS)
SEARCH_ONLY = ("hparams_search=", f"{SEED_KEY}=", *BUDGET_GIVEN)
RESULTS_FILE = "optimization_results.yaml"


class SearchConfigError(ValueError):
    """A search that cannot start (its message says what to change); raised before any
    job, so nothing has been written. The command decides how to exit
    (hydra_plugins/tiedharness_search: status 2)."""


class StudyPerCellSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: str = "minimize",
        n_trials: int = 20,
        n_jobs: int = 1,
        search: DictConfig | None = None,
        params: DictConfig | None = None,
        storage: str | None = None,
        study_name: str = "search",
        pruner: str | None = "none",
        pruner_args: DictConfig | None = None,
        search_seed: int = 1000,
        budget_fraction: float = 1.0,
        extend_edges: bool = True,
        max_extensions: int = 4,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise SearchConfigError(
                f"hydra.sweeper.direction={direction!r}: use minimize or maximize"
            )
        if not search:
            raise SearchConfigError(
                "hydra.sweeper.search is empty: name what to tune, e.g. "
                "hydra.sweeper.search.trainer.lr='tag(log, interval(1e-4, 1e-2))'"
            )
        if not 0 < budget_fraction <= 1:  # a share of each cell's budget
            raise SearchConfigError(f"hydra.sweeper.budget_fraction={budget_fraction}: use (0, 1]")
        self.sampler, self.direction = sampler, direction
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        self.search = flat_keys(search)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.storage, self.study_name = storage or None, study_name
        self.search_seed, self.budget_fraction = int(search_seed), float(budget_fraction)
        self.extend_edges, self.max_extensions = bool(extend_edges), max(0, max_extensions)
        self.pruner_name = str(pruner or "none")
        self.pruner_args = OmegaConf.to_container(pruner_args) if pruner_args else {}
        try:
            self.pruner = make_pruner(self.pruner_name, self.pruner_args)
        except ValueError as err:
            raise SearchConfigError(str(err)) from err

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.config_loader = hydra_context.config_loader  # a cell's own budget, composed
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna  # only a search pays for importing it

        from tiedharness.sweep.coverage import edge_batches

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:  # a bad grid or search stops here, before any job, with what to change
            lines = [f"{k}={v}" for k, v in self.params.items()] + arguments
            grid = parse_grid(lines, tuple(self.params))
            space, fixed = search_space([f"{k}={v}" for k, v in self.search.items()])
        except (ValueError, OverrideParseException) as err:
            raise SearchConfigError(str(err)) from err
        grid_keys = {o.split("=")[0] for o in grid.shared + [o for c in grid.cells for o in c]}
        if overlap := sorted(grid_keys & (space.keys() | fixed.keys())):
            raise SearchConfigError(
                f"{', '.join(overlap)} is both set in the grid and searched: keep one"
            )
        self.check_pruning()
        self.check_seed_and_budget(grid)
        log.info(f"{len(grid.cells)} cell(s) × {self.n_trials} trials, tuning {', '.join(space)}")
        shared = [o for o in grid.shared if not o.startswith(f"{SEED_KEY}=")]
        shared += [f"{SEED_KEY}={self.search_seed}", *(f"{k}={v}" for k, v in fixed.items())]
        studies, first_job = [], 0
        for cell in grid.cells:
            study = self.open_study(cell)
            budget, budget_overrides = self.cell_budget(grid, cell)
            cap = self.max_extensions if self.extend_edges else 0
            edges = edge_batches(study, space, self.n_jobs, cap, " ".join(cell))
            for batch in itertools.chain(self.batches(study, space), edges):
                self.launch(study, batch, [*shared, *cell, *budget_overrides], first_job)
            studies.append({**study_result(cell, study, first_job, space), **budget})
            first_job += len(study.trials)  # jobs are numbered on across cells
        self.write_results(grid, studies)

    def launch(self, study: Any, batch: list[tuple[int, dict]], base: list[str], first: int):
        """Run a batch of the study's trials as jobs `first + trial number` and tell the
        study how each ended."""
        overrides = [
            (*base, *(f"{k}={v}" for k, v in params.items()), *self.trial_env(study, trial))
            for trial, params in batch
        ]
        returns = self.launcher.launch(overrides, initial_job_idx=first + batch[0][0])
        for (trial, _), job_return in zip(batch, returns, strict=True):
            tell(study, trial, job_return)

    def check_pruning(self) -> None:
        """With a pruner: refuse an objective it cannot judge, and keep the studies in a
        database the jobs can reach (`storage`, or optuna.db in the sweep folder)."""
        if self.pruner is None:
            return
        objective = str(self.config.get("objective", "val_loss"))
        if problem := pruning_problem(self.pruner_name, objective, self.direction):
            raise SearchConfigError(problem)
        if not self.storage:
            folder = Path(self.config.hydra.sweep.dir).resolve()
            folder.mkdir(parents=True, exist_ok=True)  # a hydra.sweep.dir not yet made
            self.storage = f"sqlite:///{folder / PRUNING_DB}"
        log.info(f"pruning with {type(self.pruner).__name__}; studies in {self.storage}")

    def check_seed_and_budget(self, grid: Grid) -> None:
        """Refuse a search seed the tuned runs report on, and a budget set both ways."""
        if str(self.search_seed) in grid.reporting_seeds:
            raise SearchConfigError(
                f"hydra.sweeper.search_seed={self.search_seed} is also a reporting seed "
                f"({SEED_KEY}={','.join(grid.reporting_seeds)}): pick one outside them"
            )
        given = [o for o in grid.shared if o.startswith(BUDGET_GIVEN)]
        if given and self.budget_fraction != 1:
            raise SearchConfigError(
                f"{' '.join(given)} and hydra.sweeper.budget_fraction={self.budget_fraction} "
                "both set the search's budget: keep one"
            )

    def cell_budget(self, grid: Grid, cell: list[str]) -> tuple[dict, list[str]]:
        """The cell's own budget (its config as the tuned runs compose it), the budget its
        trials train for and their ratio; and the overrides that set the trials' budget:
        `budget_fraction` of the cell's, unless the command line gives one."""
        from tiedharness.sweep.coverage import scaled

        # (hparams_search= stays: the hydra.sweeper overrides need its sweeper)
        own = self.budget_of([*(o for o in grid.shared if not o.startswith(BUDGET_GIVEN)), *cell])
        overrides: list[str] = []
        if any(o.startswith(BUDGET_GIVEN) for o in grid.shared):  # the command line's
            search = self.budget_of([*grid.shared, *cell])
            common = [k for k in search if own.get(k)]
            fraction = search[common[0]] / own[common[0]] if common else None
        else:
            fraction = self.budget_fraction
            search = {k: scaled(v, fraction) for k, v in own.items()}
            if fraction != 1:
                overrides = [f"{k}={v}" for k, v in search.items()]
        return {"budget": own, "search_budget": search, "budget_fraction": fraction}, overrides

    def budget_of(self, overrides: list[str]) -> dict[str, Any]:
        """The budget keys a job with these overrides is composed with (unset ones left
        out; none when it cannot be composed: its jobs fail, recorded, as in any sweep)."""
        try:
            config = self.config_loader.load_sweep_config(self.config, list(overrides))
            values = {k: OmegaConf.select(config, k) for k in BUDGET_KEYS}
        except (HydraException, OmegaConfBaseException) as err:
            log.warning(f"{' '.join(overrides)}: no budget read ({err})")
            return {}
        return {k: v for k, v in values.items() if v is not None}

    def trial_env(self, study: Any, trial: int) -> list[str]:
        """The override that tells a trial's job who it is, for its pruning reports."""
        if self.pruner is None:
            return []
        who = TrialIdentity(self.storage, study.study_name, trial, self.pruner_name)
        who.pruner_args = self.pruner_args
        return [who.env_override()]

    def open_study(self, cell: list[str]) -> Any:
        """The cell's study: new, in memory without `storage`; in the database, named after
        the cell, loaded when a former start of the same search created it."""
        import optuna

        name = "-".join([self.study_name, *cell])
        try:
            # a fresh copy of the seeded sampler: every cell's study starts from the same
            # proposals, so the cells' first trials are paired
            return optuna.create_study(
                storage=self.storage,
                study_name=name if self.storage else None,
                direction=self.direction,
                sampler=copy.deepcopy(self.sampler),
                pruner=self.pruner or optuna.pruners.NopPruner(),
                load_if_exists=True,
            )
        except ValueError as err:  # e.g. the stored study has the other direction
            raise SearchConfigError(f"study {name} in {self.storage}: {err}") from err

    def batches(self, study: Any, space: dict) -> Iterator[list[tuple[int, dict]]]:
        """The trials still to run, as (trial number, params), `n_jobs` at a time, each
        batch of consecutive numbers (the launcher numbers its jobs on from the first):
        first those a killed start left running (their jobs resume in their folders), then
        new ones until the study holds `n_trials`."""
        import optuna

        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        pending = [(t.number, t.params) for t in running]
        while pending or len(study.trials) < self.n_trials:
            batch = pending[: self.n_jobs]
            del pending[: len(batch)]
            while len(batch) < self.n_jobs and len(study.trials) < self.n_trials:
                trial = study.ask(space)
                batch.append((trial.number, trial.params))
            runs = [0] + [i for i in range(1, len(batch)) if batch[i][0] != batch[i - 1][0] + 1]
            for start, end in itertools.pairwise([*runs, len(batch)]):
                yield batch[start:end]

    def write_results(self, grid: Grid, studies: list[dict]) -> None:
        """optimization_results.yaml and the best settings in the log, with the command
        that trains every cell at its best settings over the grid's seeds."""
        folder = Path(self.config.hydra.sweep.dir)
        for study in studies:
            log.info(f"{study['cell']}: best {study['best_value']} with {study['best_params']}")
            if study["param_at_edge"]:
                log.warning(f"{study['cell']}: best at an edge: {study['param_at_edge']}")
        results = {
            "name": "optuna, one study per cell",
            "objective": str(self.config.get("objective", "")),
            "direction": self.direction,
            "n_trials": self.n_trials,
            "sampler": type(self.sampler).__name__,
            "search_seed": self.search_seed,
            "edge_rule": {"extend_edges": self.extend_edges, "max_extensions": self.max_extensions},
            "pruner": {"name": self.pruner_name, **self.pruner_args} if self.pruner else None,
            "search": self.search,
            "tuned": self.tuned_command(grid, ",".join(grid.reporting_seeds)),
            "studies": studies,
        }
        if len(studies) == 1:  # one cell: also Optuna's own keys, where its users look
            results.update(
                best_params=studies[0]["best_params"], best_value=studies[0]["best_value"]
            )
        OmegaConf.save(OmegaConf.create(results), folder / RESULTS_FILE)
        log.info(f"results: {folder / RESULTS_FILE}; every cell at its best: {results['tuned']}")

    def tuned_command(self, grid: Grid, seeds: str) -> str:
        """The command that trains every cell of the grid at its best settings over the
        seeds, at the study's own budget (the search's budget overrides left out), into a
        folder beside the search's; `tiedharness-report` on it compares the cells."""
        folder = Path(self.config.hydra.sweep.dir)
        shared = [o for o in grid.shared if not o.startswith(SEARCH_ONLY)]
        swept = [f"{k}={','.join(v)}" for k, v in grid.swept.items()]
        extra = [f"tuned_from={folder}", f"{SEED_KEY}={seeds}", f"hydra.sweep.dir={folder}-tuned"]
        return shlex.join(["tiedharness-train", "-m", *shared, *swept, *extra])


def study_result(cell: list[str], study: Any, first_job: int, space: dict) -> dict:
    """One cell's study: its best trial (None when every trial failed), what is still at
    an edge of the values tried, and every trial; trial n of the cell is the job
    `first_job + n`."""
    import optuna

    from tiedharness.sweep.coverage import EXTENDS, at_edge, pruned_step

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "cell": dict(o.split("=", 1) for o in cell),
        "best_value": best.value if best else None,
        "best_params": dict(best.params) if best else {},
        "best_job": first_job + best.number if best else None,
        "param_at_edge": {k: " and ".join(v) for k, v in at_edge(study, space).items()},
        "trials": [
            {
                "job": first_job + t.number,
                "params": dict(t.params),
                "value": t.value,
                "state": t.state.name.lower(),
                "pruned_step": pruned_step(t),
                "extends": t.user_attrs.get(EXTENDS),
            }
            for t in study.trials
        ],
    }


# ---------------------------------------------------------------------------- tuned runs


def tuned_settings(search_dir: str | Path, job_overrides: list[str]) -> dict[str, Any]:
    """The best settings the search in `search_dir` found for the cell this job belongs to
    (`tuned_from=<search folder>`): the study whose cell's `key=value`s are all among the
    job's overrides. A SearchConfigError says what is wrong: no results, no study or
    several for the cell, a cell whose trials all failed, a tuned key set by hand too."""
    path = Path(search_dir) / RESULTS_FILE
    if not path.is_file():
        raise SearchConfigError(
            f"tuned_from={search_dir}: no {RESULTS_FILE} there; point it at the folder of a "
            "finished search (tiedharness-train -m … hparams_search=…)"
        )
    results = OmegaConf.to_container(OmegaConf.load(path))
    mine = dict(o.split("=", 1) for o in job_overrides if "=" in o)
    studies = [
        s for s in results["studies"] if all(mine.get(k) == str(v) for k, v in s["cell"].items())
    ]
    if len(studies) != 1:
        cells = [s["cell"] for s in results["studies"]]
        raise SearchConfigError(
            f"tuned_from={search_dir}: {len(studies)} of its studies match this job's cell "
            f"({' '.join(job_overrides)}); it tuned the cells {cells}: run the same grid"
        )
    best = studies[0]["best_params"]
    if not best:
        raise SearchConfigError(
            f"tuned_from={search_dir}: every trial of the cell {studies[0]['cell']} failed: "
            "nothing to train it at"
        )
    if clash := sorted(best.keys() & mine.keys()):
        raise SearchConfigError(
            f"{', '.join(clash)} is set on the command line and tuned by {search_dir}: keep one"
        )
    return best
