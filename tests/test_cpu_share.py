"""Threads claimed from a host-wide registry: fair shares, waiting, stale claims."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from tiedharness import host
from tiedharness.cli.train import parallel_jobs
from tiedharness.host import CpuShare, available_cpus, registry_dir

CPUS = available_cpus()


@pytest.fixture()
def registry(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TIEDHARNESS_CPU_REGISTRY", str(tmp_path / "cpus"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield tmp_path / "cpus"
    torch.set_num_threads(before)


@pytest.fixture()
def other_job():
    """A live process of its own, whose claim a test writes into the registry."""
    procs = []

    def start(registry: Path, threads: int, waiting_since: float | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "60"])
        procs.append(proc)
        registry.mkdir(parents=True, exist_ok=True)
        claim = dict(
            pid=proc.pid,
            started=None,
            threads=threads,
            waiting_since=waiting_since,
            run_dir="elsewhere",
        )
        (registry / f"host-{proc.pid}.json").write_text(json.dumps(claim))
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_job_alone_takes_every_cpu_and_gives_them_back(registry, tmp_path):
    with CpuShare(tmp_path) as threads:
        assert threads == CPUS == torch.get_num_threads()
        assert len(list(registry.glob("*.json"))) == 1
    assert list(registry.glob("*.json")) == []


def test_the_launchers_side_by_side_jobs_divide_the_cpus(registry, tmp_path):
    assert parallel_jobs({"n_jobs": 3}) == 3
    assert parallel_jobs({"n_jobs": -1}) == os.cpu_count()
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert parallel_jobs(basic) == 1
    with CpuShare(tmp_path, parallel_jobs=64) as threads:
        assert threads == 1 == torch.get_num_threads()
    with CpuShare(tmp_path, fixed=3, parallel_jobs=64) as threads:
        assert threads == 3 == torch.get_num_threads()


@pytest.mark.skipif(CPUS < 2, reason="a share needs two CPUs to divide")
def test_a_second_job_takes_what_the_first_left_free(registry, tmp_path, other_job):
    other_job(registry, threads=CPUS - 1)
    with CpuShare(tmp_path) as threads:
        assert threads == 1  # its fair share is CPUS // 2, but only one is free


def test_a_job_waits_until_a_cpu_is_free_and_says_so(registry, tmp_path, other_job):
    other = other_job(registry, threads=CPUS)
    said: list[str] = []
    threading.Timer(1.5, other.kill).start()
    share = CpuShare(tmp_path, say=said.append)
    with share as threads:
        assert threads == CPUS  # the other one ended: alone again
    assert share.waited_s >= 1.4
    assert len(said) == 1 and f"pid {other.pid}" in said[0] and "waiting for a CPU" in said[0]


def test_a_job_waiting_longer_goes_first(registry, tmp_path, other_job, monkeypatch):
    """A claim queued before ours is served before ours: its wish counts as taken."""
    monkeypatch.setattr(host, "POLL_S", 0.05)
    other_job(registry, threads=CPUS, waiting_since=time.time() - 60)
    share = CpuShare(tmp_path, say=lambda _: None)
    started = threading.Event()

    def run() -> None:
        with share:
            started.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert not started.wait(1.0)  # the earlier waiter's wish fills the CPUs
    for file in registry.glob("host-*.json"):
        file.unlink()  # it gave up
    assert started.wait(5.0)
    worker.join(5.0)


def test_claims_of_ended_processes_are_removed(registry, tmp_path):
    registry.mkdir(parents=True)
    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = dict(pid=proc.pid, started=None, threads=CPUS, waiting_since=None, run_dir="x")
    (registry / "host-dead.json").write_text(json.dumps(stale))
    (registry / "host-torn.json").write_text('{"pid": 1')  # cut short by a kill
    with CpuShare(tmp_path) as threads:
        assert threads == CPUS
    assert list(registry.glob("host-*.json")) == []


def test_no_registry_when_asked_for_none(monkeypatch, tmp_path):
    monkeypatch.setenv("TIEDHARNESS_CPU_REGISTRY", "none")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert registry_dir() is None
        with CpuShare(tmp_path) as threads:
            assert threads == CPUS
    finally:
        torch.set_num_threads(before)
