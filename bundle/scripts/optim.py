"""The optimiser's parameter groups: which parameters train (what freezing left), and at what learning rate."""

from __future__ import annotations

from typing import Any

import torch

from scripts.weights import unwrap_network


def trainable_parameters(
    network: torch.nn.Module,
    learning_rate: float | None = None,
    head_learning_rate: float | None = None,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups of the parameters that require gradients (what is left after freezing).

    With ``head_learning_rate`` the modules outside ``encoder`` (segmentation decoder, phenotype head, MAE decoder)
    get their own learning rate: a pretrained encoder is tuned gently while freshly initialised heads need larger
    steps to be trained within a short schedule. With ``layer_decay`` < 1 the encoder's rate also shrinks with
    depth from the output (layer-wise decay, as MAE/BEiT fine-tune): block ``i`` of ``L`` gets
    ``learning_rate * layer_decay ** (L - i)``, the patch and plane embeddings ``layer_decay ** L``, the final norm
    the full rate, so the early layers, whose pretrained features are the most general, move least.

    Args:
        network: the network being trained.
        learning_rate: rate of the encoder's last layer (None: the optimiser's default).
        head_learning_rate: rate of everything else (None: same as the encoder).
        layer_decay: per-block factor in (0, 1]; 1 = one rate for the whole encoder.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {layer_decay}")
    target = unwrap_network(network)
    if layer_decay == 1.0 and (head_learning_rate is None or head_learning_rate == learning_rate):
        # one group, so checkpoints of single-rate runs resume whatever the rates are called
        return [{"params": [p for p in target.parameters() if p.requires_grad]}]
    if layer_decay < 1.0 and learning_rate is None:
        raise ValueError("layer_decay scales the encoder's learning_rate: give one")
    # blocks between an encoder parameter and the encoder's output: the final norm 0, block i of L (1-based)
    # L - i, the embeddings (any other encoder parameter) L; read from the modules, not parsed from names
    blocks = target.encoder.blocks
    steps_below_top = {id(p): len(blocks) - 1 - k for k, block in enumerate(blocks) for p in block.parameters()}
    steps_below_top.update({id(p): 0 for p in target.encoder.norm.parameters()})

    # group key: (0 = encoder, decay steps) or (1 = heads, 0); sorted, the encoder groups come first
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for name, parameter in target.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("encoder."):
            steps = steps_below_top.get(id(parameter), len(blocks)) if layer_decay < 1.0 else 0
            key, rate = (0, steps), None if learning_rate is None else learning_rate * layer_decay**steps
        else:
            key, rate = (1, 0), head_learning_rate
        group = groups.setdefault(key, {"params": []} if rate is None else {"params": [], "lr": float(rate)})
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]
