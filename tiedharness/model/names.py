"""Names the model code and the analysis code share, torch-free.

`STRATEGY_NAMES` is the sharing strategies' canonical order (tables, legends, colours);
each name has one registered function in tiedharness/model/sharing.py, which refuses to
register a name missing here. `COMPONENTS` splits parameters for the budget tables.
"""

from __future__ import annotations

STRATEGY_NAMES = (
    "none",
    "embed_output",
    "encdec_vocab",
    "three_way",
    "positional",
    "qkv",
    "qk",
    "kv",
    "cross_layer",
    "all",
)

# Component of a parameter by its path; first match wins. A tied tensor counts once,
# in the component of the first path that uses it (encoder before decoder before output),
# so the components always sum to the unique total.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("token_embeddings", r"\.embed\.weight$"),
    ("positions", r"\.pos\.weight$"),
    ("attention", r"_attn\.(q|k|v|out)_proj\."),
    ("feed_forward", r"\.ffn\."),
    ("norms", r"norm\.(weight|bias)$"),
    ("output_projection", r"^output\.weight$"),
)

# Options of the sharing group, the short name a run's label gives them and the
# strategies they change. A label names the non-default options that apply to its
# strategies: qk with qk_mask_self=true is "qk+mask_self", qkv "qkv+mask_self" (and all,
# whose qkv takes it too); kv and none stay "kv" and "none" whatever is set.
SHARING_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qk_mask_self": ("mask_self", ("qk", "qkv", "all")),
    "attention_scope": ("scope", ("qkv", "qk", "kv", "all")),
    "cross_layer.unique": ("unique", ("cross_layer",)),
    "cross_layer.plan": ("plan", ("cross_layer",)),
    "cross_layer.scope": ("layers", ("cross_layer",)),
}
