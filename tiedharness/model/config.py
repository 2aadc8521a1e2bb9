"""Schemas of the `model` and `sharing` config groups (torch-free).

Each dataclass is the one definition of its settings: the defaults here are what
`conf/model/*.yaml` and `conf/sharing/*.yaml` start from (see tiedharness/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tiedharness.model.labels import strategy_label
from tiedharness.model.names import STRATEGY_NAMES
from tiedharness.schema import (
    Choice,
    coerce_choices,
    from_values,
    require,
    require_fraction,
    require_positive,
)


class Arch(Choice):
    auto = "auto"  # training: follow the task (encdec for seq2seq, lm for LM tasks)
    encdec = "encdec"
    lm = "lm"  # decoder-only


class Norm(Choice):
    pre = "pre"  # pre-LN stacks end with a final LayerNorm
    post = "post"


class Positions(Choice):
    learned = "learned"
    sinusoidal = "sinusoidal"


class Activation(Choice):
    relu = "relu"
    gelu = "gelu"


class Init(Choice):
    """Initialisation conventions (tiedharness/model/transformer.py; their sources:
    docs/model.md). Each implies whether token embeddings are ×√d."""

    fairseq = "fairseq"  # Xavier linears, N(0, d^-1/2) embeddings ×√d
    gpt2 = "gpt2"  # N(0, 0.02) everywhere, residual projections ÷√(residual sublayers)
    t5 = "t5"  # N(0, 1) embeddings, N(0, fan_in^-1/2) linears, tied logits ×d^-1/2


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; the defaults are the `small` CPU demo model."""

    arch: Arch = Arch.auto  # auto (follow the task) | encdec | lm (decoder-only)
    d_model: int = 256  # model width d
    n_heads: int = 4  # attention heads (d_model must divide by it)
    d_ff: int = 1024  # inner width of the feed-forward layers
    enc_layers: int = 3  # encoder layers (unused by a decoder-only LM)
    dec_layers: int = 3  # decoder layers
    dropout: float = 0.1  # on embeddings, attention outputs and feed-forward outputs
    norm: Norm = Norm.pre  # LayerNorm before (pre) or after (post) each sublayer
    bias: bool = True  # biases of attention and feed-forward linears (the output layer has none)
    positions: Positions = Positions.learned  # learned tables or sinusoidal positions
    max_len: int = 256  # longest sequence in tokens (learned positions have this many rows)
    # multiply token embeddings by √d (Vaswani et al. 2017, §3.4); null: as `init` implies
    # (fairseq yes, gpt2 and t5 no). See `scales_embeddings`.
    embed_scale: bool | None = None
    activation: Activation = Activation.relu  # of the feed-forward layers: relu | gelu
    init: Init = Init.fairseq  # initialisation convention (docs/model.md)

    def __post_init__(self) -> None:
        coerce_choices(self, "model")
        require_positive(self, "model", "d_model", "n_heads", "d_ff", "dec_layers", "max_len")
        require(self.enc_layers >= 0, "model.enc_layers", self.enc_layers, "must be ≥ 0")
        require_fraction(self, "model", "dropout")
        require(
            self.d_model % self.n_heads == 0,
            "model.d_model",
            self.d_model,
            f"must be divisible by model.n_heads={self.n_heads}",
        )
        require(
            not (self.init == Init.t5 and self.embed_scale),
            "model.embed_scale",
            self.embed_scale,
            "model.init=t5 draws token embeddings from N(0, 1), so ×√d would give them "
            "std √d: leave model.embed_scale unset (null) or false, or choose another init",
        )

    @property
    def scales_embeddings(self) -> bool:
        """Whether token embeddings are multiplied by √d: `embed_scale` where set, else
        the init convention's choice (fairseq: yes; gpt2, t5: no)."""
        if self.embed_scale is not None:
            return self.embed_scale
        return self.init == Init.fairseq

    def resolved(self, arch: Arch | str) -> ModelConfig:
        """This config with `arch=auto` replaced by `arch`; an explicit, different arch
        is an error rather than being silently replaced."""
        if self.arch not in (Arch.auto, arch):
            raise ValueError(
                f"model.arch={self.arch} does not fit this task, which needs arch={arch}: "
                "leave model.arch at auto (or set it to match the task)"
            )
        return replace(self, arch=Arch(arch))


class AttentionScope(Choice):
    decoder = "decoder"  # decoder self-attention only
    all = "all"  # encoder self-attention too


class LayerPlan(Choice):
    sequence = "sequence"  # 0,0,1,1,2,2
    cycle = "cycle"  # 0,1,2,0,1,2
    cycle_rev = "cycle_rev"  # 0,1,2,2,1,0 (Takase & Kiyono 2021)


class LayerScope(Choice):
    all = "all"  # whole layer
    attention = "attention"  # self- and cross-attention; norms and feed-forward per layer
    ffn = "ffn"


@dataclass
class CrossLayerOptions:
    unique: int = 1  # M distinct blocks per stack; 1 = ALBERT / Universal Transformer
    plan: LayerPlan = LayerPlan.cycle_rev  # sequence | cycle | cycle_rev (Takase & Kiyono)
    scope: LayerScope = LayerScope.all  # what a reused block shares: all | attention | ffn

    def __post_init__(self) -> None:
        coerce_choices(self, "sharing.cross_layer")
        require_positive(self, "sharing.cross_layer", "unique")


@dataclass
class SharingConfig:
    """Which sharing strategies to combine (tiedharness/model/names.py lists them), and
    their options."""

    strategies: list[str] = field(
        default_factory=list
    )  # the strategies combined (sharing=NAME sets one)
    # qkv / qk / kv: which self-attentions share projections. Cross-attention never does.
    attention_scope: AttentionScope = AttentionScope.decoder
    # qk, qkv, all: mask each token's attention to itself, as Reformer does (see
    # AttentionMask); the other strategies ignore it.
    qk_mask_self: bool = False
    cross_layer: CrossLayerOptions = field(default_factory=CrossLayerOptions)

    def __post_init__(self) -> None:
        coerce_choices(self, "sharing")
        unknown = [name for name in self.strategies if name not in STRATEGY_NAMES]
        if unknown:
            raise ValueError(
                f"sharing.strategies: unknown strategy {unknown[0]!r}; "
                f"known: {', '.join(STRATEGY_NAMES)}"
            )

    @property
    def name(self) -> str:
        """Label for tables and run records: 'none', 'qkv', 'embed_output+qkv', …
        (the strategy label of tiedharness/model/labels.py)."""
        return strategy_label(self.strategies)

    @classmethod
    def of(cls, *strategies: str, **options) -> SharingConfig:
        """A config in code, checked like a composed one:
        `SharingConfig.of("qkv", attention_scope="all")`."""
        return from_values(cls, {"strategies": list(strategies), **options})
