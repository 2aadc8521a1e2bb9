"""Ties are real: one object, summed gradients, and they survive save/load, dtype casts,
torch.compile and the optimizer. Expected ties are written out here, not read back
from the strategies, so a strategy that ties too much or too little fails."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import pytest
import torch
from conftest import LM_STRATEGIES, batch, logits_of, tiny_model, train_cli
from torch.utils.flop_counter import FlopCounterMode

from tiedharness.model.attention import Attention
from tiedharness.model.config import Init, SharingConfig
from tiedharness.model.decoding import greedy_translate
from tiedharness.model.labels import parse_label, strategy_label
from tiedharness.model.params import count_params
from tiedharness.model.sharing import STRATEGIES, SharingNotApplicable, build_model, layer_plan
from tiedharness.model.variants import variant_label
from tiedharness.training.optim import build_optimizer
from tiedharness.vocab import PAD_ID, Vocab

LAYERS = (0, 1)  # the tiny model has 2 encoder and 2 decoder layers
INITS = [init.value for init in Init]  # every tie test holds under every init convention


def _proj_group(stack: str, layer: int, roles: str) -> list[list[str]]:
    base = f"{stack}.layers.{layer}.self_attn"
    return [[f"{base}.{r}_proj.{p}" for r in roles] for p in ("weight", "bias")]


def _layer_param_names(model, stack: str) -> list[str]:
    prefix = f"{stack}.layers.0."
    return [n[len(prefix) :] for n, _ in model.named_parameters() if n.startswith(prefix)]


def expected_ties(name: str, arch: str = "encdec") -> list[list[str]]:
    """Groups of parameter paths that must be one tensor under strategy `name`."""
    embed_output = [["decoder.embed.weight", "output.weight"]]
    encdec_vocab = [["encoder.embed.weight", "decoder.embed.weight"]]
    positional = [["encoder.pos.weight", "decoder.pos.weight"]]
    qkv = [g for i in LAYERS for g in _proj_group("decoder", i, "qkv")]
    if name == "none":
        return []
    if name == "embed_output":
        return embed_output
    if name == "encdec_vocab":
        return encdec_vocab
    if name == "three_way":
        return [["encoder.embed.weight", "decoder.embed.weight", "output.weight"]]
    if name == "positional":
        return positional
    if name in ("qkv", "qk", "kv"):
        return [g for i in LAYERS for g in _proj_group("decoder", i, name)]
    if name == "cross_layer":  # unique=1: every layer of a stack is layer 0
        untied = tiny_model(arch=arch)
        stacks = ["encoder", "decoder"] if arch == "encdec" else ["decoder"]
        return [
            [f"{s}.layers.{i}.{p}" for i in LAYERS]
            for s in stacks
            for p in _layer_param_names(untied, s)
        ]
    if name == "all":
        if arch == "lm":
            return embed_output + qkv
        return [*expected_ties("three_way"), *positional, *qkv]
    raise AssertionError(f"no expectation written for strategy {name!r}")


def actual_ties(model) -> list[set[str]]:
    """Paths grouped by the tensor object they resolve to; groups of one left out."""
    by_tensor: dict[int, set[str]] = {}
    for path, p in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(p), set()).add(path)
    return sorted((g for g in by_tensor.values() if len(g) > 1), key=sorted)


def assert_ties(model, groups: list[list[str]]) -> None:
    for group in groups:
        first = model.get_parameter(group[0])
        for path in group[1:]:
            assert model.get_parameter(path) is first, f"{path} is not {group[0]}"
    assert actual_ties(model) == sorted((set(g) for g in groups), key=sorted)


def test_every_strategy_has_a_written_expectation_that_ties_something():
    """expected_ties raises for a strategy it does not know, so a new strategy cannot
    slip past the tie tests; every strategy but none ties at least one pair."""
    for name in STRATEGIES:
        groups = expected_ties(name)
        assert (groups == []) == (name == "none"), name
        assert all(len(group) >= 2 for group in groups), name
    with pytest.raises(AssertionError, match="no expectation written"):
        expected_ties("not_a_strategy")


# Every strategy on the encoder-decoder; those that apply to it on the decoder-only LM.
ARCH_CASES = [(n, "encdec") for n in STRATEGIES] + [(n, "lm") for n in LM_STRATEGIES]


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(("strategy_name", "arch"), ARCH_CASES)
def test_tied_tensors_are_one_object(strategy_name, arch, init):
    model = tiny_model(strategy_name, arch=arch, model={"init": init})
    assert_ties(model, expected_ties(strategy_name, arch))


# the tied token embedding's std under each init: its own, never the output layer's
# (which under t5 would be d^-1/2 untied)
TIED_EMBEDDING_STD = {"fairseq": 32**-0.5, "gpt2": 0.02, "t5": 1.0}


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(
    ("strategy_name", "arch"),
    [(n, "encdec") for n in ("embed_output", "encdec_vocab", "three_way", "all")]
    + [(n, "lm") for n in ("embed_output", "all")],
)
def test_a_tied_embedding_is_initialised_as_an_embedding(strategy_name, arch, init):
    """Ties are made after init, so a tied tensor keeps its group's first path's init; in
    every embedding tie that is a token embedding (1000 × 32 samples: SE of std < 0.4%)."""
    model = tiny_model(strategy_name, arch=arch, vocab=Vocab.shared(1000), model={"init": init})
    tied = model.decoder.embed.weight
    expected = TIED_EMBEDDING_STD[init]
    assert abs(tied.std().item() - expected) < 0.02 * expected
    assert abs(tied.mean().item()) < 0.02 * expected


def test_strategies_compose_in_any_order():
    a = tiny_model("embed_output", "encdec_vocab")
    b = tiny_model("encdec_vocab", "embed_output")
    expected = expected_ties("three_way")
    assert_ties(a, expected)
    assert_ties(b, expected)


def test_qkv_projects_once_and_uses_one_tensor_for_q_k_v():
    attn = tiny_model("qkv").decoder.layers[0].self_attn
    x = torch.randn(2, 5, 32)
    q, k, v = attn.project(x, x)
    assert q is k and k is v
    q, k, v = tiny_model("kv").decoder.layers[0].self_attn.project(x, x)
    assert k is v and q is not k
    q, k, v = tiny_model("qk").decoder.layers[0].self_attn.project(x, x)
    assert q is k and v is not k


# ---------------------------------------------------------------------------- gradients


def _untied_copy(tied):
    """An untied model of the same architecture holding the tied model's values and
    computing the same function: under init=t5 a tied output scales the logits by
    d^-1/2, which the untied copy must do too for the gradients to compare."""
    untied = tiny_model(arch=tied.arch, seed=123, model={"init": tied.cfg.init})
    with torch.no_grad():
        for path, p in untied.named_parameters():
            p.copy_(tied.get_parameter(path))
    for path, module in untied.named_modules():
        if hasattr(module, "mask_self"):
            module.mask_self = tied.get_submodule(path).mask_self
    scale = tied.output_scale()
    untied.output_scale = lambda: scale
    return untied


def _backward(model, src, tgt):
    model.zero_grad()
    logits = logits_of(model, src, tgt)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.roll(-1, 1).flatten())
    loss.backward()
    return loss


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(
    ("strategy_name", "arch", "mask_self"),
    [(n, a, False) for n, a in ARCH_CASES]
    + [(n, a, True) for n in ("qk", "qkv") for a in ("encdec", "lm")],
)
def test_shared_gradient_is_sum_of_untied_gradients(strategy_name, arch, mask_self, init):
    model = {"init": init}
    tied = tiny_model(strategy_name, arch=arch, qk_mask_self=mask_self, model=model).double()
    untied = _untied_copy(tied).double()
    src, tgt = batch()
    loss_tied, loss_untied = _backward(tied, src, tgt), _backward(untied, src, tgt)
    torch.testing.assert_close(loss_tied, loss_untied, rtol=0, atol=1e-12)
    summed = {id(p): torch.zeros_like(p) for p in tied.parameters()}
    for path, p in untied.named_parameters():
        summed[id(tied.get_parameter(path))] += p.grad
    n_shared = 0
    for path, p in tied.named_parameters():
        torch.testing.assert_close(p.grad, summed[id(p)], rtol=1e-9, atol=1e-12, msg=path)
        n_shared += sum(tied.get_parameter(q) is p for q, _ in untied.named_parameters()) > 1
    assert n_shared == len(actual_ties(tied))


# ---------------------------------------------------------------------------- survival


@pytest.mark.parametrize("init", INITS)
def test_ties_survive_state_dict_round_trip(strategy_name, init):
    source = tiny_model(strategy_name, seed=0, model={"init": init})
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    fresh = tiny_model(strategy_name, seed=1, model={"init": init})
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert_ties(fresh, expected_ties(strategy_name))
    src, tgt = batch()
    torch.testing.assert_close(
        logits_of(fresh, src, tgt), logits_of(source, src, tgt), rtol=0, atol=0
    )


@pytest.mark.parametrize("init", INITS)
def test_ties_survive_dtype_cast(strategy_name, init):
    model = tiny_model(strategy_name, model={"init": init}).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert_ties(model, expected_ties(strategy_name))
    src, tgt = batch()
    assert logits_of(model, src, tgt).dtype == torch.float64


@pytest.mark.parametrize("init", INITS)
def test_optimizer_holds_each_tensor_once(strategy_name, init):
    model = tiny_model(strategy_name, model={"init": init})
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    in_groups = [p for g in optimizer.param_groups for p in g["params"]]
    assert len({id(p) for p in in_groups}) == len(in_groups)
    assert {id(p) for p in in_groups} == {id(p) for p in model.parameters()}
    assert sum(p.numel() for p in in_groups) == count_params(model).total
    _backward(model, *batch())
    optimizer.step()
    assert_ties(model, expected_ties(strategy_name))


def _check_compiled(strategies: tuple[str, ...], **options):
    model = tiny_model(*strategies, **options).eval()
    compiled = torch.compile(model)
    src, tgt = batch()
    torch.testing.assert_close(compiled(src, tgt), model(src, tgt), rtol=1e-5, atol=1e-5)
    assert compiled._orig_mod.output.weight is model.output.weight


@pytest.mark.slow
def test_ties_survive_torch_compile():
    # One compile (~30 s on 2 cores) covering every kind of tie: parameter ties across
    # stacks, shared projections inside attention, and whole reused layers; under t5, so
    # that the tied-logit scale (an identity test in forward) is compiled too.
    _check_compiled(("three_way", "positional", "qkv", "cross_layer"), model={"init": "t5"})
    model = tiny_model("three_way", "positional", "qkv", "cross_layer")
    assert model.decoder.layers[1] is model.decoder.layers[0]


@pytest.mark.slow
def test_each_strategy_survives_torch_compile(strategy_name):
    _check_compiled((strategy_name,))


# ---------------------------------------------------------------------------- qkv cost


def _input_projection_flops(model) -> int:
    src, tgt = batch()
    with FlopCounterMode(display=False) as counter:
        model(src, tgt)
    pattern = re.compile(r"\.decoder\.layers\.\d+\.self_attn\.[qkv]_proj$")
    counts = counter.get_flop_counts()
    return sum(sum(c.values()) for module, c in counts.items() if pattern.search(module))


def test_qkv_cuts_decoder_self_attention_input_flops_to_a_third():
    none, shared = _input_projection_flops(tiny_model()), _input_projection_flops(tiny_model("qkv"))
    b, t, d, layers = 3, 6, 32, 2
    assert none == layers * 3 * 2 * b * t * d * d  # three (B·T × d) @ (d × d) matmuls
    assert shared * 3 == none


def test_shared_kv_is_cached_once():
    for name, shared in (("qkv", True), ("kv", True), ("qk", False), ("none", False)):
        model = tiny_model(name).double()
        src, _ = batch()
        cache = model.new_cache()
        memory, src_pad = model.encode(src)
        bos = torch.ones(src.shape[0], 1, dtype=torch.long)
        model.decode(bos, memory, src_pad, cache=cache)
        model.decode(bos, memory, src_pad, cache=cache, offset=1)
        for slot in cache:
            assert (slot["self"]["k"] is slot["self"]["v"]) == shared, name
            assert slot["self"]["k"].shape[1] == 2


def test_qk_mask_self_keeps_tokens_from_attending_to_themselves():
    model = tiny_model("qk", qk_mask_self=True)
    attn = model.decoder.layers[0].self_attn
    assert attn.mask_self and not model.decoder.layers[0].cross_attn.mask_self
    # Attention weights from the mask: row 0 keeps itself (nothing else to see).
    from tiedharness.model.attention import AttentionMask

    pos = torch.arange(4)
    allowed, _ = AttentionMask(pos, pos, None, causal=True).sdpa_args(mask_self=True)
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool
    )
    assert torch.equal(allowed[0, 0], expected)


@pytest.mark.parametrize("name", ["qk", "qkv"])
def test_mask_self_matches_with_and_without_cache(name):
    model = tiny_model(name, qk_mask_self=True).double()
    src, _ = batch()
    assert torch.equal(
        greedy_translate(model, src, 12, use_cache=True),
        greedy_translate(model, src, 12, use_cache=False),
    )


def _attention_weights(model, src, tgt) -> dict[str, torch.Tensor]:
    """One forward; the softmax weights (B, H, Tq, Tk) of every attention module, by path.
    They are replayed from the arguments the module gives SDPA (softmax(q·kᵀ/√d) where the
    mask allows), and the replay must reproduce SDPA's own output, so they are the weights
    the model used."""
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    running: list[str] = []
    weights: dict[str, torch.Tensor] = {}

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        allowed = attn_mask
        if is_causal:
            allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        w = scores.softmax(-1)
        out = real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        torch.testing.assert_close(w @ v, out)
        weights[running[-1]] = w
        return out

    hooks = [
        m.register_forward_pre_hook(lambda *_, path=path: running.append(path))
        for path, m in model.named_modules()
        if isinstance(m, Attention)
    ]
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa)
            with torch.no_grad():
                logits_of(model, src, tgt)
    finally:
        for hook in hooks:
            hook.remove()
    return weights


@pytest.mark.parametrize("scope", ["decoder", "all"])
@pytest.mark.parametrize("arch", ["encdec", "lm"])
@pytest.mark.parametrize("name", ["qk", "qkv", "all"])
def test_mask_self_puts_no_weight_on_the_query_itself(name, arch, scope):
    """Every shared self-attention gives a token's own position weight 0, except where the
    query has no other key: the first position of a causal decoder (weight 1), and a
    source of one real token followed by padding. Unshared self-attentions, and the same
    model without the mask, do weight the token itself."""
    src, tgt = batch(b=2, s=5, t=4)
    src[1, 1:] = PAD_ID  # the second source has one real token: it can only see itself
    real_src = src != PAD_ID
    masked = tiny_model(name, arch=arch, qk_mask_self=True, attention_scope=scope).double()
    plain = tiny_model(name, arch=arch, attention_scope=scope).double()
    shared_stacks = {"decoder", "encoder"} if scope == "all" else {"decoder"}
    got, unmasked = (
        _attention_weights(masked.eval(), src, tgt),
        _attention_weights(plain.eval(), src, tgt),
    )
    self_attns = [p for p in got if p.endswith("self_attn")]
    assert len(self_attns) == (4 if arch == "encdec" else 2)
    for path in self_attns:
        stack = path.split(".")[0]
        diagonal = got[path].diagonal(dim1=-2, dim2=-1)  # (B, H, T)
        B, H, T = diagonal.shape
        # where the token itself is a key at all: causal rows, real source positions
        visible = torch.ones(B, T, dtype=torch.bool) if stack == "decoder" else real_src
        if stack in shared_stacks:
            assert masked.get_submodule(path).mask_self, path
            expected = torch.zeros(B, T, dtype=torch.float64)
            if stack == "decoder":
                expected[:, 0] = 1.0  # the first target position has no other key
            else:
                expected[1, 0] = 1.0  # a one-token source has no other key either
            torch.testing.assert_close(diagonal, expected[:, None].expand(B, H, T), msg=path)
        else:
            assert (diagonal > 0).equal(visible[:, None].expand(B, H, T)), path
        plain_diagonal = unmasked[path].diagonal(dim1=-2, dim2=-1)
        assert (plain_diagonal > 0).equal(visible[:, None].expand(B, H, T)), path
    for path in got:
        if path.endswith("cross_attn"):
            assert not masked.get_submodule(path).mask_self, path


def test_mask_self_leaves_kv_alone():
    """kv keeps a query's own key: its query is a projection of its own."""
    model = tiny_model("kv", qk_mask_self=True)
    assert not any(getattr(m, "mask_self", False) for m in model.modules())


@pytest.mark.slow  # run by make test-all: the default run stays under 10 minutes
@pytest.mark.parametrize("name", ["qk", "qkv"])
def test_mask_self_trains_from_the_command_line(tmp_path, name):
    """`tiedharness-train sharing=qkv sharing.qk_mask_self=true` trains (with dropout on)
    and its run record reads back as the masked variant."""
    run_dir = tmp_path / "run"
    out = train_cli(
        "task=copy",
        "model=tiny",
        "model.dropout=0.1",
        f"sharing={name}",
        "sharing.qk_mask_self=true",
        "trainer.max_steps=4",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        results=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["metrics"]["steps"] == 4
    assert variant_label(record["sharing"], record["config"]["sharing"]) == f"{name}+mask_self"
    # the run's config builds the masked model (as tiedharness-eval rebuilds it)
    from tiedharness.build import build
    from tiedharness.config import JobConfig

    model = build(JobConfig.from_config(record["config"])).model
    assert all(layer.self_attn.mask_self for layer in model.decoder.layers)


# ---------------------------------------------------------------------------- cross_layer


@pytest.mark.parametrize(
    ("plan", "n", "m", "expected"),
    [
        ("sequence", 6, 3, [0, 0, 1, 1, 2, 2]),
        ("cycle", 6, 3, [0, 1, 2, 0, 1, 2]),
        ("cycle_rev", 6, 3, [0, 1, 2, 2, 1, 0]),
        ("cycle_rev", 6, 2, [0, 1, 0, 1, 1, 0]),
        ("cycle", 5, 2, [0, 1, 0, 1, 0]),
        ("sequence", 4, 1, [0, 0, 0, 0]),
        ("cycle", 3, 3, [0, 1, 2]),
    ],
)
def test_layer_plans_follow_takase_and_kiyono(plan, n, m, expected):
    assert layer_plan(n, m, plan) == expected


@pytest.mark.parametrize("scope", ["all", "attention", "ffn"])
def test_cross_layer_reuses_modules_by_index(scope):
    cross = {"unique": 3, "plan": "cycle_rev", "scope": scope}
    model = tiny_model("cross_layer", model={"enc_layers": 6, "dec_layers": 6}, cross_layer=cross)
    for stack in (model.encoder, model.decoder):
        layers = stack.layers
        parts = {"all": [None], "attention": ["self_attn", "cross_attn"], "ffn": ["ffn"]}[scope]
        for i, j in [(0, 5), (1, 4), (2, 3)]:
            for part in parts:
                a = layers[i] if part is None else getattr(layers[i], part)
                b = layers[j] if part is None else getattr(layers[j], part)
                assert a is b
        if scope != "all":
            assert layers[0] is not layers[5] and layers[0].ffn_norm is not layers[5].ffn_norm
        assert (layers[0].ffn is layers[1].ffn) is False
    unique = {id(p) for p in model.parameters()}
    assert len(unique) < len(list(model.named_parameters(remove_duplicate=False)))


# ---------------------------------------------------------------------------- errors


def test_encdec_vocab_needs_a_joint_vocabulary():
    for name in ("encdec_vocab", "three_way", "all"):
        with pytest.raises(ValueError, match=r"set task\.vocab=joint"):
            tiny_model(name, vocab=Vocab.separate(50, 50))


def test_encdec_vocab_needs_embeddings_of_one_size():
    with pytest.raises(ValueError, match="one joint vocabulary"):
        tiny_model("encdec_vocab", vocab=Vocab(50, 40, joint=True))


def test_positional_needs_learned_positions():
    for name in ("positional", "all"):
        with pytest.raises(ValueError, match=r"set model\.positions=learned"):
            tiny_model(name, model={"positions": "sinusoidal"})


@pytest.mark.parametrize("name", ["encdec_vocab", "three_way", "positional"])
def test_encoder_ties_fail_on_a_decoder_only_lm(name):
    with pytest.raises(ValueError, match="decoder-only LM with no encoder"):
        tiny_model(name, arch="lm")


@pytest.mark.parametrize(
    ("cross", "message"),
    [
        ({"unique": 3}, "does not fit a stack of 2 layers"),
        ({"unique": 0}, "sharing.cross_layer.unique=0: must be > 0"),
        ({"unique": 2, "plan": "sequence"}, None),
    ],
)
def test_cross_layer_plan_must_fit_the_layer_count(cross, message):
    if message is None:  # fits: 2 layers, 2 unique
        tiny_model("cross_layer", cross_layer=cross)
        return
    with pytest.raises(ValueError, match=message):
        tiny_model("cross_layer", cross_layer=cross)


def test_cross_layer_plan_must_divide_the_layer_count():
    with pytest.raises(ValueError, match=r"choose unique from \[1, 2, 4\] or plan=cycle"):
        tiny_model(
            "cross_layer",
            model={"enc_layers": 4, "dec_layers": 4},
            cross_layer={"unique": 3, "plan": "cycle_rev"},
        )


@pytest.mark.parametrize(
    ("n", "m", "plan", "message"),
    [
        # the multiple is checked first, so a too-large unique names the plans that fit
        (2, 3, "sequence", r"2 layers are not a multiple of 3; choose unique from \[1, 2\]"),
        (2, 3, "cycle_rev", r"2 layers are not a multiple of 3; .* or plan=cycle"),
        (3, 2, "sequence", r"3 layers are not a multiple of 2; choose unique from \[1, 3\]"),
        (2, 3, "cycle", r"unique=3 does not fit a stack of 2 layers: choose 1 ≤ unique ≤ 2"),
    ],
)
def test_a_plan_that_does_not_fit_is_not_applicable(n, m, plan, message):
    """SharingNotApplicable, so that a sweep records the cell as skipped, not failed."""
    with pytest.raises(SharingNotApplicable, match=message):
        layer_plan(n, m, plan)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown strategy 'tied_everything'") as err:
        tiny_model("tied_everything")
    for name in STRATEGIES:
        assert name in str(err.value)


def test_unknown_sharing_option_is_named():
    with pytest.raises(KeyError, match="Key 'scope' not in 'SharingConfig'"):
        tiny_model("qkv", scope="all")


def test_attention_scope_all_shares_encoder_self_attention_too():
    model = tiny_model("qkv", attention_scope="all")
    for stack in (model.encoder, model.decoder):
        for layer in stack.layers:
            assert layer.self_attn.q_proj is layer.self_attn.k_proj is layer.self_attn.v_proj
    assert (
        model.decoder.layers[0].cross_attn.k_proj is not model.decoder.layers[0].cross_attn.v_proj
    )


def test_building_a_tied_model_leaves_other_models_untied():
    """Ties are made on the model being built, never on shared class-level state: an
    untied model built after a fully tied one ties nothing, and owns every tensor."""
    tied = tiny_model("all")
    untied = build_model(tiny_model().cfg, Vocab.shared(50), None)
    assert actual_ties(untied) == []
    tied_ids = {id(p) for p in tied.parameters()}
    assert not any(id(p) in tied_ids for p in untied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == sum(
        p.numel() for _, p in tied.named_parameters(remove_duplicate=False)
    )


# ---------------------------------------------------------------------------- labels


def test_strategy_label_joins_the_strategies():
    assert strategy_label([]) == "none"
    assert strategy_label(["qkv"]) == "qkv"
    assert strategy_label(("embed_output", "qkv")) == "embed_output+qkv"
    assert SharingConfig.of("embed_output", "qkv").name == "embed_output+qkv"
    assert SharingConfig.of().name == "none"


@pytest.mark.parametrize(
    ("label", "strategies", "options"),
    [
        ("none", "none", ""),
        ("qk", "qk", ""),
        ("qk+mask_self", "qk", "mask_self"),
        ("qkv+mask_self", "qkv", "mask_self"),
        ("embed_output+qkv", "embed_output+qkv", ""),
        ("qkv+scope=all", "qkv", "scope=all"),
        ("cross_layer+unique=3+plan=cycle", "cross_layer", "unique=3+plan=cycle"),
    ],
)
def test_labels_parse_back(label, strategies, options):
    assert parse_label(label) == (strategies, options)
    assert parse_label(label).strategy == strategies and parse_label(label).options == options


@pytest.mark.parametrize(
    ("strategies", "options", "label"),
    [
        (("qk",), {"qk_mask_self": True}, "qk+mask_self"),
        ((), {"qk_mask_self": True, "attention_scope": "all"}, "none"),  # none ignores options
        (("qkv",), {"qk_mask_self": True}, "qkv+mask_self"),  # never merged with "qkv"
        (("qkv",), {"qk_mask_self": False}, "qkv"),
        (("qkv",), {"qk_mask_self": True, "attention_scope": "all"}, "qkv+mask_self+scope=all"),
        (("all",), {"qk_mask_self": True}, "all+mask_self"),  # all's qkv takes the mask
        (("kv",), {"qk_mask_self": True}, "kv"),  # kv ignores it
        (
            ("cross_layer",),
            {"cross_layer": {"unique": 2, "plan": "cycle"}},
            "cross_layer+unique=2+plan=cycle",
        ),
        (("embed_output", "qkv"), {}, "embed_output+qkv"),
    ],
)
def test_variant_label_names_the_options_that_change_the_strategies(strategies, options, label):
    cfg = SharingConfig.of(*strategies, **options)
    assert variant_label(cfg.name, dataclasses.asdict(cfg)) == label
    assert parse_label(label).strategy == cfg.name
    # as a run record stores them: plain JSON values, defaults left out
    assert variant_label(cfg.name, options) == label
