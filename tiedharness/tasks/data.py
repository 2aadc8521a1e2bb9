"""From a task config to encoded tensors, tokenizers and statistics — cached.

The cache key is a hash of everything that decides the result: the task config (minus
where the cache lives), the task's fingerprint (its input files and their versions) and
DATA_VERSION, which is bumped whenever code here or in a task changes its output. An
entry is written to a temporary folder and renamed into place, so an interrupted build
or two workers building at once never leave a half-written entry behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from tiedharness.tasks.base import SPLITS, Task, make_task
from tiedharness.tasks.batching import (
    Batch,
    EncodedSplit,
    Packed,
    collate,
    padding_fraction,
    token_batches,
)
from tiedharness.tasks.tokenize import decode, encode, jaccard, token_types, train_tokenizer
from tiedharness.vocab import EOS_ID, Vocab

DATA_VERSION = 2  # 2: BPE drops entries the encoder can never emit
EVAL_SEED = 0  # the draw of evaluated examples: the same for every run on the same data


@dataclass
class TaskData:
    task: Task
    splits: dict[str, EncodedSplit]
    src_tokenizer: Tokenizer | None  # the target's tokenizer itself when the vocabulary is joint
    tgt_tokenizer: Tokenizer
    vocab: Vocab
    texts: dict[str, dict[str, list[str]]]  # valid/test raw "src"/"tgt" text, for scoring
    stats: dict[str, Any]
    cache_hit: bool = False
    cache_path: Path | None = None
    build_s: float = 0.0

    @property
    def kind(self) -> str:
        return self.task.kind  # "seq2seq" | "lm"

    @property
    def scores(self) -> tuple[str, ...]:
        """Quality scores of decoded outputs: "exact_match" and/or "bleu" (BLEU and chrF)."""
        return self.task.scores

    @property
    def max_tokens(self) -> int:
        """The batch budget: examples × longest side, padding included."""
        return self.task.cfg.max_tokens

    def detokenize(self, ids: list[int]) -> str:
        """Target-side token ids → text written as the references are (for scoring)."""
        return self.task.to_target_text(decode(self.tgt_tokenizer, ids))

    def references(self, split: str) -> list[str]:
        return self.texts[split]["tgt"]

    def sample(self, split: str, n: int | None, seed: int = EVAL_SEED) -> Tensor:
        """Indices of `n` examples drawn at random across the split (all of them when `n`
        is None or not smaller), sorted. The draw depends only on the split's size and the
        seed, so every run on the same data evaluates the same examples."""
        size = len(self.splits[split])
        if n is None or n >= size:
            return torch.arange(size)
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(size, generator=generator)[:n].sort().values

    def batches(self, split: str, indices: Tensor | None = None) -> list[Batch]:
        """Token-budget batches (in length order) of the given examples, all by default."""
        data = self.splits[split]
        indices = torch.arange(len(data)) if indices is None else indices
        sizes = [s[indices] for s in data.sizes()]
        order = token_batches(*sizes, self.max_tokens, shuffle=False)
        return [collate(data, indices[batch]) for batch in order]

    def target_chars(self, split: str) -> Tensor:
        """Characters of target text each example is scored on, for bits per character:
        a translation's reference plus one for its end (EOS: the line break). An LM
        window's predicted tokens: the characters of the text they stand for
        (`stream_chars`), so that the windows of a split count each character of its text
        once, each line break included, except the split's first token, which no window
        predicts."""
        if self.kind != "lm":
            return torch.tensor([len(text) + 1 for text in self.references(split)])
        windows = self.splits[split].tgt
        ids, chars = stream_chars(self.tgt_tokenizer, self.references(split))
        # window i is stream[start_i - 1 : end_i]; it predicts stream[start_i : end_i]
        predicted = windows.lengths - 1
        ends = torch.cumsum(predicted, 0) + 1
        starts = ends - predicted
        n = len(windows)
        positions = torch.arange(len(windows.data)) - torch.arange(n).repeat_interleave(
            windows.lengths
        )
        if n and (int(ends[-1]) != len(ids) or not torch.equal(ids[positions], windows.data)):
            raise ValueError(
                f"the {split} windows of {self.task.name} are not the tokens of its text: "
                f"delete the data cache {self.cache_path} to rebuild it"
            )
        total = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(chars, 0)])
        return total[ends] - total[starts]


def stream_chars(tok: Tokenizer, lines: list[str]) -> tuple[Tensor, Tensor]:
    """The token stream an LM split is cut from (each line's tokens, then EOS), and the
    characters of the text each token stands for: a token its own characters and the
    whitespace after it (a line's first token also any before it), EOS the line break
    (and a line without tokens). Every character of the lines, and one line break after
    each, is counted exactly once. Offsets are into the text as written (before NFC)."""
    ids: list[int] = []
    chars: list[int] = []
    for line, enc in zip(lines, tok.encode_batch(lines, add_special_tokens=False), strict=True):
        bounds = [0, *(start for start, _ in enc.offsets[1:])]
        if enc.ids:
            bounds.append(len(line))
        ids += [*enc.ids, EOS_ID]
        chars += [b - a for a, b in itertools.pairwise(bounds)]
        chars.append(len(line) - bounds[-1] + 1)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(chars, dtype=torch.long)


def cache_root(configured: str | None) -> Path:
    root = configured or os.environ.get("TIEDHARNESS_CACHE") or "~/.cache/tiedharness"
    return Path(root).expanduser()


def cache_key(task: Task) -> str:
    config = dataclasses.asdict(task.cfg)
    config.pop("cache_dir")
    blob = json.dumps(
        {"config": config, "inputs": task.fingerprint(), "version": DATA_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_task(task_or_config: Task | dict[str, Any], use_cache: bool = True) -> TaskData:
    """Load a task from the cache, or build it (and cache it)."""
    start = time.perf_counter()
    task = task_or_config if isinstance(task_or_config, Task) else make_task(task_or_config)
    path = cache_root(task.cfg.cache_dir) / f"{task.name}-{cache_key(task)}"
    if use_cache:
        with building(path):  # jobs side by side wait for the one that builds, then read
            data = _cached(task, path)
    else:
        data = _build(task)
    data.cache_path = path if use_cache else None
    data.build_s = time.perf_counter() - start
    data.stats.update(build_s=round(data.build_s, 4), cache_hit=data.cache_hit, cache_dir=str(path))
    return data


@contextlib.contextmanager
def building(path: Path) -> Iterator[None]:
    """An exclusive lock on a cache entry while it is looked up and, if missing, built:
    jobs of a sweep started side by side build each task's data once, not each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cached(task: Task, path: Path) -> TaskData:
    """The cache entry at `path`, built and saved when missing or damaged."""
    damaged = False
    if path.is_dir():
        try:
            return _load(task, path)
        except Exception as err:  # a damaged entry is rebuilt, never trusted
            warnings.warn(f"rebuilding damaged data cache {path}: {err}", stacklevel=3)
            damaged = True
    data = _build(task)
    _save(data, path, replace=damaged)
    return data


# ---------------------------------------------------------------------------- build


def _build(task: Task) -> TaskData:
    cfg = task.cfg
    raw = task.load()
    if not raw.get("train") or not raw.get("valid"):
        raise ValueError(f"task {task.name} produced no training or no validation examples")
    if task.kind == "lm":
        return _build_lm(task, raw)
    src_size, tgt_size = cfg.side_vocab_sizes()
    train_src = [s for s, _ in raw["train"]]
    train_tgt = [t for _, t in raw["train"]]
    cjk = task.splits_cjk
    if cfg.vocab == "separate" or cfg.vocab_size is None:
        src_tok = train_tokenizer(train_src, cfg.tokenizer, src_size, cjk)
        tgt_tok = train_tokenizer(train_tgt, cfg.tokenizer, tgt_size, cjk)
    joint_size = cfg.vocab_size or src_tok.get_vocab_size() + tgt_tok.get_vocab_size()
    if cfg.vocab == "joint":
        src_tok = tgt_tok = train_tokenizer(train_src + train_tgt, cfg.tokenizer, joint_size, cjk)
    splits, texts, dropped = {}, {}, {}
    for split in SPLITS:
        pairs = raw.get(split) or []
        src_ids = encode(src_tok, [s for s, _ in pairs])
        tgt_ids = encode(tgt_tok, [t for _, t in pairs])
        keep = [
            i for i in range(len(pairs)) if max(len(src_ids[i]), len(tgt_ids[i])) + 1 <= cfg.max_len
        ]
        dropped[split] = len(pairs) - len(keep)
        splits[split] = EncodedSplit(
            Packed.from_lists([src_ids[i] for i in keep]),
            Packed.from_lists([tgt_ids[i] for i in keep]),
        )
        if split != "train":
            texts[split] = {
                "src": [pairs[i][0] for i in keep],
                "tgt": [task.to_target_text(pairs[i][1]) for i in keep],
            }
    for split in ("train", "valid"):
        if len(splits[split]) == 0:
            raise ValueError(
                f"task {task.name}: all {dropped[split]} {split} examples are longer than "
                f"task.max_len={cfg.max_len} tokens and were dropped: raise task.max_len"
            )
    vocab = Vocab(src_tok.get_vocab_size(), tgt_tok.get_vocab_size(), joint=cfg.vocab == "joint")
    data = TaskData(task, splits, src_tok, tgt_tok, vocab, texts, stats={})
    data.stats = _stats(
        data,
        dropped,
        overlap=_overlap(task, raw["train"], src_tok if cfg.vocab == "joint" else joint_size),
    )
    return data


def _overlap(task: Task, train: list[tuple[str, str]], joint: Tokenizer | int) -> float:
    """Jaccard index of the token types each side uses under one joint vocabulary (one
    of that size is trained for the statistic when the task's vocabularies are separate)."""
    srcs, tgts = [s for s, _ in train], [t for _, t in train]
    if isinstance(joint, int):
        joint = train_tokenizer(srcs + tgts, task.cfg.tokenizer, joint, task.splits_cjk)
    return round(jaccard(token_types(encode(joint, srcs)), token_types(encode(joint, tgts))), 6)


def _build_lm(task: Task, raw: dict[str, list[str]]) -> TaskData:
    cfg = task.cfg
    tok = train_tokenizer(raw["train"], cfg.tokenizer, cfg.vocab_size)
    block = cfg.block_size
    splits, texts = {}, {}
    for split in SPLITS:
        lines = raw.get(split) or []
        stream = [t for ids in encode(tok, lines) for t in [*ids, EOS_ID]]
        # windows of block + 1 overlapping by one token: every token is predicted once
        windows = [stream[i : i + block + 1] for i in range(0, max(len(stream) - 1, 0), block)]
        splits[split] = EncodedSplit(None, Packed.from_lists([w for w in windows if len(w) > 1]))
        if split != "train":
            texts[split] = {"tgt": lines}
    vocab = Vocab.shared(tok.get_vocab_size())
    data = TaskData(task, splits, None, tok, vocab, texts, stats={})
    data.stats = _stats(data, dict.fromkeys(SPLITS, 0), overlap=None)
    return data


def _stats(data: TaskData, dropped: dict[str, int], overlap: float | None) -> dict[str, Any]:
    cfg = data.task.cfg
    splits = {}
    for name, split in data.splits.items():
        row: dict[str, Any] = {"examples": len(split), "dropped_too_long": dropped.get(name, 0)}
        if split.src is None:  # LM: windows of the running text
            row["tokens"] = int(split.tgt.lengths.sum() - len(split))
        else:
            for side, packed in (("src", split.src), ("tgt", split.tgt)):
                row[f"{side}_tokens"] = int(packed.lengths.sum())
                row[f"mean_{side}_len"] = (
                    round(float(packed.lengths.float().mean()), 3) if len(packed) else 0.0
                )
        splits[name] = row
    train_sizes = data.splits["train"].sizes()
    batches = token_batches(*train_sizes, cfg.max_tokens, shuffle=True, seed=cfg.seed)
    return {
        "task": data.task.name,
        "kind": data.task.kind,
        "splits": splits,
        "vocab": {
            "src": data.vocab.src_size if data.task.kind == "seq2seq" else None,
            "tgt": data.vocab.tgt_size,
            "joint": data.vocab.joint,
            "tokenizer": cfg.tokenizer,
        },
        "overlap": overlap,
        "padding_fraction": round(padding_fraction(*train_sizes, batches), 6),
        "max_tokens": cfg.max_tokens,
        "train_batches": len(batches),
    }


# ---------------------------------------------------------------------------- cache


def _save(data: TaskData, path: Path, replace: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        data.tgt_tokenizer.save(str(tmp / "tgt.tokenizer.json"))
        if data.src_tokenizer is not None and data.src_tokenizer is not data.tgt_tokenizer:
            data.src_tokenizer.save(str(tmp / "src.tokenizer.json"))
        tensors = {
            name: {
                "tgt": (s.tgt.data, s.tgt.offsets),
                **({"src": (s.src.data, s.src.offsets)} if s.src is not None else {}),
            }
            for name, s in data.splits.items()
        }
        torch.save(tensors, tmp / "tensors.pt")
        (tmp / "texts.json").write_text(json.dumps(data.texts, ensure_ascii=False))
        meta = {
            "stats": data.stats,
            "vocab": dataclasses.asdict(data.vocab),
            "version": DATA_VERSION,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if replace and path.exists():
            shutil.rmtree(path)
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same entry first: keep theirs
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(task: Task, path: Path) -> TaskData:
    meta = json.loads((path / "meta.json").read_text())
    tgt_tok = Tokenizer.from_file(str(path / "tgt.tokenizer.json"))
    src_file = path / "src.tokenizer.json"
    if task.kind == "lm":
        src_tok = None
    else:
        src_tok = Tokenizer.from_file(str(src_file)) if src_file.exists() else tgt_tok
    tensors = torch.load(path / "tensors.pt", weights_only=True)
    splits = {
        name: EncodedSplit(Packed(*parts["src"]) if "src" in parts else None, Packed(*parts["tgt"]))
        for name, parts in tensors.items()
    }
    texts = json.loads((path / "texts.json").read_text())
    missing = [s for s in SPLITS if s not in splits or (s != "train" and s not in texts)]
    if missing:
        raise ValueError(f"no {', '.join(missing)} split")
    vocab = Vocab(**meta["vocab"])
    return TaskData(task, splits, src_tok, tgt_tok, vocab, texts, meta["stats"], cache_hit=True)
