"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for models that do not fit one device.

Each encoder and decoder layer is one sharding unit and the rest of the model (embeddings,
positions, output projection, final norms) the root unit. A tie must stay inside one
unit, or FSDP2 would hold the tied tensor twice: embedding/output ties (embed_output,
encdec_vocab, three_way, positional) live in the root and attention ties (qkv, qk, kv) in
one layer, so they shard; cross-layer sharing ties parameters of different layers, and is
refused with a message that names it. The contract: docs/running.md.
"""

from __future__ import annotations

import torch
from torch import nn

from tiedharness.model.transformer import Transformer


def sharding_units(model: Transformer) -> list[nn.Module]:
    return [layer for _, layer in _named_units(model)]


def check_ties_fit_units(model: Transformer) -> None:
    """Refuse a model where one tensor belongs to two sharding units (or to a layer and
    the root)."""
    owner: dict[int, str] = {}
    for name, unit in _named_units(model):
        for param in unit.parameters():
            if owner.setdefault(id(param), name) != name:
                raise ValueError(
                    f"trainer.fsdp=true cannot shard this model: {owner[id(param)]} and {name} "
                    "share a tensor (cross-layer sharing ties whole layers), and FSDP2 keeps "
                    "each unit's tensors apart; train it with DDP (trainer.fsdp=false)"
                )
    in_layers = set(owner)
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in in_layers and not _in_a_layer(name):
            raise ValueError(
                f"trainer.fsdp=true cannot shard this model: {name} is tied to a layer's "
                f"tensor ({owner[id(param)]}); train it with DDP (trainer.fsdp=false)"
            )


def _named_units(model: Transformer):
    for side in ("encoder", "decoder"):
        stack = getattr(model, side, None)
        for i, layer in enumerate(stack.layers if stack is not None else []):
            yield f"{side}.layers.{i}", layer


def _in_a_layer(name: str) -> bool:
    return name.startswith(("encoder.layers.", "decoder.layers."))


def fully_shard_model(model: Transformer) -> Transformer:
    """Shard each layer, then the root, in place; decoding's entry points (encode,
    decode) gather the root's tensors as forward does."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    check_ties_fit_units(model)
    for unit in sharding_units(model):
        fully_shard(unit)
    fully_shard(model)
    for method in ("encode", "decode"):
        if hasattr(model, method):
            register_fsdp_forward_method(model, method)
    return model


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The whole model's and optimizer's state, gathered to rank 0 on the CPU (every rank
    must call it; the others get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(model, options=options),
        get_optimizer_state_dict(model, optimizer, options=options),
    )


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Shard a full model and optimizer state (each rank read the checkpoint) back in."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=options)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
