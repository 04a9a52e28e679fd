"""Spatial cost aggregation: Swin blocks whose queries and keys also see appearance guidance.

CAT-Seg's variant: pre-LN, W-MSA then SW-MSA (shift = window/2, −100 mask between
regions), no relative position bias; after ``norm1`` the normalised 128-ch guidance is
concatenated so Q and K see [cost; guidance] while V sees the cost only.

The guidance is the same for the T class maps of an image, so its share of Q and K is
computed once per image and broadcast (:mod:`ovrsis.modeling.guided_layers`); the weights
keep the official [cost; guidance] layout.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..guided_layers import guided_linear


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, H, W, C) → (N·nW, window², C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (N·nW, window², C) → (N, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Additive (nW, window², window²) mask: −100 between tokens of different regions."""
    regions = torch.zeros(1, h, w, 1)
    count = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, hs, ws, :] = count
            count += 1
    ids = window_partition(regions, window).squeeze(-1)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class GuidedWindowAttention(nn.Module):
    """Window attention with Q, K from [x; guidance] and V from x (official ``q``/``k`` weights
    span dim + guidance_dim inputs)."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor],
                guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B·T·nW, L, dim) windows of the T class maps of B images (image-major, then class,
        then window); guidance: (B, nW, L, guidance_dim) the same windows of each image's
        guidance, shared by its T maps, or None; mask: (nW, L, L) or None → (B·T·nW, L, dim)."""
        n, length, _ = x.shape
        shape = (n, length, self.num_heads, self.dim // self.num_heads)
        if guidance is None:
            q, k = self.q(x), self.k(x)
        else:
            b, num_windows = guidance.shape[:2]
            per_image = x.view(b, -1, num_windows, length, self.dim)  # (B, T, nW, L, dim)
            g = guidance.unsqueeze(1)  # broadcast over the T classes
            q, k = (guided_linear(layer, per_image, g).view(n, length, self.dim) for layer in (self.q, self.k))
        q = q.view(shape).transpose(1, 2)
        k = k.view(shape).transpose(1, 2)
        v = self.v(x).view(shape).transpose(1, 2)
        if mask is not None:  # window i of every map gets mask[i]: (n, 1, L, L), broadcast over heads.
            # Materialised (a few MB) because the fused CPU kernel takes 4-D inputs only; a 5-D
            # (maps, nW, heads, L, L) broadcast falls back to explicit softmax, ~3× slower.
            mask = mask.to(q.dtype).repeat(n // mask.shape[0], 1, 1).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(n, length, self.dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GuidedSwinBlock(nn.Module):
    """One pre-LN Swin block over an H×W token grid, optionally shifted."""

    def __init__(self, dim: int, guidance_dim: int, resolution: Tuple[int, int], num_heads: int,
                 window: int, shift: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.resolution = tuple(resolution)
        if min(self.resolution) <= window:  # a single window covers the map: no shift
            window, shift = min(self.resolution), 0
        if any(r % window for r in self.resolution):
            raise ValueError(f"feature resolution {self.resolution} is not divisible by window {window}")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(*self.resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def _windows(self, y: torch.Tensor) -> torch.Tensor:
        """(N, H·W, C) → (N·nW, window², C), after the cyclic shift."""
        h, w = self.resolution
        y = y.view(y.shape[0], h, w, -1)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        return window_partition(y, self.window)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B·T, H·W, C), the T class maps of each image consecutive; guidance: (B, H·W, G)
        already normalised, one per image, or None."""
        h, w = self.resolution
        n, length, c = x.shape
        g = None
        if guidance is not None:
            if n % guidance.shape[0]:
                raise ValueError(f"{n} cost maps are not a whole number per image for {guidance.shape[0]} guidance maps")
            g = self._windows(guidance)
            g = g.view(guidance.shape[0], -1, *g.shape[1:])  # (B, nW, L, G)
        y = self.attn(self._windows(self.norm1(x)), self.attn_mask, g)
        y = window_merge(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(n, length, c)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """W-MSA + SW-MSA pair applied to every class's cost map independently."""

    def __init__(self, dim: int, guidance_dim: int, resolution: Tuple[int, int], num_heads: int, window: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            GuidedSwinBlock(dim, guidance_dim, resolution, num_heads, window, shift=0),
            GuidedSwinBlock(dim, guidance_dim, resolution, num_heads, window, shift=window // 2),
        ])
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, T, C, H, W) cost embedding; guidance: (B, G, H, W) or None."""
        b, t, c, h, w = x.shape
        tokens = x.permute(0, 1, 3, 4, 2).reshape(b * t, h * w, c)
        if guidance is not None:
            guidance = self.guidance_norm(guidance.flatten(2).transpose(1, 2))  # once per image, never copied T times
        for block in self.blocks:
            tokens = block(tokens, guidance)
        return tokens.view(b, t, h, w, c).permute(0, 1, 4, 2, 3)
