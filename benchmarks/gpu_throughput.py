"""Training throughput and MFU on this machine's accelerator (or its CPU), side by side.

For the `small` and `base` models on synth_translation batches: fp32, bf16 autocast and
bf16 + torch.compile, each timed over the same steps after a warm-up, in one process.
Prints target tokens per second and model FLOPs utilisation (the step's FLOPs counted by
torch.utils.flop_counter over the device's peak, tiedharness.training.costs.peak_flops).

    python benchmarks/gpu_throughput.py [--steps 30] [--models small base] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir

from tiedharness.build import build
from tiedharness.cli import CONF_DIR
from tiedharness.config import JobConfig
from tiedharness.tasks.batching import collate
from tiedharness.training.costs import count_flops, peak_flops
from tiedharness.training.device import synchronize
from tiedharness.training.loop import Trainer
from tiedharness.training.metrics import mean_loss

SETTINGS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+compile": ("bf16", True)}


def job_for(model: str, precision: str, compiled: bool, device: str) -> JobConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "task=synth_translation",
                f"model={model}",
                "logger=none",
                f"trainer.device={device}",
                f"trainer.precision={precision}",
                f"trainer.compile={str(compiled).lower()}",
                "task.max_tokens=8192",
            ],
        )
    return JobConfig.from_config(cfg)


def measure(model: str, setting: str, steps: int, device: str) -> tuple[float, float | None]:
    precision, compiled = SETTINGS[setting]
    job = job_for(model, precision, compiled, device)
    _, data, net = build(job)
    trainer = Trainer(net, data, job.trainer, device=torch.device(device))
    order = trainer.batches(0)
    pin = trainer.device.type == "cuda"
    batches = [
        [collate(data.splits["train"], order[i % len(order)]).to(trainer.device, pin=pin)]
        for i in range(steps + 5)
    ]
    for micro in batches[:5]:  # warm-up (and compilation)
        trainer.update(micro)
    synchronize(trainer.device)
    started = time.perf_counter()
    for micro in batches[5:]:
        trainer.update(micro)
    synchronize(trainer.device)
    seconds = time.perf_counter() - started
    tokens = sum(b.target_tokens for micro in batches[5:] for b in micro)
    first = batches[5][0]
    flops = count_flops(lambda: mean_loss(net, net, first, 0.1, precision)[0].backward())["Global"]
    peak, _ = peak_flops(trainer.device, precision, torch.get_num_threads())
    rate = tokens / seconds
    return rate, (rate * flops / first.target_tokens / peak) if peak else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["small", "base"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {name}; {args.steps} timed steps per setting, after 5 warm-up steps")
    print(f"{'model':<7} {'setting':<13} {'tokens/s':>12} {'MFU':>7}")
    for model in args.models:
        for setting in SETTINGS:
            rate, mfu = measure(model, setting, args.steps, args.device)
            mfu_text = f"{mfu:7.1%}" if mfu is not None else "    n/a"
            print(f"{model:<7} {setting:<13} {rate:12,.0f} {mfu_text}")


if __name__ == "__main__":
    main()
