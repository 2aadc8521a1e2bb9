"""Parameter accounting, checked against totals worked out by hand."""

from __future__ import annotations

import pytest
from conftest import LM_STRATEGIES, TINY, VOCAB, tiny_cfg, tiny_model

from tiedharness.model.config import ModelConfig
from tiedharness.model.params import count_params, param_report
from tiedharness.model.sharing import STRATEGIES, SharingConfig
from tiedharness.vocab import Vocab

BASE_POST_SINUSOIDAL = ModelConfig(
    arch="encdec",
    d_model=512,
    n_heads=8,
    d_ff=2048,
    enc_layers=6,
    dec_layers=6,
    norm="post",
    positions="sinusoidal",
    max_len=512,
)


@pytest.mark.parametrize(
    ("sharing", "vocab", "total", "untied"),
    [
        # Vaswani base: 44,138,496 non-embedding parameters + one shared V×512 matrix
        # (63,082,496 = 44,138,496 + 37,000 × 512).
        ("three_way", 37000, 63_082_496, 44_138_496 + 3 * 37000 * 512),
        ("three_way", 32768, 60_915_712, 44_138_496 + 3 * 32768 * 512),
        ("none", 37000, 100_970_496, 100_970_496),
    ],
)
def test_vaswani_base_totals(sharing, vocab, total, untied):
    report = param_report(BASE_POST_SINUSOIDAL, Vocab.shared(vocab), SharingConfig.of(sharing))
    assert report.total == total
    assert report.untied_total == untied


def test_vaswani_base_non_embedding_parameters_by_hand():
    d, ff, layers = 512, 2048, 6
    attention = 4 * (d * d + d)
    ffn = d * ff + ff + ff * d + d
    norm = 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    assert layers * (encoder_layer + decoder_layer) == 44_138_496
    report = param_report(BASE_POST_SINUSOIDAL, Vocab.shared(37000), SharingConfig.of("none"))
    by = report.by_component
    assert by["attention"] == 3 * layers * attention
    assert by["feed_forward"] == 2 * layers * ffn
    assert by["norms"] == 5 * layers * norm
    assert by["positions"] == 0
    assert by["token_embeddings"] == 2 * 37000 * d
    assert by["output_projection"] == 37000 * d


def _tiny_savings(name: str, arch: str) -> int:
    """Parameters strategy `name` removes from the tiny model, by hand."""
    d, ff, V, L, T = TINY["d_model"], TINY["d_ff"], VOCAB, 2, TINY["max_len"]
    linear = d * d + d
    attention = 4 * linear
    encoder_layer = attention + d * ff + ff + ff * d + d + 2 * 2 * d
    decoder_layer = encoder_layer + attention + 2 * d if arch == "encdec" else encoder_layer
    savings = {
        "none": 0,
        "embed_output": V * d,
        "encdec_vocab": V * d,
        "three_way": 2 * V * d,
        "positional": T * d,
        "qkv": L * 2 * linear,
        "qk": L * linear,
        "kv": L * linear,
        "cross_layer": (L - 1) * (decoder_layer + (encoder_layer if arch == "encdec" else 0)),
        "all": (2 * V * d + T * d if arch == "encdec" else V * d) + L * 2 * linear,
    }
    return savings[name]


def _tiny_untied_total(arch: str) -> int:
    d, ff, V, L, T = TINY["d_model"], TINY["d_ff"], VOCAB, 2, TINY["max_len"]
    attention = 4 * (d * d + d)
    ffn = d * ff + ff + ff * d + d
    stack_extra = V * d + T * d + 2 * d  # tokens, positions, final pre-LN norm
    encoder = stack_extra + L * (attention + ffn + 4 * d)
    decoder = stack_extra + L * (2 * attention + ffn + 6 * d)
    lm_decoder = stack_extra + L * (attention + ffn + 4 * d)
    output = V * d
    return encoder + decoder + output if arch == "encdec" else lm_decoder + output


CASES = [(n, "encdec") for n in STRATEGIES] + [(n, "lm") for n in LM_STRATEGIES]


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_tiny_totals_match_hand_counts(name, arch):
    report = count_params(tiny_model(name, arch=arch), name)
    assert report.untied_total == _tiny_untied_total(arch)
    assert report.total == _tiny_untied_total(arch) - _tiny_savings(name, arch)
    assert report.saved == _tiny_savings(name, arch)
    assert report.reduction == pytest.approx(report.saved / report.untied_total)


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_components_sum_to_totals(name, arch):
    model = tiny_model(name, arch=arch)
    report = count_params(model)
    assert sum(report.by_component.values()) == report.total
    assert sum(report.untied_by_component.values()) == report.untied_total
    assert report.total == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    # the untied-equivalent is literally the untied model's count
    assert report.untied_total == count_params(tiny_model(arch=arch)).total


def test_tied_tensor_counts_under_its_first_use():
    by = count_params(tiny_model("three_way")).by_component
    d, V = TINY["d_model"], VOCAB
    assert by["token_embeddings"] == V * d
    assert by["output_projection"] == 0


def test_meta_device_report_equals_a_real_model():
    cfg, vocab = tiny_cfg(), Vocab.shared(VOCAB)
    for name in STRATEGIES:
        on_meta = param_report(cfg, vocab, SharingConfig.of(name))
        assert on_meta.to_dict() == count_params(tiny_model(name), name).to_dict()
