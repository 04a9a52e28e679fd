"""Specialist streams: what a frozen non-CLIP encoder adds to the CAT-Seg pipeline.

A stream runs its encoder on the same CLIP-normalised images as CLIP (the unrotated ones),
resized bilinearly to its own input size from the same source, and contributes (a) a cost
volume — a block output projected into the CLIP text space and correlated with the text
embeddings — and/or (b) one decoder guidance map per decoder stage. GSNet has one stream,
``dino`` (block 11 → cost; blocks 3, 7 → guidance); RSKT-Seg adds ``rs_clip``, a guidance-only
stream from a remote-sensing CLIP image tower (RemoteCLIP ViT-B/32 at 768², blocks 3, 7), and
feeds its DINO 384² images also under a ViT-L/14@336 CLIP. The meta-architecture keeps them
in an ``nn.ModuleDict`` named by source (``specialists.dino.*``, ``specialists.rs_clip.*``).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..cost.specialist import SpecialistCost
from ..decoders.guided_upsampling import TapPyramid
from ...imports import belongs_to
from ..registry import STREAM_REGISTRY
from .dino import DINOEncoder
from .guidance_clip import GuidanceCLIPEncoder
from .sam import SAMEncoder
from .sam_hiera import HIERA_ARCHS, SAMHieraEncoder


class StreamOutput(NamedTuple):
    """What one stream gives the model: cost (B, P, T, g, g) or None; guidance maps per decoder
    stage; ``features``: the encoder's last returned map (the one after the guidance taps: DINO's
    cost block, SAM's neck) at its own grid, or None — an appearance-guidance source and a
    reconstruction target (AerOSeg)."""
    cost: Optional[torch.Tensor]
    guidance: List[torch.Tensor]
    features: Optional[torch.Tensor]


class SpecialistStream(nn.Module):
    """Encoder returning ``num_guidance`` guidance maps, then (if ``cost``) the cost map.

    ``image_size``: side the CLIP-normalised images are resized to (bilinear) before the encoder
    (None: passed as they come);
    ``feature_dim``: channels of :attr:`StreamOutput.features` (0: the stream gives none).
    """

    def __init__(self, encoder: nn.Module, num_guidance: int, cost: Optional[SpecialistCost] = None,
                 taps: Optional[nn.Module] = None, image_size: Optional[int] = None, feature_dim: int = 0) -> None:
        super().__init__()
        if (taps is None) != (num_guidance == 0):
            raise ValueError("a specialist stream needs tap projections exactly when it gives guidance")
        self.encoder = encoder
        self.cost = cost
        self.taps = taps
        self.num_guidance = num_guidance
        self.image_size = int(image_size) if image_size else None
        self.feature_dim = int(feature_dim)

    @property
    def has_cost(self) -> bool:
        return self.cost is not None

    @property
    def has_guidance(self) -> bool:
        return self.num_guidance > 0

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> StreamOutput:
        """images: CLIP-normalised (B, 3, H, W) at any size (resized to ``image_size``, if set); text: (T, P, C)
        or (B, T, P, C) (the selected classes).

        Returns :class:`StreamOutput` (cost or None, guidance maps per decoder stage, features or None).
        """
        size = (self.image_size, self.image_size)
        if self.image_size is not None and tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        outs = self.encoder(images)
        guidance = self.taps(outs[: self.num_guidance]) if self.taps is not None else []
        cost = self.cost(outs[self.num_guidance], text) if self.cost is not None else None
        features = outs[self.num_guidance] if self.feature_dim and len(outs) > self.num_guidance else None
        return StreamOutput(cost, guidance, features)


def resample_to_grid(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, h, w) → (B, C, *size) by area averaging (adaptive average pooling; an integer
    upscale replicates pixels); unchanged when already that size."""
    size = tuple(int(s) for s in size)
    return x if tuple(x.shape[-2:]) == size else F.adaptive_avg_pool2d(x, size)


class ResampledTaps(nn.Module):
    """Parameter-free decoder guidance (AerOSeg's SAM taps, Eq. 10): tap i is area-resampled to
    half the grid of decoder stage i, then upsampled ×2 nearest — the "nearest ×2" of Eq. 10 — to
    the stage grid ``stage_grids[i]``. The decoder's per-source 3×3 projection follows."""

    def __init__(self, stage_grids: Sequence[int]) -> None:
        super().__init__()
        if any(int(g) < 2 or int(g) % 2 for g in stage_grids):
            raise ValueError(f"decoder stage grids {list(stage_grids)} must be even (nearest ×2 from half the grid)")
        self.stage_grids = [int(g) for g in stage_grids]

    def forward(self, taps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """taps: (B, C, h, w) each → [(B, C, stage_grids[i], stage_grids[i])]."""
        return [F.interpolate(resample_to_grid(t, (g // 2, g // 2)), scale_factor=2.0, mode="nearest")
                for t, g in zip(taps, self.stage_grids)]


def _integer_ratio(num: int, den: int, what: str) -> int:
    if den <= 0 or num % den or num < den:
        raise ValueError(f"{what}: {num} is not a positive integer multiple of {den}")
    return num // den


def _guidance_taps(width: int, grid: int, clip_grid: int, dims: Sequence[int], what: str) -> TapPyramid:
    """Projections of an encoder's guidance taps (grid g) onto the decoder stages (2g_clip, 4g_clip, …)."""
    scales = [_integer_ratio(clip_grid * 2 ** (i + 1), grid, f"decoder stage {i} grid vs {what} grid")
              for i in range(len(dims))]
    return TapPyramid(width, dims, scales)


def build_dino_stream(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> SpecialistStream:
    """The DINO stream from ``MODEL.DINO``, fed the CLIP-normalised images at ``MODEL.DINO.IMAGE_SIZE``
    (0: the CLIP input size, as GSNet; RSKT-Seg: 384 also under a 336² CLIP); grid = size / patch."""
    d = cfg.MODEL.DINO
    guidance_layers = [int(i) for i in d.GUIDANCE_LAYERS]
    cost_layer = int(d.COST_LAYER)
    if not guidance_layers and cost_layer < 0:
        raise ValueError("MODEL.DINO.ENABLED: set MODEL.DINO.COST_LAYER and/or MODEL.DINO.GUIDANCE_LAYERS")
    image_size = int(d.IMAGE_SIZE) or clip_image_size
    if image_size % d.PATCH_SIZE:
        raise ValueError(f"DINO input {image_size} is not a multiple of the DINO patch size {d.PATCH_SIZE}")
    grid = image_size // d.PATCH_SIZE
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
        taps = _guidance_taps(d.WIDTH, grid, clip_grid, dims, "DINO")
    return SpecialistStream(encoder, len(guidance_layers), cost, taps, image_size)


def build_rs_clip_stream(cfg, *, clip_grid: int) -> SpecialistStream:
    """RSKT-Seg's guidance-only stream from ``MODEL.RS_CLIP``: a frozen open_clip image tower
    (RemoteCLIP ViT-B/32 at 768²), its raw blocks ``GUIDANCE_LAYERS`` upsampled onto the decoder
    stages (24² tokens: ConvT k2 s2 → 48², ConvT k4 s4 → 96², the official ``upsample*_remote``)."""
    r = cfg.MODEL.RS_CLIP
    dims = list(cfg.MODEL.DECODER.GUIDANCE_DIMS)
    layers = [int(i) for i in r.GUIDANCE_LAYERS]
    if len(layers) != len(dims):
        raise ValueError(f"MODEL.RS_CLIP.GUIDANCE_LAYERS {layers} needs one entry per decoder stage "
                         f"(MODEL.DECODER.GUIDANCE_DIMS {dims})")
    encoder = GuidanceCLIPEncoder(r.ARCH, weights=r.WEIGHTS, image_size=r.IMAGE_SIZE, out_indices=layers,
                                  text_tower=r.TEXT_TOWER, round_fp16=r.ROUND_FP16)
    taps = _guidance_taps(encoder.width, encoder.grid_size, clip_grid, dims, "MODEL.RS_CLIP")
    return SpecialistStream(encoder, len(layers), None, taps, encoder.image_size)


def build_sam_stream(cfg, *, clip_grid: int) -> SpecialistStream:
    """AerOSeg's SAM stream from ``MODEL.SAM``: a frozen SAM image encoder fed the model-normalised
    images resized to ``MODEL.SAM.INPUT_SIZE`` (renormalised with SAM's statistics inside); blocks
    ``GUIDANCE_LAYERS`` guide the decoder stages (:class:`ResampledTaps`, no parameters), the neck
    output is its ``features`` (appearance guidance and back-projection target, 256-d). ``ARCH hiera_*``:
    a SAM 2 Hiera encoder instead (:mod:`.sam_hiera`; FPN levels for guidance, stride-16 level as features)."""
    s = cfg.MODEL.SAM
    dims = list(cfg.MODEL.DECODER.GUIDANCE_DIMS)
    layers = [int(i) for i in s.GUIDANCE_LAYERS]
    if layers and len(layers) != len(dims):
        raise ValueError(f"MODEL.SAM.GUIDANCE_LAYERS {layers} needs one entry per decoder stage "
                         f"(MODEL.DECODER.GUIDANCE_DIMS {dims}) or none")
    encoder = SAMHieraEncoder.from_config(cfg) if s.ARCH in HIERA_ARCHS else SAMEncoder.from_config(cfg)
    if layers and any(d != encoder.width for d in dims):
        raise ValueError(f"SAM taps are {encoder.width}-d (MODEL.SAM.ARCH {s.ARCH!r}): set MODEL.DECODER.GUIDANCE_DIMS "
                         f"to {[encoder.width] * len(dims)}, got {dims}")
    taps = ResampledTaps([clip_grid * 2 ** (i + 1) for i in range(len(layers))]) if layers else None
    return SpecialistStream(encoder, len(layers), None, taps, encoder.input_size, feature_dim=encoder.out_chans)


@STREAM_REGISTRY.register(name="rs_clip")
def rs_clip_stream(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> Optional[SpecialistStream]:
    """``MODEL.RS_CLIP.ENABLED``: :func:`build_rs_clip_stream`."""
    return build_rs_clip_stream(cfg, clip_grid=clip_grid) if cfg.MODEL.RS_CLIP.ENABLED else None


@STREAM_REGISTRY.register(name="dino")
def dino_stream(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> Optional[SpecialistStream]:
    """``MODEL.DINO.ENABLED``: :func:`build_dino_stream`."""
    if not cfg.MODEL.DINO.ENABLED:
        return None
    return build_dino_stream(cfg, clip_image_size=clip_image_size, clip_grid=clip_grid, text_dim=text_dim)


@STREAM_REGISTRY.register(name="sam")
def sam_stream(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> Optional[SpecialistStream]:
    """``MODEL.SAM.ENABLED``: :func:`build_sam_stream`."""
    return build_sam_stream(cfg, clip_grid=clip_grid) if cfg.MODEL.SAM.ENABLED else None


def build_specialists(cfg, *, clip_image_size: int, clip_grid: int, text_dim: int) -> nn.ModuleDict:
    """The streams a config enables (:data:`~ovrsis.modeling.registry.STREAM_REGISTRY`, in registration
    order: rs_clip, dino, sam, then those of the projects its IMPORTS names), named by guidance source;
    empty for CAT-Seg/OVRS. Their costs reach the cost fusion in this order, after CLIP's."""
    streams = {}
    for name, build in STREAM_REGISTRY:
        if not belongs_to(build, cfg.IMPORTS):  # a project's stream serves the configs that import it
            continue
        stream = build(cfg, clip_image_size=clip_image_size, clip_grid=clip_grid, text_dim=text_dim)
        if stream is not None:
            streams[name] = stream
    return nn.ModuleDict(streams)


def check_guidance_sources(sources: Sequence[str], specialists: nn.ModuleDict, decoder: nn.Module) -> List[str]:
    """Validate ``MODEL.DECODER.GUIDANCE_SOURCES`` against the built streams and the decoder."""
    sources = [str(s) for s in sources]
    available = ["clip"] + [name for name, s in specialists.items() if s.has_guidance]
    unknown = [s for s in sources if s not in available]
    unused = [s for s in available[1:] if s not in sources]  # CLIP's taps may go unused (AerOSeg: SAM only)
    if not sources or unknown or unused or len(set(sources)) != len(sources):
        raise ValueError(f"MODEL.DECODER.GUIDANCE_SOURCES {sources} must list each guidance source once; "
                         f"available: {available} (a specialist with guidance layers must be listed)")
    num = getattr(decoder, "num_sources", 1)
    if num != len(sources):
        raise ValueError(f"decoder built for {num} guidance sources, MODEL.DECODER.GUIDANCE_SOURCES has {sources}")
    return sources
