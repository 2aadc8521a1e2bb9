"""Entry points: the only code that sees the whole Hydra config.

Each app turns its config into plain objects (ModelConfig, Vocab, SharingConfig) and
hands them to library code, so everything below the CLI is usable without Hydra.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# tokenizers' thread pool must not be live when launchers fork worker processes
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiedharness.model import ModelConfig, Vocab
from tiedharness.params import ParamReport, format_table, param_report
from tiedharness.sharing import STRATEGIES, SharingConfig


def _conf_dir() -> str:
    """The config tree: inside the package in a wheel, ./conf in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if candidate.is_dir():
            return str(candidate)
    raise FileNotFoundError(f"no conf/ directory next to {package}: reinstall tiedharness")


CONF_DIR = _conf_dir()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True)


def vocab_from_cfg(cfg: DictConfig) -> Vocab:
    """`vocab_size=N` is one joint vocabulary; `src_vocab_size`/`tgt_vocab_size` are separate."""
    src, tgt = cfg.get("src_vocab_size"), cfg.get("tgt_vocab_size")
    if src is None and tgt is None:
        return Vocab.shared(cfg.vocab_size)
    return Vocab.separate(src or cfg.vocab_size, tgt or cfg.vocab_size)


def sharing_options() -> dict[str, SharingConfig]:
    """Every `conf/sharing/*.yaml`, in the registry's order."""
    folder = Path(CONF_DIR) / "sharing"
    return {
        name: SharingConfig.from_dict(_plain(OmegaConf.load(folder / f"{name}.yaml")))
        for name in STRATEGIES
        if (folder / f"{name}.yaml").exists()
    }


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="params")
def params_main(cfg: DictConfig) -> None:
    """tiedharness-params: unique / untied parameter totals per strategy and component."""
    if cfg.format not in ("table", "json"):
        _fail(f"format={cfg.format} is not one of table, json")
    try:
        model_cfg = ModelConfig.from_dict(_plain(cfg.model))
        vocab = vocab_from_cfg(cfg)
        if cfg.get("sharing") is not None:  # one strategy, chosen with sharing=NAME
            report = param_report(model_cfg, vocab, SharingConfig.from_dict(_plain(cfg.sharing)))
            _print_reports([report], model_cfg, vocab, cfg.format, single=True)
            return
        reports: list[ParamReport | tuple[str, str]] = []
        for name, sharing in sharing_options().items():
            try:
                reports.append(param_report(model_cfg, vocab, sharing))
            except ValueError as err:  # this strategy does not apply to this model
                reports.append((name, str(err)))
        _print_reports(reports, model_cfg, vocab, cfg.format, single=False)
    except ValueError as err:
        _fail(str(err))


def _print_reports(reports: list, model_cfg: ModelConfig, vocab: Vocab, fmt: str, single: bool):
    if fmt == "table":
        print(format_table(reports, model_cfg, vocab))
        return
    rows = [
        r.to_dict() if isinstance(r, ParamReport) else {"sharing": r[0], "error": r[1]}
        for r in reports
    ]
    print(json.dumps(rows[0] if single else rows, indent=2))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="data")
def data_main(cfg: DictConfig) -> None:
    """tiedharness-data: build (or load from cache) a task's data and print its statistics."""
    from tiedharness.tasks import build_task  # tokenizers and pysword load only when needed

    if cfg.format not in ("table", "json"):
        _fail(f"format={cfg.format} is not one of table, json")
    try:
        stats = build_task(_plain(cfg.task)).stats
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    print(json.dumps(stats, indent=2) if cfg.format == "json" else format_data_table(stats))


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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def train_main(cfg: DictConfig) -> None:
    """tiedharness-train: one run, or a sweep with -m (e.g. -m experiment=smoke)."""
    from tiedharness.run import JobContext, run_job

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    base_dir = Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir)
    launcher = OmegaConf.to_container(hydra_cfg.launcher, resolve=True)
    ctx = JobContext(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        experiment=cfg.experiment_name,
        sweep_id=f"{cfg.experiment_name}-{base_dir.name}",
        job_num=OmegaConf.select(hydra_cfg, "job.num", default=0) or 0,
        multirun=multirun,
        choices={k: str(v) for k, v in hydra_cfg.runtime.choices.items() if v is not None},
        parallel_jobs=_parallel_jobs(launcher),
    )
    try:
        record = run_job(_plain(cfg), ctx)
    except (ValueError, FileNotFoundError) as err:  # a single run's configuration error
        print(f"run recorded in {ctx.run_dir / 'run.json'}", file=sys.stderr)
        _fail(str(err))
    if not multirun:
        from tiedharness.callbacks import summary_line

        print(summary_line(ctx.run_dir, record))
        print(f"run recorded in {ctx.run_dir / 'run.json'}")


def _parallel_jobs(launcher: dict) -> int:
    """How many jobs share this machine: joblib's workers (-1: one per core)."""
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 0:
        return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs
    return 1


def report_main(argv: list[str] | None = None) -> None:
    """tiedharness-report RESULTS_DIR: aggregate runs, draw figures, write tables and HTML."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="tiedharness-report",
        description="Turn a finished sweep (or any folder of runs) into figures, tables and report.html.",
    )
    parser.add_argument(
        "results_dir", type=Path, nargs="?", help="a sweep folder (or any folder of runs)"
    )
    parser.add_argument("--out", type=Path, help="where to write (default: RESULTS_DIR/report)")
    parser.add_argument("--source", choices=("local", "wandb"), default="local")
    parser.add_argument("--wandb-path", help="ENTITY/PROJECT, with --source wandb")
    parser.add_argument(
        "--group", help="the sweep's W&B group, with --source wandb or --log-to-wandb"
    )
    parser.add_argument(
        "--log-to-wandb", action="store_true", help="also log figures and table to W&B"
    )
    parser.add_argument("--wandb-project", default="tiedharness", help="project for --log-to-wandb")
    parser.add_argument("--wandb-entity", default=None)
    args = parser.parse_args(argv)

    from tiedharness.report import build_report, load, log_to_wandb

    if args.source == "local" and (args.results_dir is None or not args.results_dir.is_dir()):
        _fail(
            f"{args.results_dir} is not a folder: pass a sweep folder such as results/quick/<date-time>"
        )
    out = args.out or (args.results_dir or Path("results")) / "report"
    try:
        runs = load(args.source, args.results_dir, args.wandb_path, args.group)
    except ValueError as err:
        _fail(str(err))
    if runs.frame.empty:
        _fail(f"no runs found: {'; '.join(runs.warnings)}")
    report = build_report(runs, out)
    for warning in runs.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    counts = ", ".join(f"{n} {s}" for s, n in runs.status_counts().items())
    print(f"{len(runs.frame)} runs ({counts})")
    for name in report.figures:
        print(f"figure {name}: {out / 'figures' / name}.png/.pdf")
    for name, why in report.not_drawn.items():
        print(f"figure {name}: not drawn, {why}")
    for kind, path in report.tables.items():
        print(f"table ({kind}): {path}")
    print(f"report: {report.html}")
    if args.log_to_wandb:
        group = args.group or next(iter(runs.frame["sweep_id"].dropna()), None)
        log_to_wandb(report, args.wandb_project, args.wandb_entity, group)
        print(f"logged figures and summary to W&B group {group}")
