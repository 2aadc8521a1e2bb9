"""From a real smoke sweep to figures, tables, report.html (in Chromium) and the notebook."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import wandb_offline

from tiedharness.analysis import plots
from tiedharness.analysis.aggregate import load_runs, record_to_row, step_ms, summarize
from tiedharness.analysis.stats import ci95
from tiedharness.analysis.wandb_source import record_from_wandb
from tiedharness.tracking.record import SCHEMA_VERSION
from tiedharness.tracking.run_folder import RunFolder

SMOKE_FIGURES = {
    "tradeoff_loss",
    "tradeoff_bpc",
    "tradeoff_bleu",
    "param_budget",
    "learning_curves",
    "quality_vs_throughput",
}
# one vocabulary size, one overlap, one budget per run
NOT_FOR_SMOKE = {"softmax_cost", "vocab_overlap", "delta_vs_budget"}


def report_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tiedharness-report", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-report is not installed next to this Python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report_dir(smoke_sweep, tmp_path_factory) -> Path:
    _, sweep = smoke_sweep
    out = tmp_path_factory.mktemp("report")
    result = report_cli(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "5 runs (5 completed)" in result.stdout
    return out


def test_report_writes_every_figure_the_runs_have_data_for(report_dir):
    pngs = {p.stem for p in (report_dir / "figures").glob("*.png")}
    pdfs = {p.stem for p in (report_dir / "figures").glob("*.pdf")}
    assert pngs == pdfs == SMOKE_FIGURES
    assert set(plots.FIGURES) == SMOKE_FIGURES | NOT_FOR_SMOKE
    for name in SMOKE_FIGURES:
        assert (report_dir / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    page = (report_dir / "report.html").read_text()
    for name in NOT_FOR_SMOKE:
        assert f"<b>{name}</b>: not drawn" in page  # said, never drawn empty


def test_tables_hold_every_strategy_with_exact_parameter_counts(report_dir, smoke_sweep):
    _, sweep = smoke_sweep
    markdown = (report_dir / "summary.md").read_text()
    latex = (report_dir / "summary.tex").read_text()
    assert latex.startswith("\\begin{tabular}") and "\\toprule" in latex and "\\bottomrule" in latex
    for folder in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        record = json.loads((folder / "run.json").read_text())
        row = next(line for line in markdown.splitlines() if f"| {record['sharing']} |" in line)
        assert f"{record['params']['total']:,}" in row
        assert f"{record['metrics']['val_loss']:.4f}" in row
        assert record["sharing"].replace("_", "\\_") in latex
    # what every report states: budgets, seeds, convergence, and what the marks mean
    assert "12 steps" in markdown and "target tokens per run; seeds per cell: 1" in markdown
    summary = pd.read_csv(report_dir / "summary.csv")
    for column in (
        "n",
        "delta_val_loss_mean",
        "delta_val_loss_ci95",
        "delta_val_loss_p",
        "val_bpc_mean",
        "converged_frac",
    ):
        assert column in summary.columns, column
    assert summary.set_index("sharing").loc["none", "delta_val_loss_mean"] == 0
    assert "5 of 5 completed runs did not converge" in markdown
    assert "| 1† |" in markdown and "fewer than 3 seeds" in markdown


def test_report_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(SMOKE_FIGURES)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('<td class="status-completed">completed</td>') == 5


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "Chromium is missing: `make system-deps` installs it (apt-get install chromium)"
        )
    from matplotlib.image import imread
    from playwright.sync_api import sync_playwright

    console, failed = [], []
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto((report_dir / "report.html").as_uri())
        page.wait_for_load_state("load")
        loaded = page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert failed == []
    assert [m for m in console if m[0] in ("error", "pageerror")] == []
    assert loaded
    pixels = imread(shot)
    assert pixels.shape[0] > 900 and pixels.std() > 0.05  # figures and tables, not a blank page


def test_a_truncated_run_json_is_named_and_the_rest_reported(smoke_sweep, tmp_path):
    _, sweep = smoke_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("wandb", "report"))
    broken = copy / "2" / "run.json"
    broken.write_text(broken.read_text()[:200])
    out = report_cli(str(copy))
    assert out.returncode == 0, out.stderr
    assert str(broken) in out.stderr
    assert "4 runs (4 completed)" in out.stdout
    page = (copy / "report" / "report.html").read_text()
    assert str(broken) in page
    assert (copy / "report" / "figures" / "tradeoff_loss.png").exists()


def test_report_of_a_missing_folder_is_a_clear_error(tmp_path):
    out = report_cli(str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "is not a folder" in out.stderr
    empty = report_cli(str(tmp_path))
    assert empty.returncode == 2 and "no runs found" in empty.stderr


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_notebook_executes_top_to_bottom(smoke_sweep, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    _, sweep = smoke_sweep
    notebook = nbformat.read(
        Path(__file__).parents[1] / "notebooks" / "analysis.ipynb", as_version=4
    )
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    os.environ["TIEDHARNESS_RESULTS"] = str(sweep)
    os.environ["TIEDHARNESS_NOTEBOOK_OUT"] = str(tmp_path / "figures")
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    finally:
        del os.environ["TIEDHARNESS_RESULTS"], os.environ["TIEDHARNESS_NOTEBOOK_OUT"]
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == SMOKE_FIGURES
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    # the smoke sweep has one seed per strategy: the notebook draws no conclusion from it
    assert printed.count("from 1 seed(s): no interval, no conclusion") == 4
    assert "synth_translation: 12 steps" in printed


# ---------------------------------------------------------------------------- aggregation


def test_runs_frame_and_summary_from_the_sweep(smoke_sweep):
    _, sweep = smoke_sweep
    runs = load_runs(sweep)
    assert len(runs.frame) == 5 and runs.warnings == [] and runs.swept == []
    summary = summarize(runs)
    assert list(summary["sharing"]) == ["none", "embed_output", "encdec_vocab", "positional", "qkv"]
    none = summary.set_index("sharing").loc["none"]
    for _, row in summary.iterrows():
        assert row["n"] == 1 and math.isnan(row["val_loss_ci95"]) and row["few_seeds"]
        assert (
            row["delta_params_total_mean"] == row["params_total_mean"] - none["params_total_mean"]
        )
        assert row["delta_val_loss_mean"] == pytest.approx(
            row["val_loss_mean"] - none["val_loss_mean"]
        )
        assert row["delta_val_loss_n"] == 1 and math.isnan(row["delta_val_loss_p"])


def _record(task: str, sharing: str, seed: int, val_loss: float, status: str = "completed", **cfg):
    return {
        "schema": SCHEMA_VERSION,
        "run_id": f"{task}-{sharing}-{seed}-{cfg}",
        "experiment": "t",
        "sweep_id": "s",
        "task": task,
        "model": "tiny",
        "sharing": sharing,
        "seed": seed,
        "status": status,
        "config": {"task": {"name": task, **cfg}, "trainer": {"seed": seed}},
        "params": {"total": 100 if sharing == "none" else 80},
        "metrics": {"val_loss": val_loss},
    }


def test_summary_statistics_over_seeds(tmp_path):
    records = [
        _record("synth", "none", 0, 2.0, overlap=0.5),
        _record("synth", "none", 1, 3.0, overlap=0.5),
        _record("synth", "none", 2, 4.0, overlap=0.5),
        _record("synth", "qkv", 0, 1.0, overlap=0.5),
        _record("synth", "qkv", 1, 2.0, overlap=0.5),
        _record("synth", "none", 0, 9.0, overlap=0.0),
        _record("synth", "qkv", 0, 7.0, overlap=0.0),
        _record("synth", "qkv", 2, 0.0, status="failed", overlap=0.5),
    ]
    for i, r in enumerate(records):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "run.json").write_text(json.dumps(r))
    runs = load_runs(tmp_path)
    assert runs.swept == ["task.overlap"]
    assert runs.status_counts() == {"completed": 7, "failed": 1}
    s = summarize(runs).set_index(["sharing", "task.overlap"])
    assert s.loc[("none", 0.5), "n"] == 3 and s.loc[("none", 0.5), "val_loss_mean"] == 3.0
    assert s.loc[("none", 0.5), "val_loss_std"] == 1.0
    t_975_df2 = 4.303  # Student's t table
    assert s.loc[("none", 0.5), "val_loss_ci95"] == pytest.approx(
        t_975_df2 / math.sqrt(3), rel=1e-4
    )
    assert s.loc[("qkv", 0.5), "val_loss_mean"] == 1.5  # the failed seed is not averaged in
    # paired by seed: seeds 0 and 1 are each 1.0 below none's (an unpaired Δ would say -1.5)
    assert s.loc[("qkv", 0.5), "delta_val_loss_mean"] == -1.0
    assert s.loc[("qkv", 0.5), "delta_val_loss_n"] == 2
    assert s.loc[("qkv", 0.0), "delta_val_loss_mean"] == -2.0  # against none of its own cell
    assert s.loc[("qkv", 0.0), "delta_params_total_mean"] == -20
    assert s.loc[("none", 0.5), "delta_val_loss_mean"] == 0.0


def test_arms_tuned_apart_still_pair_by_cell(tmp_path):
    """tuned_from gives each arm its own rate: none and qkv at overlap 0.5 trained at
    different rates (and overlap 0 at others) are still one cell each, compared with each
    other, and each row states its rate. Without tuned_keys the rate would be an axis."""
    rates = {("none", 0.5): 4e-3, ("qkv", 0.5): 8e-3, ("none", 0.0): 2e-3, ("qkv", 0.0): 1e-3}
    losses = {("none", 0.5): 3.0, ("qkv", 0.5): 2.5, ("none", 0.0): 4.0, ("qkv", 0.0): 4.5}
    for i, ((sharing, overlap), lr) in enumerate(rates.items()):
        for seed in range(3):
            record = _record(
                "synth", sharing, seed, losses[sharing, overlap] + seed, overlap=overlap
            )
            record["config"].update(tuned_from="search", tuned_keys=["trainer.lr"])
            record["config"]["trainer"]["lr"] = lr
            (tmp_path / f"{i}-{seed}").mkdir()
            (tmp_path / f"{i}-{seed}" / "run.json").write_text(json.dumps(record))
    runs = load_runs(tmp_path)
    assert runs.swept == ["task.overlap"]
    summary = summarize(runs).set_index(["sharing", "task.overlap"])
    assert summary.loc[("qkv", 0.5), "delta_val_loss_mean"] == pytest.approx(-0.5)
    assert summary.loc[("qkv", 0.0), "delta_val_loss_mean"] == pytest.approx(0.5)
    assert summary.loc[("qkv", 0.5), "delta_val_loss_n"] == 3
    assert summary.loc[("qkv", 0.5), "lr"] == 8e-3 and summary.loc[("none", 0.0), "lr"] == 2e-3


def test_the_vocab_overlap_figure_sets_the_gain_beside_the_softmax_cost():
    """(b)'s trade-off on one figure: Δ bits per character vs overlap for the shared
    vocabularies, and each vocabulary's softmax share of a step, none included."""
    rows = []
    for overlap, share in ((0.1, 0.30), (0.5, 0.28), (0.9, 0.25)):
        for sharing, gain in (("none", 0.0), ("encdec_vocab", -0.01), ("three_way", -0.02)):
            rows.append(
                {
                    "task": "synth_translation",
                    "sharing": sharing,
                    "overlap_mean": overlap,
                    "delta_val_bpc_mean": gain * overlap if sharing != "none" else 0.0,
                    "delta_val_bpc_ci95": 0.001,
                    "output_step_flops_share_mean": share,
                    "output_step_flops_share_ci95": 0.0,
                }
            )
    fig = plots.vocab_overlap(None, pd.DataFrame(rows))
    gain, cost = fig.axes[:2]
    assert "FLOPs" in cost.get_ylabel() and "Δ validation bits/char" in gain.get_ylabel()
    assert len(gain.lines) >= 2  # encdec_vocab and three_way (none is the zero line)
    drawn = {tuple(line.get_ydata()) for line in cost.lines if len(line.get_ydata()) == 3}
    assert (0.30, 0.28, 0.25) in drawn


def test_a_steps_time_is_its_tokens_at_the_training_throughput():
    # 2000 tokens at 1000 tokens/s inside the steps: 2 s over 4 steps
    assert step_ms({"tokens": 2000, "train_tokens_per_s": 1000.0, "steps": 4}) == 500.0
    assert step_ms({"tokens": 2000, "steps": 4}) is None  # a run that never trained


def test_many_panels_go_into_two_columns_and_tokens_read_in_k_and_m():
    from tiedharness.analysis import style

    fig, axes = style.panels(5)  # a study of many cells: two columns, no empty slot
    assert len(axes) == len(fig.axes) == 5
    assert fig.get_size_inches()[0] == 2 * style.WIDTH
    fig, axes = style.panels(3)
    assert len(fig.axes) == 3 and fig.get_size_inches()[0] == style.WIDTH
    style.token_axis(axes[0].xaxis)
    formatter = axes[0].xaxis.get_major_formatter()
    assert [formatter(x, 0) for x in (200_000, 830_000, 1_200_000)] == ["200k", "830k", "1.2M"]
    style.panel_title(axes[0], "bible_lm (small: d=64, ff=256, 4 heads, 2 layers, vocab_size=1000)")
    assert all(len(line) <= 58 for line in axes[0].get_title().splitlines())


def test_ci95_uses_student_t():
    # t quantiles from a printed table (0.975, df = 1, 30, 99)
    assert ci95(1.0, 2) == pytest.approx(12.706 / math.sqrt(2), rel=1e-4)
    assert ci95(2.0, 31) == pytest.approx(2.042 * 2 / math.sqrt(31), rel=1e-3)
    assert ci95(2.0, 100) == pytest.approx(1.984 * 2 / 10, rel=1e-3)
    assert math.isnan(ci95(1.0, 1))


def test_wandb_runs_give_the_same_row_as_run_json(smoke_sweep):
    _, sweep = smoke_sweep
    folder = sweep / "4"
    local = record_to_row(RunFolder(folder).read_record())
    (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    info = wandb_offline.run_info(run_file)
    remote = record_to_row(
        record_from_wandb(
            info["config"], wandb_offline.summary(run_file), info["name"], info["group"]
        )
    )
    for key in (
        "run_id",
        "task",
        "sharing",
        "model",
        "seed",
        "status",
        "params_total",
        "params_untied_total",
        "val_loss",
        "bleu",
        "train_tokens_per_s",
        "overlap",
        "cfg.task.vocab_size",
        "params.attention",
    ):
        assert remote[key] == local[key], key


def test_learning_curves_drawn_from_wandb_alone_match_the_local_ones(smoke_sweep):
    from tiedharness.analysis.aggregate import make_runs
    from tiedharness.analysis.wandb_source import history_from_wandb

    _, sweep = smoke_sweep
    rows, histories = [], []
    for run_file in sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb")):
        info = wandb_offline.run_info(run_file)
        record = record_from_wandb(
            info["config"], wandb_offline.summary(run_file), info["name"], info["group"]
        )
        rows.append(record_to_row(record))
        histories.append(history_from_wandb(wandb_offline.history(run_file), record.run_id))
    remote, local = make_runs(rows, [], histories), load_runs(sweep)
    assert len(remote.frame) == 5 and remote.history is not None
    # every row and value of each history.jsonl, read back from W&B
    columns = list(local.history.columns)
    ordered = lambda h: h[columns].sort_values(["run_id", "step"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(ordered(remote.history), ordered(local.history))
    curves = []
    for runs in (remote, local):
        fig = plots.draw("learning_curves", runs, summarize(runs))
        lines = [line for ax in fig.axes for line in ax.lines]
        curves.append([(list(line.get_xdata()), list(line.get_ydata())) for line in lines])
    assert curves[0] == curves[1] and len(curves[0]) == 5


def test_the_report_can_score_runs_by_their_beam_search_evaluation(smoke_sweep, tmp_path):
    import sacrebleu

    from tiedharness.cli import eval as eval_cli
    from tiedharness.cli import report as report_cli

    sweep = tmp_path / "sweep"
    shutil.copytree(smoke_sweep[1], sweep, ignore=shutil.ignore_patterns("report"))
    eval_cli.main([str(sweep), "beam=2"])
    # the scores went into each run's own W&B run too (offline: a second part of it)
    entry = json.loads((sweep / "0" / "run.json").read_text())["eval"]["valid/beam2/lp1"]
    first, again = sorted((sweep / "0" / "wandb").glob("offline-run-*/run-*.wandb"))
    info = wandb_offline.run_info(first)
    remote = record_from_wandb(info["config"], wandb_offline.summary(again), "0", "smoke")
    assert remote.eval["valid/beam2/lp1"] == {
        k: v for k, v in entry.items() if isinstance(v, int | float)
    }
    # one run without the entry: its scores are left out, not mixed with greedy ones
    record = json.loads((sweep / "4" / "run.json").read_text())
    record["eval"] = {}
    (sweep / "4" / "run.json").write_text(json.dumps(record))

    runs = load_runs(sweep, scores="valid/beam2/lp1")
    assert any("has no eval valid/beam2/lp1" in w for w in runs.warnings)
    for _, row in runs.frame.iterrows():
        if row["run_dir"].endswith("4"):
            assert math.isnan(row["bleu"]) and pd.isna(row["decoded_valid"])
            continue
        decoded = [json.loads(line) for line in Path(row["decoded_valid"]).read_text().splitlines()]
        assert Path(row["decoded_valid"]).name == "eval-valid-beam2-lp1.jsonl"
        hyps, refs = [d["hypothesis"] for d in decoded], [d["reference"] for d in decoded]
        assert row["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
        assert row["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    with pytest.raises(ValueError, match="tiedharness-eval"):
        load_runs(sweep, scores="valid/beam5/lp1")

    report_cli.main([str(sweep), "--scores", "valid/beam2/lp1"])
    notes = (sweep / "report" / "summary.md").read_text()
    assert "BLEU, chrF and exact match: tiedharness-eval valid/beam2/lp1; sacreBLEU BLEU " in notes
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|" in notes


def test_every_strategy_keeps_its_own_style_in_every_figure(smoke_sweep):
    from tiedharness.model.names import STRATEGY_NAMES

    styles = [plots.strategy_style(n) for n in STRATEGY_NAMES]
    assert len({(s["color"], s["marker"]) for s in styles}) == len(STRATEGY_NAMES)
    # the same strategy is drawn in the same colour in two different figures
    runs = load_runs(smoke_sweep[1])
    summary = summarize(runs)
    colours = []
    for name in ("tradeoff_loss", "learning_curves"):
        fig = plots.draw(name, runs, summary)
        colours.append(legend_colours(fig))
    assert colours[0] == colours[1]
    assert set(colours[0]) == {"none", "embed_output", "encdec_vocab", "positional", "qkv"}


def legend_colours(fig) -> dict[str, tuple]:
    """Legend label → RGBA colour of its handle."""
    from matplotlib.colors import to_rgba

    (legend,) = fig.legends or [ax.get_legend() for ax in fig.axes if ax.get_legend()][:1]
    handles = legend.legend_handles
    return {
        text.get_text(): to_rgba(h.get_color() if hasattr(h, "get_color") else h.get_facecolor())
        for text, h in zip(legend.get_texts(), handles, strict=True)
    }


def test_pareto_front():
    points = [(1, 5.0), (2, 4.0), (2, 4.5), (3, 4.2), (4, 3.0)]
    assert plots.pareto_front(points) == [(1, 5.0), (2, 4.0), (4, 3.0)]
    assert plots.pareto_front([(1, 10.0), (2, 20.0), (3, 15.0)], maximize=True) == [
        (1, 10.0),
        (2, 20.0),
    ]


def test_report_logs_figures_and_table_back_to_the_sweeps_wandb_group(smoke_sweep, tmp_path):
    _, sweep = smoke_sweep
    env = {**os.environ, "WANDB_MODE": "offline"}
    exe = shutil.which("tiedharness-report", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [exe, str(sweep), "--out", str(tmp_path), "--log-to-wandb"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    info = wandb_offline.run_info(run_file)
    record = json.loads((sweep / "0" / "run.json").read_text())
    assert info["group"] == record["sweep_id"] and info["job_type"] == "report"
    logged = {k.split("/")[0] for row in wandb_offline.history(run_file) for k in row if "/" in k}
    assert logged == SMOKE_FIGURES | {"summary"}
    table = next(r for r in wandb_offline.history(run_file) if "summary/nrows" in r)
    assert table["summary/nrows"] == 5
    (table_file,) = run_file.parent.glob("files/media/table/summary_*.table.json")
    logged_table = json.loads(table_file.read_text())
    columns = {
        c: [row[i] for row in logged_table["data"]] for i, c in enumerate(logged_table["columns"])
    }
    assert columns["n"] == [1] * 5  # numbers, not "1"
    assert all(isinstance(v, float) for v in columns["val_loss_mean"])
    assert columns["sharing"][0] == "none"
    # every file of the report, as an artifact of type report named after the group
    (artifact,) = [a for a in wandb_offline.artifacts(run_file) if a["type"] != "run_table"]
    assert artifact["type"] == "report" and artifact["name"] == f"report-{record['sweep_id']}"
    assert artifact["metadata"]["runs"] == {"completed": 5}
    written = {
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if p.is_file() and "wandb" not in p.parts
    }
    assert set(artifact["files"]) == written
    html = tmp_path / "report.html"
    assert (
        artifact["files"]["report.html"]
        == base64.b64encode(hashlib.md5(html.read_bytes()).digest()).decode()
    )  # W&B's digest of a file: base64 of its MD5


def test_paired_difference_against_a_t_table():
    from tiedharness.analysis.stats import paired_difference

    # differences -1, -2, -3: mean -2, sd 1, t = -2 / (1 / √3) = -3.464 with 2 degrees of
    # freedom, two-sided p = 0.0742; the interval is 4.303 / √3
    result = paired_difference([-1.0, -2.0, -3.0])
    assert result["mean"] == -2.0 and result["n"] == 3
    assert result["ci95"] == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert result["p"] == pytest.approx(0.0742, abs=5e-4)
    assert paired_difference([0.5, 0.5])["p"] == 0.0  # the same difference on every seed


def test_bleu_paired_bootstrap_p_values():
    from tiedharness.analysis.stats import bleu_paired_bootstrap

    refs = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(30)]
    garbage = [f"a slow cat {i} sleeps" for i in range(30)]
    # every resample favours the perfect system: sacreBLEU's p = (0 + 1) / (1000 + 1)
    assert bleu_paired_bootstrap(garbage, refs, refs) == 1 / 1001
    # the same outputs: no evidence of a difference (sacreBLEU alone would say 1/1001)
    assert bleu_paired_bootstrap(garbage, list(garbage), refs) == 1.0


def test_options_label_variants_and_a_rerun_is_not_a_replicate(tmp_path):
    """A grid of none, qk × qk_mask_self: three labels; none's two runs are one
    replicate (the option does not change none), flagged and counted once."""

    def record(i: int, sharing: str, mask: bool, loss: float) -> dict:
        strategies = [] if sharing == "none" else [sharing]
        return {
            "schema": SCHEMA_VERSION,
            "run_id": f"s-{i}",
            "sweep_id": "s",
            "task": "copy",
            "model": "tiny",
            "sharing": sharing,
            "seed": 0,
            "status": "completed",
            "config": {
                "task": {"name": "copy"},
                "trainer": {"seed": 0},
                "sharing": {"strategies": strategies, "qk_mask_self": mask},
            },
            "metrics": {"val_loss": loss},
        }

    grid = [("none", True, 2.0), ("none", False, 2.0), ("qk", True, 1.5), ("qk", False, 2.5)]
    for i, (sharing, mask, loss) in enumerate(grid):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "run.json").write_text(json.dumps(record(i, sharing, mask, loss)))
    runs = load_runs(tmp_path)
    assert list(runs.frame["sharing"]) == ["none", "none", "qk+mask_self", "qk"]
    assert list(runs.frame["duplicate"]) == [False, True, False, False]
    assert any("s-1 repeats none seed 0" in w for w in runs.warnings)
    summary = summarize(runs).set_index("sharing")
    assert summary.loc["none", "n"] == 1
    assert summary.loc["qk+mask_self", "delta_val_loss_mean"] == -0.5
    assert summary.loc["qk", "delta_val_loss_mean"] == 0.5
    assert plots.strategy_style("qk+mask_self")["color"] == plots.strategy_style("qk")["color"]
    assert plots.strategy_style("qk+mask_self")["marker"] != plots.strategy_style("qk")["marker"]


def test_source_wandb_without_credentials_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    result = report_cli(
        "--source",
        "wandb",
        "--wandb-path",
        "someone/tiedharness",
        "--out",
        str(tmp_path / "report"),
    )
    assert result.returncode == 2
    assert "wandb login" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- BLEU and chrF

GENESIS = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
    "And God called the light Day, and the darkness he called Night.",
    "And the evening and the morning were the first day.",
    "And God made the firmament, and divided the waters which were under the firmament.",
    "And God called the firmament Heaven.",
    "And God said, Let the waters under the heaven be gathered together unto one place.",
    "And God called the dry land Earth; and the gathering together of the waters called he Seas.",
    "And the earth brought forth grass, and herb yielding seed after his kind.",
    "And God set them in the firmament of the heaven to give light upon the earth.",
]
# the share of each reference's words a system gets right, per seed: three_way is far better
# on seeds 0 and 1 and a little worse on seed 2; embed_output's pooled BLEU is close to
# none's (a bootstrap p that depends on the resampling's seed)
KEEP = {"none": (0.5, 0.45, 0.55), "three_way": (0.9, 0.85, 0.5), "embed_output": (0.6, 0.4, 0.55)}


def degraded(keep: float) -> list[str]:
    """Hypotheses that keep the first `keep` of each reference's words, then say "the"."""
    out = []
    for ref in GENESIS:
        words = ref.split()
        n = max(1, round(keep * len(words)))
        out.append(" ".join(words[:n] + ["the"] * (len(words) - n)))
    return out


def test_bleu_and_chrf_deltas_are_seed_level_and_the_bootstrap_is_reported_beside(tmp_path):
    """Acceptance: delta_bleu_p (and delta_chrf_p) is the paired t over seeds that scipy
    gives; delta_bleu_bootstrap_p is sacreBLEU's paired bootstrap on the sentences pooled
    over seeds, with the seed and resamples of stats.py whatever SACREBLEU_SEED says; the
    significance mark follows the seed-level p, not the bootstrap's."""
    import sacrebleu
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from tiedharness.analysis.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED

    scores: dict[str, list[tuple[float, float]]] = {}
    for job, (sharing, seed) in enumerate((s, seed) for s in KEEP for seed in range(3)):
        hyps = degraded(KEEP[sharing][seed])
        bleu = sacrebleu.corpus_bleu(hyps, [GENESIS]).score
        chrf = sacrebleu.corpus_chrf(hyps, [GENESIS]).score
        scores.setdefault(sharing, []).append((bleu, chrf))
        folder = tmp_path / "sweep" / str(job)
        record = _record("bible_mt", sharing, seed, 3.0 - 0.1 * seed)
        record["metrics"].update(bleu=bleu, chrf=chrf, decoded_examples=len(GENESIS))
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(record))
        decoded = [
            {"index": i, "hypothesis": h, "reference": r}
            for i, (h, r) in enumerate(zip(hyps, GENESIS, strict=True))
        ]
        (folder / "decoded-valid.jsonl").write_text("".join(json.dumps(d) + "\n" for d in decoded))
    exe = shutil.which("tiedharness-report", path=str(Path(sys.executable).parent))
    env = {**os.environ, "SACREBLEU_SEED": "7"}  # the report fixes its own seed
    out = subprocess.run([exe, str(tmp_path / "sweep")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    report = tmp_path / "sweep" / "report"
    summary = pd.read_csv(report / "summary.csv").set_index("sharing")
    bootstrap = {}
    for label in ("three_way", "embed_output"):
        row, tied, none = summary.loc[label], scores[label], scores["none"]
        for i, metric in enumerate(("bleu", "chrf")):
            expected = stats_ttest([t[i] for t in tied], [n[i] for n in none])
            assert row[f"delta_{metric}_p"] == pytest.approx(expected, rel=1e-9), metric
            assert row[f"delta_{metric}_n"] == 3
        baseline = [h for seed in range(3) for h in degraded(KEEP["none"][seed])]
        system = [h for seed in range(3) for h in degraded(KEEP[label][seed])]
        os.environ["SACREBLEU_SEED"] = str(BOOTSTRAP_SEED)
        try:
            _, result = PairedTest(
                [("none", baseline), (label, system)],
                {"BLEU": BLEU()},
                [GENESIS * 3],
                test_type="bs",
                n_samples=BOOTSTRAP_SAMPLES,
            )()
        finally:
            del os.environ["SACREBLEU_SEED"]
        bootstrap[label] = result["BLEU"][1].p_value
        assert row["delta_bleu_bootstrap_p"] == bootstrap[label], label
    assert 0.05 < bootstrap["embed_output"] < 1  # neither extreme: the seed matters here
    # three_way: seeds disagree (no evidence over training variance), sentences do not
    assert summary.loc["three_way", "delta_bleu_p"] > 0.05 and bootstrap["three_way"] < 0.05

    markdown = (report / "summary.md").read_text()
    (line,) = [x for x in markdown.splitlines() if x.startswith("| bible_mt | tiny | three_way ")]
    header = next(x for x in markdown.splitlines() if x.startswith("| task |")).split(" | ")
    cells = line.split(" | ")
    assert "*" not in cells[header.index("ΔBLEU vs none")]  # bootstrap p < 0.05, seeds not
    assert "ΔchrF vs none" in header
    assert "not training variance" in markdown and "decoding fixed, trained systems" in markdown


def stats_ttest(a: list[float], b: list[float]) -> float:
    from scipy.stats import ttest_rel

    return float(ttest_rel(a, b).pvalue)
