"""The network's weights on disk: the one place that reads checkpoints, and the writer of the shipped file.

A checkpoint is a state dict (``{name: tensor}``, as the shipped ``models/model.pt``) or a dict wrapping one, as
ignite / MONAI's ``CheckpointSaver`` write them (``{"network": state_dict, "optimizer": ..., ...}``) and other trainers
do (``"model"``, ``"state_dict"``, ``"net"``); a network saved inside a (Distributed)DataParallel wrapper has keys
starting with ``module.``. :func:`read_state_dict` undoes both; the loaders build on it:

- :func:`load_network_weights`: a whole network for inference and evaluation (one-line errors for a checkpoint of
  another preset);
- :func:`load_pretrained`: the start of a fine-tuning (an MAE's encoder, or every tensor a heart network shares);
- :func:`load_encoder_weights`: the encoder alone.

:func:`shipped_precision` writes a checkpoint as the bundle ships it: float16 but for the phenotype heads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from scripts.encoder import CineEncoder
from scripts.files import atomic_path
from scripts.flags import as_flag

logger = logging.getLogger(__name__)

#: keys under which training checkpoints hold the network's state dict (ignite/MONAI, Lightning and others)
CHECKPOINT_WRAPPER_KEYS = ("network", "model", "state_dict", "net")

#: tensors the shipped file keeps in float32: the phenotype head (its input statistics standardise an embedding whose
#: mean dwarfs its spread, so rounding them moves its values; a few thousand numbers) and the measure head (a few
#: hundred, most of them in mL)
KEEP_FLOAT32 = ("phenotype_head.", "measure_head.")


def unwrap_network(network: nn.Module) -> nn.Module:
    """``network`` without a (Distributed)DataParallel wrapper, whose own state-dict keys start with ``module.``."""
    return network.module if hasattr(network, "module") else network


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict inside ``checkpoint`` (under one of :data:`CHECKPOINT_WRAPPER_KEYS`, or ``checkpoint`` itself),
    with the ``module.`` prefix of a DataParallel-wrapped network removed from its keys."""
    for key in CHECKPOINT_WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return unwrap_state_dict(checkpoint[key])
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file that torch cannot load: truncated, corrupt, or not a weights file."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict a checkpoint file holds, read with ``torch.load(weights_only=True)`` (tensors and plain values only:
    loading a file never runs code from it).

    Raises:
        UnreadableCheckpointError: naming the file, when torch cannot read it. torch's own message is left out:
            for a corrupt file it would advise ``weights_only=False``, which runs whatever the file holds.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:  # missing, or not readable by this user: the system's message names the file and says why
        raise
    except Exception as err:  # EOFError, RuntimeError (zip reader), UnpicklingError, ...: all mean "unreadable"
        raise UnreadableCheckpointError(
            f"cannot read the checkpoint {path} ({type(err).__name__}): it is truncated or corrupt (e.g. written by a "
            "run that was stopped mid-write, or copied incompletely), or it is not a PyTorch weights file"
        ) from None


def read_state_dict(checkpoint: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """The state dict of a checkpoint given as a dict or as a path (read on the CPU by :func:`load_checkpoint`),
    unwrapped by :func:`unwrap_state_dict`."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint(checkpoint)
    return unwrap_state_dict(checkpoint)


def load_network_weights(network: nn.Module, checkpoint: str | os.PathLike) -> nn.Module:
    """Load a full network state dict (plain, or wrapped as ``{"network": ...}`` by a training checkpoint).

    Raises:
        FileNotFoundError: no file at ``checkpoint``.
        RuntimeError: the file holds a network of another preset or kind (one line naming a tensor and ``--preset``).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"no weights at {checkpoint}: pass --ckpt with a trained model (see docs/README.md for the training recipe)"
        )
    state = read_state_dict(checkpoint)
    target = unwrap_network(network)
    # weights of another preset share the keys but not the shapes; name one instead of torch's list of every tensor
    own = target.state_dict()
    resized = [key for key, value in state.items() if key in own and tuple(value.shape) != tuple(own[key].shape)]
    if resized and all(key.startswith("refiner.") for key in resized):
        raise RuntimeError(
            f"{checkpoint} holds a refiner of other widths or image frames ({resized[0]}: "
            f"{tuple(state[resized[0]].shape)} in the file, {tuple(own[resized[0]].shape)} here): pass the "
            "--refiner_channels and --refiner_frame_offsets it was trained with"
        )
    if resized:
        key = resized[0]
        raise RuntimeError(
            f"{checkpoint} holds a network of another size ({len(resized)} tensors differ, e.g. {key}: "
            f"{tuple(state[key].shape)} in the file, {tuple(own[key].shape)} here): check --preset matches the "
            "checkpoint (the shipped models/model.pt is preset small)"
        )
    missing, unexpected = target.load_state_dict(state, strict=False)
    # weights saved before the measure head or the refiner existed load with them unfit: phenotypes then come from
    # the embedding, and an untrained refiner returns the decoder's segmentation unchanged (at its cost)
    if any(key.startswith("refiner.") for key in missing):
        logger.warning(f"{checkpoint} has no refiner weights: the refiner leaves the segmentation unchanged")
    missing = [key for key in missing if not key.startswith(("measure_head.", "refiner."))]
    # a network built without a refiner (--refiner_channels "[]") segments with the decoder alone, 4x faster
    if any(key.startswith("refiner.") for key in unexpected):
        logger.warning(f"{checkpoint} has a refiner and this network none: the decoder's segmentation is used")
    unexpected = [key for key in unexpected if not key.startswith("refiner.")]
    if missing or unexpected:
        raise RuntimeError(
            f"{checkpoint} does not match the network ({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}): check --preset matches the checkpoint"
        )
    return network


def load_encoder_weights(
    model: nn.Module, state_dict_or_path: Mapping[str, Any] | str | os.PathLike, strict: bool = True
) -> dict[str, Any]:
    """Load encoder weights into ``model.encoder`` from a CineMAE / CineHeartNet checkpoint.

    Accepts a state dict, a checkpoint dict wrapping one (``{"network": sd}``, ``{"model": sd}``, ...) or a path to
    either (:func:`read_state_dict`). Keys are matched by the ``encoder.`` prefix; a bare encoder state dict also works.

    Returns:
        dict(loaded=number of tensors loaded, missing_keys=[...], unexpected_keys=[...]).

    Raises:
        ValueError: if no encoder weights are found.
    """
    if not isinstance(getattr(model, "encoder", None), CineEncoder):
        raise TypeError(f"model must have a CineEncoder at .encoder (CineMAE or CineHeartNet), got {type(model)}")
    state_dict = read_state_dict(state_dict_or_path)
    encoder_state = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    if not encoder_state and set(model.encoder.state_dict()) & set(state_dict):
        encoder_state = state_dict
    if not encoder_state:
        sample = sorted(state_dict)[:5]
        raise ValueError(
            "no encoder weights found: expected keys starting with 'encoder.' (CineMAE / CineHeartNet checkpoint, "
            f"possibly wrapped as {{'network': state_dict}}), got keys like {sample}"
        )
    result = model.encoder.load_state_dict(encoder_state, strict=strict)
    return {
        "loaded": len(encoder_state) - len(result.unexpected_keys),
        "missing_keys": list(result.missing_keys),
        "unexpected_keys": list(result.unexpected_keys),
    }


def load_pretrained(
    network: nn.Module,
    checkpoint: str | None,
    freeze_encoder: bool = False,
    train_only: str | None = None,
) -> nn.Module:
    """Start a fine-tuning from ``checkpoint`` (``None`` or ``""`` = from scratch).

    A pretraining (MAE) checkpoint gives the encoder; a ``CineHeartNet`` checkpoint (e.g. the segmentation model,
    when fine-tuning phenotypes on top of it) gives every tensor it shares with ``network``.

    Args:
        freeze_encoder: keep the encoder's weights fixed (a bool, or the command line's ``true`` / ``false``).
        train_only: with ``freeze_encoder``, the one submodule left trainable (e.g. ``"phenotype_head"``: a head fit
            on the segmentation model leaves its segmentation unchanged); everything else is frozen too.
    """
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f"pretrained checkpoint {checkpoint} not found: run the previous workflow first, "
                "or pass --pretrained_ckpt \"''\" to fine-tune from scratch"
            )
        state = read_state_dict(checkpoint)
        own = network.state_dict()
        is_heart_checkpoint = any(k.startswith("segmenter.") for k in state)
        if is_heart_checkpoint:
            shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            network.load_state_dict(shared, strict=False)
            logger.info(f"loaded {len(shared)} of {len(own)} tensors from {checkpoint}")
        else:
            info = load_encoder_weights(network, state)
            logger.info(f"loaded the pretrained encoder ({info['loaded']} tensors) from {checkpoint}")
    else:
        logger.info("no pretrained checkpoint: training from scratch")
    if as_flag(freeze_encoder, "freeze_encoder"):
        network.encoder.requires_grad_(False)
        if train_only:
            network.requires_grad_(False)
            getattr(network, train_only).requires_grad_(True)
    return network


def shipped_precision(checkpoint: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``destination`` with every floating tensor outside :data:`KEEP_FLOAT32` rounded to
    float16, as the shipped file holds it; returns ``destination``.

    The Model Zoo caps files at 25 MB and float32 `small` weights are ~32 MB, so the shipped file is float16. The
    heads are fit in closed form on the network they are given; fitting them on this rounded network, rather than
    on the float32 one, makes them fit the encoder and segmentation that users actually run."""
    shipped = {
        key: value.half() if value.is_floating_point() and not key.startswith(KEEP_FLOAT32) else value
        for key, value in read_state_dict(checkpoint).items()
    }
    # through a file object: torch names the archive inside after a path, which would be the random temporary one
    with atomic_path(destination, durable=True) as temp_path, open(temp_path, "wb") as file:
        torch.save(shipped, file)
    return Path(destination)
