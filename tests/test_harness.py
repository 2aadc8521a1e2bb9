"""The harness end to end: real Hydra sweeps, real offline W&B files, real run records."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import sweep_records, train_cli

from tiedharness import wandb_offline
from tiedharness.metrics import count_flops, module_share
from tiedharness.params import param_report
from tiedharness.run import JobContext, model_config_for, run_job, seed_everything
from tiedharness.sharing import SharingConfig, build_model
from tiedharness.tasks import build_task
from tiedharness.tasks.batching import collate
from tiedharness.train import Trainer, TrainerConfig, model_inputs

CONTRACT_METRICS = (
    "val_loss",
    "train_tokens_per_s",
    "softmax_flops_per_token",
    "softmax_flops_share",
    "softmax_time_share",
)


@pytest.fixture(scope="module")
def smoke(smoke_sweep) -> tuple[subprocess.CompletedProcess, list[tuple[Path, dict]]]:
    out, sweep_dir = smoke_sweep
    return out, sweep_records(sweep_dir.parent.parent)


def test_smoke_sweep_completes_with_the_contract(smoke):
    out, records = smoke
    assert out.returncode == 0, out.stderr[-3000:]
    assert [r["sharing"] for _, r in records] == [
        "none",
        "embed_output",
        "encdec_vocab",
        "positional",
        "qkv",
    ]
    for folder, r in records:
        assert r["status"] == "completed", r["error"]
        assert r["schema"] == 1 and r["experiment"] == "smoke" and r["model"] == "tiny"
        assert r["run_id"] == f"{r['sweep_id']}-{folder.name}"
        for key in ("total", "untied_total"):
            assert isinstance(r["params"][key], int) and r["params"][key] > 0
        for key in CONTRACT_METRICS:
            assert math.isfinite(r["metrics"][key]), key
        history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
        m = r["metrics"]
        assert m["steps"] == 12 and m["tokens"] == history[-1]["tokens"] > 0
        assert 0 < m["train_loss"] < 10 and m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]))
        for key in ("infer_tokens_per_s", "wall_s", "peak_mem_mb", "test_loss"):
            assert math.isfinite(m[key]) and m[key] > 0, key
        for key in ("bleu", "chrf", "exact_match", "test_bleu", "test_chrf", "test_exact_match"):
            assert 0 <= m[key] <= (1 if "exact" in key else 100), key
        assert m["wall_s"] >= m["tokens"] / m["train_tokens_per_s"]  # the job contains its training
        assert 0 < r["metrics"]["softmax_flops_share"] < 1
        assert r["metrics"]["softmax_time_share"] > 0  # a timing: its bound is not tested
        assert [h["step"] for h in history] == sorted(h["step"] for h in history)
        assert history[-1]["val_loss"] == r["metrics"]["val_loss"]
    # one line per job, and the W&B sync hint
    assert out.stdout.count("completed  synth_translation") == 5
    assert "wandb sync" in out.stdout


def test_smoke_parameter_totals_are_the_exact_counts(smoke):
    _, records = smoke
    totals = {r["sharing"]: r["params"]["total"] for _, r in records}
    first = records[0][1]
    vocab_size = first["metrics"]["vocab_size_tgt"]
    cfg = model_config_for(first["config"]["model"], build_task(first["config"]["task"]).task)
    from tiedharness.model import Vocab

    for name, total in totals.items():
        assert total == param_report(cfg, Vocab.shared(vocab_size), SharingConfig.of(name)).total
    d, max_len = cfg.d_model, cfg.max_len
    untied = totals["none"]
    assert untied - totals["embed_output"] == vocab_size * d
    assert untied - totals["encdec_vocab"] == vocab_size * d  # same V on both sides: same saving
    assert untied - totals["positional"] == max_len * d
    assert untied - totals["qkv"] == cfg.dec_layers * 2 * (d * d + d)
    assert len(set(totals.values())) == 4  # distinct wherever the architecture makes them so


def test_wandb_offline_files_match_run_json(smoke):
    _, records = smoke
    for folder, r in records:
        (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
        summary = wandb_offline.summary(run_file)
        assert summary["val_loss"] == r["metrics"]["val_loss"]
        assert summary["params/total"] == r["params"]["total"]
        assert summary["status"] == "completed"
        info = wandb_offline.run_info(run_file)
        assert info["group"] == r["sweep_id"]
        assert info["job_type"] == "synth_translation"
        assert r["sharing"] in info["tags"]
        assert info["config"]["trainer"]["max_steps"] == 12
        logged_steps = [row["step"] for row in wandb_offline.history(run_file)]
        assert logged_steps[-1] == r["metrics"]["steps"]


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    out = train_cli(
        "-m", "experiment=smoke", "sharing=none,qkv", "model.n_heads=4,3", results=tmp_path
    )
    assert out.returncode != 0
    records = [r for _, r in sweep_records(tmp_path)]
    by_heads = {(r["sharing"], r["config"]["model"]["n_heads"]): r for r in records}
    assert len(by_heads) == 4
    for (_, heads), r in by_heads.items():
        if heads == 4:
            assert r["status"] == "completed"
        else:
            assert r["status"] == "failed"
            assert "not divisible by model.n_heads=3" in r["error"]
            assert "Traceback" in r["traceback"]
    assert out.stdout.count("failed ") >= 2 and "2 completed  2 failed" in out.stdout


def test_joblib_workers_divide_the_cores(tmp_path):
    out = train_cli(
        "-m", "experiment=smoke", "sharing=none,qkv", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", results=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    records = [r for _, r in sweep_records(tmp_path)]
    assert [r["status"] for r in records] == ["completed", "completed"]
    expected = max(1, (__import__("os").cpu_count() or 1) // 2)
    assert [r["env"]["threads"] for r in records] == [expected, expected]


def test_inapplicable_cells_are_skipped_but_a_single_run_fails(tmp_path):
    out = train_cli(
        "-m", "experiment=smoke", "sharing=none,positional", "model.positions=sinusoidal",
        results=tmp_path / "sweep",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    records = [r for _, r in sweep_records(tmp_path / "sweep")]
    assert [r["status"] for r in records] == ["completed", "skipped"]
    assert "set model.positions=learned" in records[1]["error"]
    single = train_cli("experiment=smoke", "sharing=positional", "model.positions=sinusoidal",
                       results=tmp_path / "single")  # fmt: skip
    assert single.returncode == 2
    assert "set model.positions=learned" in single.stderr
    (run_json,) = (tmp_path / "single").rglob("run.json")
    assert json.loads(run_json.read_text())["status"] == "failed"


# ---------------------------------------------------------------------------- in process


def smoke_config(tmp_path: Path, **trainer) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tiedharness.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "sharing=qkv", "logger=none"])
    config = OmegaConf.to_container(cfg, resolve=True)
    config["trainer"].update(trainer)
    return config


def test_softmax_flops_share_is_the_output_layers_counted_share(tmp_path):
    config = smoke_config(tmp_path)
    record = run_job(config, JobContext(tmp_path / "run", "smoke", "test-sweep"))
    reported = record["metrics"]["softmax_flops_share"]
    # the same step, counted independently: FLOPs do not depend on the weights
    data = build_task(config["task"])
    model = build_model(
        model_config_for(config["model"], data.task), data.vocab, SharingConfig.of("qkv")
    )
    trainer = Trainer(model, data, TrainerConfig.from_dict(config["trainer"]))
    batch = collate(data.splits["train"], trainer.batches(0)[0])

    def step():
        logits = model(*model_inputs(model, batch))
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten()).backward()

    flops = count_flops(step)
    assert reported == module_share(flops, "EncoderDecoder.output")
    assert record["metrics"]["step_flops"] == flops["Global"]
    # the output layer: forward 2·N·d·V, backward twice that (input and weight gradients)
    n_positions = batch.tgt_in.numel()
    d, vocab = model.cfg.d_model, data.vocab.tgt_size
    assert flops["EncoderDecoder.output"] == 6 * n_positions * d * vocab
    assert record["metrics"]["softmax_flops_per_token"] == 2 * d * vocab + 5 * vocab


def test_same_seed_same_run(tmp_path):
    config = smoke_config(tmp_path)
    a = run_job(config, JobContext(tmp_path / "a", "smoke", "s"))
    b = run_job(config, JobContext(tmp_path / "b", "smoke", "s"))
    history = [(tmp_path / x / "history.jsonl").read_text().splitlines() for x in "ab"]
    losses = [[json.loads(line).get("train_loss") for line in h] for h in history]
    assert losses[0] == losses[1]
    assert a["metrics"]["val_loss"] == b["metrics"]["val_loss"]


def test_a_non_finite_loss_is_recorded_as_diverged(tmp_path):
    config = smoke_config(tmp_path, lr=float("inf"), grad_clip=0.0, warmup_steps=1)
    record = run_job(config, JobContext(tmp_path / "run", "smoke", "s", multirun=True))
    assert record["status"] == "diverged"
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["status"] == "diverged" and saved["metrics"]["steps"] >= 1


def test_budget_in_tokens_stops_training(tmp_path):
    config = smoke_config(tmp_path, max_steps=None, max_train_tokens=1500)
    record = run_job(config, JobContext(tmp_path / "run", "smoke", "s"))
    assert 1500 <= record["metrics"]["tokens"] < 1500 + 1024


def test_cosine_schedule_needs_max_steps():
    with pytest.raises(ValueError, match=r"needs trainer\.max_steps"):
        TrainerConfig(schedule="cosine", max_steps=None, max_time_s=10)
    with pytest.raises(ValueError, match="budget is unbounded"):
        TrainerConfig(max_steps=None)


def test_lr_schedule_warms_up_then_decays():
    from tiedharness.train import lr_factor

    f = lr_factor(TrainerConfig(warmup_steps=10, schedule="inverse_sqrt"))
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(39) == pytest.approx(0.5)
    c = lr_factor(TrainerConfig(warmup_steps=10, schedule="cosine", max_steps=110))
    assert c(9) == 1.0 and c(59) == pytest.approx(0.5) and c(109) == pytest.approx(0.0)


def test_seed_everything_makes_model_init_repeatable():
    seed_everything(3, True)
    a = torch.randn(4)
    seed_everything(3, True)
    assert torch.equal(a, torch.randn(4))


def test_bf16_autocast_trains_on_cpu(tmp_path):
    config = smoke_config(tmp_path, precision="bf16")
    record = run_job(config, JobContext(tmp_path / "run", "smoke", "s"))
    assert record["status"] == "completed"
    for key in CONTRACT_METRICS:
        assert math.isfinite(record["metrics"][key]), key
    fp32 = run_job(smoke_config(tmp_path), JobContext(tmp_path / "fp32", "smoke", "s"))
    assert record["metrics"]["val_loss"] != fp32["metrics"]["val_loss"]  # it really ran in bf16
    assert abs(record["metrics"]["val_loss"] - fp32["metrics"]["val_loss"]) < 0.5


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    eager = run_job(smoke_config(tmp_path), JobContext(tmp_path / "eager", "smoke", "s"))
    compiled = run_job(
        smoke_config(tmp_path, compile=True), JobContext(tmp_path / "c", "smoke", "s")
    )
    assert compiled["status"] == "completed"
    assert compiled["metrics"]["val_loss"] == pytest.approx(eager["metrics"]["val_loss"], abs=1e-3)


def test_parallel_jobs_divide_the_cores():
    import os

    from tiedharness.cli import _parallel_jobs
    from tiedharness.run import torch_threads

    assert _parallel_jobs({"n_jobs": 3}) == 3
    assert _parallel_jobs({"n_jobs": -1}) == os.cpu_count()
    assert (
        _parallel_jobs({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
        == 1
    )
    before = torch.get_num_threads()
    try:
        assert torch_threads(None, 64) == 1 and torch.get_num_threads() == 1
        assert torch_threads(3, 64) == 3
    finally:
        torch.set_num_threads(before)


def test_a_language_model_task_trains_through_the_same_loop(tmp_path):
    lines = [
        f"and the man {i % 13} said unto the woman {i % 7} that it was good" for i in range(300)
    ]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    (tmp_path / "valid.txt").write_text("\n".join(lines[:30]))
    config = smoke_config(tmp_path)
    config["task"] = {"name": "text_lm", "data_dir": str(tmp_path), "vocab_size": 120,
                      "block_size": 32, "max_tokens": 512, "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    config["sharing"] = {"strategies": ["embed_output"]}
    record = run_job(config, JobContext(tmp_path / "run", "lm", "s"))
    assert record["status"] == "completed", record["error"]
    metrics = record["metrics"]
    assert record["model"] == "custom" and "vocab_size_src" not in metrics
    for key in (*CONTRACT_METRICS, "val_ppl", "infer_tokens_per_s"):
        assert math.isfinite(metrics[key]), key
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert record["params"]["by_component"]["output_projection"] == 0  # tied to the embedding
