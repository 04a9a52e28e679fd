"""CAT-Seg's decoder: per-class 2× upsampling stages guided by upsampled CLIP taps
(optionally OVRS's attention-aware guidance)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from ..registry import DECODER_REGISTRY


class DoubleConv(nn.Sequential):
    """(conv3×3 no bias → GroupNorm(C/16) → ReLU) × 2."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        groups = max(out_ch // 16, 1)
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.GroupNorm(groups, out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.GroupNorm(groups, out_ch), nn.ReLU(inplace=True),
        )


class GuidedUpStage(nn.Module):
    """ConvT k2 s2 (C → C − G), concatenate G guidance channels, DoubleConv → out.

    With ``guidance_attention`` (OVRS's attention-aware upsampling) the guidance is first
    re-weighted by the upsampled cost averaged over classes: channel attention = 1×1 conv of
    its spatial mean, spatial attention = 1×1 conv of its channel mean, and
    g ← g·ca + g·sa + g — no sigmoid, as in the official code.
    """

    def __init__(self, in_ch: int, out_ch: int, guidance_ch: int, guidance_attention: bool = False) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch - guidance_ch, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_ch, out_ch)
        self.guidance_attention = guidance_attention
        if guidance_attention:
            self.cconv = nn.Conv2d(in_ch - guidance_ch, guidance_ch, kernel_size=1)
            self.sconv = nn.Conv2d(1, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B·T, C, h, w); guidance: (B, G, 2h, 2w) shared by the T classes of an image."""
        x = self.up(x)
        if guidance is not None:
            b = guidance.shape[0]
            t = x.shape[0] // b
            if self.guidance_attention:
                cost = x.view(b, t, *x.shape[1:]).mean(dim=1)
                channel = self.cconv(cost.mean(dim=(2, 3), keepdim=True))
                spatial = self.sconv(cost.mean(dim=1, keepdim=True))
                guidance = guidance * channel + guidance * spatial + guidance
            x = torch.cat([x, guidance.repeat_interleave(t, dim=0)], dim=1)
        return self.conv(x)


class TapPyramid(nn.Module):
    """Raw CLIP taps (B, width, g, g) → decoder guidance at 2^(i+1)× resolution.

    Tap i goes through ConvTranspose k=s=2^(i+1): the shallower tap feeds the coarser stage.
    """

    def __init__(self, width: int, out_dims: Sequence[int]) -> None:
        super().__init__()
        self.ups = nn.ModuleList([
            nn.ConvTranspose2d(width, d, kernel_size=2 ** (i + 1), stride=2 ** (i + 1)) for i, d in enumerate(out_dims)
        ])

    def forward(self, taps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [up(t) for up, t in zip(self.ups, taps)]


@DECODER_REGISTRY.register()
class GuidedUpsamplingDecoder(nn.Module):
    """(B, T, C, h, w) embedding → (B, T, 4h, 4w) logits."""

    def __init__(self, *, in_dim: int, dims: Sequence[int] = (64, 32), guidance_dims: Sequence[int] = (256, 128),
                 guidance_proj_dims: Sequence[int] = (32, 16), guidance_attention: bool = False) -> None:
        super().__init__()
        self.guidance_proj = nn.ModuleList([
            nn.Sequential(nn.Conv2d(d, p, kernel_size=3, padding=1), nn.ReLU())
            for d, p in zip(guidance_dims, guidance_proj_dims)
        ])
        chans = [in_dim, *dims]
        self.stages = nn.ModuleList([
            GuidedUpStage(chans[i], chans[i + 1], guidance_proj_dims[i], guidance_attention) for i in range(len(dims))
        ])
        self.head = nn.Conv2d(dims[-1], 1, kernel_size=3, padding=1)

    @classmethod
    def from_config(cls, cfg, *, in_dim: int) -> "GuidedUpsamplingDecoder":
        d = cfg.MODEL.DECODER
        return cls(in_dim=in_dim, dims=d.DIMS, guidance_dims=d.GUIDANCE_DIMS, guidance_proj_dims=d.GUIDANCE_PROJ_DIMS,
                   guidance_attention=d.GUIDANCE_ATTENTION)

    def forward(self, x: torch.Tensor, guidance: Sequence[torch.Tensor]) -> torch.Tensor:
        b, t = x.shape[:2]
        y = x.flatten(0, 1)
        for stage, proj, g in zip(self.stages, self.guidance_proj, guidance):
            y = stage(y, proj(g))
        return self.head(y).view(b, t, *y.shape[-2:])
