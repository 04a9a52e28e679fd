"""SimFeatUp (SegEarth-OV §3.2): one learned joint-bilateral upsampler applied repeatedly.

Pure PyTorch, CPU and GPU, no compiled op. Module and parameter names follow the official
``simfeatup_dev/upsamplers.py`` (``JBULearnedRange``, ``JBUOne``) so that the released
PyTorch-Lightning checkpoint (``state_dict`` keys ``upsampler.up.*``, ``upsampler.fixup_proj.*``)
loads strictly (:func:`load_simfeatup_checkpoint`). Memory is bounded: the 11×11 adaptive
filter and the range kernel are accumulated one window offset at a time, so no
(C, 121, H, W) unfold is ever built (the official CPU fallback unfolds; its CUDA op does not).
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_path

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "upsampler."


def adaptive_filter(source: torch.Tensor, filters: torch.Tensor, channel_chunk: int = 32) -> torch.Tensor:
    """Spatially varying correlation (FeatUp's ``AdaptiveConv``):
    ``out[b, c, y, x] = Σ_{i, j} filters[b, y, x, i, j] · source[b, c, y + i, x + j]``.

    Args:
        source: (B, C, H + D - 1, W + D - 1), already padded by the filter radius.
        filters: (B, H, W, D, D) per-pixel filters.
        channel_chunk: channels accumulated together (memory locality only; results are identical).
    Returns:
        (B, C, H, W). Accumulated one offset (i, j) at a time, in the CUDA kernel's order: no
        (C, D², H, W) unfold is built, the extra memory is one (D², H, W) copy of the filters.
        Source: FeatUp ``adaptive_conv_cuda/adaptive_conv.cpp``.
    Raises:
        ValueError: on shapes that do not fit together.
    """
    b, h, w, d, d2 = filters.shape
    if d != d2 or source.shape[0] != b or tuple(source.shape[-2:]) != (h + d - 1, w + d - 1):
        raise ValueError(f"adaptive_filter: source {tuple(source.shape)} does not fit filters {tuple(filters.shape)} "
                         "(need source (B, C, H + D - 1, W + D - 1) and filters (B, H, W, D, D))")
    planes = filters.to(source.dtype).permute(0, 3, 4, 1, 2).contiguous()  # (B, D, D, H, W): contiguous per offset
    out = source.new_zeros(source.shape[0], source.shape[1], h, w)
    for c0 in range(0, source.shape[1], channel_chunk):
        src, acc = source[:, c0:c0 + channel_chunk], out[:, c0:c0 + channel_chunk]
        for i in range(d):
            for j in range(d):
                acc.addcmul_(src[:, :, i:i + h, j:j + w], planes[:, None, i, j])
    return out


def border_pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H + 2r, W + 2r): reflect padding as the official upsampler, on each
    axis long enough for it (reflection needs H, W > r); a shorter axis (strip-shaped or tiny
    inputs, e.g. a 448x12 window, whose grids the official code cannot pad and crashes on) is
    replicate-padded instead. Identical to the official padding wherever that one runs."""
    h, w = x.shape[-2:]
    if w > radius:
        x = F.pad(x, [radius, radius, 0, 0], mode="reflect")
    else:
        x = F.pad(x, [radius, radius, 0, 0], mode="replicate")
    if h > radius:
        return F.pad(x, [0, 0, radius, radius], mode="reflect")
    return F.pad(x, [0, 0, radius, radius], mode="replicate")


class JBULearnedRange(nn.Module):
    """One joint-bilateral upsampling step with a learned range kernel (FeatUp/SimFeatUp).

    Guidance (B, 3, H, W) → key projection 1×1 3→key_dim, GELU, Dropout2d 0.1, 1×1; range kernel
    softmax over the D×D window (D = 2·radius + 1) of exp(range_temp)·⟨k(p), k(p + o)⟩;
    spatial kernel exp(−|o|² / 2σ²) on a [−1, 1]² grid; their product normalised, plus
    0.1 × fix-up projection (1×1 (D² + 3)→D², GELU, Dropout2d, 1×1 D²→D²) of [kernel, guidance];
    the source, bicubic-upsampled to (H, W) and reflect-padded (:func:`border_pad`), filtered with it.
    """

    def __init__(self, guidance_dim: int = 3, feat_dim: int = 512, key_dim: int = 32, radius: int = 5) -> None:
        super().__init__()
        self.radius = radius
        self.diameter = 2 * radius + 1
        self.guidance_dim = guidance_dim
        self.key_dim = key_dim
        self.feat_dim = feat_dim
        taps = self.diameter ** 2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(key_dim, key_dim, 1))
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(guidance_dim + taps, taps, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(taps, taps, 1))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))

    def range_kernel(self, guidance: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, D², H, W): softmax over offsets o = (i, j), index i·D + j."""
        b, _, h, w = guidance.shape
        keys = self.range_proj(guidance)
        padded = border_pad(keys, self.radius)
        logits = keys.new_empty(b, self.diameter ** 2, h, w)
        for i in range(self.diameter):
            for j in range(self.diameter):
                logits[:, i * self.diameter + j] = (padded[:, :, i:i + h, j:j + w] * keys).sum(1)
        temperature = self.range_temp.exp().clamp_min(1e-4).clamp_max(1e4)
        return F.softmax(temperature * logits, dim=1)

    def spatial_kernel(self, device: torch.device) -> torch.Tensor:
        """(1, D², 1, 1) Gaussian of the offset on a [−1, 1]² grid with learned σ."""
        coords = torch.linspace(-1, 1, self.diameter, device=device)
        rows, cols = torch.meshgrid(coords, coords, indexing="ij")
        dist2 = rows.square() + cols.square()
        return torch.exp(-dist2 / (2 * self.sigma_spatial ** 2)).reshape(1, -1, 1, 1)

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """source (B, C, h, w), guidance (B, 3, H, W) → (B, C, H, W)."""
        if source.shape[0] != guidance.shape[0]:
            raise ValueError(f"JBU: source batch {source.shape[0]} != guidance batch {guidance.shape[0]}")
        b, _, h, w = guidance.shape
        kernel = self.range_kernel(guidance) * self.spatial_kernel(source.device)
        kernel = kernel / kernel.sum(1, keepdim=True).clamp(1e-7)
        kernel = kernel + 0.1 * self.fixup_proj(torch.cat([kernel, guidance], dim=1))
        filters = kernel.permute(0, 2, 3, 1).reshape(b, h, w, self.diameter, self.diameter)
        hr_source = F.interpolate(source, size=(h, w), mode="bicubic", align_corners=False)
        hr_source = border_pad(hr_source, self.radius)
        return adaptive_filter(hr_source, filters)


class SimFeatUp(nn.Module):
    """``JBUOne``: the same :class:`JBULearnedRange` (radius 5, 11×11) applied ``steps`` times
    (2× each: 4 for /16 backbones, 5 for /32), the guidance average-pooled to each output
    size, then ``x + 0.1 · conv1×1(Dropout2d 0.2 (x))``. 293,729 parameters at C = 512.
    Source: SegEarth-OV ``simfeatup_dev/upsamplers.py::JBUOne``.
    """

    def __init__(self, feat_dim: int = 512, steps: int = 4, radius: int = 5, key_dim: int = 32) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"SimFeatUp needs at least one 2x step, got {steps}")
        self.steps = steps
        self.up = JBULearnedRange(3, feat_dim, key_dim, radius=radius)
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(feat_dim, feat_dim, kernel_size=1))

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """source (B, C, h, w) features, guidance (B, 3, H, W) image → (B, C, h·2^steps, w·2^steps)."""
        for _ in range(self.steps):
            h, w = source.shape[-2:]
            source = self.up(source, F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w)))
        return self.fixup_proj(source) * 0.1 + source


def upsampling_steps(patch_size: int) -> int:
    """2× steps that take a patch grid back to pixels: log2(patch size) (16 → 4, 32 → 5)."""
    steps = int(round(math.log2(patch_size)))
    if 2 ** steps != patch_size:
        raise ValueError(f"SimFeatUp doubles the grid: patch size {patch_size} is not a power of two")
    return steps


def read_simfeatup_state(path: str) -> Dict[str, torch.Tensor]:
    """The upsampler weights of a SimFeatUp training checkpoint, without the ``upsampler.`` prefix.

    Accepts the PyTorch-Lightning file of ``featup/train_upsampler.py`` (``state_dict`` whose
    keys all start with ``upsampler.``; optimizer and loop states are ignored) or a plain state
    dict of :class:`SimFeatUp`. The file is unpickled with ``weights_only=False`` (Lightning
    stores its loop state): only load files you trust.

    Raises:
        ConfigError: no such file, or a folder (:func:`~ovrsis.errors.check_path`). ValueError: no
        upsampler weights in it.
    """
    path = check_path(path, "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", "file", "a SimFeatUp checkpoint (.ckpt)")
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path}: not a SimFeatUp checkpoint (no state dict)")
    if all(k.startswith(CHECKPOINT_PREFIX) for k in state):
        state = {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items()}
    elif any(k.startswith(CHECKPOINT_PREFIX) for k in state):
        other = sorted(k for k in state if not k.startswith(CHECKPOINT_PREFIX))
        raise ValueError(f"{path}: mixes upsampler.* keys with others {other[:5]}; the official loader strips "
                         "the prefix from every key and would fail")
    return dict(state)


def load_simfeatup_checkpoint(module: SimFeatUp, path: str) -> List[str]:
    """Load ``path`` strictly into ``module`` and return the key report (one line per key).

    Raises:
        ValueError: missing or unexpected keys, or a shape mismatch (all listed in the message).
    """
    state = read_simfeatup_state(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: SimFeatUp checkpoint does not fit (strict): missing {missing}, "
                         f"unexpected {unexpected}, shape mismatches {shapes}")
    module.load_state_dict(state, strict=True)
    report = [f"loaded {CHECKPOINT_PREFIX}{k} {tuple(v.shape)}" for k, v in sorted(state.items())]
    logger.info("SimFeatUp weights from %s: %d tensors, %d parameters, all keys matched", path, len(state),
                sum(v.numel() for v in state.values()))
    return report


def simfeatup_checkpoint(module: SimFeatUp, **extra: object) -> Dict[str, object]:
    """A checkpoint in the official layout: ``{"state_dict": {"upsampler.<name>": tensor}}`` plus
    ``extra`` entries (e.g. ``epoch``, ``global_step``)."""
    state = {f"{CHECKPOINT_PREFIX}{k}": v.detach().cpu() for k, v in module.state_dict().items()}
    return {"state_dict": state, **extra}

