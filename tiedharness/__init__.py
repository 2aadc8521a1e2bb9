"""tiedharness: ablation experiments on weight sharing in Transformers.

Build a model with `tiedharness.model.sharing.build_model(cfg, vocab, sharing)` and count it
with `tiedharness.model.params.count_params(model)`.
"""

__version__ = "0.1.0"
