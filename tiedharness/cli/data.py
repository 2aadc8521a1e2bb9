"""tiedharness-data: build (or load from cache) a task's data and print its statistics."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tiedharness.cli import CONF_DIR, fail
from tiedharness.cli.help import run_app
from tiedharness.config import OutputFormat  # importing it registers the config schemas


def main() -> None:
    """The console script: `--help`, and the command line's keys checked, before Hydra."""
    run_app("data", app)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="data")
def app(cfg: DictConfig) -> None:
    from tiedharness.tasks import TASKS
    from tiedharness.tasks.data import build_task  # tokenizers and torch load only here

    if cfg.catalogue:
        table = TASKS[cfg.task.name].catalogue()
        print(table or f"task {cfg.task.name} reads no catalogue of sources")
        return
    if cfg.export:
        export(OmegaConf.to_object(cfg.task), Path(cfg.export))
        return
    try:
        stats = build_task(OmegaConf.to_object(cfg.task)).stats
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    json_out = cfg.format == OutputFormat.json
    print(json.dumps(stats, indent=2) if json_out else format_data_table(stats))


def export(task_config, folder: Path) -> None:
    """The task's text splits as files task=parallel_text reads (`export=DIR`)."""
    from tiedharness.tasks import make_task
    from tiedharness.tasks.files import export_pairs

    try:
        task = make_task(task_config)
        if task.kind != "seq2seq":
            fail(f"task {task.name} is not a translation task: nothing to export as pairs")
        src, tgt = task.side_names()
        written = export_pairs(task.load(), folder, src, tgt)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    print("\n".join(str(p) for p in written))
    print(
        f"train on them with: tiedharness-train task=parallel_text task.data_dir={folder} "
        f"task.src_lang={src} task.tgt_lang={tgt}"
    )


def format_data_table(stats: dict) -> str:
    vocab = stats["vocab"]
    sizes = (
        f"{vocab['tgt']}" if stats["kind"] == "lm" else f"{vocab['src']} src / {vocab['tgt']} tgt"
    )
    overlap = "" if stats["overlap"] is None else f"  overlap={stats['overlap']:.4f}"
    joint = "joint" if vocab["joint"] else "separate"
    lines = [
        f"task={stats['task']} ({stats['kind']})  vocab: {joint} {vocab['tokenizer']}"
        f" {sizes}{overlap}  padding={100 * stats['padding_fraction']:.2f}%"
        f" at max_tokens={stats['max_tokens']}",
        "",
    ]
    columns = (
        ["examples", "tokens"]
        if stats["kind"] == "lm"
        else ["examples", "src_tokens", "tgt_tokens", "mean_src_len", "mean_tgt_len"]
    )
    lines.append(f"{'split':<6}" + "".join(f"{c:>14}" for c in columns))
    for split, row in stats["splits"].items():
        cells = "".join(
            f"{row[c]:>14,}" if isinstance(row[c], int) else f"{row[c]:>14.2f}" for c in columns
        )
        lines.append(f"{split:<6}{cells}")
    hit = "loaded from cache" if stats["cache_hit"] else "built"
    lines += ["", f"{hit} in {stats['build_s']:.2f} s: {stats['cache_dir']}"]
    return "\n".join(lines)
