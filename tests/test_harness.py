"""The harness end to end: real Hydra sweeps, real offline W&B files, real run records."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch
import wandb_offline
from conftest import sweep_records, train_cli

from tiedharness.build import build
from tiedharness.config import JobConfig
from tiedharness.job import JobContext, execute_job
from tiedharness.training.config import TrainerConfig
from tiedharness.training.costs import cpu_peak_flops
from tiedharness.training.loop import Trainer
from tiedharness.training.optim import lr_factor
from tiedharness.training.state import load_trainer_state, trainer_state_dict

CONTRACT_METRICS = (
    "val_loss",
    "train_tokens_per_s",
    "val_bpc",
    "output_fwd_flops_per_token",
    "output_step_flops_share",
    "output_step_time_share",
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
        assert r["schema"] == 5 and r["experiment"] == "smoke" and r["model"] == "tiny"
        assert r["run_id"] == f"{r['sweep_id']}-{folder.name}"
        for key in ("total", "untied_total"):
            assert isinstance(r["params"][key], int) and r["params"][key] > 0
        for key in CONTRACT_METRICS:
            assert math.isfinite(r["metrics"][key]), key
        history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
        m = r["metrics"]
        assert m["steps"] == 12 and m["tokens"] == history[-1]["tokens"] > 0
        assert 0 < m["train_loss"] < 10 and m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]))
        for key in ("infer_tokens_per_s", "wall_s", "eval_s", "peak_mem_mb", "test_loss"):
            assert math.isfinite(m[key]) and m[key] > 0, key
        for key in ("bleu", "chrf", "exact_match", "test_bleu", "test_chrf", "test_exact_match"):
            assert 0 <= m[key] <= (1 if "exact" in key else 100), key
        # the job contains its training and its evaluations, two clocks that never overlap
        assert m["wall_s"] >= m["tokens"] / m["train_tokens_per_s"] + m["eval_s"]
        assert 0 < m["output_step_flops_share"] < 1
        assert m["output_step_time_share"] > 0  # a timing: its bound is not tested
        assert m["profile_reps"] >= 10 and m["output_step_time_share_iqr"] >= 0
        assert isinstance(m["converged"], bool) and math.isfinite(m["val_loss_slope"])
        assert [h["step"] for h in history] == sorted(h["step"] for h in history)
        assert history[-1]["val_loss"] == r["metrics"]["val_loss"]
    # the closing table has one line per job (progress lines start with "[i/5]"), and the
    # W&B sync hint
    table = [line for line in out.stdout.splitlines() if re.match(r"\s+\d+  completed  ", line)]
    assert len(table) == 5 and all("synth_translation" in line for line in table)
    assert "wandb sync" in out.stdout


def untied_encdec_total(d: int, d_ff: int, enc: int, dec: int, vocab: int, max_len: int) -> int:
    """Parameters of the untied pre-LN encoder-decoder with learned positions, counted
    from its description: embeddings and position tables per stack, per layer Q/K/V/O
    (d×d + bias each), a feed-forward of two linears with biases and a LayerNorm before
    each sublayer, a final LayerNorm per stack, and an output projection without bias."""
    attention = 4 * (d * d + d)
    ffn = d * d_ff + d_ff + d_ff * d + d
    norm = 2 * d
    enc_layer = attention + ffn + 2 * norm
    dec_layer = 2 * attention + ffn + 3 * norm
    stacks = 2 * (vocab * d + max_len * d + norm)
    return stacks + enc * enc_layer + dec * dec_layer + vocab * d


def test_smoke_parameter_totals_are_the_exact_counts(smoke):
    _, records = smoke
    totals = {r["sharing"]: r["params"]["total"] for _, r in records}
    vocab = records[0][1]["metrics"]["vocab_size_tgt"]
    d, d_ff, layers, max_len = 32, 64, 2, 64  # the tiny preset
    untied = untied_encdec_total(d, d_ff, layers, layers, vocab, max_len)
    assert totals["none"] == untied
    assert untied - totals["embed_output"] == vocab * d
    assert untied - totals["encdec_vocab"] == vocab * d  # same V on both sides: same saving
    assert untied - totals["positional"] == max_len * d
    assert untied - totals["qkv"] == layers * 2 * (d * d + d)
    for _, r in records:
        assert r["params"]["untied_total"] == untied


def test_wandb_offline_files_match_run_json(smoke):
    _, records = smoke
    for folder, r in records:
        (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
        summary, history = wandb_offline.summary(run_file), wandb_offline.history(run_file)
        # losses summarise to their best (lowest) value over the run, scores to the highest
        val_losses = [row["val_loss"] for row in history if "val_loss" in row]
        assert len(val_losses) >= 2 and summary["val_loss"] == {"min": min(val_losses)}
        assert summary["bleu"] == {"max": max(row["bleu"] for row in history if "bleu" in row)}
        assert summary["final/val_loss"] == r["metrics"]["val_loss"] == val_losses[-1]
        assert summary["params/total"] == r["params"]["total"]
        assert summary["status"] == "completed"
        info = wandb_offline.run_info(run_file)
        assert info["group"] == r["sweep_id"]
        assert info["job_type"] == "synth_translation"
        assert r["sharing"] in info["tags"]
        assert info["config"]["trainer"]["max_steps"] == 12
        logged_steps = [row["step"] for row in wandb_offline.history(run_file)]
        assert logged_steps[-1] == r["metrics"]["steps"]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
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
            assert "must be divisible by model.n_heads=3" in r["error"]
            assert "Traceback" in r["traceback"]
    assert out.stdout.count("failed ") >= 2 and "2 completed  2 failed" in out.stdout


@pytest.mark.slow
def test_joblib_workers_divide_the_cores(tmp_path):
    out = train_cli(
        "-m",
        "experiment=smoke",
        "sharing=none,qkv",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = [r for _, r in sweep_records(tmp_path)]
    assert [r["status"] for r in records] == ["completed", "completed"]
    threads = [r["env"]["threads"] for r in records]
    # two workers share the cores: neither takes them all (on a machine with at least 2)
    assert threads[0] == threads[1] >= 1
    assert 2 * threads[0] <= max(__import__("os").cpu_count() or 1, 2)


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_inapplicable_cells_are_skipped_but_a_single_run_fails(tmp_path):
    out = train_cli(
        "-m",
        "experiment=smoke",
        "sharing=none,positional",
        "model.positions=sinusoidal",
        results=tmp_path / "sweep",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = [r for _, r in sweep_records(tmp_path / "sweep")]
    assert [r["status"] for r in records] == ["completed", "skipped"]
    assert "set model.positions=learned" in records[1]["error"]
    single = train_cli(
        "experiment=smoke",
        "sharing=positional",
        "model.positions=sinusoidal",
        results=tmp_path / "single",
    )
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


def smoke_job(tmp_path: Path, name: str, config: dict | None = None, **kw) -> dict:
    """One smoke job in this process; its run.json as written."""
    ctx = JobContext(tmp_path / name, "smoke", "test-sweep", **kw)
    execute_job(JobConfig.from_config(config or smoke_config(tmp_path)), ctx)
    return json.loads((tmp_path / name / "run.json").read_text())


def test_output_flops_share_is_the_output_layers_share_of_a_step(tmp_path):
    """Against FLOPs derived from the architecture: each linear on M rows costs 6·M·in·out
    (forward 2, backward 4); attention 14·B·Tq·Tk·d: 2 matmuls forward, 5 backward
    (the flash-attention backward recomputes the scores before its 4 gradient matmuls)."""
    record = smoke_job(tmp_path, "run")
    metrics = record["metrics"]
    job = JobConfig.from_config(record["config"])
    _, data, model = build(job)
    trainer = Trainer(model, data, job.trainer, device=torch.device("cpu"))
    batch = trainer.first_batch()
    (b, s), t = batch.src.shape, batch.tgt_in.shape[1]
    d, d_ff, v, layers = 32, 64, metrics["vocab_size_tgt"], 2
    ms, mt = b * s, b * t
    encoder_layer = 6 * ms * (4 * d * d + 2 * d * d_ff) + 14 * b * s * s * d
    decoder_layer = (
        6 * mt * (2 * d * d)  # qkv: one shared projection for Q, K, V; and the output one
        + 6 * mt * (2 * d * d)
        + 6 * ms * (2 * d * d)  # cross-attention: Q, O; K, V of the source
        + 6 * mt * 2 * d * d_ff
        + 14 * b * t * t * d
        + 14 * b * t * s * d
    )
    softmax_and_loss = 8 * mt * v  # 5 forward + 3 backward per logit, by convention
    output = 6 * mt * d * v + softmax_and_loss
    step = layers * (encoder_layer + decoder_layer) + output
    assert metrics["step_flops"] == step
    assert metrics["output_step_flops_share"] == pytest.approx(output / step, rel=1e-12)
    assert metrics["output_fwd_flops_per_token"] == 2 * d * v + 5 * v
    # MFU: that step's FLOPs per target token (its batch's sizes) × throughput ÷ peak
    tokens = int(data.splits["train"].sizes()[1][trainer.batches(0)[0]].sum())
    assert metrics["train_flops_per_token"] == step / tokens
    achieved = metrics["train_tokens_per_s"] * step / tokens
    assert metrics["mfu"] == pytest.approx(achieved / metrics["peak_flops"], rel=1e-12)
    assert 0 < metrics["mfu"] < 1
    assert cpu_peak_flops(4)[0] == 2 * cpu_peak_flops(2)[0]  # the estimate scales with threads


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    a, b = smoke_job(tmp_path, "a"), smoke_job(tmp_path, "b")
    c = smoke_job(tmp_path, "c", smoke_config(tmp_path, seed=1))
    history = {x: (tmp_path / x / "history.jsonl").read_text().splitlines() for x in "abc"}
    losses = {x: [json.loads(line).get("train_loss") for line in h] for x, h in history.items()}
    assert losses["a"] == losses["b"]
    assert a["metrics"]["val_loss"] == b["metrics"]["val_loss"]
    assert losses["a"] != losses["c"]  # the seed reaches initialisation, dropout and data order
    assert a["metrics"]["val_loss"] != c["metrics"]["val_loss"]


def test_a_non_finite_loss_is_recorded_as_diverged(tmp_path):
    config = smoke_config(tmp_path, lr=float("inf"), grad_clip=0.0, warmup_steps=1)
    saved = smoke_job(tmp_path, "run", config, multirun=True)
    assert saved["status"] == "diverged" and saved["metrics"]["steps"] >= 1


def test_budget_in_tokens_stops_training(tmp_path):
    record = smoke_job(
        tmp_path, "run", smoke_config(tmp_path, max_steps=None, max_train_tokens=1500)
    )
    assert 1500 <= record["metrics"]["tokens"] < 1500 + 1024


def test_no_decoding_when_decode_examples_is_0(tmp_path):
    """A search that judges its trials by validation loss needs no BLEU: decode_examples=0
    (and test_examples=0) skip decoding; the loss is still there."""
    config = smoke_config(tmp_path, max_steps=4, decode_examples=0, test_examples=0)
    record = smoke_job(tmp_path, "run", config)
    assert record["status"] == "completed", record["error"]
    scores = ("exact_match", "bleu", "chrf", "infer_tokens_per_s", "decoded_examples")
    assert "val_loss" in record["metrics"] and not set(scores) & set(record["metrics"])
    assert not (tmp_path / "run" / "decoded-valid.jsonl").exists()


def test_cosine_schedule_needs_max_steps():
    with pytest.raises(ValueError, match=r"needs trainer\.max_steps"):
        TrainerConfig(schedule="cosine", max_steps=None, max_time_s=10)
    with pytest.raises(ValueError, match="budget is unbounded"):
        TrainerConfig(max_steps=None)


def test_lr_schedule_warms_up_then_decays():
    f = lr_factor(TrainerConfig(warmup_steps=10, schedule="inverse_sqrt"))
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(39) == pytest.approx(0.5)
    c = lr_factor(TrainerConfig(warmup_steps=10, schedule="cosine", max_steps=110))
    assert c(9) == 1.0 and c(59) == pytest.approx(0.5) and c(109) == pytest.approx(0.0)


def output_dtype_during_training(tmp_path: Path, precision: str) -> torch.dtype:
    """The dtype of the output layer's logits in a training step at `precision`."""
    job = JobConfig.from_config(smoke_config(tmp_path, precision=precision))
    _, data, model = build(job)
    trainer = Trainer(model, data, job.trainer, device=torch.device("cpu"))
    seen = []
    model.output.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    loss = trainer.update([trainer.first_batch()])
    assert math.isfinite(float(loss))
    return seen[0]


def test_bf16_autocast_trains_on_cpu(tmp_path):
    assert output_dtype_during_training(tmp_path, "bf16") == torch.bfloat16
    assert output_dtype_during_training(tmp_path, "fp32") == torch.float32
    record = smoke_job(tmp_path, "run", smoke_config(tmp_path, precision="bf16"))
    assert record["status"] == "completed"
    for key in CONTRACT_METRICS:
        assert math.isfinite(record["metrics"][key]), key


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    eager = smoke_job(tmp_path, "eager")
    compiled = smoke_job(tmp_path, "c", smoke_config(tmp_path, compile=True))
    assert compiled["status"] == "completed"
    assert compiled["metrics"]["val_loss"] == pytest.approx(eager["metrics"]["val_loss"], abs=1e-3)


def test_a_language_model_task_trains_through_the_same_loop(tmp_path):
    lines = [
        f"and the man {i % 13} said unto the woman {i % 7} that it was good" for i in range(300)
    ]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    (tmp_path / "valid.txt").write_text("\n".join(lines[:30]))
    config = smoke_config(tmp_path)
    config["task"] = {
        "name": "text_lm",
        "data_dir": str(tmp_path),
        "vocab_size": 120,
        "block_size": 32,
        "max_tokens": 512,
        "cache_dir": str(tmp_path / "cache"),
    }
    config["sharing"] = {"strategies": ["embed_output"]}
    record = smoke_job(tmp_path, "run", config)
    assert record["status"] == "completed", record["error"]
    metrics = record["metrics"]
    assert record["model"] == "custom" and "vocab_size_src" not in metrics
    for key in (*CONTRACT_METRICS, "val_ppl", "infer_tokens_per_s"):
        assert math.isfinite(metrics[key]), key
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert record["params"]["by_component"]["output_projection"] == 0  # tied to the embedding


# ---------------------------------------------------------------------------- resume


def test_trainer_state_dict_resumes_exactly(tmp_path):
    """6 steps, a state_dict, a new Trainer that loads it and runs 6 more: the same
    parameters and counters as 12 uninterrupted steps."""

    def fresh(max_steps: int) -> Trainer:
        torch.manual_seed(0)
        job = JobConfig.from_config(
            smoke_config(tmp_path, max_steps=max_steps, log_every=100, warmup_steps=4)
        )
        _, data, model = build(job)
        return Trainer(model, data, job.trainer, device=torch.device("cpu"))

    whole = fresh(12)
    whole.fit()
    first = fresh(6)
    first.fit()
    state = trainer_state_dict(first)
    torch.manual_seed(123)  # whatever happens in between must not matter
    resumed = fresh(12)
    load_trainer_state(resumed, state)
    resumed.fit()
    assert resumed.step == whole.step == 12 and resumed.tokens == whole.tokens
    assert (resumed.epoch, resumed.batch_in_epoch) == (whole.epoch, whole.batch_in_epoch)
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # the restored model keeps its ties: qkv's projections are still one tensor
    attn = resumed.model.decoder.layers[0].self_attn
    assert attn.q_proj.weight is attn.k_proj.weight is attn.v_proj.weight


def test_val_bpc_counts_the_characters_of_the_references(tmp_path):
    record = smoke_job(tmp_path, "run")
    metrics = record["metrics"]
    data = build(JobConfig.from_config(record["config"])).data
    references = data.texts["valid"]["tgt"]  # every validation example is evaluated
    assert metrics["val_examples"] == len(references)
    assert metrics["val_chars"] == sum(len(text) + 1 for text in references)
    nats = metrics["val_loss"] * metrics["val_tokens"]
    assert metrics["val_bpc"] == pytest.approx(nats / metrics["val_chars"] / math.log(2))
    decoded = (tmp_path / "run" / "decoded-valid.jsonl").read_text().splitlines()
    assert len(decoded) == metrics["decoded_examples"] == 4


def test_peak_memory_is_the_jobs_own(tmp_path):
    import resource

    import numpy as np

    big = np.ones(80_000_000)  # 640 MB, then freed: the process's peak, not the job's
    del big
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = smoke_job(tmp_path, "run")
    assert 0 < record["metrics"]["peak_mem_mb"] < lifetime_peak - 400


def test_a_token_budget_sets_the_cosine_schedule_length(tmp_path):
    config = smoke_config(tmp_path, max_steps=None, max_train_tokens=20_000, schedule="cosine")
    record = smoke_job(tmp_path, "run", config)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["tokens"] >= 20_000
    assert rows[-1]["lr"] < 0.02 * record["config"]["trainer"]["lr"]  # annealed to ~0 at the end


def test_the_app_returns_its_objective_for_sweeper_plugins(smoke):
    from tiedharness.cli.train import objective
    from tiedharness.tracking.record import RunRecord

    _, records = smoke
    record = RunRecord.from_dict(records[0][1])
    assert objective(record, "val_loss") == records[0][1]["metrics"]["val_loss"]
    assert objective(record, "bleu") == records[0][1]["metrics"]["bleu"]
    failed = RunRecord(run_id="x", status="failed")
    assert objective(failed, "val_loss") is None  # Optuna: a failed trial, the search goes on


def test_a_sweep_reports_each_job_with_what_remains(smoke):
    out, records = smoke
    assert "sweep of 5 jobs" in out.stdout
    lines = [line for line in out.stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert [line.split("]")[0] for line in lines] == [f"[{n}/5" for n in range(1, 6)]
    assert all("completed" in line and "elapsed" in line for line in lines)
    assert "left)" in lines[0] and records[0][1]["sharing"] in lines[0]


def test_val_bpc_of_an_lm_counts_each_character_of_the_text_once(tmp_path):
    """An LM's validation windows overlap by one token and span line breaks: together they
    count every character of the text once and each line break once, less the first
    token ("alpha" and its space), which nothing predicts."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tiedharness.cli import CONF_DIR

    text = "alpha beta  gamma\nnaïve café — e\u0301clair, ok\nthe cat sat\non the mat.\nalpha\n"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text(text * 5, encoding="utf-8")
    (corpus / "valid.txt").write_text(text, encoding="utf-8")
    overrides = [
        "task=text_lm",
        f"task.data_dir={corpus}",
        "task.vocab_size=500",
        "task.block_size=4",
        "model=tiny",
        "trainer.max_steps=2",
        "trainer.profile=false",
        "logger=none",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    metrics = smoke_job(tmp_path, "run", config)["metrics"]
    assert metrics["val_examples"] > 3  # several windows, each across a line break or two
    assert metrics["val_chars"] == len(text) - len("alpha ")
    nats = metrics["val_loss"] * metrics["val_tokens"]
    assert metrics["val_bpc"] == pytest.approx(nats / metrics["val_chars"] / math.log(2))
