"""The Transformer: an encoder–decoder and a decoder-only LM built from the same blocks.

Read top to bottom: feed-forward → layer → stack → initialisation → models (masks and
attention, which come first, are in attention.py). The model is built untied;
`tiedharness.model.sharing` then makes ties by pointing several attributes at one
`nn.Parameter` or one module. Nothing here knows strategy names: the only concession is
that attention computes a projection once when Q, K or V share it.

Initialisation (`model.init`; `INITS`, sources in docs/model.md) runs on the untied model: a
tied tensor keeps its tie group's first path's init, for embedding ties a token embedding.

Shapes: B batch, S source length, T target length, d model width, H heads, V vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tiedharness.model.attention import Attention, AttentionMask
from tiedharness.model.config import Init, ModelConfig
from tiedharness.vocab import PAD_ID, Vocab

# ---------------------------------------------------------------------------- blocks


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float, bias: bool, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class Layer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each a residual sublayer
    normalised before (pre-LN) or after (post-LN) the residual sum."""

    def __init__(self, cfg: ModelConfig, cross: bool) -> None:
        super().__init__()
        d = cfg.d_model

        def attention() -> Attention:
            return Attention(d, cfg.n_heads, cfg.dropout, cfg.bias)

        self.self_attn = attention()
        self.self_attn_norm = nn.LayerNorm(d)
        self.cross_attn = attention() if cross else None
        self.cross_attn_norm = nn.LayerNorm(d) if cross else None
        self.ffn = FeedForward(d, cfg.d_ff, cfg.dropout, cfg.bias, cfg.activation)
        self.ffn_norm = nn.LayerNorm(d)
        self.pre_norm = cfg.norm == "pre"
        self.dropout = nn.Dropout(cfg.dropout)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, sublayer) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def forward(
        self,
        x: Tensor,  # (B, T, d)
        self_mask: AttentionMask,
        memory: Tensor | None = None,
        memory_mask: AttentionMask | None = None,
        cache: dict[str, dict[str, Tensor]] | None = None,
    ) -> Tensor:
        self_cache = None if cache is None else cache.setdefault("self", {})
        x = self._residual(
            x, self.self_attn_norm, lambda h: self.self_attn(h, self_mask, cache=self_cache)
        )
        if self.cross_attn is not None:
            cross_cache = None if cache is None else cache.setdefault("cross", {})
            x = self._residual(
                x,
                self.cross_attn_norm,
                lambda h: self.cross_attn(h, memory_mask, memory=memory, cache=cross_cache),
            )
        return self._residual(x, self.ffn_norm, self.ffn)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos table (Vaswani et al. 2017, §3.5); a buffer, not a parameter."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
        )
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table[positions]


class Stack(nn.Module):
    """Token embedding + positions + layers (+ final norm for pre-LN).

    `layers` may hold the same module at several indices (cross-layer sharing): the
    list is the index plan, executed in order.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, n_layers: int, causal: bool, cross: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        if cfg.positions == "learned":
            self.pos: nn.Module = nn.Embedding(cfg.max_len, cfg.d_model)
        else:
            self.pos = SinusoidalPositions(cfg.max_len, cfg.d_model)
        self.layers = nn.ModuleList(Layer(cfg, cross) for _ in range(n_layers))
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.d_model) if cfg.scales_embeddings else 1.0
        self.max_len = cfg.max_len
        self.causal = causal

    def forward(
        self,
        tokens: Tensor,  # (B, T)
        offset: int = 0,  # position of tokens[:, 0]; > 0 when decoding with a cache
        key_pad: Tensor | None = None,  # (B, T) True at padding
        memory: Tensor | None = None,  # (B, S, d)
        memory_pad: Tensor | None = None,  # (B, S)
        cache: list[dict] | None = None,
    ) -> Tensor:
        T = tokens.shape[1]
        if offset + T > self.max_len:
            raise ValueError(
                f"sequence of length {offset + T} exceeds model.max_len={self.max_len}: "
                "raise model.max_len or filter long examples"
            )
        q_pos = torch.arange(offset, offset + T, device=tokens.device)
        x = self.dropout(self.embed(tokens) * self.scale + self.pos(q_pos))  # (B, T, d)
        self_mask = AttentionMask(
            q_pos, torch.arange(offset + T, device=tokens.device), key_pad, self.causal
        )
        memory_mask = None
        if memory is not None:
            s_pos = torch.arange(memory.shape[1], device=tokens.device)
            memory_mask = AttentionMask(q_pos, s_pos, memory_pad, causal=False)
        for i, layer in enumerate(self.layers):
            # the cache is per position in the plan, not per module: a reused block
            # sees different inputs at each of its positions
            layer_cache = None if cache is None else cache[i]
            x = layer(x, self_mask, memory, memory_mask, layer_cache)
        return x if self.norm is None else self.norm(x)


# ---------------------------------------------------------------------------- initialisation


def _init_normal(model: Transformer, embedding_std: float, linear_std) -> None:
    """Embeddings N(0, embedding_std), linears N(0, linear_std(it)), biases 0, LN 1/0."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=linear_std(module))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=embedding_std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_fairseq(model: Transformer) -> None:
    """Xavier-uniform linears, zero biases, N(0, d^-1/2) embeddings (token and learned
    positions) and output layer: a √d-scaled token embedding has unit variance."""
    d = model.cfg.d_model
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=d**-0.5)
    nn.init.normal_(model.output.weight, mean=0.0, std=d**-0.5)


def init_gpt2(model: Transformer) -> None:
    """Embeddings and linears N(0, 0.02); residual projections (attention out_proj, FFN
    fc2) N(0, 0.02/√N), N the residual sublayers of their stack (2 or 3 per layer)."""
    std: dict[nn.Module, float] = {}
    for stack in (m for m in model.modules() if isinstance(m, Stack)):
        attention = [a for layer in stack.layers for a in (layer.self_attn, layer.cross_attn)]
        projections = [a.out_proj for a in attention if a is not None]
        projections += [layer.ffn.fc2 for layer in stack.layers]
        std.update((p, 0.02 / math.sqrt(len(projections))) for p in projections)
    _init_normal(model, 0.02, lambda linear: std.get(linear, 0.02))


def init_t5(model: Transformer) -> None:
    """Mesh TF's T5: embeddings N(0, 1), every linear N(0, fan_in^-1/2), the untied output
    layer included. T5 folds attention's 1/√d_head into q's init; SDPA applies it here,
    so q is N(0, d^-1/2). The tied-logit scale is `Transformer.output_scale`."""
    _init_normal(model, 1.0, lambda linear: linear.in_features**-0.5)


INITS = {Init.fairseq: init_fairseq, Init.gpt2: init_gpt2, Init.t5: init_t5}


# ---------------------------------------------------------------------------- models


class Transformer(nn.Module):
    """What both architectures share: a decoder stack and a bias-free output projection.

    Subclasses register `output` last, so that a tied embedding counts under its first
    use (token embeddings) when parameters are listed in registration order.
    """

    arch: str

    def __init__(self, cfg: ModelConfig, vocab: Vocab) -> None:
        super().__init__()
        self.cfg, self.vocab = cfg, vocab

    def new_cache(self) -> list[dict]:
        """An empty KV cache, one slot per decoder layer position."""
        return [{} for _ in self.decoder.layers]

    def init_weights(self) -> None:
        """Initialise the (still untied) model by `model.init`'s convention."""
        INITS[self.cfg.init](self)

    def output_scale(self) -> float:
        """Decoder features' factor before the output projection: d^-1/2 under init=t5 when
        the output IS the decoder embedding (Mesh TF's tied logits), else 1. Asked at
        every forward, so it follows the ties build_model makes after construction."""
        if self.cfg.init == Init.t5 and self.output.weight is self.decoder.embed.weight:
            return self.cfg.d_model**-0.5
        return 1.0

    def logits(self, h: Tensor) -> Tensor:  # decoder features (B, T, d) → (B, T, V)
        scale = self.output_scale()
        return self.output(h if scale == 1.0 else h * scale)


class EncoderDecoder(Transformer):
    arch = "encdec"

    def __init__(self, cfg: ModelConfig, vocab: Vocab) -> None:
        super().__init__(cfg, vocab)
        self.encoder = Stack(cfg, vocab.src_size, cfg.enc_layers, causal=False, cross=False)
        self.decoder = Stack(cfg, vocab.tgt_size, cfg.dec_layers, causal=True, cross=True)
        self.output = nn.Linear(cfg.d_model, vocab.tgt_size, bias=False)
        self.init_weights()

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(memory (B, S, d), source padding (B, S))."""
        src_pad = src == PAD_ID
        return self.encoder(src, key_pad=src_pad), src_pad

    def decode(
        self,
        tgt_in: Tensor,  # (B, T), right-padded: causal masking keeps pads invisible
        memory: Tensor,
        src_pad: Tensor,
        cache: list[dict] | None = None,
        offset: int = 0,
    ) -> Tensor:
        h = self.decoder(tgt_in, offset, memory=memory, memory_pad=src_pad, cache=cache)
        return self.logits(h)  # (B, T, V)

    def features(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Decoder output before the output projection (B, T, d)."""
        memory, src_pad = self.encode(src)
        return self.decoder(tgt_in, memory=memory, memory_pad=src_pad)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.logits(self.features(src, tgt_in))  # (B, T, V)


class DecoderLM(Transformer):
    arch = "lm"

    def __init__(self, cfg: ModelConfig, vocab: Vocab) -> None:
        super().__init__(cfg, vocab)
        self.decoder = Stack(cfg, vocab.tgt_size, cfg.dec_layers, causal=True, cross=False)
        self.output = nn.Linear(cfg.d_model, vocab.tgt_size, bias=False)
        self.init_weights()

    def features(self, tokens: Tensor) -> Tensor:
        """Decoder output before the output projection (B, T, d)."""
        return self.decoder(tokens)

    def forward(self, tokens: Tensor, cache: list[dict] | None = None, offset: int = 0) -> Tensor:
        return self.logits(self.decoder(tokens, offset, cache=cache))  # (B, T, V)


ARCHITECTURES: dict[str, type[Transformer]] = {"encdec": EncoderDecoder, "lm": DecoderLM}
