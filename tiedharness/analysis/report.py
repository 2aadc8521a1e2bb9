"""A finished sweep → figures (PNG + PDF), Markdown and LaTeX tables, and report.html.

report.html is self-contained (images embedded as data URIs, no scripts, no external
requests), so it opens from disk without a network: the dashboard for users without a
W&B account and for offline runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from tiedharness.analysis import plots
from tiedharness.analysis.aggregate import load_runs, summarize
from tiedharness.analysis.budgets import budget_deltas
from tiedharness.analysis.endpoints import comparisons, contrast_summary_rows
from tiedharness.analysis.findings import Findings, findings
from tiedharness.analysis.runs import Runs
from tiedharness.analysis.tables import (
    runs_table,
    summary_notes,
    summary_table,
    to_latex,
    to_markdown,
)
from tiedharness.analysis.tuning import tuning_notes, tuning_table


@dataclass
class Report:
    out_dir: Path
    runs: Runs
    summary: pd.DataFrame
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)  # the searches runs were tuned by
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)  # what each figure shows and shares
    not_drawn: dict[str, str] = field(default_factory=dict)  # figure → why not
    tables: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None
    findings: Findings = field(default_factory=Findings)  # what the report opens with


def build_report(runs: Runs, out_dir: Path) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = comparisons(runs)
    summary = summarize(runs, table)
    report = Report(out_dir, runs, summary, tuning_table(runs))
    report.findings = findings(runs, summary)
    for name in plots.FIGURES:
        try:
            fig = plots.draw(name, runs, summary)
        except plots.NoData as why:
            report.not_drawn[name] = str(why)
            continue
        report.captions[name] = plots.describe(name, fig)  # before save closes it
        report.figures[name] = plots.save(fig, out_dir / "figures", name)
    if not summary.empty:
        header, rows = summary_table(runs, summary)
        notes = "".join(f"\n{line}\n" for line in summary_notes(runs, summary))
        report.tables["markdown"] = out_dir / "summary.md"
        table_md = f"## {TABLE_HEADING}\n\n" + to_markdown(header, rows)
        report.tables["markdown"].write_text(
            findings_md(report.findings) + table_md + notes + tuning_md(report)
        )
        report.tables["latex"] = out_dir / "summary.tex"
        report.tables["latex"].write_text(to_latex(header, rows))
        with_contrasts = pd.concat([summary, contrast_summary_rows(table)], ignore_index=True)
        with_contrasts.to_csv(out_dir / "summary.csv", index=False)
    if not table.empty:  # every comparison at its endpoints, on both splits, Holm's p
        report.tables["comparisons"] = out_dir / "comparisons.csv"
        table.to_csv(report.tables["comparisons"], index=False)
    if not report.tuning.empty:  # how each arm's settings were found
        report.tables["tuning"] = out_dir / "tuning.csv"
        report.tuning.to_csv(report.tables["tuning"], index=False)
    deltas = budget_deltas(runs)
    if not deltas.empty:  # the paired Δ at every budget: the verdicts' evidence
        report.tables["budgets"] = out_dir / "budgets.csv"
        deltas.to_csv(report.tables["budgets"], index=False)
    runs.frame.drop(columns=[c for c in runs.frame.columns if c.startswith("cfg.")]).to_csv(
        out_dir / "runs.csv", index=False
    )
    report.html = out_dir / "report.html"
    report.html.write_text(render_html(report))
    return report


HEADING = "What the runs show"  # the findings: the first thing summary.md and report.html say
TABLE_HEADING = "Summary per cell (mean over seeds ± 95% interval)"


def findings_md(found: Findings) -> str:
    """The section summary.md opens with: what is shown, then what to read with care."""
    if not found.sentences:
        return ""
    paragraphs = [" ".join(p) for p in (found.savings, found.deltas) if p]
    text = f"## {HEADING}\n\n" + "".join(f"{p}\n\n" for p in paragraphs)
    if found.caveats:
        text += "Read with care:\n\n" + "".join(f"- {c}\n" for c in found.caveats) + "\n"
    return text


def findings_html(found: Findings) -> list[str]:
    """The same section, for the top of report.html."""
    if not found.sentences:
        return []
    parts = [f"<h2>{HEADING}</h2>"]
    for sentences in (found.savings, found.deltas):
        if sentences:
            parts.append(f"<p class=findings>{html.escape(' '.join(sentences))}</p>")
    if found.caveats:
        items = "".join(f"<li>{html.escape(c)}</li>" for c in found.caveats)
        parts.append(f"<div class=warn><b>Read with care</b><ul>{items}</ul></div>")
    return parts


def tuning_md(report: Report) -> str:
    """The searches' results under the summary table: which settings each cell got."""
    if report.tuning.empty:
        return ""
    notes = "".join(f"\n{line}\n" for line in tuning_notes(report.tuning))
    return f"\n## How the settings were chosen\n{notes}\n" + to_markdown(*_as_rows(report.tuning))


def _as_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return list(table.columns), [[cell(v) for v in row] for row in table.itertuples(index=False)]


# ---------------------------------------------------------------------------- HTML


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:.5rem 0}td,th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child{text-align:left}
.status-completed{color:#1a7f37}.status-failed{color:#cf222e}.status-diverged{color:#9a6700}
.status-skipped,.status-pruned{color:#6e7781}figure{display:inline-block;margin:0 1rem 1rem 0;
vertical-align:top;max-width:480px}figure img{width:100%}figcaption{font-size:12px;color:#555}
.warn{background:#fff8c5;padding:.5rem 1rem;border-radius:4px}code{font-size:12px}
tr.unfinished td{color:#8c959f}.note{font-size:12px;color:#555}
"""


def _table_html(
    header: list[str], rows: list[list[str]], status_column: int | None = None, marked: str = ""
) -> str:
    """An HTML table; rows holding the `marked` sign (not converged) are greyed."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        grey = " class=unfinished" if marked and any(marked in cell for cell in row) else ""
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="status-{html.escape(cell)}"' if i == status_column else ""
            cells.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append(f"<tr{grey}>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def render_html(report: Report) -> str:
    runs, frame = report.runs, report.runs.frame
    sweeps = ", ".join(sorted({str(s) for s in frame.get("sweep_id", pd.Series()).dropna()})) or "–"
    counts = (
        " · ".join(f"{n} {s}" for s, n in runs.status_counts().items())
        if not frame.empty
        else "no runs"
    )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>tiedharness report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>tiedharness report</h1>",
        *findings_html(report.findings),
        f"<p>Sweep: <code>{html.escape(sweeps)}</code><br>Runs: {len(frame)} ({html.escape(counts)})"
        f"<br>Swept besides task, model, strategy and seed: {html.escape(', '.join(runs.swept) or 'nothing')}"
        f"<br>Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    if runs.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in runs.warnings)
        parts.append(f"<div class=warn><b>Warnings</b><ul>{items}</ul></div>")
    parts.append("<h2>Figures</h2>")
    for name, paths in report.figures.items():
        caption = html.escape(report.captions.get(name) or plots.describe(name))
        parts.append(
            f'<figure><img alt="{name}" src="{_image(paths["png"])}">'
            f"<figcaption><b>{name}</b>: {caption} "
            f'(<a href="figures/{name}.pdf">PDF</a>)</figcaption></figure>'
        )
    if report.not_drawn:
        items = "".join(
            f"<li><b>{name}</b>: not drawn, {html.escape(why)}</li>"
            for name, why in report.not_drawn.items()
        )
        parts.append(f"<p>Figures without data:</p><ul>{items}</ul>")
    parts.append(f"<h2>{TABLE_HEADING}</h2>")
    if report.summary.empty:
        parts.append("<p>No completed runs to summarise.</p>")
    else:
        *lines, footnotes = summary_notes(runs, report.summary)
        budgets = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        parts.append(f"<ul class=budget>{budgets}</ul>")
        parts.append(_table_html(*summary_table(runs, report.summary), marked="‡"))
        parts.append(f"<p class=note>{html.escape(footnotes)}</p>")
    if not report.tuning.empty:
        parts.append("<h2>How the settings were chosen</h2>")
        parts += [f"<p class=note>{html.escape(line)}</p>" for line in tuning_notes(report.tuning)]
        parts.append(_table_html(*_as_rows(report.tuning)))
    header, rows = runs_table(runs)
    status = header.index("status") if "status" in header else None
    parts += ["<h2>Runs</h2>", _table_html(header, rows, status_column=status), "</body></html>"]
    return "\n".join(parts)


# ---------------------------------------------------------------------------- W&B


def log_to_wandb(report: Report, project: str, entity: str | None, group: str | None) -> None:
    """Log the figures and the summary table to the sweep's W&B group (job type report),
    and every file of the report (figures, tables, report.html) as an artifact of type
    `report`, versioned by W&B each time the sweep is reported again."""
    import wandb

    from tiedharness.tracking.trackers import open_wandb_run, wandb_mode

    options = {"project": project, "entity": entity, "group": group, "job_type": "report"}
    with open_wandb_run(report.out_dir, wandb_mode(None), **options) as run:
        run.log({name: wandb.Image(str(paths["png"])) for name, paths in report.figures.items()})
        if not report.summary.empty:
            run.log({"summary": wandb.Table(dataframe=typed_columns(report.summary))})
        run.log_artifact(report_artifact(report, group))


def report_artifact(report: Report, group: str | None):
    import wandb

    counts = report.runs.status_counts()
    artifact = wandb.Artifact(
        name=re.sub(r"[^\w.-]", "-", f"report-{group or 'runs'}"),
        type="report",
        description=f"tiedharness-report of {len(report.runs.frame)} runs",
        metadata={"group": group, "runs": {str(k): int(v) for k, v in counts.items()}},
    )
    for paths in report.figures.values():
        for path in paths.values():
            artifact.add_file(str(path), name=f"figures/{path.name}")
    for path in [
        *report.tables.values(),
        report.out_dir / "summary.csv",
        report.out_dir / "runs.csv",
        report.html,
    ]:
        if path is not None and path.exists():
            artifact.add_file(str(path), name=path.name)
    return artifact


def typed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers stay numbers (W&B sorts and plots them), booleans booleans; other columns
    (labels, mixed values) become text."""
    out = frame.copy()
    for column in out.columns:
        if not (is_numeric_dtype(out[column]) or is_bool_dtype(out[column])):
            out[column] = out[column].astype(str)
    return out


def load(
    source: str,
    results_dir: Path | None,
    wandb_path: str | None,
    group: str | None,
    scores: str | None = None,
) -> Runs:
    if source == "wandb":
        if not wandb_path:
            raise ValueError(
                "--source wandb needs --wandb-path ENTITY/PROJECT (and optionally --group SWEEP)"
            )
        from tiedharness.analysis.wandb_source import load_wandb_runs

        return load_wandb_runs(wandb_path, group, scores)
    return load_runs(results_dir, scores=scores)
