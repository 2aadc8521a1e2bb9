"""W&B as its users like it: one line per run, runs named by their cell, decoded samples
as tables, the checkpoint as a model artifact, and online/offline decided as W&B itself
decides; and the run's own log (train.log). Real wandb, offline; its run files are read
back with tests/wandb_offline.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import wandb
import wandb_offline
from conftest import train_cli

KEY = "a" * 40  # the shape of a W&B API key; never sent anywhere


def test_a_single_run_is_quiet_named_by_its_cell_with_samples_and_a_model(tmp_path):
    run_dir = tmp_path / "run"
    out = train_cli(
        "task=copy",
        "model=tiny",
        "trainer.max_steps=20",
        "trainer.decode_examples=30",
        "logger=wandb",
        "logger.wandb.mode=offline",
        "logger.wandb.log_checkpoint=true",
        f"hydra.run.dir={run_dir}",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    assert sum(line.startswith("wandb:") for line in lines) <= 3
    assert sum(line.startswith("W&B run copy/none/s0: offline") for line in lines) == 1
    # the harness logs through Python logging: the run's train.log (where a SLURM job's
    # log is kept) holds what the console showed, the closing line included
    log = (run_dir / "train.log").read_text()
    closing = [
        line for line in out.stdout.splitlines() if line.strip().startswith("run  completed")
    ]
    assert len(closing) == 1 and closing[0] in log
    assert f"run recorded in {run_dir / 'run.json'}" in log
    assert "building the data of task copy" in log and "W&B run copy/none/s0" in log

    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert wandb_offline.run_info(run_file)["name"] == "copy/none/s0"
    models = [a for a in wandb_offline.artifacts(run_file) if a["type"] == "model"]
    assert len(models) == 1 and list(models[0]["files"]) == ["checkpoint.pt"]
    assert models[0]["metadata"]["steps"] == 20
    # requirements.txt, as W&B would write it, from the package list read once per process
    assert "requirements.txt" in wandb_offline.saved_files(run_file)
    requirements = (run_file.parent / "files" / "requirements.txt").read_text().splitlines()
    assert f"torch=={torch.__version__}" in requirements
    assert f"wandb=={wandb.__version__}" in requirements
    summary = wandb_offline.summary(run_file)
    assert summary["samples/valid"]["_type"] == "table-file"
    assert summary["samples/valid"]["nrows"] == 30
    # the table holds what BLEU / exact match was computed on, with the source
    (table,) = run_file.parent.glob("files/media/table/samples/valid_*.table.json")
    table = json.loads(table.read_text())
    decoded = [json.loads(x) for x in (run_dir / "decoded-valid.jsonl").read_text().splitlines()]
    assert table["columns"] == ["index", "source", "reference", "hypothesis"]
    assert table["data"] == [
        [d["index"], d["source"], d["reference"], d["hypothesis"]] for d in decoded
    ]


def mode_in(env: dict[str, str], tmp_path: Path) -> str:
    """wandb_mode() in a fresh process with `env` (W&B's login state is per process)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    clean.update({"WANDB_CONFIG_DIR": str(tmp_path / "config"), "NETRC": str(tmp_path / "none")})
    clean.update(env)
    code = "from tiedharness.tracking.trackers import wandb_mode; print(wandb_mode())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_online_or_offline_is_decided_the_way_wandb_decides(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine wandb.example.com\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    (tmp_path / "config").mkdir()
    assert mode_in({}, tmp_path) == "offline"  # no key anywhere
    assert mode_in({"WANDB_API_KEY": KEY}, tmp_path) == "online"
    # a self-hosted server's key, for the default host: W&B would not use it
    assert mode_in({"NETRC": str(netrc)}, tmp_path) == "offline"
    # `wandb login --host https://wandb.example.com` saved that host: now it would
    (tmp_path / "config" / "settings").write_text(
        "[default]\nbase_url = https://wandb.example.com\n"
    )
    assert mode_in({"NETRC": str(netrc)}, tmp_path) == "online"
    assert mode_in({"NETRC": str(netrc), "WANDB_MODE": "offline"}, tmp_path) == "offline"
