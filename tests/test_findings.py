"""The report's opening sentences on planted runs (issue 31, acceptance 3): run folders with
known parameter counts and per-seed losses and BLEU, so that every number of a sentence is
computed here from the planted values (scipy for the intervals, statsmodels for Holm's p)
and each sentence is checked exactly: a saving with its percentage, a Δ distinguishable
from zero and ones that are not, a declared primary comparison read by its corrected p,
and the caveats of one seed, a baseline at BLEU's floor, an unsettled verdict and runs that
had not converged. One test runs tiedharness-report and finds them atop summary.md and
report.html."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tiedharness.analysis.aggregate import load_runs, summarize
from tiedharness.analysis.findings import BLEU_FLOOR, Findings, findings
from tiedharness.tracking.record import RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

LM, MT = "bible_lm", "synth_translation"
PARAMS = {
    (LM, "none"): 244_480,
    (LM, "embed_output"): 180_480,
    (MT, "none"): 458_496,
    (MT, "embed_output"): 426_496,
    (MT, "encdec_vocab"): 394_496,
    (MT, "qkv"): 441_856,
}
# the baseline's own numbers (per seed: + NOISE), and each arm's per-seed Δ from them
BASE = {LM: {"val_loss": 5.0, "test_loss": 5.1}, MT: {"val_loss": 2.0, "test_loss": 2.1}}
MT_BLEU = {"bleu": 40.0, "test_bleu": 38.0}
NOISE = (0.013, -0.021)
DELTAS = {  # (Δ loss per seed, Δ BLEU per seed), the same on both splits
    (LM, "embed_output"): ((0.120, 0.1262), None),  # +0.123 ± 0.039: distinguishable
    (MT, "qkv"): ((0.1035, 0.1045), (-14.1, -14.42)),  # distinguishable on both metrics
    (MT, "embed_output"): ((0.010, -0.020), (0.5, -0.7)),  # intervals hold 0
    (MT, "encdec_vocab"): ((0.030, -0.010), (1.0, -0.4)),
}
SEEDS = (0, 1)
MT_ARMS = ("embed_output", "encdec_vocab", "qkv")


def metrics(task: str, arm: str, seed: int, bleu: dict) -> dict[str, float]:
    """A run's validation and test metrics."""
    loss_d, bleu_d = DELTAS.get((task, arm), ((0.0, 0.0), (0.0, 0.0)))
    out = {k: v + NOISE[seed] + loss_d[seed] for k, v in BASE[task].items()}
    if task == MT:
        out |= {k: v + 10 * NOISE[seed] + bleu_d[seed] for k, v in bleu.items()}
    return out


def write_sweep(
    folder: Path,
    seeds=SEEDS,
    bleu=MT_BLEU,
    report: dict | None = None,
    moving: float = 0.0,  # qkv's extra Δ at half the budget (0: the same as at the end)
    not_converged: int = 0,  # how many runs (the first ones) had not converged
) -> Path:
    job = 0
    for task, arm in PARAMS:
        for seed in seeds:
            final = metrics(task, arm, seed, bleu)
            half = {k: v + (moving if arm == "qkv" else 0.0) for k, v in final.items()}
            budgets = [{"fraction": 1.0, "step": 100, "tokens": 25_600, **final}]
            if moving:
                budgets.insert(0, {"fraction": 0.5, "step": 50, "tokens": 12_800, **half})
            record = RunRecord(
                run_id=f"planted-{job}", experiment="planted", sweep_id="planted",
                job_num=job, task=task, model="tiny", sharing=arm, seed=seed,
                status=RunStatus.completed,
                config={"task": {"name": task}, "trainer": {"seed": seed},
                        "sharing": {"strategies": [] if arm == "none" else [arm]},
                        **({"report": report} if report else {})},
                params={"total": PARAMS[(task, arm)]},
                metrics={**final, "steps": 100, "tokens": 25_600,
                         **({"converged": job >= not_converged} if not_converged else {})},
                budgets=budgets,
            )  # fmt: skip
            (folder / str(job)).mkdir(parents=True)
            RunFolder(folder / str(job)).write_record(record)
            job += 1
    return folder


def read(folder: Path) -> Findings:
    runs = load_runs(folder)
    return findings(runs, summarize(runs))


def per_seed(task: str, arm: str, metric: str) -> tuple[list[float], list[float]]:
    """(the arm's, the baseline's) planted values of one metric, seed by seed."""
    arm_values = [metrics(task, arm, s, MT_BLEU)[metric] for s in SEEDS]
    return arm_values, [metrics(task, "none", s, MT_BLEU)[metric] for s in SEEDS]


def interval(task: str, arm: str, metric: str) -> tuple[float, float, float]:
    """Mean paired Δ, its 95% half-width and paired-t p, from scipy."""
    arm_values, base = per_seed(task, arm, metric)
    test = stats.ttest_rel(arm_values, base)
    low, high = test.confidence_interval(0.95)
    return float(np.mean(np.subtract(arm_values, base))), (high - low) / 2, float(test.pvalue)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> Findings:
    return read(write_sweep(tmp_path_factory.mktemp("two_seeds")))


def test_a_saving_states_its_count_and_its_share_of_the_baseline(two_seeds):
    lm = PARAMS[(LM, "none")] - PARAMS[(LM, "embed_output")]
    share = 100 * lm / PARAMS[(LM, "none")]
    assert (lm, f"{share:.1f}") == (64_000, "26.2")
    mt = {arm: PARAMS[(MT, "none")] - PARAMS[(MT, arm)] for arm in MT_ARMS}
    parts = ", ".join(
        f"{arm} saves {saved:,} ({100 * saved / PARAMS[(MT, 'none')]:.1f}%)"
        for arm, saved in sorted(mt.items(), key=lambda item: -item[1])
    )
    assert two_seeds.savings == [
        "On bible_lm, against none's 244,480 parameters: embed_output saves 64,000 (26.2%).",
        f"On synth_translation, against none's 458,496 parameters: {parts}.",
    ]
    assert parts == (
        "encdec_vocab saves 64,000 (14.0%), embed_output saves 32,000 (7.0%), "
        "qkv saves 16,640 (3.6%)"
    )


def test_distinguishable_and_not_distinguishable_deltas(two_seeds):
    """Test split (the runs have one); loss to 3 decimals, BLEU to 2; the arms whose
    interval holds 0 are named as not distinguishable, nothing is ranked among them."""
    lm, lm_ci, _ = interval(LM, "embed_output", "test_loss")
    loss, loss_ci, _ = interval(MT, "qkv", "test_loss")
    bleu, bleu_ci, _ = interval(MT, "qkv", "test_bleu")
    for arm in ("embed_output", "encdec_vocab"):  # planted to hold 0
        for metric in ("test_loss", "test_bleu"):
            mean, ci, p = interval(MT, arm, metric)
            assert abs(mean) < ci and p > 0.05
    assert two_seeds.deltas == [
        f"embed_output: test loss {lm:+.3f} ± {lm_ci:.3f} nats against none on bible_lm, "
        "95% interval excluding 0.",
        f"qkv: test loss {loss:+.3f} ± {loss_ci:.3f} nats against none on synth_translation, "
        "95% interval excluding 0.",
        "Test loss on synth_translation, not distinguishable from none at 2 seeds: "
        "embed_output, encdec_vocab.",
        f"qkv: test BLEU {bleu:+.2f} ± {bleu_ci:.2f} points against none on synth_translation, "
        "95% interval excluding 0.",
        "Test BLEU on synth_translation, not distinguishable from none at 2 seeds: "
        "embed_output, encdec_vocab.",
    ]
    assert two_seeds.deltas[1] == (
        "qkv: test loss +0.104 ± 0.006 nats against none on synth_translation, "
        "95% interval excluding 0."
    )
    assert two_seeds.caveats == []  # two seeds, BLEU well off its floor, one budget


def test_one_seed_per_cell_is_a_caveat_and_no_delta_is_read(tmp_path):
    found = read(write_sweep(tmp_path, seeds=(0,)))
    assert found.deltas == []
    assert found.caveats == [
        "A single seed per cell: no Δ has an interval, so no difference in quality can be "
        "told from seed noise; train at least 2 seeds (trainer.seed=0,1,2; 3 for a usable "
        "interval)."
    ]
    assert len(found.savings) == 2  # parameter counts need no seeds


def test_an_arm_with_one_seed_among_arms_with_two_is_named(tmp_path):
    """qkv lost its second seed, bible_lm its baseline: no interval, no Δ, said per cell."""
    sweep = write_sweep(tmp_path)
    for folder in sweep.iterdir():
        record = RunFolder(folder).read_record()
        lost_seed = (record.sharing, record.seed) == ("qkv", 1)
        lost_baseline = (record.task, record.sharing) == (LM, "none")
        if lost_seed or lost_baseline:
            shutil.rmtree(folder)
    found = read(sweep)
    assert found.caveats == [
        "No none run of the same seed on bible_lm to compare with: embed_output.",
        "One seed paired with none on synth_translation, so no interval and no Δ read: qkv.",
    ]
    assert not any(s.startswith(("qkv", "embed_output")) for s in found.deltas)


def test_a_baseline_at_bleus_floor_is_a_caveat_and_its_bleu_deltas_are_not_read(tmp_path):
    floor = {"bleu": 0.5, "test_bleu": 0.35 - 10 * np.mean(NOISE)}  # none's test BLEU: 0.35
    found = read(write_sweep(tmp_path, bleu=floor))
    base = np.mean([metrics(MT, "none", s, floor)["test_bleu"] for s in SEEDS])
    assert base < BLEU_FLOOR == 5
    assert found.caveats == [
        f"none's test BLEU on synth_translation is {base:.2f}, below 5: BLEU differences "
        "there are meaningless at this budget and are not read here; train longer, or read "
        "the loss."
    ]
    assert f"{base:.2f}" == "0.35"
    assert not any("BLEU" in sentence for sentence in found.deltas)
    assert any(s.startswith("qkv: test loss +0.104") for s in found.deltas)  # loss still read


def test_a_primary_comparison_is_read_by_its_holm_p(tmp_path):
    """qkv and embed_output declared primary (test loss at the whole budget, every cell):
    three tests corrected together. What was not declared (BLEU, encdec_vocab) is
    exploratory, its p uncorrected."""
    report = {"primary": [{"arm": "qkv"}, {"arm": "embed_output"}]}
    found = read(write_sweep(tmp_path, report=report))
    tests = [(LM, "embed_output"), (MT, "qkv"), (MT, "embed_output")]
    raw = [interval(task, arm, "test_loss")[2] for task, arm in tests]
    holm = dict(zip(tests, multipletests(raw, method="holm")[1], strict=True))
    lm, lm_ci, _ = interval(LM, "embed_output", "test_loss")
    loss, loss_ci, _ = interval(MT, "qkv", "test_loss")
    bleu, bleu_ci, _ = interval(MT, "qkv", "test_bleu")
    assert holm[(MT, "embed_output")] > 0.05 > max(holm[(LM, "embed_output")], holm[(MT, "qkv")])
    assert found.deltas == [
        f"embed_output: test loss {lm:+.3f} ± {lm_ci:.3f} nats against none on bible_lm, "
        f"Holm-corrected p {holm[(LM, 'embed_output')]:.2g} (primary).",
        f"qkv: test loss {loss:+.3f} ± {loss_ci:.3f} nats against none on synth_translation, "
        f"Holm-corrected p {holm[(MT, 'qkv')]:.2g} (primary).",
        "Test loss on synth_translation, not distinguishable from none at 2 seeds after "
        "Holm's correction: embed_output.",
        "Test loss on synth_translation, not distinguishable from none at 2 seeds: encdec_vocab.",
        f"qkv: test BLEU {bleu:+.2f} ± {bleu_ci:.2f} points against none on synth_translation, "
        "95% interval excluding 0 (exploratory, uncorrected).",
        "Test BLEU on synth_translation, not distinguishable from none at 2 seeds: "
        "embed_output, encdec_vocab.",
    ]


def test_an_unsettled_verdict_and_runs_not_converged_are_caveats(tmp_path):
    """Evaluated at half and the whole budget: qkv's Δ falls by 0.2 between them in every
    seed (shrinking; every other arm's does not move: stable, not named); and the first 3
    runs had not converged."""
    found = read(write_sweep(tmp_path, moving=0.2, not_converged=3))
    total = len(PARAMS) * len(SEEDS)
    assert found.caveats == [
        "Δ test loss on synth_translation had not settled over the last two budgets: "
        "qkv (shrinking); a longer budget may change these comparisons.",
        f"3 of {total} completed runs had not converged (their validation loss was still "
        "falling): these comparisons describe training in progress.",
    ]


def test_on_the_vocabulary_axis_each_arm_is_read_against_its_baseline_column(tmp_path):
    """test_vocab_axis's planted sweep (two pairs × joint/separate arms × 3 seeds): every
    arm against none@separate, the cells named by what tells them apart (src=de)."""
    import test_vocab_axis as axis

    found = read(axis.write_sweep(tmp_path))
    assert found.savings[0] == (
        "On bible_pair (src=de), against none@separate's 1,000 parameters: "
        "encdec_vocab@joint saves 200 (20.0%), three_way@joint saves 200 (20.0%), "
        "none@joint saves none."
    )
    delta = axis.expected("de", ("three_way", "joint"), "val_loss")
    assert abs(delta["mean"]) > delta["ci95"]
    assert (
        f"three_way@joint: validation loss {delta['mean']:+.3f} ± {delta['ci95']:.3f} nats "
        "against none@separate on bible_pair (src=de), 95% interval excluding 0."
    ) in found.deltas
    assert (
        "Validation loss on bible_pair (src=de), not distinguishable from none@separate at 3 "
        "seeds: encdec_vocab@joint."
    ) in found.deltas
    unclear = [s for s in found.deltas if "not distinguishable" in s]
    assert len(unclear) == 4 and all("from none@separate at 3 seeds: " in s for s in unclear)


def test_the_report_opens_with_the_findings(tmp_path):
    """tiedharness-report on the planted sweep: summary.md and report.html open with them."""
    from test_budget_report import report_cli

    sweep = write_sweep(tmp_path / "sweep")
    result = report_cli(str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = read(sweep)
    markdown = (sweep / "report" / "summary.md").read_text()
    assert markdown.startswith(
        "## What the runs show\n\n" + " ".join(expected.savings) + "\n\n"
        + " ".join(expected.deltas) + "\n\n## Summary per cell"
    )  # fmt: skip
    page = (sweep / "report" / "report.html").read_text()
    top = page.index("<h1>tiedharness report</h1>")
    opening = page[top : page.index("<h2>Figures</h2>")]
    assert opening.index("<h2>What the runs show</h2>") < opening.index("Sweep: ")
    assert "qkv: test loss +0.104 ± 0.006 nats against none on synth_translation" in opening
    assert "embed_output saves 64,000 (26.2%)" in opening
