"""Runs and sweeps that survive interruption: checkpoints, resume, signals, sweep resume,
exclusive folders, per-cell locks, and bad input that stops early. Every interruption
here is real: a process killed with SIGKILL or sent SIGTERM, then the same command again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import wandb_offline
from conftest import tiny_model, train_cli

from tiedharness.analysis.aggregate import load_runs
from tiedharness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tiedharness.host import new_folder
from tiedharness.tracking.record import RunRecord
from tiedharness.tracking.run_folder import RunFolder, RunFolderError

# A copy task small enough to run in seconds, long enough to be interrupted; with dropout
# (the tiny preset has none), so that a resume must restore the random streams exactly.
RUN = [
    "task=copy",
    "task.train_examples=2000",
    "model=tiny",
    "model.dropout=0.1",
    "trainer.max_steps=40",
    "trainer.checkpoint_every=5",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.decode_examples=8",
    "trainer.test_examples=8",
]
TIMINGS = ("train_tokens_per_s", "infer_tokens_per_s", "wall_s", "peak_mem_mb")


def start_cli(*args: str) -> subprocess.Popen:
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    return subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"ended before {path} appeared: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


def history(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    out = train_cli(*RUN, "logger=none", f"hydra.run.dir={run_dir}", results=run_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir


def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(
    uninterrupted, tmp_path
):
    run_dir = tmp_path / "run"
    proc = start_cli(*RUN, "logger=none", f"hydra.run.dir={run_dir}", f"results_dir={tmp_path}")
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = record(run_dir)
    checkpointed = load_checkpoint(RunFolder(run_dir).checkpoint)["trainer"]["counters"]
    assert killed["status"] == "running"  # what a dead job leaves behind...
    assert (
        RunFolder(run_dir).observed_status(RunRecord.from_dict(killed)) == "interrupted"
    )  # ...seen
    assert load_runs(tmp_path, with_history=False).frame["status"].tolist() == ["interrupted"]

    out = train_cli(*RUN, "logger=none", f"hydra.run.dir={run_dir}", results=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed, reference = record(run_dir), record(uninterrupted)
    assert resumed["status"] == "completed"
    assert resumed["metrics"]["steps"] == 40
    assert abs(resumed["metrics"]["val_loss"] - reference["metrics"]["val_loss"]) <= 1e-6
    assert [r["from_step"] for r in resumed["resumes"]] == [checkpointed["step"]]
    assert checkpointed["step"] < 40
    assert history(run_dir) == history(uninterrupted)  # each step once, the same values
    steps = [(row["step"], tuple(sorted(row))) for row in history(run_dir)]
    assert len(steps) == len(set(steps))


def test_sigterm_checkpoints_at_the_next_step_and_the_rerun_completes(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    args = [*RUN, "logger=wandb", "logger.wandb.mode=offline", f"hydra.run.dir={run_dir}"]
    proc = start_cli(*args, f"results_dir={tmp_path}")
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert f"hydra.run.dir={run_dir}" in err  # the command that continues it
    stopped = record(run_dir)
    assert stopped["status"] == "interrupted" and "SIGTERM" in stopped["error"]
    checkpoint = load_checkpoint(RunFolder(run_dir).checkpoint)
    stopped_at = checkpoint["trainer"]["counters"]["step"]
    assert stopped_at == stopped["metrics"]["steps"] < 40  # written at the step it stopped
    assert history(run_dir)[-1]["step"] <= stopped_at

    # Another job holds a CPU when the run resumes: the run waits for the count it was
    # recorded with (torch rounds differently with fewer threads) instead of taking fewer.
    neighbour = subprocess.Popen(["sleep", "60"])
    registry = Path(os.environ["TIEDHARNESS_CPU_REGISTRY"])
    claim = dict(pid=neighbour.pid, started=None, threads=1, waiting_since=None, run_dir="x")
    (registry / f"neighbour-{neighbour.pid}.json").write_text(json.dumps(claim))
    proc = start_cli(*args, f"results_dir={tmp_path}")
    waiting = registry / f"{socket.gethostname()}-{proc.pid}-*.json"
    while not any(json.loads(f.read_text())["waiting_since"] for f in registry.glob(waiting.name)):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(1.0)
    neighbour.kill()
    neighbour.wait()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    done = record(run_dir)
    assert done["status"] == "completed" and done["metrics"]["steps"] == 40
    assert done["env"]["threads"] == record(uninterrupted)["env"]["threads"]
    assert done["env"]["cpu_wait_s"] >= 1.0 and "waiting for a CPU" in out + err
    assert done["resumes"][0]["from_step"] == stopped_at
    assert done["wandb"]["id"] == stopped["wandb"]["id"]  # one W&B run across the restart
    assert abs(done["metrics"]["val_loss"] - record(uninterrupted)["metrics"]["val_loss"]) <= 1e-6
    first, second = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert first.name.endswith(done["wandb"]["id"]) and second.name.endswith(done["wandb"]["id"])
    resumed_steps = [row["step"] for row in wandb_offline.history(next(second.glob("*.wandb")))]
    assert resumed_steps and min(resumed_steps) > stopped_at


def test_a_killed_sweep_resumes_in_its_folder(tmp_path):
    grid = [
        "-m",
        "experiment=smoke",
        "sharing=none,embed_output,encdec_vocab,positional,qkv,qk",
        "trainer.max_steps=30",
        "trainer.checkpoint_every=3",
        "logger=none",
        f"results_dir={tmp_path}",
    ]
    proc = start_cli(*grid)
    (sweep_dir,) = _wait_for_glob(tmp_path / "smoke", proc)
    wait_for(sweep_dir / "3" / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert record(sweep_dir / "3")["status"] == "running"
    before = {n: (sweep_dir / str(n) / "run.json").read_bytes() for n in range(3)}

    out = train_cli(*grid[:-1], f"hydra.sweep.dir={sweep_dir}", results=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for n in range(3):  # finished cells are not trained again
        assert (sweep_dir / str(n) / "run.json").read_bytes() == before[n]
    records = [record(sweep_dir / str(n)) for n in range(6)]
    assert [r["status"] for r in records] == ["completed"] * 6
    assert len(records[3]["resumes"]) == 1 and all(not r["resumes"] for r in records[4:])
    assert "3 kept  1 resumed  2 trained" in out.stdout
    assert list(sweep_dir.parent.iterdir()) == [sweep_dir]  # no second folder

    report = subprocess.run(
        [shutil.which("tiedharness-report", path=str(Path(sys.executable).parent)), str(sweep_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    runs = load_runs(sweep_dir)
    assert runs.frame["status"].tolist() == ["completed"] * 6


def _wait_for_glob(folder: Path, proc: subprocess.Popen) -> list[Path]:
    wait_for(folder, proc)
    while not (found := list(folder.iterdir())):
        time.sleep(0.02)
    return found


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_two_sweeps_started_together_get_their_own_folders(tmp_path):
    common = [
        "-m",
        "experiment=smoke",
        "trainer.max_steps=4",
        "logger=none",
        "trainer.num_threads=1",  # two processes on two cores: one thread each
        f"results_dir={tmp_path}",
    ]
    first = start_cli(*common)
    second = start_cli(*common, "sharing=none", "trainer.seed=0,1,2,3,4")
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    folders = sorted((tmp_path / "smoke").iterdir())
    assert len(folders) == 2
    grids = []
    for folder in folders:
        records = [record(folder / str(n)) for n in range(5)]
        assert [r["status"] for r in records] == ["completed"] * 5
        assert len({r["run_id"] for r in records}) == 5
        grids.append(sorted((r["sharing"], r["seed"]) for r in records))
    assert grids[0] != grids[1]


def test_a_new_folder_is_never_shared(tmp_path):
    base = tmp_path / "smoke" / "2026-11-27_08-00-00"
    assert new_folder(str(base)) == str(base)
    assert new_folder(str(base)) == f"{base}-2"
    assert new_folder(str(base)) == f"{base}-3"
    assert sorted(p.name for p in base.parent.iterdir()) == [
        base.name,
        f"{base.name}-2",
        f"{base.name}-3",
    ]


def test_a_folder_owned_by_a_live_process_is_not_trained_twice(tmp_path):
    owner = RunFolder(tmp_path)
    owner.acquire()
    try:
        assert RunFolder(tmp_path).owner_alive() is True
        with pytest.raises(RunFolderError, match="being trained by another process"):
            RunFolder(tmp_path).acquire()
        out = train_cli(
            *RUN,
            "trainer.max_steps=2",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
            results=tmp_path,
        )
        assert out.returncode == 2 and "being trained by another process" in out.stderr
        assert not (tmp_path / "run.json").exists()  # nothing written
    finally:
        owner.release()
    assert RunFolder(tmp_path).owner_alive() is False


def test_a_folder_holding_another_config_is_left_alone(uninterrupted):
    def files() -> dict:  # all but the lock's note of who last held it
        return {
            p.name: p.read_bytes()
            for p in uninterrupted.iterdir()
            if p.is_file() and p.name != ".lock"
        }

    before = files()
    out = train_cli(
        *RUN,
        "trainer.lr=0.01",
        "logger=none",
        f"hydra.run.dir={uninterrupted}",
        results=uninterrupted,
    )
    assert out.returncode == 2 and "another configuration" in out.stderr
    assert files() == before


def test_a_corrupt_checkpoint_names_the_file_and_the_fix(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    rec = record(run_dir)
    rec["status"] = "interrupted"
    (run_dir / "run.json").write_text(json.dumps(rec))
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"delete {run_dir / 'checkpoint.pt'}"):
        load_checkpoint(RunFolder(run_dir).checkpoint)
    out = train_cli(*RUN, "logger=none", f"hydra.run.dir={run_dir}", results=tmp_path)
    assert out.returncode == 2 and "unreadable checkpoint" in out.stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_a_checkpoint_keeps_each_tie_once(tmp_path):
    model = tiny_model("three_way")
    state = model.state_dict()
    embed = "encoder.embed.weight"
    tied = [k for k in state if k != embed and state[k].data_ptr() == state[embed].data_ptr()]
    assert tied == ["decoder.embed.weight", "output.weight"]  # three_way
    save_checkpoint(tmp_path / "checkpoint.pt", {"trainer": {"model": state}})
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")["trainer"]["model"]  # weights_only=True
    assert all(loaded[k].data_ptr() == loaded[embed].data_ptr() for k in tied)  # stored once
    fresh = tiny_model("three_way", seed=1)
    fresh.load_state_dict(loaded)
    assert fresh.encoder.embed.weight is fresh.decoder.embed.weight is fresh.output.weight
    assert torch.equal(fresh.output.weight, state[embed])


def test_an_emptied_training_split_stops_before_training(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid"):
        (corpus / f"{split}.src").write_text("the cat sat on the mat today\n" * 20)
        (corpus / f"{split}.tgt").write_text("die katze sass heute auf der matte\n" * 20)
    started = time.monotonic()
    out = train_cli(
        "task=parallel_text",
        f"task.data_dir={corpus}",
        "task.max_len=4",
        "model=tiny",
        "trainer.profile=false",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        results=tmp_path,
    )
    assert out.returncode != 0 and "task.max_len" in out.stderr
    assert time.monotonic() - started < 60


def test_a_binary_data_file_is_named(tmp_path):
    from tiedharness.tasks import make_task

    for split in ("train", "valid"):
        (tmp_path / f"{split}.src").write_text("a b c\n")
        (tmp_path / f"{split}.tgt").write_bytes(b"\xff\xfe\x00binary")
    task = make_task({"name": "parallel_text", "data_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=f"{tmp_path / 'train.tgt'} is not UTF-8"):
        task.load()


def test_a_damaged_history_line_is_skipped_with_a_warning(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    lines = (run_dir / "history.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = b'{"step": 1\xff\n'
    (run_dir / "history.jsonl").write_bytes(b"".join(lines))
    runs = load_runs(tmp_path)
    assert runs.frame["status"].tolist() == ["completed"]
    assert any(f"line 3 of {run_dir / 'history.jsonl'}" in w for w in runs.warnings)
    assert len(runs.history) == len(lines) - 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_threads_follow_the_cpus_this_process_may_use(tmp_path):
    run = [*RUN, "trainer.max_steps=2", "trainer.profile=false", "logger=none"]
    taskset = shutil.which("taskset")
    if taskset:
        exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
        out = subprocess.run(
            [taskset, "-c", "0", exe, *run, f"hydra.run.dir={tmp_path / 'a'}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert record(tmp_path / "a")["env"]["threads"] == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [exe, *run, f"hydra.run.dir={tmp_path / 'b'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert record(tmp_path / "b")["env"]["threads"] == 1


def test_a_cold_and_a_warm_cache_train_the_same(tmp_path):
    """A cold cache builds the data (tokenizers, examples) and runs the cost profile's
    training-mode passes, dropout included; a warm one reads both back. Neither may change
    what training draws: the same command gives the same history, as does one without
    the profile."""
    args = [
        "task=copy",
        "task.train_examples=500",
        f"task.cache_dir={tmp_path / 'cache'}",  # empty: this test's own
        "model=tiny",
        "model.dropout=0.1",
        "trainer.max_steps=12",
        "trainer.eval_every=4",
        "trainer.log_every=2",
        "trainer.decode_examples=4",
        "trainer.test_examples=4",
        "logger=none",
    ]
    runs = {"cold": [], "warm": [], "unprofiled": ["trainer.profile=false"]}
    for name, extra in runs.items():
        out = train_cli(*args, *extra, f"hydra.run.dir={tmp_path / name}", results=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
    assert record(tmp_path / "cold")["metrics"]["profile_cached"] is False
    assert record(tmp_path / "warm")["metrics"]["profile_cached"] is True
    assert "profile_cached" not in record(tmp_path / "unprofiled")["metrics"]

    def rows(name: str) -> list[dict]:
        keys = ("step", "tokens", "train_loss", "val_loss")
        return [{k: row.get(k) for k in keys} for row in history(tmp_path / name)]

    cold = rows("cold")
    assert sum(row["val_loss"] is not None for row in cold) >= 3
    assert sum(row["train_loss"] is not None for row in cold) == 6
    assert rows("warm") == cold  # row by row, exactly
    assert rows("unprofiled") == cold
