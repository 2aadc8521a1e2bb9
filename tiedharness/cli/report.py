"""tiedharness-report RESULTS_DIR: aggregate runs, draw figures, write tables and HTML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tiedharness.cli import fail


def parser() -> argparse.ArgumentParser:
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
        "--scores",
        metavar="SPLIT/beamK/lpX",
        help="BLEU, chrF and exact match from this tiedharness-eval entry (e.g. valid/beam4/lp1) "
        "instead of the runs' greedy decoding during training",
    )
    parser.add_argument(
        "--log-to-wandb", action="store_true", help="also log figures, table and an artifact to W&B"
    )
    parser.add_argument("--wandb-project", default="tiedharness", help="project for --log-to-wandb")
    parser.add_argument("--wandb-entity", default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from tiedharness.analysis.report import build_report, load, log_to_wandb

    if args.source == "local" and (args.results_dir is None or not args.results_dir.is_dir()):
        fail(
            f"{args.results_dir} is not a folder: pass a sweep folder such as results/quick/<date-time>"
        )
    out = args.out or (args.results_dir or Path("results")) / "report"
    try:
        runs = load(args.source, args.results_dir, args.wandb_path, args.group, args.scores)
    except ValueError as err:
        fail(str(err))
    if runs.frame.empty:
        fail(f"no runs found: {'; '.join(runs.warnings)}")
    try:  # a study's declarations (report.primary, report.contrasts) are read here
        report = build_report(runs, out)
    except ValueError as err:
        fail(str(err))
    print_outcome(runs, report, out)
    if args.log_to_wandb:
        group = args.group or next(iter(runs.frame["sweep_id"].dropna()), None)
        log_to_wandb(report, args.wandb_project, args.wandb_entity, group)
        print(f"logged figures and summary to W&B group {group}")


def print_outcome(runs, report, out: Path) -> None:
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
