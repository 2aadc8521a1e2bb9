"""tiedharness-params as a user runs it: the installed entry point, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TRAINED_COPY_RUN, train_cli

from tiedharness.model.sharing import STRATEGIES


def params_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tiedharness-params", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-params is not installed next to this Python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


BASE = ["model=base", "model.positions=sinusoidal", "model.norm=post"]


def test_acceptance_vaswani_base_three_way_json():
    out = params_cli(*BASE[:1], "sharing=three_way", *BASE[1:], "vocab_size=37000", "format=json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sharing"] == "three_way"
    assert report["total"] == 63082496
    assert report["untied_total"] == 44_138_496 + 3 * 37000 * 512
    assert sum(report["by_component"].values()) == report["total"]


def test_every_strategy_in_one_json_list():
    out = params_cli(*BASE, "vocab_size=32768", "format=json")
    assert out.returncode == 0, out.stderr
    rows = {row["sharing"]: row for row in json.loads(out.stdout)}
    assert list(rows) == list(STRATEGIES)
    assert rows["three_way"]["total"] == 60915712
    assert rows["none"]["total"] == rows["none"]["untied_total"] == 44_138_496 + 3 * 32768 * 512
    # sinusoidal positions leave nothing to tie: the row says why instead of a number
    assert "set model.positions=learned" in rows["positional"]["error"]
    assert "total" not in rows["positional"]


def test_table_lists_every_strategy():
    out = params_cli("model=tiny", "vocab_size=1000")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("arch=encdec d_model=32 layers=2+2")
    names = [line.split()[0] for line in lines[3:] if line.strip()]
    assert names == list(STRATEGIES)
    none_row = lines[3].split()
    assert none_row[1] == f"{3 * 1000 * 32 + 2 * 64 * 32 + 2 * 2 * 32 + 2 * 8544 + 2 * 12832:,}"


def test_separate_vocabularies_refuse_encdec_vocab_with_the_fix():
    out = params_cli("sharing=encdec_vocab", "src_vocab_size=9000", "tgt_vocab_size=7000")
    assert out.returncode == 2
    assert out.stdout == ""
    assert "needs a joint source-target vocabulary" in out.stderr
    assert "set task.vocab=joint" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["sharing=qkv", "sharing.strategies=[tied_everything]"],
            "known: none, embed_output, encdec_vocab",
        ),
        (["sharing=three_way", "model.arch=lm"], "decoder-only LM with no encoder"),
        (["sharing=cross_layer", "sharing.cross_layer.unique=5"], "does not fit a stack of 3"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message):
    out = params_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr


def test_unknown_group_option_lists_the_choices():
    out = params_cli("sharing=tied_everything")
    assert out.returncode != 0
    assert "Could not find 'sharing/tied_everything'" in out.stderr
    assert "three_way" in out.stderr


# ---------------------------------------------------------------------------- tiedharness-data


def data_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tiedharness-data", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-data is not installed next to this Python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def _data_json(*args: str) -> dict:
    out = data_cli(*args, "format=json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_bible_mt_statistics_have_the_contract_keys():
    stats = _data_json("task=bible_mt")
    assert sum(s["examples"] for s in stats["splits"].values()) >= 30_000
    assert set(stats["splits"]) == {"train", "valid", "test"}
    assert stats["vocab"]["src"] == stats["vocab"]["tgt"] == 8000
    for key in ("overlap", "padding_fraction", "build_s"):
        assert isinstance(stats[key], float)
    assert stats["splits"]["train"]["mean_src_len"] > 10
    again = _data_json("task=bible_mt", "task.vocab=joint")
    assert again["cache_hit"] and again["build_s"] < 1.0
    assert again["overlap"] > 0.1


@pytest.mark.slow
def test_script_shift_statistics_report_zero_overlap():
    assert (
        _data_json("task=bible_mt", "task.vocab=joint", "task.script_shift=true")["overlap"] == 0.0
    )


@pytest.mark.slow
def test_synthetic_overlap_from_the_command_line():
    common = ["task=synth_translation", "task.vocab=joint", "task.train_examples=3000"]
    overlaps = [_data_json(*common, f"task.overlap={x}")["overlap"] for x in (0, 0.5, 1.0)]
    assert overlaps[0] == 0.0 and overlaps[0] < overlaps[1] < overlaps[2]


def test_data_table_and_errors(tmp_path):
    out = data_cli("task=copy", "task.train_examples=500")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("task=copy (seq2seq)  vocab: joint word")
    missing = data_cli("task=bible_lm", f"task.sword_path={tmp_path}")
    assert missing.returncode == 2
    assert "apt-get install sword-text-kjv sword-text-sparv" in missing.stderr
    byo = data_cli("task=parallel_text")
    assert byo.returncode == 2 and "needs task.data_dir" in byo.stderr


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_eval_decodes_a_run_again_from_its_checkpoint(tmp_path):
    """beam=1 is the run's greedy decoding (same hypotheses, exact match and BLEU as
    sacreBLEU computes from the run's own decoded file); beam=4 records its scores with
    sacreBLEU's signature and keeps its hypotheses."""
    import sacrebleu

    run_dir = tmp_path / "run"
    # a rate at which 60 steps already produce outputs (at the default, empty ones)
    out = train_cli(
        *TRAINED_COPY_RUN,
        f"hydra.run.dir={run_dir}",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    exe = shutil.which("tiedharness-eval", path=str(Path(sys.executable).parent))
    for beam in (1, 4):
        result = subprocess.run(
            [exe, str(run_dir), f"beam={beam}"], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((run_dir / "run.json").read_text())
    greedy = [
        json.loads(line) for line in (run_dir / "decoded-valid.jsonl").read_text().splitlines()
    ]
    again = [
        json.loads(line)
        for line in (run_dir / "eval-valid-beam1-lp1.jsonl").read_text().splitlines()
    ]
    assert again == greedy  # the same examples, the same hypotheses
    assert sum(bool(r["hypothesis"]) for r in greedy) > 30  # not empty outputs
    first = record["eval"]["valid/beam1/lp1"]
    assert first["exact_match"] == record["metrics"]["exact_match"]
    refs = [[r["reference"] for r in greedy]]
    assert first["bleu"] == sacrebleu.corpus_bleu([r["hypothesis"] for r in greedy], refs).score
    # the run's own greedy scores of the same examples, for comparison: beam=1 equals them
    assert first["training_greedy"] == {k: first[k] for k in ("exact_match", "bleu", "chrf")}
    fourth = record["eval"]["valid/beam4/lp1"]
    assert fourth["training_greedy"] == first["training_greedy"]
    # max_len=3: greedy outputs cut after three tokens, prefixes of the uncut ones
    result = subprocess.run(
        [exe, str(run_dir), "beam=1", "max_len=3"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "valid/beam1/lp1/len3" in json.loads((run_dir / "run.json").read_text())["eval"]
    cut = [
        json.loads(line)["hypothesis"]
        for line in (run_dir / "eval-valid-beam1-lp1-len3.jsonl").read_text().splitlines()
    ]
    full = [r["hypothesis"] for r in greedy]
    assert all(f.startswith(c) for c, f in zip(cut, full, strict=True))
    assert all(len(c.split()) <= 3 for c in cut) and any(len(f.split()) > 3 for f in full)
    assert fourth["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")
    assert (run_dir / fourth["hypotheses"]).is_file() and fourth["decoded_examples"] == 40


# ---------------------------------------------------------------------------- schema and skips


def test_format_is_checked_by_the_schema():
    """Hydra refuses a format outside the enum, naming the choices (format=json is
    test_acceptance_vaswani_base_three_way_json's)."""
    out = params_cli("format=xml")
    assert out.returncode != 0 and out.stdout == ""
    assert "format" in out.stderr and "table" in out.stderr and "json" in out.stderr


def test_data_format_is_checked_by_the_schema():
    out = data_cli("task=copy", "format=xml")
    assert out.returncode != 0 and out.stdout == ""
    assert "table" in out.stderr and "json" in out.stderr


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_a_cross_layer_plan_that_does_not_fit_is_skipped_in_a_sweep(tmp_path):
    """sequence needs the layer count to be a multiple of unique: 3 blocks do not fit the
    tiny model's 2 layers, so the sweep records the cell as skipped, with the fix."""
    exe = shutil.which("tiedharness-train", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-train is not installed next to this Python"
    command = (
        "-m task=copy model=tiny sharing=cross_layer sharing.cross_layer.unique=3 "
        "sharing.cross_layer.plan=sequence trainer.max_steps=2 logger=none"
    )
    args = [exe, *command.split(), f"results_dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    (record_file,) = tmp_path.glob("*/*/*/run.json")  # results/<experiment>/<sweep>/<job>
    record = json.loads(record_file.read_text())
    assert record["status"] == "skipped"
    assert "2 layers are not a multiple of 3" in record["error"]
    assert "choose unique from [1, 2] or plan=cycle" in record["error"]
