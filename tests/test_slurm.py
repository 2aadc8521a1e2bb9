"""Preemption and time limits on a real SLURM: a single-node cluster on this machine
(scripts/start_slurm.sh, which `make test` and CI run first), jobs submitted through
Hydra's submitit launcher, signals sent by SLURM itself or by `scancel --signal`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _cluster_state() -> str:
    if not shutil.which("sinfo"):
        return "no sinfo"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()[:200]


pytestmark = pytest.mark.skipif(
    _cluster_state() not in ("idle", "mixed", "allocated"),
    reason="no SLURM cluster up here (scripts/start_slurm.sh needs root and apt to start one)",
)

SWEEP = [
    "-m",
    "task=copy",
    "task.train_examples=2000",
    "model=tiny",
    "trainer.checkpoint_every=10",
    "trainer.eval_every=100",
    "trainer.log_every=10",
    "trainer.decode_examples=8",
    "trainer.test_examples=8",
    "logger=none",
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]


def start_sweep(*args: str) -> subprocess.Popen:
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    return subprocess.Popen(
        [exe, *SWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_to_end(proc: subprocess.Popen, timeout: float = 480) -> tuple[str, str]:
    """Wait for the sweep, acting as the scheduler's admin: SLURM holds a requeued job
    for two minutes before it may start again; release it at once."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the sweep did not end"
        held = subprocess.run(
            ["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True
        ).stdout.split("\n")
        for line in held:
            if line.endswith("BeginTime"):
                subprocess.run(["scontrol", "update", f"jobid={line.split()[0]}", "starttime=now"])
        time.sleep(1)
    return proc.communicate()


def wait_for_training(run_dir: Path, proc: subprocess.Popen) -> dict:
    """The run's record once it has trained past a checkpoint (it names its SLURM job)."""
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    return json.loads((run_dir / "run.json").read_text())


def check_resumed_run(run_dir: Path, steps: int) -> dict:
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["metrics"]["steps"] == steps
    assert record["resumes"], "the run was never resumed"
    assert all(r["slurm_job_id"] and r["from_step"] > 0 for r in record["resumes"])
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    logged = [(row["step"], tuple(sorted(row))) for row in rows]
    assert len(logged) == len(set(logged))  # each step once
    assert [s for s, _ in logged] == sorted(s for s, _ in logged)
    return record


def test_a_preempted_job_is_requeued_and_resumes(tmp_path):
    proc = start_sweep(
        "sharing=none,embed_output", "trainer.max_steps=300", f"results_dir={tmp_path}"
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "adhoc").glob("*/0")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    (run_dir,) = (tmp_path / "adhoc").glob("*/0")
    slurm_job = wait_for_training(run_dir, proc)["env"]["slurm_job_id"]
    # what submitit asks SLURM to send before a time limit, and what preemption sends
    subprocess.run(["scancel", "--signal=USR2", slurm_job], check=True)
    out, err = run_to_end(proc)
    assert proc.returncode == 0, err[-3000:]
    record = check_resumed_run(run_dir, 300)
    assert record["resumes"][0]["slurm_job_id"] == slurm_job
    other = json.loads((run_dir.parent / "1" / "run.json").read_text())
    assert other["status"] == "completed" and not other["resumes"]
    assert "1 resumed  1 trained" in out


@pytest.mark.slow  # a minute of SLURM's time limit; the preemption test covers the requeue
def test_a_job_that_reaches_its_time_limit_is_requeued_and_resumes(tmp_path):
    # one minute per start; SLURM signals it 30 s before the limit (give or take SLURM's
    # one-minute resolution, so at most 30 s in), so ~30 s of training needs a requeue
    proc = start_sweep(
        "trainer.max_steps=300",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=30",
        "hydra.launcher.max_num_timeout=10",
        f"results_dir={tmp_path}",
    )
    _, err = run_to_end(proc)
    assert proc.returncode == 0, err[-3000:]
    (run_dir,) = (tmp_path / "adhoc").glob("*/0")
    record = check_resumed_run(run_dir, 300)
    assert "timed-out" in "".join(p.read_text() for p in run_dir.parent.glob(".submitit/*/*.err"))
    assert len(record["resumes"]) <= 10
