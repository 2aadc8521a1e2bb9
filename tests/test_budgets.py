"""Budget-stable comparisons: the warmup-stable-decay schedule and budget branches.

A branch at fraction f of a run's budget must be exactly the run with f of the budget
(same data, same seed, its own decay), and must leave the main run exactly as it would
have been without branches. Dropout is on, so any RNG a branch consumed would show."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import train_cli
from test_resume import start_cli

from tiedharness.checkpoint import load_checkpoint
from tiedharness.schema import from_values
from tiedharness.tracking.run_folder import RunFolder
from tiedharness.training.branches import branch_plan
from tiedharness.training.config import TrainerConfig
from tiedharness.training.optim import lr_factor

RUN = [
    "task=copy",
    "task.train_examples=2000",
    "task.max_tokens=1024",  # small batches: seconds per run
    "model=tiny",
    "model.dropout=0.1",
    "trainer.schedule=wsd",
    "trainer.decay_frac=0.4",  # long branches: a kill lands inside one
    "trainer.warmup_steps=10",
    "trainer.log_every=5",
    "trainer.eval_every=1000",
    "trainer.decode_examples=16",
    "trainer.test_examples=16",
    "trainer.num_threads=1",  # the same float reductions in every run compared here
    "logger=none",
]
BRANCHED = [*RUN, "trainer.branch_at=[0.25,0.5]", "trainer.max_steps=60"]


def run(tmp_path: Path, name: str, *args: str) -> tuple[dict, list[dict]]:
    run_dir = tmp_path / name
    out = train_cli(*args, f"hydra.run.dir={run_dir}", results=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "run.json").read_text()), rows


def main_rows(rows: list[dict]) -> list[dict]:
    """The main run's history, without timings (they differ between runs)."""
    drop = ("train_tokens_per_s", "infer_tokens_per_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows if "branch" not in r]


def test_wsd_is_flat_then_decays_to_zero_over_the_last_fraction():
    wsd = {"schedule": "wsd", "warmup_steps": 10, "decay_frac": 0.2}
    linear = lr_factor(from_values(TrainerConfig, wsd), 100)  # decays over updates 81..100
    assert linear(4) == pytest.approx(0.5)  # warmup: 5 of 10
    assert linear(49) == linear(79) == 1.0  # stable
    assert linear(89) == pytest.approx(0.5)  # halfway down: 10 of 20 decay steps
    assert linear(99) == 0.0
    sqrt = lr_factor(from_values(TrainerConfig, {**wsd, "decay_shape": "sqrt"}), 100)
    assert sqrt(89) == pytest.approx(1 - math.sqrt(0.5))
    # a decay that begins inside the warmup: the budget still ends at zero
    short = lr_factor(from_values(TrainerConfig, {**wsd, "warmup_steps": 200}), 50)
    assert short(39) == pytest.approx(40 / 200) and short(49) == 0.0


def test_a_branch_forks_where_the_shorter_run_would_begin_its_decay():
    cfg = from_values(
        TrainerConfig, {"schedule": "wsd", "decay_frac": 0.2, "branch_at": [0.5, 0.25]}
    )
    plan = branch_plan(cfg, 200)
    assert [(b.fraction, b.fork, b.end) for b in plan] == [(0.25, 40, 50), (0.5, 80, 100)]
    with pytest.raises(ValueError, match=r"set trainer\.schedule=wsd"):
        from_values(TrainerConfig, {"schedule": "cosine", "branch_at": [0.5]})
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        from_values(TrainerConfig, {"schedule": "wsd", "branch_at": [1.0]})


@pytest.fixture(scope="module")
def branched(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    tmp = tmp_path_factory.mktemp("branched")
    return (tmp, *run(tmp, "branched", *BRANCHED))


def test_each_branch_is_the_run_with_that_budget(branched):
    tmp, record, _ = branched
    budgets = record["budgets"]
    assert [b["fraction"] for b in budgets] == [0.25, 0.5, 1.0]
    assert [b["step"] for b in budgets] == [15, 30, 60]
    for budget in budgets[:2]:  # the run trained for that budget alone, from scratch
        alone, _ = run(tmp, f"alone-{budget['step']}", *RUN, f"trainer.max_steps={budget['step']}")
        assert budget["tokens"] == alone["metrics"]["tokens"]
        assert abs(budget["val_loss"] - alone["metrics"]["val_loss"]) <= 1e-6
        assert budget["exact_match"] == alone["metrics"]["exact_match"]
    whole = budgets[-1]
    assert whole["val_loss"] == record["metrics"]["val_loss"]
    assert whole["tokens"] == record["metrics"]["tokens"]
    assert record["metrics"]["converged"] is None  # an annealed tail says nothing
    assert "anneals" in record["metrics"]["convergence_note"]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_branches_leave_the_main_run_untouched(branched):
    tmp, record, rows = branched
    plain, plain_rows = run(tmp, "plain", *RUN, "trainer.max_steps=60")
    assert record["metrics"]["val_loss"] == plain["metrics"]["val_loss"]
    assert main_rows(rows) == main_rows(plain_rows)
    branch_rows = [r for r in rows if "branch" in r]
    assert {r["branch"] for r in branch_rows} == {0.25, 0.5}
    assert [r["lr"] for r in branch_rows if "val_loss" in r] == [0.0, 0.0]  # decayed to zero


def wait_inside_a_branch(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until the run's checkpoint was written inside a budget branch; its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            state = load_checkpoint(RunFolder(run_dir).checkpoint)
        except Exception:  # replaced while we read it
            state = None
        if state and state["trainer"]["branches"]["active"] is not None:
            return state["trainer"]["counters"]["step"]
        time.sleep(0.01)
    raise AssertionError("no checkpoint inside a branch")


def test_a_run_killed_inside_a_branch_resumes_to_the_uninterrupted_result(branched, tmp_path):
    _, reference, reference_rows = branched
    args = [*BRANCHED, "trainer.checkpoint_every=1"]
    run_dir = tmp_path / "killed"
    proc = start_cli(*args, f"hydra.run.dir={run_dir}", f"results_dir={tmp_path}")
    wait_inside_a_branch(run_dir, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["trainer"]
    assert state["branches"]["active"] is not None, "the last checkpoint left the branch"
    killed_at = state["counters"]["step"]

    record, rows = run(tmp_path, "killed", *args)
    assert record["resumes"][0]["from_step"] == killed_at
    for mine, theirs in zip(record["budgets"], reference["budgets"], strict=True):
        assert mine["tokens"] == theirs["tokens"]
        assert abs(mine["val_loss"] - theirs["val_loss"]) <= 1e-6
    timing = ("train_tokens_per_s", "infer_tokens_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == [
        {k: v for k, v in r.items() if k not in timing} for r in reference_rows
    ]
