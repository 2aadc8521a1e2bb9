"""Parameter accounting, exact to the parameter.

A tie makes several attribute paths point at one tensor. `model.parameters()` yields
each tensor once, so it gives the unique total; `named_parameters(remove_duplicate=False)`
yields every path, so it gives the total of the same architecture untied (every
strategy only aliases paths that exist in the untied model). Never sum `state_dict()`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tiedharness.model.config import ModelConfig, SharingConfig
from tiedharness.model.names import COMPONENTS
from tiedharness.model.sharing import build_model
from tiedharness.vocab import Vocab


def component_of(path: str) -> str:
    for component, pattern in COMPONENTS:
        if re.search(pattern, path):
            return component
    raise ValueError(
        f"parameter {path!r} belongs to no component: extend COMPONENTS in tiedharness/model/names.py"
    )


@dataclass(frozen=True)
class ParamReport:
    sharing: str
    total: int  # unique parameters: what the optimizer updates and a checkpoint stores
    untied_total: int  # the same architecture with every tie undone
    by_component: dict[str, int]  # unique parameters per component; sums to `total`
    untied_by_component: dict[str, int]

    @property
    def saved(self) -> int:
        return self.untied_total - self.total

    @property
    def reduction(self) -> float:
        """Fraction of the untied parameters that sharing removes."""
        return self.saved / self.untied_total if self.untied_total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "saved": self.saved, "reduction": self.reduction}


def count_params(model: nn.Module, sharing: str = "none") -> ParamReport:
    by_component = dict.fromkeys((c for c, _ in COMPONENTS), 0)
    untied_by_component = dict(by_component)
    for path, p in model.named_parameters():  # deduplicated: each tensor once
        by_component[component_of(path)] += p.numel()
    for path, p in model.named_parameters(remove_duplicate=False):  # every use
        untied_by_component[component_of(path)] += p.numel()
    return ParamReport(
        sharing=sharing,
        total=sum(p.numel() for p in model.parameters()),
        untied_total=sum(untied_by_component.values()),
        by_component=by_component,
        untied_by_component=untied_by_component,
    )


def param_report(cfg: ModelConfig, vocab: Vocab, sharing: SharingConfig) -> ParamReport:
    """Count without allocating: the model is built on the meta device."""
    with torch.device("meta"):
        model = build_model(cfg, vocab, sharing)
    return count_params(model, sharing.name)


_SHORT = {
    "token_embeddings": "tok_emb",
    "positions": "pos",
    "attention": "attn",
    "feed_forward": "ffn",
    "norms": "norms",
    "output_projection": "output",
}


def format_table(
    reports: list[ParamReport | tuple[str, str]], cfg: ModelConfig, vocab: Vocab
) -> str:
    """A plain-text table; a (name, reason) pair is a strategy that does not apply."""
    if cfg.arch == "lm":
        shape, vocab_text = f"layers={cfg.dec_layers}", f"{vocab.tgt_size}"
    else:
        shape = f"layers={cfg.enc_layers}+{cfg.dec_layers}"
        vocab_text = (
            f"joint {vocab.tgt_size}"
            if vocab.joint
            else f"separate {vocab.src_size} src / {vocab.tgt_size} tgt"
        )
    header = (
        f"arch={cfg.arch} d_model={cfg.d_model} {shape} positions={cfg.positions} "
        f"norm={cfg.norm} vocab: {vocab_text}"
    )
    columns = ["sharing", "total", "untied", "saved", "reduction", *_SHORT.values()]
    table = [columns]  # rows of strategies that apply
    not_applicable = []  # (name, first clause of the reason)
    for r in reports:
        if isinstance(r, ParamReport):
            numbers = [r.total, r.untied_total, r.saved]
            numbers += [r.by_component[c] for c in _SHORT]
            cells = [f"{n:,}" for n in numbers]
            table.append([r.sharing, *cells[:3], f"{100 * r.reduction:.2f}%", *cells[3:]])
        else:
            not_applicable.append((r[0], r[1].split(": ")[0]))
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    widths[0] = max([widths[0], *(len(name) for name, _ in not_applicable)])
    lines = [header, ""]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    lines += [f"{name:<{widths[0]}}  n/a: {reason}" for name, reason in not_applicable]
    if any(not isinstance(r, ParamReport) for r in reports):
        lines += [
            "",
            "n/a: run with sharing=NAME (or format=json) for the whole reason and its fix",
        ]
    return "\n".join(lines)
