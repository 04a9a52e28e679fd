"""Layers applied to a [cost ; guidance] concatenation, computed without the concatenation.

Every CAT-Seg-family aggregator and decoder feeds layers with the per-class cost embedding
concatenated with guidance shared by many of those maps: the appearance guidance of an image
is the same for its T classes (Swin q/k, decoder convolutions), the text guidance of a class
the same at every location (class-attention q/k). A linear layer or convolution is linear in
its input channels, so with W = [W_x | W_g]

    layer([x ; g]) = (W_x · x + b) + W_g · g

and the guidance term W_g · g is computed once per shared map and broadcast, instead of
copying g T times and multiplying it T times. Parameters keep their official names and
shapes (one ``weight`` over all input channels), so checkpoints load unchanged. Results equal
the concatenated computation up to float rounding (the two partial sums are added in a
different order).

New aggregators and decoders use :func:`guided_linear` / :func:`guided_conv2d` (or the two
halves, when the guidance term must be rearranged before it is added, as in windowed
attention) instead of ``torch.cat([x, guidance.expand(...)])``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _check_split(in_channels: int, x_channels: int, g_channels: int, layer: nn.Module) -> None:
    if x_channels + g_channels != in_channels:
        raise ValueError(f"{type(layer).__name__} takes {in_channels} input channels, got {x_channels} cost + "
                         f"{g_channels} guidance channels")


def linear_cost_term(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """W_x · x + b: the layer's first ``x.shape[-1]`` input columns and its bias.

    x: (..., C_x) with C_x ≤ in_features → (..., out_features).
    """
    if x.shape[-1] > layer.in_features:
        raise ValueError(f"cost has {x.shape[-1]} channels, the layer takes {layer.in_features}")
    return F.linear(x, layer.weight[:, : x.shape[-1]], layer.bias)


def linear_guidance_term(layer: nn.Linear, guidance: torch.Tensor) -> torch.Tensor:
    """W_g · g (no bias): the layer's last ``guidance.shape[-1]`` input columns.

    guidance: (..., G) with G < in_features → (..., out_features).
    """
    g = guidance.shape[-1]
    if not 0 < g < layer.in_features:
        raise ValueError(f"guidance has {g} channels, the layer takes {layer.in_features} in all")
    return F.linear(guidance, layer.weight[:, layer.in_features - g:])


def guided_linear(layer: nn.Linear, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
    """``layer(cat([x, guidance.expand_as(...)], -1))`` without the copy.

    x: (..., C_x); guidance: (..., G) broadcastable to x's leading dimensions (e.g. (B, 1, T, G)
    against (B, L, T, C_x)), or None for ``layer(x)``. Returns x's leading shape × out_features.
    Raises ValueError when C_x + G ≠ in_features.
    """
    if guidance is None:
        return layer(x)
    _check_split(layer.in_features, x.shape[-1], guidance.shape[-1], layer)
    return linear_cost_term(layer, x) + linear_guidance_term(layer, guidance)


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, 1)


def guided_conv2d(conv: nn.Conv2d, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
    """``conv(cat([x, guidance.repeat_interleave(T, 0)], 1))`` without the copy.

    x: (B·T, C_x, H, W), the T maps of each image consecutive; guidance: (B, G, H, W), one map per
    image, or None for ``conv(x)``. Returns (B·T, out, H', W'). Exact for zero padding and
    ``groups == 1`` (zero-padding the concatenation pads each part with zeros).
    Raises ValueError on a channel-count mismatch, a batch that is not a multiple of B, or a
    layer the split does not hold for.
    """
    if guidance is None:
        return conv(x)
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("guided_conv2d needs groups=1 and numeric zero padding")
    cx, b = x.shape[1], guidance.shape[0]
    _check_split(conv.in_channels, cx, guidance.shape[1], conv)
    if x.shape[0] % b:
        raise ValueError(f"{x.shape[0]} cost maps are not a whole number per image for {b} guidance maps")
    cost = _conv(conv, x, conv.weight[:, :cx], conv.bias)
    shared = _conv(conv, guidance, conv.weight[:, cx:], None)
    return (cost.view(b, -1, *cost.shape[1:]) + shared.unsqueeze(1)).flatten(0, 1)
