"""Bring your own corpus: one sentence per line, so the grid runs on IWSLT, WMT or yours.

parallel_text reads `{data_dir}/{split}.{src_lang}` and `{data_dir}/{split}.{tgt_lang}`
(line-aligned, fairseq's naming); text_lm reads `{data_dir}/{split}.txt`. The test
split is optional. Empty lines (or pairs with an empty side) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiedharness.tasks.base import SPLITS, LMConfig, Task, TaskConfig, register_task


def _read_lines(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8") as f:
            return [line.strip() for line in f]
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data file {path} is not UTF-8 text (byte {err.start}: {err.reason}); "
            "convert it (e.g. iconv -t UTF-8) or point task.data_dir elsewhere"
        ) from None


def export_pairs(
    splits: dict[str, list[tuple[str, str]]], folder: Path, src_lang: str, tgt_lang: str
) -> list[Path]:
    """Write a seq2seq task's text splits as parallel_text reads them (fairseq's naming:
    `{split}.{src_lang}`, `{split}.{tgt_lang}`, one sentence a line); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for split, pairs in splits.items():
        for side, lang in enumerate((src_lang, tgt_lang)):
            path = folder / f"{split}.{lang}"
            path.write_text("".join(pair[side] + "\n" for pair in pairs), encoding="utf-8")
            written.append(path)
    return written


def _file_print(paths: list[Path]) -> list:
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists()]


def _missing(paths: list[Path], hint: str) -> FileNotFoundError:
    listed = ", ".join(str(p) for p in paths)
    return FileNotFoundError(f"missing data file(s) {listed}: {hint}")


@dataclass
class ParallelTextConfig(TaskConfig):
    data_dir: str | None = None  # folder of your corpus files (fairseq naming)
    src_lang: str = "src"  # file suffix of the source side: train.SRC
    tgt_lang: str = "tgt"  # file suffix of the target side: train.TGT


@register_task
class ParallelText(Task):
    name = "parallel_text"
    kind = "seq2seq"
    Config = ParallelTextConfig
    scores = ("bleu",)
    cfg: ParallelTextConfig

    def paths(self, split: str) -> tuple[Path, Path]:
        if not self.cfg.data_dir:
            raise ValueError(
                "task=parallel_text needs task.data_dir=DIR holding train.SRC/train.TGT, "
                "valid.SRC/valid.TGT (and optionally test.*), one sentence per line, with "
                "task.src_lang=SRC task.tgt_lang=TGT"
            )
        root = Path(self.cfg.data_dir).expanduser()
        return root / f"{split}.{self.cfg.src_lang}", root / f"{split}.{self.cfg.tgt_lang}"

    def fingerprint(self) -> dict:
        return {"files": _file_print([p for s in SPLITS for p in self.paths(s)])}

    def load(self) -> dict[str, list[tuple[str, str]]]:
        splits = {}
        for split in SPLITS:
            src_path, tgt_path = self.paths(split)
            if split == "test" and not src_path.exists() and not tgt_path.exists():
                splits[split] = []
                continue
            missing = [p for p in (src_path, tgt_path) if not p.exists()]
            if missing:
                raise _missing(
                    missing,
                    "set task.data_dir, task.src_lang and task.tgt_lang to match your files",
                )
            src, tgt = _read_lines(src_path), _read_lines(tgt_path)
            if len(src) != len(tgt):
                raise ValueError(
                    f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
                    "parallel files must be line-aligned"
                )
            splits[split] = [(s, t) for s, t in zip(src, tgt, strict=True) if s and t]
        return splits


@dataclass
class TextLMConfig(LMConfig):
    data_dir: str | None = None


@register_task
class TextLM(Task):
    name = "text_lm"
    kind = "lm"
    Config = TextLMConfig
    cfg: TextLMConfig

    def path(self, split: str) -> Path:
        if not self.cfg.data_dir:
            raise ValueError(
                "task=text_lm needs task.data_dir=DIR holding train.txt and valid.txt "
                "(and optionally test.txt), one sentence or paragraph per line"
            )
        return Path(self.cfg.data_dir).expanduser() / f"{split}.txt"

    def fingerprint(self) -> dict:
        return {"files": _file_print([self.path(s) for s in SPLITS])}

    def load(self) -> dict[str, list[str]]:
        splits = {}
        for split in SPLITS:
            path = self.path(split)
            if not path.exists():
                if split == "test":
                    splits[split] = []
                    continue
                raise _missing([path], "set task.data_dir to the folder of your text files")
            splits[split] = [line for line in _read_lines(path) if line]
        return splits
