"""Guided upsampling decoders of the CAT-Seg family, one module for all of them.

Each stage upsamples the per-class embedding 2× and concatenates guidance maps shared by
the classes of an image, then a DoubleConv. The guidance comes from one or more sources,
each with its own 3×3 projection per stage:

* CAT-Seg: CLIP taps only;
* OVRS: CLIP taps re-weighted by attention-aware upsampling (``guidance_attention``);
* GSNet's Residual Information Preservation Decoder: CLIP + DINO taps (``num_sources=2``),
  stage 1 ConvT 128→96, [96 + 32 + 32 = 160] → 64 @48²; stage 2 ConvT 64→48, [48 + 16 + 16] → 32;
* RSKT-Seg's RS-Transfer: CLIP + RemoteCLIP + DINO taps (``num_sources=3``).

The guidance maps of an image are shared by its T classes: the first DoubleConv convolution's
guidance channels are applied once per image and broadcast (:func:`guided_conv2d`), never
on T copies; the weight keeps the official [cost; guidance] layout.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from ..checkpointing import checkpointed
from ..guided_layers import guided_conv2d
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
    """ConvT k2 s2 (C → C − G), concatenate N guidance maps of G channels, DoubleConv → out.

    With ``guidance_attention`` (OVRS's attention-aware upsampling) each guidance map is first
    re-weighted by the upsampled cost averaged over classes: channel attention = 1×1 conv of
    its spatial mean, spatial attention = 1×1 conv of its channel mean, and
    g ← g·ca + g·sa + g — no sigmoid, as in the official code.
    """

    def __init__(self, in_ch: int, out_ch: int, guidance_ch: int, num_sources: int = 1,
                 guidance_attention: bool = False) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch - guidance_ch, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_ch + (num_sources - 1) * guidance_ch, out_ch)
        self.guidance_attention = guidance_attention
        if guidance_attention:
            self.cconv = nn.Conv2d(in_ch - guidance_ch, guidance_ch, kernel_size=1)
            self.sconv = nn.Conv2d(1, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, guidance: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: (B·T, C, h, w); guidance: N maps (B, G, 2h, 2w), shared by the T classes of an image."""
        x = self.up(x)
        if not guidance:
            return self.conv(x)
        b = guidance[0].shape[0]
        t = x.shape[0] // b
        if self.guidance_attention:
            cost = x.view(b, t, *x.shape[1:]).mean(dim=1)
            channel = self.cconv(cost.mean(dim=(2, 3), keepdim=True))
            spatial = self.sconv(cost.mean(dim=1, keepdim=True))
            guidance = [g * channel + g * spatial + g for g in guidance]
        y = guided_conv2d(self.conv[0], x, torch.cat(list(guidance), dim=1))  # = conv0([x; g repeated T times])
        for layer in list(self.conv)[1:]:
            y = layer(y)
        return y


class TapPyramid(nn.Module):
    """Encoder taps (B, width, g, g) → decoder guidance, tap i upsampled ``scales[i]``×.

    Scale 1 is a 1×1 conv, scale s > 1 a ConvTranspose k = s, stride s. CLIP at stride 16:
    scales (2, 4) (the shallower tap feeds the coarser stage); DINO ViT-B/8 at 384² in GSNet:
    scales (1, 2).
    """

    def __init__(self, width: int, out_dims: Sequence[int], scales: Sequence[int] = (2, 4)) -> None:
        super().__init__()
        if len(out_dims) != len(scales) or any(int(s) < 1 for s in scales):
            raise ValueError(f"one positive integer scale per tap: out_dims {list(out_dims)} vs scales {list(scales)}")
        self.ups = nn.ModuleList([
            nn.Conv2d(width, d, kernel_size=1) if int(s) == 1 else nn.ConvTranspose2d(width, d, int(s), stride=int(s))
            for d, s in zip(out_dims, scales)
        ])

    def forward(self, taps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [up(t) for up, t in zip(self.ups, taps)]


@DECODER_REGISTRY.register()
class GuidedUpsamplingDecoder(nn.Module):
    """(B, T, C, h, w) embedding + guidance from N sources → (B, T, 4h, 4w) logits.

    ``guidance[s][i]``: source s, stage i, (B, guidance_dims[i], 2^(i+1)h, 2^(i+1)w); every
    source has the same widths but its own projections (``guidance_proj.<s>.<i>``).
    """

    def __init__(self, *, in_dim: int, dims: Sequence[int] = (64, 32), guidance_dims: Sequence[int] = (256, 128),
                 guidance_proj_dims: Sequence[int] = (32, 16), num_sources: int = 1,
                 guidance_attention: bool = False, checkpoint_activations: bool = False) -> None:
        """``checkpoint_activations``: recompute each stage's activations in the backward pass
        (:mod:`ovrsis.modeling.checkpointing`; same results, less training memory)."""
        super().__init__()
        self.checkpoint_activations = bool(checkpoint_activations)
        if num_sources < 1:
            raise ValueError("the decoder needs at least one guidance source")
        if not len(dims) == len(guidance_dims) == len(guidance_proj_dims):
            raise ValueError(f"MODEL.DECODER.DIMS {list(dims)}, GUIDANCE_DIMS {list(guidance_dims)} and "
                             f"GUIDANCE_PROJ_DIMS {list(guidance_proj_dims)} must have equal length")
        self.num_sources = num_sources
        self.guidance_proj = nn.ModuleList([
            nn.ModuleList([nn.Sequential(nn.Conv2d(d, p, kernel_size=3, padding=1), nn.ReLU(inplace=True))
                           for d, p in zip(guidance_dims, guidance_proj_dims)])
            for _ in range(num_sources)
        ])
        chans = [in_dim, *dims]
        self.stages = nn.ModuleList([
            GuidedUpStage(chans[i], chans[i + 1], guidance_proj_dims[i], num_sources, guidance_attention)
            for i in range(len(dims))
        ])
        self.head = nn.Conv2d(dims[-1], 1, kernel_size=3, padding=1)

    @classmethod
    def from_config(cls, cfg, *, in_dim: int) -> "GuidedUpsamplingDecoder":
        d = cfg.MODEL.DECODER
        return cls(in_dim=in_dim, dims=d.DIMS, guidance_dims=d.GUIDANCE_DIMS, guidance_proj_dims=d.GUIDANCE_PROJ_DIMS,
                   num_sources=len(d.GUIDANCE_SOURCES), guidance_attention=d.GUIDANCE_ATTENTION,
                   checkpoint_activations=d.CHECKPOINT_ACTIVATIONS)

    def forward(self, x: torch.Tensor, guidance: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        if len(guidance) != self.num_sources:
            raise ValueError(f"decoder built for {self.num_sources} guidance sources, got {len(guidance)}")
        projected = [[proj(_channels_last(g)) for proj, g in zip(projs, maps)]
                     for projs, maps in zip(self.guidance_proj, guidance)]
        b, t = x.shape[:2]
        y = _channels_last(x.flatten(0, 1))
        for i, stage in enumerate(self.stages):
            y = checkpointed(stage, y, [maps[i] for maps in projected], enabled=self.checkpoint_activations)
        return self.head(y).reshape(b, t, *y.shape[-2:])


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """The decoder runs in channels-last memory order (same values): oneDNN's convolutions and
    GroupNorm are ~25 % faster on it on CPU than on NCHW, which they reorder internally."""
    return x.contiguous(memory_format=torch.channels_last)
