"""What the output layer (projection + softmax) costs: analytic FLOPs per token, and its
measured share of a training step in FLOPs and in time. Definitions: docs/metrics.md."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from tiedharness.model.transformer import Transformer
from tiedharness.tasks.batching import Batch
from tiedharness.training.device import autocast, synchronize
from tiedharness.training.loop import mean_loss, model_inputs
from tiedharness.training.metrics import token_loss
from tiedharness.vocab import Vocab


def softmax_flops_per_token(d_model: int, vocab_size: int) -> int:
    """Forward FLOPs per target token of the output layer: the projection's V·d
    multiply-adds (2·d·V) plus ~5 per logit for the softmax (max, subtract, exp, sum,
    divide). A training step costs about three times the projection part (backward)."""
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


def module_share(flops: dict[str, int], module: str) -> float:
    """Share of all counted FLOPs spent in `module` ("ClassName.path" as the counter names it)."""
    total = flops.get("Global", 0)
    return flops.get(module, 0) / total if total else 0.0


def vocabulary_costs(model: Transformer, vocab: Vocab) -> dict[str, float]:
    """Costs known without running anything: vocabulary sizes and FLOPs per token."""
    out = {
        "vocab_size_tgt": vocab.tgt_size,
        "softmax_flops_per_token": softmax_flops_per_token(model.cfg.d_model, vocab.tgt_size),
    }
    if model.arch == "encdec":  # an LM has no source side
        out["vocab_size_src"] = vocab.src_size
    return out


def profile_step(
    model: Transformer, batch: Batch, smoothing: float, precision: str, reps: int = 3
) -> dict[str, float]:
    """The output layer's share of a training step (forward + backward; the optimizer
    update excluded), in FLOPs counted by FlopCounterMode and in measured time. The
    time share times the output projection and loss alone, on this batch's real
    decoder features, against the whole step: medians of `reps` runs of each, alternated.
    Gradients are left in `.grad`; the caller zeroes them."""
    model.train()
    device = batch.tgt_out.device

    def whole_step() -> None:
        mean_loss(model, model, batch, smoothing, precision)[0].backward()

    flops = count_flops(whole_step)
    with autocast(device, precision):
        features = model.features(*model_inputs(model, batch)).detach().requires_grad_(True)

    def output_layer() -> None:
        with autocast(device, precision):
            logits = model.output(features)
        loss_sum, n = token_loss(logits, batch.tgt_out, smoothing)
        (loss_sum / max(n, 1)).backward()

    output_layer()  # warm-up (counting FLOPs already ran the whole step once)
    step_s, output_s = interleaved_medians(whole_step, output_layer, reps, device)
    return {
        "step_flops": flops["Global"],
        "softmax_flops_share": module_share(flops, f"{type(model).__name__}.output"),
        "softmax_time_share": output_s / step_s if step_s else 0.0,
    }


def interleaved_medians(
    a: Callable[[], None], b: Callable[[], None], reps: int, device: torch.device
) -> tuple[float, float]:
    """Median times of a and b, timed alternately so that both see the same load."""
    times: dict[Callable, list[float]] = {a: [], b: []}
    for _ in range(reps):
        for fn in (a, b):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[fn].append(time.perf_counter() - t0)
    return statistics.median(times[a]), statistics.median(times[b])
