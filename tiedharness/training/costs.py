"""What training costs: the output layer's (projection + softmax) analytic FLOPs per token
and measured share of a training step in FLOPs and in time, and the model FLOPs
utilisation (MFU) of the whole run. Definitions: docs/metrics.md."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from tiedharness.atomic import write_json_atomic
from tiedharness.model.transformer import Transformer
from tiedharness.tasks.batching import Batch
from tiedharness.training.device import autocast, synchronize
from tiedharness.training.loop import Trainer
from tiedharness.training.metrics import mean_loss, model_inputs, token_loss
from tiedharness.vocab import Vocab

TIME_REPS = 12  # alternating repetitions of the two timings, after one warm-up each
SOFTMAX_LOSS_FLOPS_PER_LOGIT = 8  # 5 forward (max, subtract, exp, sum, divide), 3 backward


def output_fwd_flops_per_token(d_model: int, vocab_size: int) -> int:
    """Forward FLOPs per target token of the output layer: the projection's V·d
    multiply-adds (2·d·V) plus 5 per logit for the softmax (max, subtract, exp, sum,
    divide)."""
    return 2 * d_model * vocab_size + 5 * vocab_size


# FlopCounterMode has no formula for the CPU flash-attention kernels and would count
# attention as zero; these reuse torch's own SDPA formulas for them.
SDPA_CPU_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda g, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(g, q, k, v)
    ),
}


def count_flops(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs of running `fn`, in total ("Global") and per module path, SDPA included."""
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU_FLOPS) as counter:
        fn()
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def vocabulary_costs(model: Transformer, vocab: Vocab) -> dict[str, float]:
    """Costs known without running anything: vocabulary sizes and FLOPs per token."""
    out = {
        "vocab_size_tgt": vocab.tgt_size,
        "output_fwd_flops_per_token": output_fwd_flops_per_token(model.cfg.d_model, vocab.tgt_size),
    }
    if model.arch == "encdec":  # an LM has no source side
        out["vocab_size_src"] = vocab.src_size
    return out


def profile_step(
    model: Transformer, batch: Batch, smoothing: float, precision: str, reps: int = TIME_REPS
) -> dict[str, float]:
    """The output layer's share of a training step (forward + backward; the optimizer
    update excluded), in FLOPs and in measured time.

    FLOPs: the matmuls counted by FlopCounterMode (attention included), plus the softmax
    and loss, which it does not count, at SOFTMAX_LOSS_FLOPS_PER_LOGIT per logit; the
    output layer is its projection plus that softmax and loss. Time: the projection and
    loss alone, on this batch's real decoder features, against the whole step, timed
    alternately `reps` times after a warm-up of each; the share is the median of the
    per-repetition ratios, its spread their interquartile range. Gradients are left in
    `.grad`; the caller zeroes them."""
    model.train()
    device = batch.tgt_out.device

    def whole_step() -> None:
        mean_loss(model, model, batch, smoothing, precision)[0].backward()

    flops = count_flops(whole_step)
    with autocast(device, precision):
        features = model.features(*model_inputs(model, batch)).detach().requires_grad_(True)

    def output_layer() -> None:
        with autocast(device, precision):
            logits = model.logits(features)  # the output layer, with its tied-logit scale
        loss_sum = token_loss(logits, batch.tgt_out, smoothing)
        (loss_sum / max(batch.target_tokens, 1)).backward()

    softmax_loss = SOFTMAX_LOSS_FLOPS_PER_LOGIT * batch.tgt_in.numel() * model.output.out_features
    step = flops["Global"] + softmax_loss
    output = flops.get(f"{type(model).__name__}.output", 0) + softmax_loss
    output_layer()  # warm-up (counting FLOPs already ran the whole step once)
    ratios = [
        out / whole for whole, out in alternate_timings(whole_step, output_layer, reps, device)
    ]
    q25, median, q75 = (
        float(q) for q in torch.tensor(ratios).quantile(torch.tensor([0.25, 0.5, 0.75]))
    )
    return {
        "step_flops": step,
        "output_step_flops_share": output / step,
        "output_step_time_share": median,
        "output_step_time_share_iqr": q75 - q25,
        "profile_reps": reps,
        "profile_load_avg": os.getloadavg()[0],
    }


def alternate_timings(
    a: Callable[[], None], b: Callable[[], None], reps: int, device: torch.device
) -> list[tuple[float, float]]:
    """(seconds of a, seconds of b) for each of `reps` rounds; a and b alternate so
    that both see the same load."""
    rounds = []
    for _ in range(reps):
        times = []
        for fn in (a, b):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
        rounds.append((times[0], times[1]))
    return rounds


def output_layer_costs(trainer: Trainer, vocab: Vocab, cache_dir: Path | None) -> dict:
    """The costs a run records: the vocabulary's, and unless `trainer.profile` is off (or
    the model is sharded, which one rank cannot profile) the measured profile of a step on
    the first batch, read from `cache_dir` when a job of the same shape measured it."""
    cfg = trainer.cfg
    out = vocabulary_costs(trainer.model, vocab)
    if not cfg.profile or cfg.fsdp:
        return out
    batch = trainer.first_batch()
    out.update(
        cached_profile(
            trainer.model, batch, cfg.label_smoothing, cfg.precision, cache_dir, cfg.profile_reps
        )
    )
    trainer.optimizer.zero_grad(set_to_none=True)
    # a step's FLOPs over the target tokens it trains (padding's work charged to them)
    out["train_flops_per_token"] = out["step_flops"] / batch.target_tokens
    return out


# ---------------------------------------------------------------------------- reuse


def profile_key(model: Transformer, batch: Batch, precision: str, reps: int) -> str:
    """What the profile depends on: the architecture with its ties, the vocabulary, the
    batch's shape, precision, device, threads, torch and how many timings it takes."""
    unique = dict(model.named_parameters())
    ties = sorted(n for n, _ in model.named_parameters(remove_duplicate=False) if n not in unique)
    vocab = [model.output.out_features]
    if model.arch == "encdec":
        vocab.append(model.encoder.embed.num_embeddings)
    blob = json.dumps(
        {
            "model": asdict(model.cfg),
            "vocab": vocab,
            "ties": ties,
            "src": None if batch.src is None else list(batch.src.shape),
            "tgt": list(batch.tgt_in.shape),
            "precision": precision,
            "device": str(batch.tgt_in.device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "reps": reps,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def rng_untouched(device: torch.device) -> Iterator[None]:
    """Every random stream training draws from (torch's CPU generator, the device's own,
    Python's `random`) left as it was: work done outside training, such as the profile's
    forward and backward passes with dropout, leaves no trace in what training draws."""
    devices, device_type = [], None  # the CPU generator alone
    if device.type not in ("cpu", "meta"):
        index = device.index
        if index is None:
            index = torch.cuda.current_device() if device.type == "cuda" else 0
        devices, device_type = [index], device.type
    python = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices, device_type=device_type):
            yield
    finally:
        random.setstate(python)


def cached_profile(
    model: Transformer,
    batch: Batch,
    smoothing: float,
    precision: str,
    cache_dir: Path | None,
    reps: int = TIME_REPS,
) -> dict[str, float]:
    """`profile_step`, measured once per profile_key and read back by every later job
    with the same key (other seeds, other runs of a sweep). `profile_cached` says which.
    Measured or read back, it leaves the random streams as they were (`rng_untouched`), so
    a run trains the same whether the cache was cold or warm."""
    key = profile_key(model, batch, precision, reps)
    path = None if cache_dir is None else cache_dir / f"{key}.json"
    if path is not None and path.is_file():
        try:
            return {**json.loads(path.read_text()), "profile_cached": True}
        except ValueError:
            pass  # a damaged entry is measured again
    with rng_untouched(batch.tgt_in.device):
        profile = profile_step(model, batch, smoothing, precision, reps)
    if path is not None:
        write_json_atomic(path, profile)
    return {**profile, "profile_cached": False}


# Dense peak TFLOP/s per GPU (vendor data sheets; no sparsity): bf16 tensor cores, plain
# fp32. Matched against torch.cuda.get_device_name(); the first match wins.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
    ("A10", {"bf16": 125.0, "fp32": 31.2}),
    ("RTX 4090", {"bf16": 165.2, "fp32": 82.6}),
    ("V100", {"bf16": 125.0, "fp32": 15.7}),  # fp16 tensor cores: V100 has no bf16
    ("T4", {"bf16": 65.0, "fp32": 8.1}),  # likewise fp16
)


def cpu_peak_flops(threads: int) -> tuple[float, str]:
    """An estimate for the cores in use: threads × clock × fp32 lanes of the widest
    vector unit × 2 (fused multiply-add) × 2 (FMA units per core)."""
    flags, mhz = "", 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = value
            elif key.strip() == "cpu MHz":
                mhz = max(mhz, float(value))
    except (OSError, ValueError):
        pass
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    ghz = mhz / 1000 if mhz else 2.5
    source = (
        f"CPU estimate: {threads} threads × {ghz:.2f} GHz × {lanes} fp32 lanes × 2 FMA × 2 units"
    )
    return threads * ghz * 1e9 * lanes * 4, source


def peak_flops(device: torch.device, precision: str, threads: int) -> tuple[float | None, str]:
    """The device's peak FLOP/s for this precision (None when unknown), and its source."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAK_TFLOPS:
            if key in name:
                return peaks[precision] * 1e12, f"{name}: {precision} data-sheet peak"
        return None, f"{name}: no peak in tiedharness.training.costs.GPU_PEAK_TFLOPS"
    if device.type == "cpu":
        return cpu_peak_flops(threads)
    return None, f"{device.type}: no peak known"


def model_flops_utilisation(
    metrics: dict, device: torch.device, precision: str, threads: int, world: int
) -> tuple[dict, str]:
    """`mfu` (model FLOPs per second over the peak of every device the run used) and
    `peak_flops`, where both the profile and the peak are known; and the peak's source."""
    peak, source = peak_flops(device, precision, threads)
    if not peak or "train_flops_per_token" not in metrics:
        return {}, source
    achieved = metrics["train_tokens_per_s"] * metrics["train_flops_per_token"]
    return {"mfu": achieved / (peak * world), "peak_flops": peak}, source
