"""The model computes what a Transformer should: causal, padding-blind, cache-exact."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    LM_STRATEGIES,
    VOCAB,
    ScriptedDecoder,
    batch,
    logits_of,
    tiny_cfg,
    tiny_model,
)

from tiedharness.model.config import Init, ModelConfig
from tiedharness.model.decoding import greedy_continue, greedy_translate
from tiedharness.model.transformer import SinusoidalPositions
from tiedharness.vocab import BOS_ID, EOS_ID, PAD_ID, Vocab

VARIANTS = [
    {},
    {"norm": "post"},
    {"positions": "sinusoidal"},
    {"bias": False, "activation": "gelu", "embed_scale": False},
    {"init": "gpt2"},
    {"init": "t5", "norm": "post"},
]


@pytest.mark.parametrize("model_options", VARIANTS)
@pytest.mark.parametrize("arch", ["encdec", "lm"])
def test_future_target_tokens_leave_earlier_logits_unchanged(model_options, arch):
    model = tiny_model(arch=arch, model=model_options).double().eval()
    src, tgt = batch()
    changed = tgt.clone()
    changed[:, 3:] = torch.randint(4, VOCAB, changed[:, 3:].shape)
    assert not torch.equal(changed, tgt)
    before, after = logits_of(model, src, tgt), logits_of(model, src, changed)
    torch.testing.assert_close(after[:, :3], before[:, :3], rtol=0, atol=1e-12)
    assert not torch.allclose(after[:, 3:], before[:, 3:])


@pytest.mark.parametrize("strategy", ["qk", "all"])
def test_causality_holds_under_attention_sharing(strategy):
    model = tiny_model(strategy, qk_mask_self=strategy == "qk").double().eval()
    src, tgt = batch()
    changed = tgt.clone()
    changed[:, 4:] = 5
    torch.testing.assert_close(
        model(src, changed)[:, :4], model(src, tgt)[:, :4], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("model_options", VARIANTS)
def test_padding_leaves_non_pad_outputs_unchanged(model_options):
    # every tie that the architecture allows (positional needs learned positions)
    strategy = "qkv" if model_options.get("positions") == "sinusoidal" else "all"
    model = tiny_model(strategy, model=model_options).double().eval()
    src, tgt = batch(b=2, s=5, t=4)
    pad_src = torch.cat([src, torch.full((2, 3), PAD_ID)], dim=1)  # (2, 8)
    pad_tgt = torch.cat([tgt, torch.full((2, 2), PAD_ID)], dim=1)  # (2, 6)
    memory, _ = model.encode(src)
    padded_memory, _ = model.encode(pad_src)
    torch.testing.assert_close(padded_memory[:, :5], memory, rtol=0, atol=1e-12)
    torch.testing.assert_close(model(pad_src, pad_tgt)[:, :4], model(src, tgt), rtol=0, atol=1e-12)


def test_padding_differs_per_row():
    """One row padded, one not: each row equals its unpadded self."""
    model = tiny_model().double().eval()
    src, tgt = batch(b=2, s=6, t=4)
    short = src[1:, :3]
    mixed = src.clone()
    mixed[1, 3:] = PAD_ID
    logits = model(mixed, tgt)
    torch.testing.assert_close(logits[1:], model(short, tgt[1:]), rtol=0, atol=1e-12)
    torch.testing.assert_close(logits[:1], model(src[:1], tgt[:1]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", ["none", "qkv", "kv", "qk", "cross_layer", "all", "three_way"])
def test_cached_decoding_gives_the_same_tokens(strategy):
    model = tiny_model(strategy).double()
    src, _ = batch(b=4)
    cached = greedy_translate(model, src, max_len=20, use_cache=True)
    uncached = greedy_translate(model, src, max_len=20, use_cache=False)
    assert cached.shape[1] >= 1
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("strategy", LM_STRATEGIES)
def test_cached_lm_continuation_gives_the_same_tokens(strategy):
    model = tiny_model(strategy, arch="lm").double()
    _, prefix = batch(b=3, t=5)
    cached = greedy_continue(model, prefix, max_new=15, use_cache=True)
    assert torch.equal(cached, greedy_continue(model, prefix, max_new=15, use_cache=False))


@pytest.mark.parametrize(
    ("strategy", "init"),
    [("none", "fairseq"), ("qkv", "fairseq"), ("cross_layer", "fairseq"), ("all", "t5")],
)
def test_cached_step_logits_equal_full_forward(strategy, init):
    """Stronger than equal argmax: every incremental step reproduces the full logits."""
    model = tiny_model(strategy, model={"init": init}).double().eval()
    src, tgt = batch()
    full = model(src, tgt)
    memory, src_pad = model.encode(src)
    cache = model.new_cache()
    steps = [
        model.decode(tgt[:, t : t + 1], memory, src_pad, cache=cache, offset=t)
        for t in range(tgt.shape[1])
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)


def test_decoding_stops_rows_at_eos_and_pads_after():
    model = tiny_model().eval()
    with torch.no_grad():  # make EOS (id 2) the argmax: final hidden ≈ 1, EOS row = 100
        model.decoder.norm.bias.fill_(1.0)
        model.output.weight[2] = 100.0
    src, _ = batch(b=2)
    out = greedy_translate(model, src, max_len=10)
    assert out.tolist() == [[2], [2]]


def test_sequence_longer_than_max_len_is_a_clear_error():
    model = tiny_model()
    src = torch.randint(4, VOCAB, (1, 65))
    with pytest.raises(ValueError, match=r"exceeds model\.max_len=64"):
        model.encode(src)


def test_sinusoidal_table_matches_the_paper_formula():
    table = SinusoidalPositions(10, 8).table
    pos, i = 7, 2  # dimension 2i = 4 is sin, 2i+1 = 5 is cos
    angle = pos / 10000 ** (2 * i / 8)
    assert table[pos, 2 * i].item() == pytest.approx(
        torch.sin(torch.tensor(angle)).item(), abs=1e-6
    )
    assert table[pos, 2 * i + 1].item() == pytest.approx(
        torch.cos(torch.tensor(angle)).item(), abs=1e-6
    )


def test_post_ln_has_no_final_norm_and_pre_ln_has_one():
    assert tiny_model(model={"norm": "post"}).decoder.norm is None
    assert tiny_model().decoder.norm is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"norm": "sandwich"}, "model.norm='sandwich': must be one of pre, post"),
        ({"d_model": 30}, "model.d_model=30: must be divisible by model.n_heads=4"),
        ({"arch": "decoder"}, "model.arch='decoder': must be one of auto, encdec, lm"),
        ({"dropout": 1.5}, r"model.dropout=1.5: must lie in \[0, 1\]"),
        ({"d_ff": 0}, "model.d_ff=0: must be > 0"),
        ({"init": "xavier"}, "model.init='xavier': must be one of fairseq, gpt2, t5"),
        ({"init": "t5", "embed_scale": True}, r"model.embed_scale=True: model.init=t5 .* std √d"),
    ],
)
def test_bad_model_options_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        tiny_cfg(**override)


def test_unknown_model_option_is_named():
    from tiedharness.schema import from_values

    with pytest.raises(KeyError, match="Key 'layers' not in 'ModelConfig'"):
        from_values(ModelConfig, {"layers": 6})


# ---------------------------------------------------------------------------- initialisation

WIDE = {"d_model": 64, "d_ff": 128, "max_len": 256}  # with a 1000-token vocabulary: big samples
D, FF = WIDE["d_model"], WIDE["d_ff"]


def wide_model(init: str, *strategies: str, arch: str = "encdec", **options):
    model = {**WIDE, "init": init, **options}
    return tiny_model(*strategies, arch=arch, vocab=Vocab.shared(1000), model=model)


def assert_std(tensor: torch.Tensor, expected: float, name: str) -> None:
    """Mean 0 and standard deviation `expected`, within 5 standard errors for a sample of
    n = numel: SE(std) ≈ σ/√(2n) for a normal sample (less for a uniform one), SE(mean)
    = σ/√n."""
    t, n = tensor.detach().double(), tensor.numel()
    assert abs(t.std().item() - expected) < 5 * expected / math.sqrt(2 * n), (name, t.std())
    assert abs(t.mean().item()) < 5 * expected / math.sqrt(n), (name, t.mean())


def expected_stds(init: str, arch: str) -> dict[str, float]:
    """The initial std of some weights, from each convention's definition (d=64, d_ff=128)."""
    paths = ["decoder.embed", "decoder.pos", "output", "decoder.layers.0.self_attn.q_proj"]
    paths += ["decoder.layers.1.self_attn.out_proj", "decoder.layers.0.ffn.fc1"]
    paths += ["decoder.layers.1.ffn.fc2"]
    if arch == "encdec":
        paths += ["decoder.layers.1.cross_attn.k_proj", "decoder.layers.1.cross_attn.out_proj"]
        paths += ["encoder.layers.1.ffn.fc2"]
    kind = {f"{p}.weight": p.rsplit(".", 1)[-1] for p in paths}  # → embed, pos, q_proj, …
    if init == "fairseq":
        # embeddings and output N(0, d^-1/2); Xavier uniform: std √(2 / (fan_in + fan_out))
        std = {"fc1": math.sqrt(2 / (D + FF)), "fc2": math.sqrt(2 / (FF + D))}
        return {p: std.get(k, D**-0.5) for p, k in kind.items()}
    if init == "gpt2":
        # N(0, 0.02); residual projections ÷ √(residual sublayers of their stack)
        sublayers = {"decoder": 3 * 2 if arch == "encdec" else 2 * 2, "encoder": 2 * 2}
        residual = [p for p, k in kind.items() if k in ("out_proj", "fc2")]
        std = {p: 0.02 / math.sqrt(sublayers[p.split(".")[0]]) for p in residual}
        return {p: std.get(p, 0.02) for p in kind}
    # t5: embeddings N(0, 1), linears N(0, fan_in^-1/2), so d^-1/2 but for fc2 (fan_in d_ff)
    std = {"embed": 1.0, "pos": 1.0, "fc2": FF**-0.5}
    return {p: std.get(k, D**-0.5) for p, k in kind.items()}


@pytest.mark.parametrize("arch", ["encdec", "lm"])
@pytest.mark.parametrize("init", [i.value for i in Init])
def test_each_init_draws_its_convention(init, arch):
    model = wide_model(init, arch=arch)
    for path, std in expected_stds(init, arch).items():
        assert_std(model.get_parameter(path), std, path)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name


FAIRSEQ_FINGERPRINT = {
    # the tiny model at seed 0 as the code before `model.init` drew it: the sum of |θ| over
    # the state_dict, then decoder.embed.weight[5, 3], layers.1.ffn.fc2.weight[7, 11] and
    # output.weight[49, 31] (torch's CPU generator: a change of its algorithm moves these too)
    "encdec": (7450.742708696563, -0.12528005242347717, -0.055135518312454224, 0.09387923777103424),
    "lm": (3169.0243188617114, -0.031067831441760063, -0.1926749050617218, 0.016659371554851532),
}


@pytest.mark.parametrize("arch", ["encdec", "lm"])
def test_default_init_is_fairseq_and_draws_what_it_always_drew(arch):
    default = tiny_model(arch=arch).state_dict()
    fairseq = tiny_model(arch=arch, model={"init": "fairseq"}).state_dict()
    assert tiny_cfg().init == Init.fairseq
    assert default.keys() == fairseq.keys()
    assert all(torch.equal(default[k], fairseq[k]) for k in default)
    fingerprint = (
        sum(t.double().abs().sum().item() for t in default.values()),
        default["decoder.embed.weight"][5, 3].item(),
        default["decoder.layers.1.ffn.fc2.weight"][7, 11].item(),
        default["output.weight"][49, 31].item(),
    )
    assert fingerprint == pytest.approx(FAIRSEQ_FINGERPRINT[arch], rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("init", "embed_scale", "scaled"),
    [
        ("fairseq", None, True),
        ("gpt2", None, False),
        ("t5", None, False),
        ("fairseq", False, False),
        ("gpt2", True, True),
        ("t5", False, False),
    ],
)
def test_each_init_implies_its_embedding_scale(init, embed_scale, scaled):
    """model.embed_scale unset follows the convention; set, it overrides it (but t5's
    unit-variance embeddings refuse ×√d: test_bad_model_options_are_named)."""
    assert tiny_cfg(init=init, embed_scale=embed_scale).scales_embeddings is scaled
    model = tiny_model(model={"init": init, "embed_scale": embed_scale})
    assert model.encoder.scale == model.decoder.scale == (math.sqrt(32) if scaled else 1.0)


@pytest.mark.parametrize(
    ("init", "strategy", "arch", "scaled"),
    [
        ("t5", "embed_output", "encdec", True),
        ("t5", "three_way", "encdec", True),
        ("t5", "all", "encdec", True),
        ("t5", "encdec_vocab", "encdec", False),  # decoder embedding tied, but not to the output
        ("t5", "none", "encdec", False),
        ("t5", "embed_output", "lm", True),
        ("t5", "all", "lm", True),
        ("t5", "none", "lm", False),
        ("fairseq", "embed_output", "encdec", False),
        ("gpt2", "three_way", "encdec", False),
        ("gpt2", "embed_output", "lm", False),
    ],
)
def test_t5_scales_logits_by_d_to_the_minus_half_only_with_a_tied_output(
    init, strategy, arch, scaled
):
    model = tiny_model(strategy, arch=arch, model={"init": init}).double().eval()
    src, tgt = batch()
    features = model.features(src, tgt) if arch == "encdec" else model.features(tgt)
    tied = model.output.weight is model.decoder.embed.weight
    assert tied == (strategy in ("embed_output", "three_way", "all"))
    weight = model.decoder.embed.weight if tied else model.output.weight
    expected = (features @ weight.T) * (32**-0.5 if scaled else 1.0)
    torch.testing.assert_close(logits_of(model, src, tgt), expected, rtol=1e-12, atol=1e-12)
    if arch == "encdec":  # the decoding entry point scales the same way
        memory, src_pad = model.encode(src)
        decoded = model.decode(tgt, memory, src_pad)
        torch.testing.assert_close(decoded, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- beam search


class BeamBeatsGreedy(ScriptedDecoder):
    """After BOS, token 4 (p=0.5) or 5 (p=0.4); after 4 nothing is likely (EOS p=0.3, the
    best); after 5, EOS p=0.9. Greedy takes 4 then EOS: 0.5 × 0.3 = 0.15; the best
    sequence is 5 then EOS: 0.4 × 0.9 = 0.36."""

    def next_probs(self, seq: list[int]) -> torch.Tensor:
        probs = torch.full((self.vocab,), 0.01)
        if len(seq) == 1:  # after BOS
            probs[4], probs[5] = 0.5, 0.4
        elif seq[-1] == 4:
            probs[EOS_ID], probs[6], probs[7] = 0.3, 0.25, 0.25
        else:
            probs[EOS_ID] = 0.9
        return probs


def sequence_logprob(model, tokens: list[int]) -> float:
    cache, total, prefix = model.new_cache(), 0.0, [BOS_ID]
    for t, token in enumerate(tokens):
        logp = model.decode(torch.tensor([[prefix[-1]]]), None, None, cache=cache, offset=t)
        total += float(torch.log_softmax(logp[0, -1], -1)[token])
        prefix.append(token)
    return total


def test_beam_search_finds_a_likelier_sequence_than_greedy():
    from tiedharness.model.decoding import beam_translate, greedy_translate

    model, src = BeamBeatsGreedy(), torch.tensor([[9]])
    greedy = greedy_translate(model, src, 5)[0].tolist()
    beam = beam_translate(model, src, 5, beam=2, length_penalty=0.0)[0].tolist()
    greedy, beam = greedy[: greedy.index(EOS_ID) + 1], beam[: beam.index(EOS_ID) + 1]
    assert greedy == [4, EOS_ID] and beam == [5, EOS_ID]
    assert sequence_logprob(model, beam) > sequence_logprob(model, greedy)
    assert beam_translate(model, src, 5, beam=1)[0, :2].tolist() == greedy  # beam 1 is greedy


def test_beam_of_one_is_greedy_on_real_models():
    from tiedharness.model.decoding import beam_translate, greedy_translate

    for strategy in ("none", "qkv", "three_way", "kv"):
        model = tiny_model(strategy, seed=3)
        src, _ = batch(b=5, s=9)
        assert torch.equal(greedy_translate(model, src, 20), beam_translate(model, src, 20, beam=1))
