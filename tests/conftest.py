"""Shared fixtures: the tiny architecture every model test builds on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tiedharness.model.config import ModelConfig
from tiedharness.model.sharing import STRATEGIES, SharingConfig, build_model
from tiedharness.model.transformer import Transformer
from tiedharness.vocab import Vocab

# One data cache for the whole test session (subprocesses inherit it), never ~/.cache.
os.environ["TIEDHARNESS_CACHE"] = tempfile.mkdtemp(prefix="tiedharness-test-cache-")
# Its own registry of CPU claims too: jobs of other test runs on this host do not share it.
os.environ["TIEDHARNESS_CPU_REGISTRY"] = tempfile.mkdtemp(prefix="tiedharness-test-cpus-")

VOCAB = 50
TINY = dict(d_model=32, n_heads=4, d_ff=64, enc_layers=2, dec_layers=2, dropout=0.0, max_len=64)
LM_STRATEGIES = [name for name, s in STRATEGIES.items() if not s.needs_encoder]


def tiny_cfg(**overrides) -> ModelConfig:
    return ModelConfig(**{"arch": "encdec", **TINY, **overrides})


def tiny_model(
    *strategies: str,
    arch: str = "encdec",
    seed: int = 0,
    vocab: Vocab | None = None,
    model: dict | None = None,
    **sharing_options,
) -> Transformer:
    """A tiny model with `strategies` applied; `model` overrides architecture options."""
    torch.manual_seed(seed)
    cfg = tiny_cfg(arch=arch, **(model or {}))
    sharing = SharingConfig.of(*strategies, **sharing_options)
    return build_model(cfg, vocab or Vocab.shared(VOCAB), sharing)


def batch(b: int = 3, s: int = 7, t: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source and target ids that avoid the special ids 0–3."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (b, s), generator=g), torch.randint(
        4, VOCAB, (b, t), generator=g
    )


def logits_of(model: Transformer, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Logits of either architecture: an LM reads the target alone."""
    return model(src, tgt) if model.arch == "encdec" else model(tgt)


@pytest.fixture(params=list(STRATEGIES))
def strategy_name(request) -> str:
    return request.param


# ---------------------------------------------------------------------------- sweeps


def train_cli(*args: str, results: Path) -> subprocess.CompletedProcess:
    """tiedharness-train as a user runs it, writing under `results`."""
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-train is not installed next to this Python"
    cmd = [exe, *args, f"results_dir={results}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def sweep_records(results: Path, experiment: str = "smoke") -> list[tuple[Path, dict]]:
    """(job folder, run.json) of the one sweep under results/<experiment>, by job number."""
    (sweep,) = (results / experiment).iterdir()
    folders = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [(f, json.loads((f / "run.json").read_text())) for f in folders]


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One real `tiedharness-train -m experiment=smoke` for the whole session: the process
    result and the sweep folder."""
    results = tmp_path_factory.mktemp("results")
    out = train_cli("-m", "experiment=smoke", results=results)
    (sweep_dir,) = (results / "smoke").iterdir()
    return out, sweep_dir


class ScriptedDecoder:
    """A stand-in for an encoder-decoder in beam-search tests: its next-token distribution
    is scripted by the prefix (`next_probs`, in each test's subclass), so the best
    hypotheses are known by hand. It keeps no real cache, only the prefixes beam search
    reorders."""

    vocab = 8

    def eval(self):
        return self

    def encode(self, src):
        return torch.zeros(src.shape[0], 1, 2), torch.zeros(src.shape[0], 1, dtype=torch.bool)

    def new_cache(self):
        return [{"prefix": torch.zeros(0)}]

    def next_probs(self, seq: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, last, memory, src_pad, cache=None, offset=0):
        prev = cache[0]["prefix"]
        prefix = last if prev.numel() == 0 or offset == 0 else torch.cat([prev, last], 1)
        cache[0]["prefix"] = prefix
        probs = torch.stack([self.next_probs(seq) for seq in prefix.tolist()])
        return (probs / probs.sum(-1, keepdim=True)).log()[:, None, :]


# A tiny copy-task run that learns enough in 60 steps to produce outputs (at the default
# rate, empty ones): what the evaluation tests decode again from its checkpoint.
TRAINED_COPY_RUN = (
    "task=copy",
    "task.train_examples=2000",
    "model=tiny",
    "trainer.max_steps=60",
    "trainer.lr=3e-3",
    "trainer.warmup_steps=10",
    "trainer.decode_examples=40",
    "logger=none",
)
