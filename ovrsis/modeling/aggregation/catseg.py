"""CAT-Seg's aggregation stack: cost embedding, guidance projections, N × (spatial → class)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpointing import checkpointed
from ..cost.fusion import build_cost_embedding
from ..registry import AGGREGATOR_REGISTRY
from .class_attention import ClassAggregation
from .spatial import SpatialAggregation


def _channels(cost_channels: Union[int, Sequence[int]]) -> list:
    """Channels of each cost volume: the CLIP cost's, then each specialist cost's."""
    return [int(cost_channels)] if isinstance(cost_channels, int) else [int(c) for c in cost_channels]


class AggregationLayer(nn.Module):
    """Spatial aggregation (2 Swin blocks with appearance guidance), then class aggregation."""

    def __init__(self, dim: int, appearance_dim: int, text_dim: int, resolution: Tuple[int, int],
                 num_heads: int, window: int, attention: str, pad_len: int,
                 pooling_train: Sequence[int], pooling_test: Sequence[int]) -> None:
        super().__init__()
        self.spatial = SpatialAggregation(dim, appearance_dim, resolution, num_heads, window)
        self.classes = ClassAggregation(dim, text_dim, num_heads, attention, pad_len, pooling_train, pooling_test)

    def forward(self, x: torch.Tensor, appearance: Optional[torch.Tensor], text: Optional[torch.Tensor]) -> torch.Tensor:
        return self.classes(self.spatial(x, appearance), text)


@AGGREGATOR_REGISTRY.register()
class CATSegAggregator(nn.Module):
    """Cost volume (B, P, T, h, w) → aggregated embedding (B, T, hidden, h, w)."""

    def __init__(self, *, cost_channels: Union[int, Sequence[int]], clip_dim: int, resolution: Tuple[int, int],
                 hidden_dim: int = 128, num_layers: int = 2, num_heads: int = 4, window: int = 12,
                 appearance_proj_dim: int = 128, text_proj_dim: int = 128, attention: str = "linear",
                 pad_len: int = 256, pooling_train: Sequence[int] = (2, 2), pooling_test: Sequence[int] = (1, 1),
                 cost_fusion: Union[str, nn.Module] = "conv", checkpoint_activations: bool = False,
                 appearance_dim: Optional[int] = None) -> None:
        """``cost_channels``: channels of the CLIP cost, then of each specialist cost (if any);
        ``appearance_dim``: channels of the appearance-guidance map (default ``clip_dim``: the CLIP
        dense map; AerOSeg: SAM's 256-d neck, ``MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE``);
        ``cost_fusion``: the cost embedding, a module or its registered name (:mod:`ovrsis.modeling.cost.fusion`);
        ``checkpoint_activations``: recompute each layer's activations in the backward pass
        (:mod:`ovrsis.modeling.checkpointing`; same results, less training memory)."""
        super().__init__()
        self.checkpoint_activations = bool(checkpoint_activations)
        self.cost_embed = cost_fusion if isinstance(cost_fusion, nn.Module) else \
            build_cost_embedding(cost_fusion, _channels(cost_channels), hidden_dim)
        self.appearance_proj = nn.Sequential(
            nn.Conv2d(appearance_dim or clip_dim, appearance_proj_dim, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.text_proj = nn.Sequential(nn.Linear(clip_dim, text_proj_dim), nn.ReLU(inplace=True))
        self.layers = nn.ModuleList([
            AggregationLayer(hidden_dim, appearance_proj_dim, text_proj_dim, resolution, num_heads, window,
                             attention, pad_len, pooling_train, pooling_test)
            for _ in range(num_layers)
        ])

    @classmethod
    def from_config(cls, cfg, *, cost_channels: Union[int, Sequence[int]], clip_dim: int,
                    resolution: Tuple[int, int], appearance_dim: Optional[int] = None) -> "CATSegAggregator":
        a = cfg.MODEL.AGGREGATOR
        return cls(cost_channels=cost_channels, clip_dim=clip_dim, resolution=resolution, appearance_dim=appearance_dim,
                   cost_fusion=build_cost_embedding(cfg.MODEL.COST.FUSION, _channels(cost_channels), cfg.MODEL.AGGREGATOR.HIDDEN_DIM, cfg),
                   hidden_dim=a.HIDDEN_DIM, num_layers=a.NUM_LAYERS, num_heads=a.NUM_HEADS, window=a.WINDOW_SIZE,
                   appearance_proj_dim=a.APPEARANCE_GUIDANCE_PROJ_DIM, text_proj_dim=a.TEXT_GUIDANCE_PROJ_DIM,
                   attention=a.CLASS_ATTENTION, pad_len=a.PAD_LEN,
                   pooling_train=a.POOLING_SIZE_TRAIN, pooling_test=a.POOLING_SIZE_TEST,
                   checkpoint_activations=a.CHECKPOINT_ACTIVATIONS)

    def embed_cost(self, cost: torch.Tensor, extra_costs: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """(B, P, T, h, w) [+ specialist costs (B, P_i, T, h, w)] → (B, T, hidden, h, w)."""
        return self.cost_embed([cost, *extra_costs])

    def forward(self, cost: torch.Tensor, dense: torch.Tensor, text: torch.Tensor,
                extra_costs: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """cost (B, P, T, h, w); ``dense``: the appearance-guidance map (B, appearance_dim, h, w) — the CLIP
        dense map unless another source is configured; text (B, T, P, C) normalised;
        ``extra_costs``: specialist cost volumes over the same (selected) classes."""
        x = self.embed_cost(cost, extra_costs)
        appearance = self.appearance_proj(dense)
        text_guidance = self.text_proj(F.normalize(text.mean(dim=-2), dim=-1))
        for layer in self.layers:
            x = checkpointed(layer, x, appearance, text_guidance, enabled=self.checkpoint_activations)
        return x
