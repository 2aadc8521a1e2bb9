"""The sweep's progress line and closing summary (tiedharness/sweep/summary.py): the
progress file that concurrent processes append to, a job's bookkeeping that reads its own
record only, and whose cells are whose when two processes resume one sweep, driven
through the callback's hooks and, for real, through two `tiedharness-train -m`."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

import tiedharness.cli.train  # noqa: F401  (registers th.new_folder, which conf/train.yaml uses)
from tiedharness.cli import CONF_DIR
from tiedharness.sweep import summary
from tiedharness.sweep.summary import (
    PROGRESS_FILE,
    SweepSummary,
    append_progress,
    bump_tally,
    read_progress,
)
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

# ---------------------------------------------------------------------------- the files


def _append_many(sweep_dir: Path, writer: int, lines: int) -> None:
    for n in range(lines):  # long lines: a torn write would show
        append_progress(sweep_dir, {"job": n, "start": f"w{writer}", "pad": "x" * 2000})
        bump_tally(sweep_dir, f"w{writer % 2}", "trained")


def test_the_progress_file_takes_concurrent_writers_and_skips_a_cut_line(tmp_path):
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(tmp_path, w, 200)) for w in range(4)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    with (tmp_path / PROGRESS_FILE).open("ab") as f:  # a process killed in its write
        f.write(b'{"job": 7, "start": "w9", "did": "tra')
    entries = read_progress(tmp_path)
    assert len(entries) == 4 * 200  # every whole line, none torn, the cut one skipped
    for w in range(4):
        assert [e["job"] for e in entries if e["start"] == f"w{w}"] == list(range(200))
    append_progress(tmp_path, {"job": 8, "start": "w9"})  # after a cut line: both unreadable
    assert len(read_progress(tmp_path)) == 4 * 200
    append_progress(tmp_path, {"job": 9, "start": "w9"})
    assert read_progress(tmp_path)[-1] == {"job": 9, "start": "w9"}
    tally = json.loads((tmp_path / summary.TALLY_FILE).read_text())
    assert tally == {f"w{s}": {"passed": 400, "worked": 400, "kept": 0} for s in range(2)}
    (tmp_path / summary.TALLY_FILE).write_text('{"w0": {"passed": 4')  # damaged: begun anew
    assert bump_tally(tmp_path, "w0", "kept") == {"passed": 1, "worked": 0, "kept": 1}


# ---------------------------------------------------------------------------- the hooks


def sweep_configs(sweep_dir: Path) -> tuple[DictConfig, DictConfig]:
    """The smoke study's sweep config and a job's, as Hydra passes them to callbacks."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        overrides = ["experiment=smoke", "logger=none", f"hydra.sweep.dir={sweep_dir}"]
        sweep = compose("train", overrides=overrides, return_hydra_config=True)
        job = compose("train", overrides=[*overrides, "sharing=none"], return_hydra_config=True)
    for config in (sweep, job):
        with open_dict(config):
            config.hydra.mode = RunMode.MULTIRUN
    return sweep, job


def write_record(folder: Path, num: int, pid: int, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = RunRecord(run_id=f"s-{num}", job_num=num, task="copy", sharing="none", seed=num)
    record.status, record.host, record.pid = RunStatus.completed, os.uname().nodename, pid
    for key, value in fields.items():
        setattr(record, key, value)
    RunFolder(folder).write_record(record)


def end_job(callback: SweepSummary, job: DictConfig, folder: Path) -> None:
    with open_dict(job):
        job.hydra.job.num, job.hydra.runtime.output_dir = int(folder.name), str(folder)
    callback.on_job_start(config=job)
    callback.on_job_end(config=job, job_return=None)


def finished_an_hour_ago(folder: Path) -> float:
    """Cell 0's record, finished by an earlier start of the sweep (another process, its
    file an hour old); returns that time."""
    write_record(folder, 0, pid=1)
    old = time.time() - 3600
    os.utime(folder / "run.json", (old, old))
    return old


def test_the_summary_tells_this_process_cells_from_another_one(tmp_path, capsys, monkeypatch):
    """Five cells: one finished by an earlier start (kept), two trained here, one trained
    by another process meanwhile (its progress line says so), one it is still training."""
    sweep_dir = tmp_path / "sweep"
    sweep, job = sweep_configs(sweep_dir)
    folders = [sweep_dir / str(n) for n in range(5)]
    old = finished_an_hour_ago(folders[0])
    append_progress(sweep_dir, {"job": 0, "start": "earlier", "did": "trained", "at": old})
    callback = SweepSummary()
    callback.on_multirun_start(config=sweep)
    other = RunFolder(folders[4])  # another process, training cell 4 now
    other.acquire()
    write_record(folders[4], 4, pid=1, status=RunStatus.running)
    write_record(folders[1], 1, pid=1)  # trained by the other process since this start
    append_progress(sweep_dir, {"job": 1, "start": "other", "did": "trained", "at": time.time()})
    reads = []
    real_read = RunRecord.read
    monkeypatch.setattr(RunRecord, "read", lambda path: reads.append(path) or real_read(path))
    for n in range(5):
        if n in (2, 3):
            write_record(folders[n], n, pid=os.getpid())  # what this process's job wrote
        end_job(callback, job, folders[n])
    assert reads == [f / "run.json" for f in folders]  # each job's own record, once
    out = capsys.readouterr().out
    says = [re.search(r"\((.*?);", line)[1] for line in out.splitlines() if line.startswith("[")]
    assert says == [
        "kept",
        "finished by another process",
        "trained",
        "trained",
        "another process is training it",
    ]
    assert out.splitlines()[-1].endswith("about 0.0s left)")  # every cell passed: the tally
    callback.on_multirun_end(config=sweep)
    out = capsys.readouterr().out
    assert "this process: 2 trained; another process: 1 trained  1 running; 1 kept" in out
    other.release()
    mine = [e for e in read_progress(sweep_dir) if e["start"] == callback.start]
    assert [(e["job"], e["did"]) for e in mine] == [
        (0, "kept"),
        (1, "other"),
        (2, "trained"),
        (3, "trained"),
        (4, "busy"),
    ]


def test_a_start_alone_on_its_sweep_says_what_it_kept_and_resumed(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    sweep, job = sweep_configs(sweep_dir)
    folders = [sweep_dir / str(n) for n in range(3)]
    finished_an_hour_ago(folders[0])
    callback = SweepSummary()
    callback.on_multirun_start(config=sweep)
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 1))
    write_record(folders[1], 1, pid=os.getpid(), resumes=[{"from_step": 3, "at": now}])
    write_record(folders[2], 2, pid=os.getpid(), attempt=2)
    for folder in folders:
        end_job(callback, job, folder)
    callback.on_multirun_end(config=sweep)
    assert "\n1 kept  1 resumed  1 rerun\n" in capsys.readouterr().out


# ---------------------------------------------------------------------------- for real


def start_cli(*args: str) -> subprocess.Popen:
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    return subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def own_counts(stdout: str) -> int:
    """How many cells a process's closing summary says it trained, resumed or reran."""
    (line,) = [x for x in stdout.splitlines() if x.startswith("this process: ")] or [""]
    mine = line.removeprefix("this process: ").split(";")[0]
    return sum(int(n) for n, kind in re.findall(r"(\d+) (\w+)", mine) if kind in summary.WORK)


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_two_processes_on_one_sweep_each_count_their_own_cells(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "experiment=smoke",
        "trainer.max_steps=4",
        "logger=none",
        "trainer.num_threads=1",  # two processes on two cores: one thread each
        f"hydra.sweep.dir={sweep_dir}",
        f"results_dir={tmp_path}",
    ]
    procs = [start_cli(*args), start_cli(*args)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        outs.append(out)
    records = [RunFolder(sweep_dir / str(n)).read_record() for n in range(5)]
    assert [r.status for r in records] == ["completed"] * 5
    assert [r.attempt for r in records] == [1] * 5 and not any(r.resumes for r in records)
    trained = []  # the cells each process's progress lines say it trained
    for out in outs:
        lines = [x for x in out.splitlines() if re.match(r"\[\d+/5\] ", x)]
        assert len(lines) == 5, out  # each process passed every job
        trained.append({int(x.split()[1]) for x in lines if "(trained;" in x})
    assert trained[0].isdisjoint(trained[1]) and trained[0] | trained[1] == set(range(5))
    assert trained[0] and trained[1], outs  # both trained: the test saw two processes at work
    assert [own_counts(out) for out in outs] == [len(cells) for cells in trained]
    for out, theirs in zip(outs, reversed(trained), strict=True):
        line = next(x for x in out.splitlines() if x.startswith("this process: "))
        others = re.search(r"another process: (\d+) trained", line)
        assert others and int(others[1]) <= len(theirs), line  # never more than it trained
    work = [e for e in read_progress(sweep_dir) if e["did"] in summary.WORK]
    assert sorted(e["job"] for e in work) == list(range(5))  # one line of work per cell
    assert len({e["start"] for e in work}) == 2
