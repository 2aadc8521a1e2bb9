"""tiedharness-params: unique / untied parameter totals per strategy and component."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from tiedharness.cli import CONF_DIR, fail
from tiedharness.cli.help import run_app
from tiedharness.config import OutputFormat  # importing it registers the config schemas
from tiedharness.model.config import Arch, ModelConfig, SharingConfig
from tiedharness.model.names import STRATEGY_NAMES
from tiedharness.model.params import ParamReport, format_table, param_report
from tiedharness.vocab import Vocab


def vocab_from_cfg(cfg: DictConfig) -> Vocab:
    """`vocab_size=N` is one joint vocabulary; `src_vocab_size`/`tgt_vocab_size` are separate."""
    src, tgt = cfg.get("src_vocab_size"), cfg.get("tgt_vocab_size")
    if src is None and tgt is None:
        return Vocab.shared(cfg.vocab_size)
    return Vocab.separate(src or cfg.vocab_size, tgt or cfg.vocab_size)


def main() -> None:
    """The console script: `--help`, and the command line's keys checked, before Hydra."""
    run_app("params", app)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="params")
def app(cfg: DictConfig) -> None:
    try:
        model_cfg: ModelConfig = OmegaConf.to_object(cfg.model)
        if model_cfg.arch == Arch.auto:  # no task to follow: an encoder-decoder
            model_cfg = model_cfg.resolved(Arch.encdec)
        vocab = vocab_from_cfg(cfg)
        if cfg.get("sharing") is not None:  # one strategy, chosen with sharing=NAME
            report = param_report(model_cfg, vocab, OmegaConf.to_object(cfg.sharing))
            print_reports([report], model_cfg, vocab, cfg.format, single=True)
            return
        reports: list[ParamReport | tuple[str, str]] = []
        for name in STRATEGY_NAMES:
            try:
                reports.append(param_report(model_cfg, vocab, SharingConfig.of(name)))
            except ValueError as err:  # this strategy does not apply to this model
                reports.append((name, str(err)))
        print_reports(reports, model_cfg, vocab, cfg.format, single=False)
    except ValueError as err:
        fail(str(err))


def print_reports(
    reports: list, model_cfg: ModelConfig, vocab: Vocab, fmt: OutputFormat, single: bool
):
    if fmt == OutputFormat.table:
        print(format_table(reports, model_cfg, vocab))
        return
    rows = [
        r.to_dict() if isinstance(r, ParamReport) else {"sharing": r[0], "error": r[1]}
        for r in reports
    ]
    print(json.dumps(rows[0] if single else rows, indent=2))
