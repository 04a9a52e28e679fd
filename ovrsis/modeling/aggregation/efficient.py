"""RSKT-Seg's efficient cost aggregation ("RS-Fusion"): SegFormer-style blocks instead of Swin.

Official code: LiBingyu01/RSKT-Seg ``RSKT_Seg/modeling/transformer/EfficientAggregator``
(``USE_EFFICIENT True``, every released config). One layer (hidden 128: 830,592 parameters) is

* a **spatial block** over the h·w locations of every class map, pre-LN, global attention with
  spatial reduction: Q from [LN(x); g] at full resolution, K from LN_k(sr_k([LN(x); g])) and V
  from LN_v(sr_v(LN(x))) with ``sr_*`` k×k stride-k convolutions (r1 = 2: 24² → 12² keys), softmax
  attention with 8 heads, output projection; then a gated MLP fc3(ReLU6(fc1 y) · fc2 y)
  (128 → 384 → 128) followed by a depthwise 7×7 convolution. g is the projected appearance
  guidance (not normalised). 582,912 parameters;
* a **class block**: every class map average-pooled (r2 = 2, train *and* test in the official
  code), pre-LN softmax attention across the T classes at every pooled location with Q and K
  from [LN(x); text guidance], the same gated MLP with an extra ReLU6 on its output and no
  depthwise conv; the result is upsampled bilinearly (align_corners=True) and added to the
  pre-pool input — out = x + up(pool(x) + Δ), the CAT-Seg double residual. 247,680 parameters.

The official block concatenates the guidance to each of the T class maps before the q/k
linear layers and the ``sr_k`` convolution; here the guidance share of those layers is computed
once per image and broadcast (:mod:`ovrsis.modeling.guided_layers`). Weights keep the official
[cost; guidance] layout. The official code truncates nothing: above ``MODEL.COST.MAX_CLASSES``
classes ovrsis keeps its top-k rule (see docs/deviations.md).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..guided_layers import guided_conv2d, guided_linear
from ..registry import AGGREGATOR_REGISTRY
from ..cost.fusion import build_cost_embedding
from .catseg import CATSegAggregator, _channels


class GatedMlp(nn.Module):
    """fc3(ReLU6(fc1 x) · fc2 x), then optionally a depthwise k×k conv on the (h, w) grid
    (spatial block) or a ReLU6 (class block)."""

    def __init__(self, dim: int, hidden: int, dwconv_kernel: int = 0, out_relu6: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(dim, hidden)
        self.fc3 = nn.Linear(hidden, dim)
        self.dwconv = (nn.Conv2d(dim, dim, dwconv_kernel, padding=dwconv_kernel // 2, groups=dim)
                       if dwconv_kernel > 0 else None)
        self.out_relu6 = out_relu6

    def forward(self, x: torch.Tensor, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: (..., L, C) → (..., L, C); ``grid`` (h, w) with h·w = L is needed for the dwconv."""
        y = self.fc3(F.relu6(self.fc1(x)) * self.fc2(x))
        if self.dwconv is not None:
            if grid is None:
                raise ValueError("GatedMlp with a depthwise conv needs the (h, w) token grid")
            lead, (length, c) = y.shape[:-2], y.shape[-2:]
            maps = y.reshape(-1, *grid, c).permute(0, 3, 1, 2)
            y = self.dwconv(maps).flatten(2).transpose(1, 2).reshape(*lead, length, c)
        if self.out_relu6:
            y = F.relu6(y)
        return y


class ReducedGuidedAttention(nn.Module):
    """Softmax attention with Q, K from [x; guidance], V from x, keys/values optionally
    spatially reduced by k×k stride-k convolutions + LayerNorm (SegFormer's efficient attention).

    Parameter names and shapes are the official ones: ``q``/``k`` Linear(dim + G → dim),
    ``v``/``proj`` Linear(dim → dim); with reduction r > 1 also ``sr_k`` Conv(dim + G, k=s=r),
    ``norm_k`` LN(dim + G), ``sr_v`` Conv(dim, k=s=r), ``norm_v`` LN(dim).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 8, reduction: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {num_heads} heads")
        if reduction < 1:
            raise ValueError(f"spatial reduction must be >= 1, got {reduction}")
        self.dim, self.num_heads, self.reduction = dim, num_heads, int(reduction)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if self.reduction > 1:
            self.sr_k = nn.Conv2d(dim + guidance_dim, dim + guidance_dim, self.reduction, stride=self.reduction)
            self.norm_k = nn.LayerNorm(dim + guidance_dim)
            self.sr_v = nn.Conv2d(dim, dim, self.reduction, stride=self.reduction)
            self.norm_v = nn.LayerNorm(dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # (..., H, L, D)

    def _reduced_kv(self, x: torch.Tensor, guidance: Optional[torch.Tensor], grid: Tuple[int, int]):
        """Keys and values of the reduced grid; x (B, T, h·w, C), guidance (B, 1, h·w, G) or None."""
        b, t, length, c = x.shape
        maps = x.reshape(b * t, *grid, c).permute(0, 3, 1, 2)  # (B·T, C, h, w)
        g_maps = None
        if guidance is not None:
            if guidance.shape[1] != 1 or guidance.shape[0] != b:
                raise ValueError(f"spatial guidance must be (B, 1, h·w, G) per image, got {tuple(guidance.shape)}")
            g_maps = guidance[:, 0].reshape(b, *grid, -1).permute(0, 3, 1, 2)  # (B, G, h, w)
        k_in = guided_conv2d(self.sr_k, maps, g_maps).flatten(2).transpose(1, 2)  # (B·T, h'w', C + G)
        v_in = self.sr_v(maps).flatten(2).transpose(1, 2)
        k = self.k(self.norm_k(k_in)).view(b, t, -1, c)
        v = self.v(self.norm_v(v_in)).view(b, t, -1, c)
        return k, v

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor],
                grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: (..., L, C) normalised tokens; guidance: (..., L, G) broadcastable to x's leading
        dimensions (shared maps are not copied), or None. With reduction, x is (B, T, h·w, C),
        guidance (B, 1, h·w, G) and ``grid`` = (h, w). Returns (..., L, C)."""
        q = guided_linear(self.q, x, guidance)
        if self.reduction > 1:
            if grid is None or x.dim() != 4:
                raise ValueError("spatially reduced attention needs x as (B, T, h·w, C) and the (h, w) grid")
            k, v = self._reduced_kv(x, guidance, grid)
        else:
            k, v = guided_linear(self.k, x, guidance), self.v(x)
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        return self.proj(out.transpose(-3, -2).flatten(-2))


class EfficientSpatialBlock(nn.Module):
    """Pre-LN reduced-attention block over each class map's h·w tokens with appearance guidance."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 8, reduction: int = 2,
                 mlp_ratio: int = 3, dwconv_kernel: int = 7) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ReducedGuidedAttention(dim, guidance_dim, num_heads, reduction)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GatedMlp(dim, mlp_ratio * dim, dwconv_kernel=dwconv_kernel)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, T, C, h, w); guidance: (B, G, h, w) per image or None → (B, T, C, h, w)."""
        b, t, c, h, w = x.shape
        if (h % self.attn.reduction or w % self.attn.reduction):
            raise ValueError(f"cost grid {h}×{w} is not divisible by the spatial reduction {self.attn.reduction}")
        tokens = x.flatten(3).transpose(2, 3)  # (B, T, h·w, C)
        g = guidance.flatten(2).transpose(1, 2).unsqueeze(1) if guidance is not None else None  # (B, 1, h·w, G)
        tokens = tokens + self.attn(self.norm1(tokens), g, (h, w))
        tokens = tokens + self.mlp(self.norm2(tokens), (h, w))
        return tokens.transpose(2, 3).reshape(b, t, c, h, w)


class EfficientClassBlock(nn.Module):
    """Pool, pre-LN softmax attention across classes with text guidance, upsample, add back."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 8, mlp_ratio: int = 3,
                 pooling_train: Sequence[int] = (2, 2), pooling_test: Sequence[int] = (2, 2)) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ReducedGuidedAttention(dim, guidance_dim, num_heads, reduction=1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GatedMlp(dim, mlp_ratio * dim, out_relu6=True)
        self.pooling_train = tuple(int(p) for p in pooling_train)
        self.pooling_test = tuple(int(p) for p in pooling_test)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, T, C, h, w); guidance: (B, T, G) text guidance or None → (B, T, C, h, w)."""
        b, t, c, h, w = x.shape
        pool = self.pooling_train if self.training else self.pooling_test
        pooled = F.avg_pool2d(x.flatten(0, 1), pool) if pool != (1, 1) else x.flatten(0, 1)
        hp, wp = pooled.shape[-2:]
        tokens = pooled.view(b, t, c, hp * wp).permute(0, 3, 1, 2)  # (B, hp·wp, T, C)
        g = guidance.unsqueeze(1) if guidance is not None else None  # (B, 1, T, G): shared by locations
        tokens = tokens + self.attn(self.norm1(tokens), g)
        tokens = tokens + self.mlp(self.norm2(tokens))
        out = tokens.permute(0, 2, 3, 1).reshape(b * t, c, hp, wp)
        if (hp, wp) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return x + out.view(b, t, c, h, w)


class EfficientAggregationLayer(nn.Module):
    """Spatial block (appearance guidance), then class block (text guidance)."""

    def __init__(self, dim: int, appearance_dim: int, text_dim: int, num_heads: int = 8, reduction: int = 2,
                 pooling_train: Sequence[int] = (2, 2), pooling_test: Sequence[int] = (2, 2)) -> None:
        super().__init__()
        self.spatial = EfficientSpatialBlock(dim, appearance_dim, num_heads, reduction)
        self.classes = EfficientClassBlock(dim, text_dim, num_heads, pooling_train=pooling_train,
                                           pooling_test=pooling_test)

    def forward(self, x: torch.Tensor, appearance: Optional[torch.Tensor], text: Optional[torch.Tensor]) -> torch.Tensor:
        return self.classes(self.spatial(x, appearance), text)


@AGGREGATOR_REGISTRY.register()
class EfficientAggregator(CATSegAggregator):
    """RSKT-Seg's aggregator: CAT-Seg's cost embedding and guidance projections, N efficient
    layers. Cost volume(s) (B, P_i, T, h, w) → embedding (B, T, hidden, h, w)."""

    def __init__(self, *, cost_channels: Union[int, Sequence[int]], clip_dim: int, resolution: Tuple[int, int],
                 hidden_dim: int = 128, num_layers: int = 2, num_heads: int = 8, spatial_reduction: int = 2,
                 appearance_proj_dim: int = 128, text_proj_dim: int = 128,
                 pooling_train: Sequence[int] = (2, 2), pooling_test: Sequence[int] = (2, 2),
                 cost_fusion: Union[str, nn.Module] = "conv", checkpoint_activations: bool = False) -> None:
        super().__init__(cost_channels=cost_channels, clip_dim=clip_dim, resolution=resolution, hidden_dim=hidden_dim,
                         num_layers=0, appearance_proj_dim=appearance_proj_dim, text_proj_dim=text_proj_dim,
                         cost_fusion=cost_fusion, checkpoint_activations=checkpoint_activations)
        if any(r % spatial_reduction for r in resolution):
            raise ValueError(f"MODEL.AGGREGATOR.SPATIAL_REDUCTION {spatial_reduction} does not divide the cost grid "
                             f"{tuple(resolution)}")
        self.layers = nn.ModuleList([
            EfficientAggregationLayer(hidden_dim, appearance_proj_dim, text_proj_dim, num_heads, spatial_reduction,
                                      pooling_train, pooling_test)
            for _ in range(num_layers)
        ])

    @classmethod
    def from_config(cls, cfg, *, cost_channels: Union[int, Sequence[int]], clip_dim: int,
                    resolution: Tuple[int, int]) -> "EfficientAggregator":
        a = cfg.MODEL.AGGREGATOR
        return cls(cost_channels=cost_channels, clip_dim=clip_dim, resolution=resolution,
                   cost_fusion=build_cost_embedding(cfg.MODEL.COST.FUSION, _channels(cost_channels), cfg.MODEL.AGGREGATOR.HIDDEN_DIM, cfg), hidden_dim=a.HIDDEN_DIM, num_layers=a.NUM_LAYERS,
                   num_heads=a.NUM_HEADS, spatial_reduction=a.SPATIAL_REDUCTION,
                   appearance_proj_dim=a.APPEARANCE_GUIDANCE_PROJ_DIM, text_proj_dim=a.TEXT_GUIDANCE_PROJ_DIM,
                   pooling_train=a.POOLING_SIZE_TRAIN, pooling_test=a.POOLING_SIZE_TEST,
                   checkpoint_activations=a.CHECKPOINT_ACTIVATIONS)
