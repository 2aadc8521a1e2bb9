"""Weight-sharing strategies: each one declares which parameters or modules are one.

A strategy is a small function registered under its name (the `sharing` config group
lists them). It receives a `SharingContext` over an untied model and calls
`ctx.tie(*param_paths)` or `ctx.share(*module_paths)`. Nothing is tied while strategies
run; `SharingContext.apply` then merges every declaration into groups and points each
path of a group at one object, so strategies compose in any order (three_way = the
union of encdec_vocab and embed_output). Values are never copied between tensors: a tie
is the same `nn.Parameter` (or module) in several places, which survives `state_dict`,
`.to()`, `torch.compile`, and shows the optimizer each tensor once.

Adding a strategy: one registered function here and one YAML file in `conf/sharing/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from tiedharness.model.config import (
    AttentionScope,
    LayerPlan,
    LayerScope,
    ModelConfig,
    SharingConfig,
)
from tiedharness.model.names import STRATEGY_NAMES
from tiedharness.model.transformer import ARCHITECTURES, Transformer
from tiedharness.vocab import Vocab


class SharingNotApplicable(ValueError):
    """A strategy does not apply to this model or vocabulary (an encoder tie on an LM,
    positional with sinusoidal positions, encdec_vocab without a joint vocabulary).
    A sweep records such a cell as skipped; a single run fails with the message."""


# ---------------------------------------------------------------------------- context


class _UnionFind:
    """Groups of names, merged by `union`; groups keep first-seen order."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, *xs: str) -> None:
        roots = [self.find(x) for x in xs]
        for r in roots[1:]:
            if r != roots[0]:
                self.parent[r] = roots[0]

    def groups(self) -> list[list[str]]:
        by_root: dict[str, list[str]] = {}
        for x in self.parent:
            by_root.setdefault(self.find(x), []).append(x)
        return [g for g in by_root.values() if len(g) > 1]


class SharingContext:
    """What a strategy sees: the untied model, its config and vocabulary, the options,
    and two verbs to declare ties."""

    def __init__(self, model: Transformer, options: SharingConfig) -> None:
        self.model = model
        self.cfg: ModelConfig = model.cfg
        self.vocab: Vocab = model.vocab
        self.options = options
        self._params = _UnionFind()
        self._modules = _UnionFind()

    @property
    def stacks(self) -> list[str]:
        return ["encoder", "decoder"] if self.cfg.arch == "encdec" else ["decoder"]

    def tie(self, *param_paths: str) -> None:
        """These parameters become one tensor."""
        self._params.union(*param_paths)

    def share(self, *module_paths: str) -> None:
        """These modules become one module (all their parameters with them)."""
        self._modules.union(*module_paths)

    def apply(self) -> None:
        # Outer modules first, so inner shares and parameter ties resolve through them.
        for group in sorted(self._modules.groups(), key=lambda g: min(p.count(".") for p in g)):
            canonical = self.model.get_submodule(group[0])
            for path in group[1:]:
                _set_path(self.model, path, canonical)
        for group in self._params.groups():
            canonical = self.model.get_parameter(group[0])
            for path in group[1:]:
                other = self.model.get_parameter(path)
                if other.shape != canonical.shape:
                    raise ValueError(
                        f"cannot tie {group[0]} {tuple(canonical.shape)} "
                        f"with {path} {tuple(other.shape)}: shapes differ"
                    )
                _set_path(self.model, path, canonical)


def _set_path(model: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path), name, value)


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Strategy:
    name: str
    apply: Callable[[SharingContext], None]
    needs_encoder: bool  # ties an encoder tensor, so it cannot apply to a decoder-only LM
    doc: str


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, needs_encoder: bool = False):
    """Register a sharing strategy under `name` (add `conf/sharing/<name>.yaml` too)."""

    if name not in STRATEGY_NAMES:
        raise ValueError(f"add {name!r} to STRATEGY_NAMES in tiedharness/model/names.py")

    def register(fn: Callable[[SharingContext], None]) -> Callable[[SharingContext], None]:
        STRATEGIES[name] = Strategy(name, fn, needs_encoder, (fn.__doc__ or "").strip())
        return fn

    return register


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown sharing strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[name]


def run_strategy(ctx: SharingContext, name: str) -> None:
    """Check that `name` applies to this model, then let it declare its ties."""
    s = get_strategy(name)
    if s.needs_encoder and "encoder" not in ctx.stacks:
        raise SharingNotApplicable(
            f"sharing {name!r} ties encoder tensors, but model.arch=lm is a decoder-only LM "
            "with no encoder: use an encoder-decoder task, or a strategy that applies to an "
            "LM (embed_output, qkv, qk, kv, cross_layer, all)"
        )
    s.apply(ctx)


def build_model(
    cfg: ModelConfig, vocab: Vocab, sharing: SharingConfig | None = None
) -> Transformer:
    """The one way to make a model: build it untied, then apply the sharing strategies."""
    sharing = sharing or SharingConfig()
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(
            f"model.arch={cfg.arch} names no architecture: resolve it with "
            f"ModelConfig.resolved(...) to one of {', '.join(ARCHITECTURES)}"
        )
    for name in sharing.strategies:
        get_strategy(name)  # fail on a typo before building anything
    model = ARCHITECTURES[cfg.arch](cfg, vocab)
    ctx = SharingContext(model, sharing)
    for name in sharing.strategies:
        run_strategy(ctx, name)
    ctx.apply()
    return model


# ---------------------------------------------------------------------------- strategies


@strategy("none")
def none(ctx: SharingContext) -> None:
    """Baseline: every tensor is its own."""


@strategy("embed_output")
def embed_output(ctx: SharingContext) -> None:
    """Decoder input embedding = pre-softmax output projection (Press & Wolf 2017;
    Inan et al. 2017). On an LM: token embedding = LM head."""
    ctx.tie("decoder.embed.weight", "output.weight")


@strategy("encdec_vocab", needs_encoder=True)
def encdec_vocab(ctx: SharingContext) -> None:
    """Encoder and decoder token embeddings are one matrix; needs a joint vocabulary."""
    vocab = ctx.vocab
    if not vocab.joint:
        raise SharingNotApplicable(
            "encdec_vocab needs a joint source-target vocabulary (one tokenizer, so id i is "
            f"the same subword on both sides), but the vocabularies are separate "
            f"({vocab.src_size} source, {vocab.tgt_size} target): set task.vocab=joint "
            "(or vocab_size=N instead of src_vocab_size/tgt_vocab_size), or drop encdec_vocab"
        )
    if vocab.src_size != vocab.tgt_size:
        raise SharingNotApplicable(
            f"encdec_vocab needs embeddings of one size, but the source has {vocab.src_size} "
            f"rows and the target {vocab.tgt_size}: build one joint vocabulary for both sides"
        )
    ctx.tie("encoder.embed.weight", "decoder.embed.weight")


@strategy("three_way", needs_encoder=True)
def three_way(ctx: SharingContext) -> None:
    """One V×d matrix for encoder input, decoder input and output (Vaswani et al. 2017, §3.4)."""
    encdec_vocab(ctx)
    embed_output(ctx)


@strategy("positional", needs_encoder=True)
def positional(ctx: SharingContext) -> None:
    """Encoder and decoder learned position tables are one matrix."""
    if ctx.cfg.positions != "learned":
        raise SharingNotApplicable(
            f"positional ties learned position tables, but model.positions={ctx.cfg.positions} "
            "has no parameters to tie: set model.positions=learned, or drop positional"
        )
    ctx.tie("encoder.pos.weight", "decoder.pos.weight")


def _share_projections(ctx: SharingContext, roles: tuple[str, ...]) -> list[str]:
    """Share the `roles` projections in every self-attention in scope; returns their paths."""
    scope = ctx.options.attention_scope
    stacks = ["decoder"] if scope == AttentionScope.decoder else ctx.stacks
    paths = [
        f"{stack}.layers.{i}.self_attn"
        for stack in stacks
        for i in range(len(ctx.model.get_submodule(f"{stack}.layers")))
    ]
    for attn in paths:
        ctx.share(*(f"{attn}.{role}_proj" for role in roles))
    return paths


def _mask_self(ctx: SharingContext, paths: list[str]) -> None:
    """With sharing.qk_mask_self, these self-attentions let no token attend to itself
    (Reformer): where Q and K are one projection, a token's score against itself is
    |q|²/√d and would dominate its row. Only ever switched on, so that a strategy run
    after another (qk then qkv, or `all`) never switches it off again."""
    if ctx.options.qk_mask_self:
        for attn in paths:
            ctx.model.get_submodule(attn).mask_self = True


@strategy("qkv")
def qkv(ctx: SharingContext) -> None:
    """One projection serves Q, K and V in self-attention, computed once per forward;
    optionally each token may not attend to itself (sharing.qk_mask_self): the query is
    its own key here too."""
    _mask_self(ctx, _share_projections(ctx, ("q", "k", "v")))


@strategy("qk")
def qk(ctx: SharingContext) -> None:
    """Shared query-key projection (Reformer, Kitaev et al. 2020); optionally each token
    may not attend to itself (sharing.qk_mask_self), as in Reformer."""
    _mask_self(ctx, _share_projections(ctx, ("q", "k")))


@strategy("kv")
def kv(ctx: SharingContext) -> None:
    """One projection serves K and V in self-attention, cached once."""
    _share_projections(ctx, ("k", "v"))


def layer_plan(n_layers: int, unique: int, plan: LayerPlan) -> list[int]:
    """Which of `unique` blocks each of `n_layers` positions runs (Takase & Kiyono 2021):
    sequence 0,0,1,1,2,2 · cycle 0,1,2,0,1,2 · cycle_rev 0,1,2,2,1,0 (for 6 over 3).
    `unique` ≥ 1 (the schema's check); a plan that does not fit `n_layers` raises
    SharingNotApplicable, so that a sweep skips the cell."""
    if plan != LayerPlan.cycle and n_layers % unique:
        raise SharingNotApplicable(
            f"sharing.cross_layer.unique={unique} does not fit a stack of {n_layers} layers "
            f"with plan={plan}, which needs the layer count to be a multiple of unique: "
            f"{n_layers} layers are not a multiple of {unique}; choose unique from "
            f"{[m for m in range(1, n_layers + 1) if n_layers % m == 0]} or plan=cycle"
        )
    if unique > n_layers:
        raise SharingNotApplicable(
            f"sharing.cross_layer.unique={unique} does not fit a stack of {n_layers} layers: "
            f"choose 1 ≤ unique ≤ {n_layers}"
        )
    if plan == LayerPlan.cycle:
        return [i % unique for i in range(n_layers)]
    if plan == LayerPlan.sequence:
        return [i // (n_layers // unique) for i in range(n_layers)]
    head = [i % unique for i in range(n_layers - unique)]  # cycle_rev
    return head + list(reversed(range(unique)))


# what of a layer cross_layer shares, by sharing.cross_layer.scope
LAYER_PARTS = {
    LayerScope.all: [""],
    LayerScope.attention: [".self_attn", ".cross_attn"],
    LayerScope.ffn: [".ffn"],
}


@strategy("cross_layer")
def cross_layer(ctx: SharingContext) -> None:
    """Layers reuse blocks by an index plan (ALBERT; Universal Transformer; Takase &
    Kiyono 2021). Position i runs the block of the first position with the same index."""
    opts = ctx.options.cross_layer
    for stack in ctx.stacks:
        layers = ctx.model.get_submodule(f"{stack}.layers")
        plan = layer_plan(len(layers), opts.unique, opts.plan)
        first = {block: plan.index(block) for block in set(plan)}
        for i, block in enumerate(plan):
            for part in LAYER_PARTS[opts.scope]:
                if getattr(layers[i], part.lstrip("."), True) is None:
                    continue  # no cross-attention in an encoder or LM layer
                ctx.share(f"{stack}.layers.{first[block]}{part}", f"{stack}.layers.{i}{part}")


ALL_COMPONENTS = ("embed_output", "encdec_vocab", "positional", "qkv")


@strategy("all")
def all_(ctx: SharingContext) -> None:
    """The mission's grid together: embed_output + encdec_vocab + positional + qkv
    (on a decoder-only LM, the ones that apply: embed_output + qkv)."""
    for name in ALL_COMPONENTS:
        if STRATEGIES[name].needs_encoder and "encoder" not in ctx.stacks:
            continue
        run_strategy(ctx, name)
