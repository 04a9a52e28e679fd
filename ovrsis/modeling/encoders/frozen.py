"""Shared by the frozen pretrained streams (DINO, SAM, SAM 2, guidance CLIP): a strict load
whose error lists every mismatch, and freezing that the checkpoint key report understands."""
from __future__ import annotations

import logging
from typing import Callable, Mapping

import torch
from torch import nn

from ...errors import CheckpointError

logger = logging.getLogger(__name__)


def load_state_strictly(module: nn.Module, state: Mapping[str, torch.Tensor], description: str,
                        shown: int = 8) -> int:
    """Copy ``state`` into ``module`` (cast to each parameter's dtype) only if the keys and
    shapes match exactly; returns the number of tensors loaded.

    Raises:
        CheckpointError: ``"{description}: N missing [...], N unexpected [...], N with another
        shape [...]"``; ``description`` names the file and the config keys to check.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        def fmt(keys):
            return ", ".join(keys[:shown]) + (" ..." if len(keys) > shown else "")
        raise CheckpointError(f"{description}: {len(missing)} missing [{fmt(missing)}], {len(unexpected)} unexpected "
                              f"[{fmt(unexpected)}], {len(shapes)} with another shape [{fmt(shapes)}]")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return len(own)


def load_and_freeze(module: nn.Module, weights: str, frozen: bool, load: Callable[[str], None], name: str,
                    key: str) -> None:
    """The end of every stream's construction: ``load(weights)`` when a file is given, else a
    warning that ``name`` stays random until MODEL.WEIGHTS provides it (``key`` is the config key
    to set); then :func:`freeze`."""
    if weights:
        load(weights)
    else:
        logger.warning("%s has random weights (%s is empty): a full model checkpoint (MODEL.WEIGHTS) must "
                       "provide them", name, key)
    freeze(module, frozen, loaded_from_file=bool(weights))


def freeze(module: nn.Module, frozen: bool, loaded_from_file: bool) -> None:
    """Mark ``module`` as loaded from its own file (exempt from MODEL.WEIGHTS' strict key check,
    :mod:`ovrsis.checkpoint.checkpointer`) when it is frozen; freeze it: no gradients, eval mode."""
    module.pretrained_from_file = bool(loaded_from_file) and frozen
    if frozen:
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
