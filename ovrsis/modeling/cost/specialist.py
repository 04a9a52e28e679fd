"""Specialist cost volumes: features of a non-CLIP encoder projected into the CLIP text space.

GSNet (and RSKT-Seg) take the last DINO block (768 ch at 48², stride 8), project it with a
trainable 2×2 stride-2 convolution to the CLIP embedding width at the CLIP grid (512 ch at
24²), and correlate it with the CLIP text embeddings exactly like the CLIP cost.
"""
from __future__ import annotations

import torch
from torch import nn

from .volume import cosine_cost


class SpecialistCost(nn.Module):
    """(B, D, s·h, s·w) specialist features → (B, P, T, h, w) cosine cost with CLIP text."""

    def __init__(self, in_dim: int, text_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, text_dim, kernel_size=stride, stride=stride)

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """text: (T, P, C) shared or (B, T, P, C) per image (e.g. after top-k class selection)."""
        return cosine_cost(self.proj(features), text)
