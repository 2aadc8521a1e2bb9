"""The DE → EN pilot's table (docs/pairs-pilot.md) from its committed run records.

Each setting of the pilot is one folder of results/reference/pairs_pilot/: its run.json
(as the run wrote it; no decoded sentences) and cpu.json (the process's user and system
CPU seconds from /usr/bin/time, train and evaluation together). Prints one Markdown row a
setting: what it changes against experiments/pairs_cpu.yaml (its changes.json), the
target tokens trained, greedy test BLEU and chrF on the whole test split (992 verses), the
validation BLEU of its budget branches, and CPU-minutes. tests/test_bible_pair.py checks
that the docs hold this table.

    python scripts/pilot_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PILOT = Path(__file__).resolve().parents[1] / "results" / "reference" / "pairs_pilot"
HEADER = (
    "| setting | changes | tokens | test BLEU | test chrF | valid BLEU at branches | CPU-min |"
    "\n|---|---|---|---|---|---|---|"
)


def row(folder: Path) -> str:
    record = json.loads((folder / "run.json").read_text())
    cpu = json.loads((folder / "cpu.json").read_text())
    metrics, notes = record["metrics"], json.loads((folder / "changes.json").read_text())
    branches = ", ".join(
        f"{b['tokens'] / 1e6:.2f}M: {b['bleu']:.2f}"
        for b in record.get("budgets", [])
        if b["fraction"] < 1 and "bleu" in b
    )
    minutes = (cpu["user_s"] + cpu["system_s"]) / 60
    return (
        f"| {folder.name} | {notes['changes']} | {metrics['tokens'] / 1e6:.2f}M "
        f"| {metrics['test_bleu']:.2f} | {metrics['test_chrf']:.2f} | {branches or '—'} "
        f"| {minutes:.1f} |"
    )


def table(pilot: Path = PILOT) -> str:
    folders = sorted(p for p in pilot.iterdir() if (p / "run.json").is_file())
    return "\n".join([HEADER, *(row(f) for f in folders)])


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
