"""Specialist streams: what a frozen non-CLIP encoder adds to the CAT-Seg pipeline.

A stream runs its encoder on the same CLIP-normalised input as CLIP (the unrotated images)
and contributes (a) a cost volume — a block output projected into the CLIP text space and
correlated with the text embeddings — and/or (b) one decoder guidance map per decoder stage.
GSNet has one stream, ``dino`` (block 11 → cost; blocks 3, 7 → guidance); RSKT-Seg adds a
guidance-only stream for RemoteCLIP. The meta-architecture keeps them in an
``nn.ModuleDict`` named by source (``specialists.dino.*``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..cost.specialist import SpecialistCost
from ..decoders.guided_upsampling import TapPyramid
from .dino import DINOEncoder


class SpecialistStream(nn.Module):
    """Encoder returning ``num_guidance`` guidance maps, then (if ``cost``) the cost map."""

    def __init__(self, encoder: nn.Module, num_guidance: int, cost: Optional[SpecialistCost] = None,
                 taps: Optional[TapPyramid] = None) -> None:
        super().__init__()
        if (taps is None) != (num_guidance == 0):
            raise ValueError("a specialist stream needs tap projections exactly when it gives guidance")
        self.encoder = encoder
        self.cost = cost
        self.taps = taps
        self.num_guidance = num_guidance

    @property
    def has_cost(self) -> bool:
        return self.cost is not None

    @property
    def has_guidance(self) -> bool:
        return self.num_guidance > 0

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> Tuple[Optional[torch.Tensor], List[torch.Tensor]]:
        """images: CLIP-normalised (B, 3, S, S); text: (T, P, C) or (B, T, P, C) (the selected classes).

        Returns (cost (B, P, T, g, g) or None, guidance maps per decoder stage).
        """
        outs = self.encoder(images)
        guidance = self.taps(outs[: self.num_guidance]) if self.taps is not None else []
        cost = self.cost(outs[self.num_guidance], text) if self.cost is not None else None
        return cost, guidance


def _integer_ratio(num: int, den: int, what: str) -> int:
    if den <= 0 or num % den or num < den:
        raise ValueError(f"{what}: {num} is not a positive integer multiple of {den}")
    return num // den


def build_dino_stream(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> SpecialistStream:
    """GSNet's DINO stream from ``MODEL.DINO`` (fed the CLIP input, so its grid is S / patch)."""
    d = cfg.MODEL.DINO
    guidance_layers = [int(i) for i in d.GUIDANCE_LAYERS]
    cost_layer = int(d.COST_LAYER)
    if not guidance_layers and cost_layer < 0:
        raise ValueError("MODEL.DINO.ENABLED: set MODEL.DINO.COST_LAYER and/or MODEL.DINO.GUIDANCE_LAYERS")
    if clip_image_size % d.PATCH_SIZE:
        raise ValueError(f"CLIP input {clip_image_size} is not a multiple of the DINO patch size {d.PATCH_SIZE}")
    grid = clip_image_size // d.PATCH_SIZE
    encoder = DINOEncoder.from_config(cfg, out_indices=guidance_layers + ([cost_layer] if cost_layer >= 0 else []))
    cost = None
    if cost_layer >= 0:
        stride = _integer_ratio(grid, clip_grid, "DINO token grid vs CLIP token grid (cost projection stride)")
        cost = SpecialistCost(d.WIDTH, text_dim, stride)
    taps = None
    if guidance_layers:
        dims = list(cfg.MODEL.DECODER.GUIDANCE_DIMS)
        if len(guidance_layers) != len(dims):
            raise ValueError(f"MODEL.DINO.GUIDANCE_LAYERS {guidance_layers} needs one entry per decoder stage "
                             f"(MODEL.DECODER.GUIDANCE_DIMS {dims})")
        scales = [_integer_ratio(clip_grid * 2 ** (i + 1), grid, f"decoder stage {i} grid vs DINO grid")
                  for i in range(len(dims))]
        taps = TapPyramid(d.WIDTH, dims, scales)
    return SpecialistStream(encoder, len(guidance_layers), cost, taps)


def build_specialists(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> nn.ModuleDict:
    """The specialist streams a config asks for, named by guidance source (empty for CAT-Seg/OVRS)."""
    streams = {}
    if cfg.MODEL.DINO.ENABLED:
        streams["dino"] = build_dino_stream(cfg, clip_image_size=clip_image_size, clip_grid=clip_grid,
                                            text_dim=text_dim)
    return nn.ModuleDict(streams)


def check_guidance_sources(sources: Sequence[str], specialists: nn.ModuleDict, decoder: nn.Module) -> List[str]:
    """Validate ``MODEL.DECODER.GUIDANCE_SOURCES`` against the built streams and the decoder."""
    sources = [str(s) for s in sources]
    available = ["clip"] + [name for name, s in specialists.items() if s.has_guidance]
    unknown = [s for s in sources if s not in available]
    unused = [s for s in available if s not in sources]
    if unknown or unused or len(set(sources)) != len(sources):
        raise ValueError(f"MODEL.DECODER.GUIDANCE_SOURCES {sources} must list each guidance source once; "
                         f"available: {available} (a specialist with guidance layers must be listed)")
    num = getattr(decoder, "num_sources", 1)
    if num != len(sources):
        raise ValueError(f"decoder built for {num} guidance sources, MODEL.DECODER.GUIDANCE_SOURCES has {sources}")
    return sources
