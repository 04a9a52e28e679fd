"""Activation checkpointing switches (``MODEL.{CLIP,AGGREGATOR,DECODER}.CHECKPOINT_ACTIVATIONS``).

A checkpointed segment keeps only its inputs during the forward pass and recomputes its
activations in the backward pass: less training memory for one extra forward of the segment.
Results and gradients are unchanged (the recomputation runs the same kernels on the same
inputs; no segment of these models draws random numbers, and the RNG state is restored
anyway). Off by default; it only acts while autograd records (training), never in inference.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.checkpoint import checkpoint


def checkpointed(fn: Callable[..., Any], *args: Any, enabled: bool) -> Any:
    """``fn(*args)``, as a checkpointed segment when ``enabled`` and autograd is recording.

    Uses PyTorch's non-reentrant checkpoint (``use_reentrant=False``): ``args`` may hold
    tensors that need no gradient, ``None`` or lists of tensors, and gradients reach the
    parameters ``fn`` uses even when no input requires grad.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
