"""No surprises for a Hydra user: unknown keys and schema nodes refused before any data is
built, with or without `+`; `--help` lists every key with its default and meaning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_cli

from tiedharness.cli.help import app_keys, check_overrides, override_words


def run_records(results: Path) -> list[Path]:
    return list(results.rglob("run.json")) if results.exists() else []


@pytest.mark.parametrize("key", ["+trainer.lr_rate=1", "trainer.lr_rate=1"])
def test_unknown_key_refused_with_or_without_plus(tmp_path, key):
    out = train_cli("task=copy", "model=tiny", key, results=tmp_path)
    assert out.returncode != 0
    assert "trainer.lr_rate" in out.stderr
    assert "did you mean trainer.lr?" in out.stderr
    assert not run_records(tmp_path)


def test_key_of_another_task_refused(tmp_path):
    out = train_cli("task=copy", "model=tiny", "logger=none", "+task.overlap=0.2", results=tmp_path)
    assert out.returncode != 0
    assert "task.overlap" in out.stderr
    assert not run_records(tmp_path)


def test_schema_node_is_not_a_choice(tmp_path):
    out = train_cli("sharing=schema", results=tmp_path)
    assert out.returncode != 0
    assert "none" in out.stderr and "embed_output" in out.stderr
    assert "schema," not in out.stderr.split("choose one of")[-1]
    assert not run_records(tmp_path)


def test_a_bad_value_is_refused_before_the_folder_is_claimed(tmp_path):
    """The command turns its arguments into the typed job config before it claims a run
    folder: a bad value leaves no run record, no lock and no history behind."""
    run_dir = tmp_path / "run"
    out = train_cli(
        "task=copy", "model=tiny", "trainer.lr=-1", f"hydra.run.dir={run_dir}", results=tmp_path
    )
    assert out.returncode == 2
    assert "trainer.lr=-1.0: must be > 0" in out.stderr
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".hydra") == ["train.log"]


@pytest.mark.slow  # a real two-job sweep
def test_a_sweep_cell_with_a_bad_value_is_not_run_and_the_others_are(tmp_path):
    """In a sweep the bad cell is named and left without a record; the sweep goes on."""
    out = train_cli(
        "-m", "experiment=smoke", "sharing=none", "logger=none", "trainer.lr=-1,0.001",
        results=tmp_path,
    )  # fmt: skip
    assert "job 0: not run: trainer.lr=-1.0: must be > 0" in out.stderr + out.stdout
    (record,) = run_records(tmp_path)
    assert record.parent.name == "1"


def test_help_shows_default_and_meaning(tmp_path):
    out = train_cli("--help", results=tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = [row for row in out.stdout.splitlines() if row.split()[:1] == ["trainer.lr"]]
    assert "0.0005" in line
    assert "schema" not in out.stdout.split("sharing: (")[1].split("\n")[1]


@pytest.mark.parametrize("app", ["params", "data"])
def test_other_commands_help(app):
    exe = shutil.which(f"tiedharness-{app}", path=str(Path(sys.executable).parent))
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "format" in out.stdout


def test_every_schema_field_has_a_meaning():
    missing = [
        key
        for app in ("train", "params", "data")
        for fields in app_keys(app).values()
        for key, (_, meaning) in fields.items()
        if not meaning
    ]
    assert not missing, f"fields without a meaning: {', '.join(sorted(set(missing)))}"


def test_real_keys_and_hydra_words_pass():
    argv = [
        "-m",
        "trainer.lr=1e-3,2e-3",
        "+trainer.max_steps=3",
        "~logger.wandb.tags",
        "sharing.cross_layer.unique=2",
        "experiment=smoke",
        "cell=mt_none",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "+hydra.job.env_set.X=1",
        "scale.mt.vocab_size=100",
        "sharing=none,qkv",
        "task=glob(*)",
        "-sc",
        "install=bash",
    ]
    assert check_overrides("train", argv) is None
    assert override_words(["-sc", "install=bash", "--cfg", "job", "a=1"]) == ["a=1"]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_normal_run_completes(tmp_path):
    args = ("task=copy", "model=tiny", "trainer.max_steps=2", "logger=none")
    out = train_cli(*args, "++trainer.eval_every=1", results=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(run_records(tmp_path)) == 1
