"""tiedharness-eval's command line (fairseq's --beam/--lenpen, or key=value alike) and the
GNMT length penalty of its beam search."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TRAINED_COPY_RUN, ScriptedDecoder, batch, tiny_model, train_cli

from tiedharness.model.decoding import LengthPenalty, beam_translate, greedy_translate
from tiedharness.vocab import BOS_ID, EOS_ID

CLOSING = re.compile(
    r"^valid beam=4 lenpen=0\.6: BLEU = ([0-9.]+) "
    r"\(signature nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:"
)


def eval_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tiedharness-eval", path=str(Path(sys.executable).parent))
    assert exe, "tiedharness-eval is not installed next to this Python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny copy-task run with its checkpoint (as test_cli.py's eval test trains it)."""
    tmp_path = tmp_path_factory.mktemp("eval")
    run_dir = tmp_path / "run"
    out = train_cli(
        *TRAINED_COPY_RUN,
        f"hydra.run.dir={run_dir}",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir


def hypotheses_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_fairseq_options_and_key_value_pairs_decode_alike(run_dir):
    import sacrebleu

    dashed = eval_cli(str(run_dir), "--beam", "4", "--lenpen", "0.6")
    assert dashed.returncode == 0, dashed.stderr[-2000:]
    first = hypotheses_of(run_dir / "eval-valid-beam4-lp0.6.jsonl")
    pairs = eval_cli(str(run_dir), "beam=4", "lenpen=0.6")
    assert pairs.returncode == 0, pairs.stderr[-2000:]
    assert pairs.stdout == dashed.stdout  # the same scores, printed the same way
    rows = hypotheses_of(run_dir / "eval-valid-beam4-lp0.6.jsonl")
    assert rows == first
    closing = CLOSING.match(pairs.stdout.splitlines()[-1])
    assert closing, pairs.stdout
    refs = [[r["reference"] for r in rows]]
    bleu = sacrebleu.corpus_bleu([r["hypothesis"] for r in rows], refs).score
    assert closing.group(1) == f"{bleu:.2f}"
    entry = json.loads((run_dir / "run.json").read_text())["eval"]["valid/beam4/lp0.6"]
    assert entry["bleu"] == bleu and entry["decoded_examples"] == 40
    assert pairs.stdout.splitlines()[-1].endswith(f"(signature {entry['signatures']['bleu']})")
    # an option it does not know is refused, naming the valid ones
    unknown = eval_cli(str(run_dir), "beam=4", "length_penalty=0.6")
    assert unknown.returncode == 2 and "--lenpen X" in unknown.stderr, unknown.stderr[-2000:]


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
def test_gnmt_penalty_and_batch_size_from_the_command_line(run_dir):
    out = eval_cli(str(run_dir), "--beam=4", "--lenpen-style", "gnmt", "lenpen=0.6")
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.splitlines()[-1]
    assert last.startswith("valid beam=4 lenpen=0.6 lenpen_style=gnmt: BLEU = "), last
    record = json.loads((run_dir / "run.json").read_text())
    assert record["eval"]["valid/beam4/gnmt0.6"]["hypotheses"] == "eval-valid-beam4-gnmt0.6.jsonl"
    # three sources to a batch: the run's greedy decoding all the same
    out = eval_cli(str(run_dir), "beam=1", "--batch-size", "3", "split=valid")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].startswith("valid beam=1 lenpen=1: BLEU = ")
    greedy = hypotheses_of(run_dir / "decoded-valid.jsonl")
    again = hypotheses_of(run_dir / "eval-valid-beam1-lp1.jsonl")
    assert [r["hypothesis"] for r in again] == [r["hypothesis"] for r in greedy]


@pytest.mark.parametrize(
    "args",
    [("--beem", "4"), ("beem=4",), ("--split", "train"), ("beam=0",), ("--beam", "four")],
)
def test_a_bad_option_exits_2_naming_the_valid_ones(args):
    out = eval_cli("no-such-run", *args)
    assert out.returncode == 2, out.stderr
    for option in ("--beam", "--lenpen", "--lenpen-style", "--split", "--max-len"):
        assert option in out.stderr
    assert "--batch-size" in out.stderr and "--examples" in out.stderr


# ------------------------------------------------------------------- the length penalty


def test_length_penalty_formulas():
    gnmt, fairseq = LengthPenalty(0.6, "gnmt"), LengthPenalty(0.6, "fairseq")
    assert gnmt(10) == pytest.approx(2.5**0.6)  # ((5 + 10) / 6)^0.6
    assert gnmt(1) == pytest.approx(1.0)  # a one-token hypothesis is not penalised
    assert fairseq(10) == pytest.approx(10**0.6)
    assert LengthPenalty(0.0, "gnmt")(37) == LengthPenalty(0.0)(37) == 1.0
    with pytest.raises(ValueError, match="fairseq"):
        LengthPenalty(0.6, "wu")


class PenaltyDecides(ScriptedDecoder):
    """After BOS, EOS p=0.3 or 4 p=0.5; after one or two 4s, 4 again p=0.5 (EOS p=0.01);
    after three, EOS p=0.97; any other prefix, all tokens alike. The likeliest hypothesis
    is [EOS] (log 0.3); the best one per token is [4, 4, 4, EOS]: fairseq's penalty prefers
    it, GNMT's does not."""

    def next_probs(self, seq: list[int]) -> torch.Tensor:
        probs = torch.full((self.vocab,), 1.0)
        fours = seq[1:].count(4)
        if len(seq) == 1:
            probs[:] = 0.2 / (self.vocab - 2)
            probs[EOS_ID], probs[4] = 0.3, 0.5
        elif fours == len(seq) - 1 and fours < 3:
            probs[:] = 0.49 / (self.vocab - 2)
            probs[EOS_ID], probs[4] = 0.01, 0.5
        elif fours == len(seq) - 1:
            probs[:] = 0.03 / (self.vocab - 1)
            probs[EOS_ID] = 0.97
        return probs


def logprob(model: PenaltyDecides, tokens: list[int]) -> float:
    cache, total, prefix = model.new_cache(), 0.0, [BOS_ID]
    for t, token in enumerate(tokens):
        logp = model.decode(torch.tensor([[prefix[-1]]]), None, None, cache=cache, offset=t)
        total += float(logp[0, -1, token])
        prefix.append(token)
    return total


def hypothesis(out: torch.Tensor) -> list[int]:
    row = out[0].tolist()
    return row[: row.index(EOS_ID) + 1]


@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_gnmt_and_fairseq_penalties_pick_by_their_formulas(alpha):
    model, src = PenaltyDecides(), torch.tensor([[9]])
    short, long = [EOS_ID], [4, 4, 4, EOS_ID]
    for style, divisor in (
        ("fairseq", lambda n: n**alpha),
        ("gnmt", lambda n: ((5 + n) / 6) ** alpha),
    ):
        penalised = {tuple(h): logprob(model, h) / divisor(len(h)) for h in (short, long)}
        expected = list(max(penalised, key=penalised.get))
        out = beam_translate(model, src, 6, beam=2, length_penalty=LengthPenalty(alpha, style))
        assert hypothesis(out) == expected
    # the constructed case tells the two apart
    assert hypothesis(beam_translate(model, src, 6, 2, LengthPenalty(1.0, "fairseq"))) == long
    assert hypothesis(beam_translate(model, src, 6, 2, LengthPenalty(1.0, "gnmt"))) == short
    assert hypothesis(beam_translate(model, src, 6, 2, 1.0)) == long  # a number: fairseq's


@pytest.mark.parametrize("style", ["fairseq", "gnmt"])
def test_beam_of_one_is_greedy_under_either_penalty(style):
    scripted, src = PenaltyDecides(), torch.tensor([[9]])
    greedy = greedy_translate(scripted, src, 6)
    assert torch.equal(beam_translate(scripted, src, 6, 1, LengthPenalty(0.6, style)), greedy)
    for strategy in ("none", "three_way"):
        model = tiny_model(strategy, seed=3)
        src, _ = batch(b=5, s=9)
        penalty = LengthPenalty(0.6, style)
        assert torch.equal(
            greedy_translate(model, src, 20), beam_translate(model, src, 20, 1, penalty)
        )
