"""Two sweeps on one machine: started at once against one after the other.

Each job claims its threads from the host's registry of running jobs
(tiedharness/host.py), so two processes started together divide the cores
instead of each taking all of them. This script runs two small sweeps (three cells of the
copy task each, as separate `tiedharness-train -m` processes) one after the other, then
the same two started at once, and prints the wall times and their ratio (at once /
one after the other: 1.0 means sharing costs nothing; oversubscribed processes took
several times longer). `--without-registry` adds the two at once with the registry off
(TIEDHARNESS_CPU_REGISTRY=none), as the harness ran before it had one.

    python benchmarks/shared_machine.py [--steps 300] [--reps 1] [--without-registry]

Timings are only comparable within one run of this script: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELLS = "sharing=none,embed_output,qkv"


def sweep_command(folder: Path, steps: int) -> list[str]:
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    return [
        exe or "tiedharness-train",
        "-m",
        "task=copy",
        "model=tiny",
        "model.dropout=0.1",
        CELLS,
        f"trainer.max_steps={steps}",
        "trainer.eval_every=100",
        "trainer.decode_examples=8",
        "trainer.test_examples=8",
        "logger=none",
        f"results_dir={folder}",
        f"hydra.sweep.dir={folder}",
    ]


def run_sweeps(folders: list[Path], steps: int, env: dict, at_once: bool) -> float:
    """Wall seconds for the sweeps of `folders`, together or in turn."""
    started = time.perf_counter()
    procs: list[subprocess.Popen] = []
    for folder in folders:
        proc = subprocess.Popen(
            sweep_command(folder, steps), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        procs.append(proc)
        if not at_once:
            check(procs.pop())
    for proc in procs:
        check(proc)
    return time.perf_counter() - started


def check(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"a sweep failed ({proc.returncode}):\n{out.decode()[-3000:]}")


def threads_used(folders: list[Path]) -> list[int]:
    return [
        json.loads(run.read_text())["env"]["threads"]
        for folder in folders
        for run in sorted(folder.glob("[0-9]*/run.json"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per cell")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--without-registry", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "TIEDHARNESS_CACHE": f"{tmp}/cache",
            "TIEDHARNESS_CPU_REGISTRY": f"{tmp}/cpus",
        }
        env.pop("OMP_NUM_THREADS", None)
        run_sweeps([Path(tmp, "warm-up")], 5, env, at_once=False)  # the data cache
        kinds = [("one after the other", False, env), ("at once", True, env)]
        if args.without_registry:
            kinds.append(
                ("at once, no registry", True, {**env, "TIEDHARNESS_CPU_REGISTRY": "none"})
            )
        times: dict[str, list[float]] = {label: [] for label, _, _ in kinds}
        for rep in range(args.reps):
            for n, (label, at_once, kind_env) in enumerate(kinds):
                folders = [Path(tmp, f"sweep-{rep}-{n}-{ab}") for ab in "ab"]
                seconds = run_sweeps(folders, args.steps, kind_env, at_once)
                times[label].append(seconds)
                print(f"{label:<22} {seconds:7.1f} s   threads per job {threads_used(folders)}")
    best = {kind: min(values) for kind, values in times.items()}
    sequential = best["one after the other"]
    print(f"\nCPUs: {len(os.sched_getaffinity(0))}; 2 sweeps × 3 cells × {args.steps} steps")
    for kind, seconds in best.items():
        print(f"{kind:<22} {seconds:7.1f} s   ratio {seconds / sequential:.2f}")


if __name__ == "__main__":
    main()
