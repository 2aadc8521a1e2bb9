"""A finished sweep → figures (PNG + PDF), Markdown and LaTeX tables, and report.html.

report.html is self-contained (images embedded as data URIs, no scripts, no external
requests), so it opens from disk without a network: the dashboard for users without a
W&B account and for offline runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tiedharness.analysis import plots
from tiedharness.analysis.aggregate import Runs, load_runs, load_wandb_runs, summarize

# Summary columns shown in the tables: (column, header, format).
TABLE_COLUMNS = [
    ("params_total_mean", "params", "{:,.0f}"),
    ("params_total_delta_vs_none", "Δparams", "{:+,.0f}"),
    ("val_loss_mean", "val loss", "{:.4f}"),
    ("val_loss_ci95", "±95%", "{:.4f}"),
    ("val_loss_delta_vs_none", "Δloss", "{:+.4f}"),
    ("bleu_mean", "BLEU", "{:.2f}"),
    ("exact_match_mean", "EM", "{:.3f}"),
    ("train_tokens_per_s_mean", "train tok/s", "{:,.0f}"),
    ("softmax_flops_share_mean", "softmax FLOPs", "{:.3f}"),
    ("softmax_time_share_mean", "softmax time", "{:.3f}"),
]


@dataclass
class Report:
    out_dir: Path
    runs: Runs
    summary: pd.DataFrame
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    not_drawn: dict[str, str] = field(default_factory=dict)  # figure → why not
    tables: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None


def summary_table(runs: Runs, summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the per-cell summary."""
    keys = ["task", "model", *runs.swept, "sharing", "n"]
    columns = [c for c in TABLE_COLUMNS if c[0] in summary.columns and summary[c[0]].notna().any()]
    header = [k.split(".")[-1] for k in keys] + [h for _, h, _ in columns]
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row[k]) for k in keys]
        for column, _, fmt in columns:
            value = row[column]
            cells.append(
                "–"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else fmt.format(value)
            )
        rows.append(cells)
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_latex(header: list[str], rows: list[list[str]]) -> str:
    """A booktabs table (\\usepackage{booktabs})."""

    def tex(cell: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                     ("#", r"\#"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("–", "--")):  # fmt: skip
            cell = cell.replace(a, b)
        return cell

    spec = "l" * 3 + "r" * (len(header) - 3)
    lines = [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(map(tex, header)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(tex, r)) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def build_report(runs: Runs, out_dir: Path) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    report = Report(out_dir, runs, summary)
    for name in plots.FIGURES:
        try:
            fig = plots.draw(name, runs, summary)
        except plots.NoData as why:
            report.not_drawn[name] = str(why)
            continue
        report.figures[name] = plots.save(fig, out_dir / "figures", name)
    if not summary.empty:
        header, rows = summary_table(runs, summary)
        report.tables["markdown"] = out_dir / "summary.md"
        report.tables["markdown"].write_text(to_markdown(header, rows))
        report.tables["latex"] = out_dir / "summary.tex"
        report.tables["latex"].write_text(to_latex(header, rows))
        summary.to_csv(out_dir / "summary.csv", index=False)
    runs.frame.drop(columns=[c for c in runs.frame.columns if c.startswith("cfg.")]).to_csv(
        out_dir / "runs.csv", index=False
    )
    report.html = out_dir / "report.html"
    report.html.write_text(render_html(report))
    return report


# ---------------------------------------------------------------------------- HTML


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:.5rem 0}td,th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child{text-align:left}
.status-completed{color:#1a7f37}.status-failed{color:#cf222e}.status-diverged{color:#9a6700}
.status-skipped{color:#6e7781}figure{display:inline-block;margin:0 1rem 1rem 0;
vertical-align:top;max-width:480px}figure img{width:100%}figcaption{font-size:12px;color:#555}
.warn{background:#fff8c5;padding:.5rem 1rem;border-radius:4px}code{font-size:12px}
"""


def _table_html(header: list[str], rows: list[list[str]], status_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="status-{html.escape(cell)}"' if i == status_column else ""
            cells.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
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
        f"<p>Sweep: <code>{html.escape(sweeps)}</code><br>Runs: {len(frame)} ({html.escape(counts)})"
        f"<br>Swept besides task, model, strategy and seed: {html.escape(', '.join(runs.swept) or 'nothing')}"
        f"<br>Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    if runs.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in runs.warnings)
        parts.append(f"<div class=warn><b>Warnings</b><ul>{items}</ul></div>")
    parts.append("<h2>Figures</h2>")
    for name, paths in report.figures.items():
        caption = html.escape(plots.describe(name))
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
    parts.append("<h2>Summary per cell (mean over seeds)</h2>")
    if report.summary.empty:
        parts.append("<p>No completed runs to summarise.</p>")
    else:
        parts.append(_table_html(*summary_table(runs, report.summary)))
    parts += ["<h2>Runs</h2>", _runs_table_html(frame), "</body></html>"]
    return "\n".join(parts)


def _runs_table_html(frame: pd.DataFrame) -> str:
    columns = ["run_id", "task", "sharing", "seed", "status", "params_total", "val_loss", "error"]
    present = [c for c in columns if c in frame.columns]
    rows = [
        ["" if pd.isna(v) else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r]
        for r in frame[present].itertuples(index=False)
    ]
    status = present.index("status") if "status" in present else None
    return _table_html(present, rows, status_column=status)


# ---------------------------------------------------------------------------- W&B


def log_to_wandb(report: Report, project: str, entity: str | None, group: str | None) -> None:
    """Log the figures and the summary table to the sweep's W&B group (job type report)."""
    import wandb

    from tiedharness.tracking.trackers import wandb_mode

    with wandb.init(project=project, entity=entity, group=group, job_type="report",
                    dir=str(report.out_dir), mode=wandb_mode(None)) as run:  # fmt: skip
        run.log({name: wandb.Image(str(paths["png"])) for name, paths in report.figures.items()})
        if not report.summary.empty:
            run.log({"summary": wandb.Table(dataframe=report.summary.astype(str))})


def load(source: str, results_dir: Path | None, wandb_path: str | None, group: str | None) -> Runs:
    if source == "wandb":
        if not wandb_path:
            raise ValueError(
                "--source wandb needs --wandb-path ENTITY/PROJECT (and optionally --group SWEEP)"
            )
        return load_wandb_runs(wandb_path, group)
    return load_runs(results_dir)
