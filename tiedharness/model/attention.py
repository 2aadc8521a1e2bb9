"""Attention: the masks a stack builds once per forward, multi-head attention whose Q, K
and V projections a strategy may share, and the KV cache that stores a shared K/V once.

Shapes: B batch, T length, d model width, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------- masks


@dataclass
class AttentionMask:
    """What a query may see, built once per stack forward and shared by its layers.

    Boolean masks are True where attention is allowed (the SDPA convention). The plain
    causal case without padding uses SDPA's `is_causal` fast path instead of a tensor.
    """

    q_pos: Tensor  # (Tq,) absolute positions of the queries
    k_pos: Tensor  # (Tk,) absolute positions of the keys
    key_pad: Tensor | None  # (B, Tk) True at padding keys
    causal: bool

    def __post_init__(self) -> None:
        self._built: dict[bool, tuple[Tensor | None, bool]] = {}

    def sdpa_args(self, mask_self: bool) -> tuple[Tensor | None, bool]:
        """(attn_mask, is_causal) for `F.scaled_dot_product_attention`."""
        if mask_self not in self._built:
            self._built[mask_self] = self._build(mask_self)
        return self._built[mask_self]

    def _build(self, mask_self: bool) -> tuple[Tensor | None, bool]:
        square = len(self.q_pos) == len(self.k_pos)
        if self.key_pad is None and not mask_self:
            if not self.causal:
                return None, False
            if square:
                return None, True
        allowed = torch.ones(len(self.q_pos), len(self.k_pos), dtype=torch.bool)
        allowed = allowed.to(self.q_pos.device)
        if self.causal:
            allowed &= self.k_pos[None, :] <= self.q_pos[:, None]
        allowed = allowed[None, None]  # (1, 1, Tq, Tk)
        if self.key_pad is not None:
            allowed = allowed & ~self.key_pad[:, None, None, :]  # (B, 1, Tq, Tk)
        if mask_self:
            # Reformer's shared-QK masking (shared QKV too): with Q = K a token's score
            # with itself is |q|²/√d, which dwarfs the rest, so it would attend mostly to
            # itself. A query that has no other key to look at (the first decoder
            # position) keeps itself.
            is_self = self.k_pos[None, :] == self.q_pos[:, None]
            others = allowed & ~is_self
            allowed = torch.where(others.any(-1, keepdim=True), others, allowed)
        return allowed, False


class Attention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`.

    Q, K and V each have a projection module. A sharing strategy may make two or three of
    them the same module (shared QK, KV or QKV); the forward then computes that
    projection once and the KV cache stores a shared K/V once.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.mask_self = False  # set by the `qk` and `qkv` strategies (sharing.qk_mask_self)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Q from x, K and V from source (x itself in self-attention), each shared
        projection applied once: under `qkv` this is one matmul, not three."""
        q = self.q_proj(x)
        k = q if self.k_proj is self.q_proj and source is x else self.k_proj(source)
        if self.v_proj is self.k_proj:
            v = k
        elif self.v_proj is self.q_proj and source is x:
            v = q
        else:
            v = self.v_proj(source)
        return q, k, v

    def forward(
        self,
        x: Tensor,  # (B, Tq, d)
        mask: AttentionMask,
        memory: Tensor | None = None,  # (B, Tk, d) for cross-attention
        cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        if memory is not None and cache is not None and "k" in cache:
            q, k, v = self.q_proj(x), cache["k"], cache["v"]  # encoder memory, projected once
        else:
            q, k, v = self.project(x, x if memory is None else memory)
            if cache is not None:
                k, v = _update_cache(cache, k, v, append=memory is None)
        attn_mask, is_causal = mask.sdpa_args(self.mask_self)
        y = F.scaled_dot_product_attention(
            self._heads(q),
            self._heads(k),
            self._heads(v),
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, H, Tq, d/H)
        return self.out_proj(y.transpose(1, 2).flatten(2))  # (B, Tq, d)

    def _heads(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # (B, T, d) → (B, H, T, d/H)


def _update_cache(cache: dict[str, Tensor], k: Tensor, v: Tensor, append: bool) -> tuple:
    """Store K and V; when they are one tensor (shared KV/QKV) they are stored once."""
    if append and "k" in cache:
        k_all = torch.cat([cache["k"], k], dim=1)
        v_all = k_all if v is k else torch.cat([cache["v"], v], dim=1)
    else:
        k_all, v_all = k, v
    cache["k"], cache["v"] = k_all, v_all
    return k_all, v_all
