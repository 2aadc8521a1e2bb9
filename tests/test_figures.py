"""Figures a paper could print (issue 31, acceptance 4), on a planted sweep: four cells
that differ in one or two keys (the task, the pair's overlap, the model's width with its
vocabulary), each arm evaluated at three budgets. Panel titles name only what differs
between the panels, what they share is said once in the caption, no two texts of a
figure overlap (the renderer's own extents: four arms end within 0.003 nats of each
other, so their verdicts would be drawn on top of each other), and each figure's PDF is
one column wide, its smallest text at least 5 pt."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.container import Container
from matplotlib.text import Text

from tiedharness.analysis import plots
from tiedharness.analysis.aggregate import load_runs, summarize
from tiedharness.analysis.labels_layout import pack, text_extent
from tiedharness.analysis.titles import TITLE_LIMIT, name_panels
from tiedharness.model.names import COMPONENTS
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

FRACTIONS = (0.25, 0.5, 1.0)
SEEDS = (0, 1)
SEQ2SEQ_ARMS = ("none", "encdec_vocab", "three_way", "qkv", "qk")
LM_ARMS = ("none", "embed_output")
CELLS = [  # task, d_model, task.overlap, task.vocab_size, arms
    ("synth_translation", 64, 0.0, 1000, SEQ2SEQ_ARMS),
    ("synth_translation", 64, 0.5, 1000, SEQ2SEQ_ARMS),
    ("bible_lm", 64, None, 1000, LM_ARMS),
    ("bible_lm", 128, None, 8000, LM_ARMS),
]
PARAMS_SAVED = {  # in twentieths of none's parameters
    "none": 0,
    "embed_output": 1,
    "encdec_vocab": 1,
    "three_way": 2,
    "qkv": 3,
    "qk": 4,
}
# Δ test loss vs none at each budget: every arm ends within 0.003 nats of the others
DELTA = {
    "encdec_vocab": (0.30, 0.20, 0.100),
    "three_way": (0.25, 0.15, 0.101),
    "qkv": (0.20, 0.12, 0.102),
    "qk": (0.35, 0.18, 0.103),
    "embed_output": (0.20, 0.15, 0.100),
}
NOISE = (0.004, -0.004)  # per seed, the same in every arm
ARM_NOISE = (0.003, -0.002)  # per seed, on top in every arm but none: every Δ has an interval
COLUMN = 3.5  # inches: the widest a single-column figure may be
SMALLEST_PT = 5.0


def write_run(folder: Path, job: int, cell: tuple, arm: str, seed: int) -> None:
    """One run of a warmup-stable-decay schedule, evaluated at three budgets (schema 5)."""
    task, d, overlap, vocab_size, _ = cell
    seq2seq = task == "synth_translation"
    budgets = []
    for i, fraction in enumerate(FRACTIONS):
        loss = 4.0 - fraction + NOISE[seed]
        loss += DELTA[arm][i] + ARM_NOISE[seed] if arm != "none" else 0.0
        steps = int(160 * fraction)
        budgets.append(
            {"fraction": fraction, "step": steps, "tokens": 256 * steps, "val_loss": loss - 0.05, "test_loss": loss}
        )  # fmt: skip
    task_config = {"name": task, "vocab_size": vocab_size}
    total = 1000 * d - 50 * d * PARAMS_SAVED[arm]
    if overlap is not None:
        task_config["overlap"] = overlap
    record = RunRecord(
        run_id=f"figures-{job}", experiment="figures", sweep_id="figures", job_num=job,
        task=task, model="small", sharing=arm, seed=seed, status=RunStatus.completed,
        config={
            "task": task_config,
            "model": {"d_model": d, "d_ff": 4 * d, "n_heads": 4, "enc_layers": 2, "dec_layers": 2},
            "trainer": {"seed": seed, "schedule": "wsd", "branch_at": [0.25, 0.5]},
            "sharing": {"strategies": [] if arm == "none" else [arm]},
        },
        params={"total": total, "by_component": {name: total / len(COMPONENTS) for name, _ in COMPONENTS}},
        metrics={
            **{k: v for k, v in budgets[-1].items() if k != "fraction"},
            **({"vocab_size_src": 1000, "bleu": 30.0 - 10 * budgets[-1]["test_loss"] + seed} if seq2seq else {}),
            "steps": 160, "converged": None,
        },
        budgets=budgets,
    )  # fmt: skip
    (folder / str(job)).mkdir(parents=True)
    RunFolder(folder / str(job)).write_record(record)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    runs = [(cell, arm, seed) for cell in CELLS for arm in cell[-1] for seed in SEEDS]
    for job, run in enumerate(runs):
        write_run(folder, job, *run)
    runs = load_runs(folder)
    return runs, summarize(runs)


SAVED_AS_FILES = ("delta_vs_budget", "tradeoff_loss")  # PNG and PDF: what keeps this test slow


@pytest.fixture(scope="module")
def drawn(sweep, tmp_path_factory):
    """name → (figure, caption, PDF path or None) of the figures this test reads."""
    runs, summary = sweep
    out = tmp_path_factory.mktemp("drawn")
    figures = {}
    for name in ("delta_vs_budget", "tradeoff_loss", "tradeoff_bleu", "param_budget"):
        fig = plots.draw(name, runs, summary)
        caption = plots.describe(name, fig)
        pdf = plots.save(fig, out, name)["pdf"] if name in SAVED_AS_FILES else None
        FigureCanvasAgg(fig)  # a canvas again (save closes the figure), for the renderer
        figures[name] = (fig, caption, pdf)
    return figures


def texts(fig) -> list[Text]:
    """Every text the figure shows: titles, axis labels, the tick labels in view, data
    labels and the legend's entries."""
    found = [*fig.texts, *(t for legend in fig.legends for t in legend.get_texts())]
    for ax in fig.axes:
        found += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for i, axis in enumerate((ax.xaxis, ax.yaxis)):
            low, high = sorted(axis.get_view_interval())
            span = 1e-9 * max(1.0, abs(high - low))
            ticks = axis.get_majorticklabels()
            found += [t for t in ticks if low - span <= t.get_position()[i] <= high + span]
    return [t for t in found if t.get_visible() and t.get_text().strip()]


def overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes overlap (touching edges do not count)."""
    fig.canvas.draw()  # every text where the figure puts it at its own dpi
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), text_extent(t, renderer)) for t in texts(fig)]
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.x0 < box_b.x1 - 0.5 and box_b.x0 < box_a.x1 - 0.5
        and box_a.y0 < box_b.y1 - 0.5 and box_b.y0 < box_a.y1 - 0.5
    ]  # fmt: skip


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def pdf_size(path: Path) -> tuple[float, float]:
    """The PDF's page in inches (its MediaBox)."""
    box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)", path.read_bytes())
    assert box, path
    return float(box.group(1)) / 72, float(box.group(2)) / 72


@pytest.mark.parametrize("name", ["delta_vs_budget", "tradeoff_loss", "tradeoff_bleu"])
def test_titles_name_what_differs_in_a_few_words(drawn, name):
    fig, _, _ = drawn[name]
    named = titles(fig)
    assert all(0 < len(title) <= TITLE_LIMIT for title in named), named
    assert len(set(named)) == len(named)  # each panel told apart
    # the configuration's full text is in no title: the task's and keys' short names are
    assert not any("synth_translation" in t or "=" in t.replace("d=", "") for t in named), named


def test_the_delta_figure_names_task_width_and_overlap(drawn):
    fig, caption, _ = drawn["delta_vs_budget"]
    assert sorted(titles(fig)) == [
        "Bible LM · d=128",
        "Bible LM · d=64",
        "synth MT · d=64 · overlap 0",
        "synth MT · d=64 · overlap 0.5",
    ]
    # what every panel shares is said once, in the caption; what follows the task or the
    # width (layers, ff, the vocabulary) is named there too
    assert "Every panel: 4 heads, preset small." in caption
    assert (
        "Also differing, fixed by what the titles name: model ff, model layers, task.vocab_size."
        in caption
    )
    assert caption.startswith(plots.describe("delta_vs_budget"))  # the figure's own text first
    assert not any("heads" in t or "small" in t for t in titles(fig))


def test_the_bleu_figure_says_its_one_task_in_the_caption(drawn):
    """Only the translation cells report BLEU: their task and vocabulary are shared, said
    in the caption and in no title."""
    fig, caption, _ = drawn["tradeoff_bleu"]
    assert sorted(titles(fig)) == ["overlap 0", "overlap 0.5"]
    assert "Every panel: synth_translation" in caption and "task.vocab_size=1000" in caption
    assert not any("synth" in t or "types" in t for t in titles(fig))


@pytest.mark.parametrize("name", ["delta_vs_budget", "tradeoff_loss", "param_budget"])
def test_no_two_texts_overlap(drawn, name):
    fig, _, _ = drawn[name]
    assert overlaps(fig) == []


def test_the_verdicts_would_collide_where_they_are_not_placed_apart(drawn):
    """The check above can fail: put back where each line ends (as before they were
    spread), the verdicts of the four arms that end together overlap."""
    fig, _, _ = drawn["delta_vs_budget"]
    labels = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "data-label"]
    placed = [label.xyann for label in labels]
    try:
        for label in labels:
            label.xyann = (3, 0)
        verdicts = {label.get_text() for label in labels}
        assert any(a in verdicts and b in verdicts for a, b in overlaps(fig))
    finally:
        for label, xy in zip(labels, placed, strict=True):
            label.xyann = xy


def test_moved_verdicts_keep_a_leader_to_their_line(drawn):
    fig, _, _ = drawn["delta_vs_budget"]
    (ax,) = [ax for ax in fig.axes if ax.get_title() == "synth MT · d=64 · overlap 0.5"]
    labels = [t for t in ax.texts if t.get_gid() == "data-label"]
    assert len(labels) == 4
    moved = [label for label in labels if label.arrow_patch.get_visible()]
    assert moved and all(label.xyann[1] != 0 for label in moved)


@pytest.mark.parametrize("name", SAVED_AS_FILES)
def test_each_pdf_is_one_column_wide_with_legible_text(drawn, name):
    fig, _, pdf = drawn[name]
    width, _ = pdf_size(pdf)
    assert width <= COLUMN, f"{name}: {width:.2f} in wide"
    scale = min(1.0, 3.3 / width)  # printed at a column of 3.3 in
    smallest = min(t.get_fontsize() for t in texts(fig))
    assert smallest * scale >= SMALLEST_PT


def test_a_strategy_keeps_its_colour_and_marker_across_figures(drawn):
    """Every line and point drawn for a label, in both figures and every panel, has one
    colour and one marker."""
    seen: dict[str, set] = {}
    for name in ("delta_vs_budget", "tradeoff_loss"):
        for ax in drawn[name][0].axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                line = handle[0] if isinstance(handle, Container) else handle  # errorbar's data
                seen.setdefault(label, set()).add((to_hex(line.get_color()), line.get_marker()))
    assert set(seen) >= {"embed_output", "encdec_vocab", "three_way", "qkv", "qk"}
    assert all(len(styles) == 1 for styles in seen.values()), seen


def test_titles_drop_usual_values_and_stay_short():
    """A value nearly every panel shares is the caption's ("unless a title says
    otherwise"); a title too long for its limit is cut."""
    rows = [
        pd.Series({"task": "bible_lm", "model.init": init, "task.vocab_size": v})
        for init, v in [("fairseq", 1000), ("fairseq", 8000), ("fairseq", 16000), ("t5", 1000)]
    ]
    named = name_panels(rows, ["task", "model.init", "task.vocab_size"])
    assert named.titles == ["1k types", "8k types", "16k types", "t5 init · 1k types"]
    assert named.caption == (
        "Every panel: bible_lm. Unless a title says otherwise: model.init=fairseq."
    )
    long = [pd.Series({"task": "t", "x.a_very_long_key": "v" * 80}), pd.Series({"task": "t"})]
    assert all(len(t) <= TITLE_LIMIT for t in name_panels(long, ["x.a_very_long_key"]).titles)


def test_pack_moves_labels_apart_as_little_as_it_can():
    assert pack([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 0.5) == [-1.5, 0.0, 1.5]
    assert pack([0.0, 10.0, 10.2], [1.0, 1.0, 1.0], 0.5) == pytest.approx([0.0, 9.35, 10.85])


def test_a_y_label_taller_than_its_panel_is_wrapped():
    """Stacked panels' y labels would otherwise run into each other (the vocabulary
    axis's `Δ val. loss vs none@separate (nats/token)`)."""
    from tiedharness.analysis.style import finish, panels

    fig, axes = panels(2)
    for ax in axes:
        ax.set_ylabel("Δ validation loss vs none@separate, paired over seeds (nats/token)")
    finish(fig, axes)
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        label = ax.yaxis.label
        assert "\n" in label.get_text()
        assert label.get_window_extent(renderer).height <= ax.get_window_extent(renderer).height
    assert overlaps(fig) == []


def test_the_pareto_front_skips_points_whose_order_seed_noise_could_swap():
    """By hand: 3.0 ± 0.2 and 2.9 ± 0.2 overlap, so the front goes from the first straight
    to 2.0 ± 0.1; with intervals of 0.01 all three are apart; without intervals (one
    seed) no front is drawn at all."""
    from tiedharness.analysis.plots import established

    panel = pd.DataFrame(
        {"params_total_mean": [1e6, 2e6, 3e6], "val_loss_mean": [3.0, 2.9, 2.0],
         "val_loss_ci95": [0.2, 0.2, 0.1]}
    )  # fmt: skip
    assert established(panel, "val_loss_mean", maximize=False) == [(1.0, 3.0), (3.0, 2.0)]
    tight = panel.assign(val_loss_ci95=0.01)
    assert established(tight, "val_loss_mean", maximize=False) == [
        (1.0, 3.0),
        (2.0, 2.9),
        (3.0, 2.0),
    ]
    assert established(panel.drop(columns="val_loss_ci95"), "val_loss_mean", False) == []
