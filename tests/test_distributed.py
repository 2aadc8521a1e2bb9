"""Beyond one process: data parallelism with torch.distributed (gloo on CPU), gradient
accumulation, and the documented torchrun and SLURM commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import train_cli

from tiedharness.build import build
from tiedharness.config import JobConfig
from tiedharness.training.distributed import Dist
from tiedharness.training.loop import Trainer

STRATEGIES = ("none", "three_way", "qkv")


def smoke_job(sharing: str, **trainer) -> JobConfig:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tiedharness.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", f"sharing={sharing}", "logger=none"])
    config = OmegaConf.to_container(cfg, resolve=True)
    config["trainer"].update(max_steps=4, profile=False, **trainer)
    # Without biases: a key projection's bias gets a gradient that is zero but for rounding
    # (softmax ignores a shift shared by all keys), and Adam scales that rounding noise up
    # to steps of about the learning rate, different for any other order of summation.
    config["model"]["bias"] = False
    return JobConfig.from_config(config)


def trained(
    sharing: str, accum_steps: int, world: Dist, fsdp: bool = False
) -> dict[str, torch.Tensor]:
    """The parameters after 4 updates (dropout 0: the tiny model has none); with FSDP2,
    gathered on rank 0 (empty elsewhere). In float64: summing gradients over ranks or over
    accumulated batches rounds differently, and Adam scales the rounding of a gradient
    that is almost zero up to a step of about the learning rate — in float32 that reached
    1.5e-5 on a rare token's embedding row, in float64 it is some 1e-13."""
    job = smoke_job(sharing, accum_steps=accum_steps, fsdp=fsdp)
    torch.manual_seed(0)
    _, data, model = build(job)
    model = model.double()
    trainer = Trainer(model, data, job.trainer, device=torch.device("cpu"), dist=world)
    trainer.fit()
    assert trainer.step == 4
    if fsdp:
        from tiedharness.training.sharding import full_state

        return full_state(trainer.model, trainer.optimizer)[0]
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _ddp_rank(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        params = {
            (s, wrap): trained(s, 1, Dist(rank=rank, world=2), fsdp=wrap == "fsdp")
            for s in STRATEGIES
            for wrap in ("ddp", "fsdp")
        }
        if rank == 0:
            torch.save(params, out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_take_the_same_updates_as_two_accumulated_batches(tmp_path):
    """DDP and FSDP2 over 2 ranks against one process accumulating 2 batches per update."""
    out = tmp_path / "ranks.pt"
    mp.spawn(_ddp_rank, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ranks = torch.load(out, weights_only=True)
    for sharing in STRATEGIES:
        single = trained(sharing, accum_steps=2, world=Dist())
        for wrap in ("ddp", "fsdp"):
            parallel = ranks[(sharing, wrap)]
            assert parallel.keys() == single.keys()
            for name, value in single.items():
                torch.testing.assert_close(
                    parallel[name], value, rtol=0, atol=1e-5, msg=f"{sharing} {wrap} {name}"
                )
        one_batch = trained(sharing, accum_steps=1, world=Dist())  # one batch per update
        assert any(not torch.allclose(one_batch[k], single[k], atol=1e-5) for k in single)


def test_fsdp_refuses_ties_across_sharding_units():
    from conftest import tiny_model

    from tiedharness.training.sharding import check_ties_fit_units

    for sharing in ("none", "three_way", "qkv", "positional", "all"):
        check_ties_fit_units(tiny_model(sharing))  # ties inside the root or one layer
    with pytest.raises(ValueError, match=r"share a tensor .*trainer\.fsdp=false"):
        check_ties_fit_units(tiny_model("cross_layer"))


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_accumulation_trains_k_times_the_tokens_per_update(tmp_path):
    runs = {}
    for k in (1, 4):
        run_dir = tmp_path / f"accum{k}"
        out = train_cli(
            "experiment=smoke",
            "logger=none",
            f"trainer.accum_steps={k}",
            "trainer.max_steps=6",
            "trainer.log_every=1",
            "trainer.warmup_steps=3",
            f"hydra.run.dir={run_dir}",
            results=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
        runs[k] = [r for r in rows if "train_loss" in r]
    job = smoke_job("none")
    _, data, model = build(job)
    trainer = Trainer(model, data, job.trainer, device=torch.device("cpu"))
    targets = data.splits["train"].sizes()[1]
    for k, rows in runs.items():
        assert [r["step"] for r in rows] == list(range(1, 7))  # the step counts updates
        # each epoch's batches in order, less a tail that does not fill a whole update
        seen = [b for e in range(6) for b in trainer.batches(e)[: len(trainer.batches(e)) // k * k]]
        expected = [int(targets[torch.cat(seen[: k * s])].sum()) for s in range(1, 7)]
        assert [r["tokens"] for r in rows] == expected  # k batches' tokens per update
    # the schedule follows updates: the same learning rate at the same update
    assert [r["lr"] for r in runs[1]] == [r["lr"] for r in runs[4]]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_torchrun_runs_one_job_on_two_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "--no-python",
            "tiedharness-train",
            "task=copy",
            "model=tiny",
            "trainer.max_steps=20",
            "logger=none",
            f"results_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = list(tmp_path.rglob("run.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and record["env"]["world_size"] == 2
    rows = [
        json.loads(line) for line in (records[0].parent / "history.jsonl").read_text().splitlines()
    ]
    # every update takes two batches, one per rank: the tokens of both
    job = JobConfig.from_config(record["config"])
    _, data, model = build(job)
    trainer = Trainer(model, data, job.trainer, device=torch.device("cpu"))
    targets = data.splits["train"].sizes()[1]
    assert record["metrics"]["tokens"] == int(targets[torch.cat(trainer.batches(0)[:40])].sum())
    assert rows[-1]["step"] == 20
    assert out.stdout.count("run recorded in") == 1  # rank 0 speaks for the run


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
@pytest.mark.skipif(not shutil.which("sinfo"), reason="no SLURM here (scripts/start_slurm.sh)")
def test_one_hydra_job_on_two_slurm_tasks_is_one_ddp_run(tmp_path):
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    if state.strip() not in ("idle", "mixed"):
        pytest.skip(f"the SLURM node is {state.strip() or 'down'} (scripts/start_slurm.sh)")
    out = train_cli(
        "-m",
        "task=copy",
        "model=tiny",
        "trainer.max_steps=10",
        "logger=none",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = list(tmp_path.rglob("run.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and record["env"]["world_size"] == 2
