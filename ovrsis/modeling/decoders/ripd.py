"""Guided upsampling with several guidance sources (GSNet's Residual Information Preservation
Decoder, RSKT-Seg's RS-Transfer upsampling).

Each source (CLIP, DINO, RemoteCLIP, ...) gives one guidance map per stage; every map goes
through its own 3×3 conv + ReLU, and a stage concatenates the upsampled embedding with all
projected maps before its DoubleConv. GSNet "Ver09c" (sources CLIP, DINO):
stage 1 ConvT 128→96, [96 + 32 + 32 = 160] → 64 @48²; stage 2 ConvT 64→48,
[48 + 16 + 16 = 80] → 32 @96²; head 3×3 32→1.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from ..registry import DECODER_REGISTRY
from .guided_upsampling import DoubleConv, GuidedUpStage


class ScaledTapPyramid(nn.Module):
    """Taps of an encoder (B, width, g, g) → decoder guidance, tap i upsampled ``scales[i]``×.

    Scale 1 is a 1×1 convolution, scale s > 1 a ConvTranspose k=s, stride s. DINO ViT-B/8 at
    384² (g = 48) in GSNet: scales (1, 2) → 256@48², 128@96²; a stride-16 encoder (g = 24)
    uses (2, 4) like CAT-Seg's CLIP taps.
    """

    def __init__(self, width: int, out_dims: Sequence[int], scales: Sequence[int]) -> None:
        super().__init__()
        if len(out_dims) != len(scales):
            raise ValueError(f"one scale per tap: out_dims {list(out_dims)} vs scales {list(scales)}")
        layers = []
        for d, s in zip(out_dims, scales):
            s = int(s)
            if s < 1:
                raise ValueError(f"tap scales must be positive integers, got {list(scales)}")
            layers.append(nn.Conv2d(width, d, kernel_size=1) if s == 1 else
                          nn.ConvTranspose2d(width, d, kernel_size=s, stride=s))
        self.ups = nn.ModuleList(layers)

    def forward(self, taps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [up(t) for up, t in zip(self.ups, taps)]


class MultiSourceUpStage(GuidedUpStage):
    """ConvT k2 s2 (C → C − G), concatenate the N sources' G-channel guidance maps (in source
    order), DoubleConv (C − G + N·G → out). With N = 1 this is :class:`GuidedUpStage`."""

    def __init__(self, in_ch: int, out_ch: int, guidance_ch: int, num_sources: int) -> None:
        super().__init__(in_ch, out_ch, guidance_ch)
        if num_sources > 1:
            self.conv = DoubleConv(in_ch + (num_sources - 1) * guidance_ch, out_ch)

    def forward(self, x: torch.Tensor, guidance: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: (B·T, C, h, w); guidance: N maps (B, G, 2h, 2w), shared by the T classes of an image."""
        return super().forward(x, torch.cat(list(guidance), dim=1))


@DECODER_REGISTRY.register()
class MultiSourceGuidedDecoder(nn.Module):
    """(B, T, C, h, w) embedding + guidance from N sources → (B, T, 4h, 4w) logits.

    ``guidance[s][i]``: source s, stage i, (B, guidance_dims[i], 2^(i+1)h, 2^(i+1)w); every
    source uses the same widths (as in GSNet and RSKT-Seg) but its own projections.
    """

    def __init__(self, *, in_dim: int, num_sources: int = 2, dims: Sequence[int] = (64, 32),
                 guidance_dims: Sequence[int] = (256, 128), guidance_proj_dims: Sequence[int] = (32, 16)) -> None:
        super().__init__()
        if num_sources < 1:
            raise ValueError("MultiSourceGuidedDecoder needs at least one guidance source")
        if not len(dims) == len(guidance_dims) == len(guidance_proj_dims):
            raise ValueError(f"MODEL.DECODER.DIMS {list(dims)}, GUIDANCE_DIMS {list(guidance_dims)} and "
                             f"GUIDANCE_PROJ_DIMS {list(guidance_proj_dims)} must have equal length")
        self.num_sources = num_sources
        self.guidance_proj = nn.ModuleList([
            nn.ModuleList([nn.Sequential(nn.Conv2d(d, p, kernel_size=3, padding=1), nn.ReLU())
                           for d, p in zip(guidance_dims, guidance_proj_dims)])
            for _ in range(num_sources)
        ])
        chans = [in_dim, *dims]
        self.stages = nn.ModuleList([
            MultiSourceUpStage(chans[i], chans[i + 1], guidance_proj_dims[i], num_sources) for i in range(len(dims))
        ])
        self.head = nn.Conv2d(dims[-1], 1, kernel_size=3, padding=1)

    @classmethod
    def from_config(cls, cfg, *, in_dim: int) -> "MultiSourceGuidedDecoder":
        d = cfg.MODEL.DECODER
        return cls(in_dim=in_dim, num_sources=len(d.GUIDANCE_SOURCES), dims=d.DIMS, guidance_dims=d.GUIDANCE_DIMS,
                   guidance_proj_dims=d.GUIDANCE_PROJ_DIMS)

    def forward(self, x: torch.Tensor, guidance: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        if len(guidance) != self.num_sources:
            raise ValueError(f"decoder built for {self.num_sources} guidance sources, got {len(guidance)}")
        projected = [[proj(g) for proj, g in zip(projs, maps)] for projs, maps in zip(self.guidance_proj, guidance)]
        b, t = x.shape[:2]
        y = x.flatten(0, 1)
        for i, stage in enumerate(self.stages):
            y = stage(y, [maps[i] for maps in projected])
        return self.head(y).view(b, t, *y.shape[-2:])
