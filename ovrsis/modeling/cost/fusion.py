"""Cost embeddings: the aggregator's first layer, from cost volume(s) to its hidden width.

Every module here maps a list of cost volumes ``[(B, C_i, T, h, w)]`` — the first one the
guiding CLIP cost, then any specialist costs — to the embedding (B, T, hidden, h, w), each
class map embedded on its own. ``MODEL.COST.FUSION`` picks one by its name in
:data:`~ovrsis.modeling.registry.COST_FUSION_REGISTRY` (a project registers its own there):

* ``conv``: CAT-Seg's single 7×7 convolution over the CLIP cost's channels (prompt
  templates, or rotations × templates for OVRS);
* ``qgff``: GSNet's Query-Guided Feature Fusion of the CLIP cost and a specialist cost;
* RSKT-Seg's ``FUSION_TYPE`` choices of a (rotation-stacked) CLIP cost and the DINO cost:
  ``simple_separate`` (the released one: QGFF), ``simple_concatenation`` (one 7×7 conv over
  all cost channels) and ``simple_mean`` (one 7×7 conv over their mean).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from detectron2.config import CfgNode
from torch import nn

from ..registry import COST_FUSION_REGISTRY


def _per_class(cost: torch.Tensor) -> torch.Tensor:
    """(B, C, T, h, w) → (B·T, C, h, w): every class map is embedded on its own."""
    b, c, t, h, w = cost.shape
    return cost.transpose(1, 2).reshape(b * t, c, h, w)


class ConvCostEmbedding(nn.Conv2d):
    """CAT-Seg's cost embedding: one 7×7 convolution (C → hidden) per class map.

    A ``nn.Conv2d`` subclass so that its parameters keep the plain names
    (``aggregator.cost_embed.weight``/``bias``) of CAT-Seg and OVRS checkpoints.
    """

    def __init__(self, cost_channels: Sequence[int], hidden_dim: int = 128, kernel_size: int = 7) -> None:
        if len(cost_channels) != 1:
            raise ValueError(f"MODEL.COST.FUSION 'conv' embeds exactly one cost volume, got {len(cost_channels)} "
                             "(a specialist cost needs a fusing embedding such as 'qgff')")
        super().__init__(int(cost_channels[0]), hidden_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, costs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        if len(costs) != 1:
            raise ValueError(f"ConvCostEmbedding embeds one cost volume, got {len(costs)}")
        b, _, t, h, w = costs[0].shape
        return super().forward(_per_class(costs[0])).view(b, t, -1, h, w)


class QueryGuidedFusion(nn.Module):
    """GSNet's Query-Guided Feature Fusion (QGFF), official model "Ver09c".

    Each cost gets its own 7×7 embedding followed by a sigmoid; the embeddings are
    concatenated and fused by a 7×7 convolution with a sigmoid; the sigmoid embedding of the
    guiding (CLIP) cost is added back as a residual::

        E_i = σ(conv_i(M_i)),   F = σ(fuse([E_0, E_1, ...])) + E_0

    With two costs (CLIP M^G with P channels, DINO M^S with P channels) this is exactly the
    official ``conv1``/``conv2``/``fusion_corr``; RSKT-Seg's ``simple_separate`` fusion is the
    same module with a 4-rotation CLIP cost (4 channels) and a 1-channel DINO cost.
    """

    def __init__(self, cost_channels: Sequence[int], hidden_dim: int = 128, kernel_size: int = 7) -> None:
        super().__init__()
        if len(cost_channels) < 2:
            raise ValueError(f"QueryGuidedFusion needs at least two cost volumes, got channels {list(cost_channels)}")
        pad = kernel_size // 2
        self.embeds = nn.ModuleList([nn.Conv2d(c, hidden_dim, kernel_size, padding=pad) for c in cost_channels])
        self.fuse = nn.Conv2d(len(cost_channels) * hidden_dim, hidden_dim, kernel_size, padding=pad)
        self.cost_channels = [int(c) for c in cost_channels]

    def forward(self, costs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(costs) != len(self.embeds):
            raise ValueError(f"QueryGuidedFusion built for {len(self.embeds)} cost volumes, got {len(costs)}")
        b, _, t, h, w = costs[0].shape
        embedded = [torch.sigmoid(embed(_per_class(cost))) for embed, cost in zip(self.embeds, costs)]
        fused = torch.sigmoid(self.fuse(torch.cat(embedded, dim=1))) + embedded[0]
        return fused.view(b, t, -1, h, w)


class ConcatCostEmbedding(nn.Conv2d):
    """RSKT-Seg ``simple_concatenation``: one 7×7 conv over the channels of all cost volumes.

    Costs (B, C_i, T, h, w) are concatenated on the channel axis in the given order (official:
    CLIP rotations 0°, 90°, 180°, 270°, then DINO; ``conv1`` 7×7 5→128) and embedded per class::

        F = conv([M_0; M_1; ...])

    A ``nn.Conv2d`` subclass: parameters ``cost_embed.weight``/``bias``, the official ``conv1``.
    """

    def __init__(self, cost_channels: Sequence[int], hidden_dim: int = 128, kernel_size: int = 7) -> None:
        super().__init__(sum(int(c) for c in cost_channels), hidden_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, costs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        cost = torch.cat(list(costs), dim=1)
        if cost.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} built for {self.in_channels} cost channels, got {cost.shape[1]}")
        b, _, t, h, w = cost.shape
        return super().forward(_per_class(cost)).view(b, t, -1, h, w)


class MeanCostEmbedding(nn.Conv2d):
    """RSKT-Seg ``simple_mean``: one 7×7 conv (1 → hidden) over the mean of all cost channels::

        F = conv(mean_c [M_0; M_1; ...]_c)

    (official: mean over the 4 rotation channels and the DINO channel, ``conv1`` 7×7 1→128).
    """

    def __init__(self, cost_channels: Sequence[int], hidden_dim: int = 128, kernel_size: int = 7) -> None:
        if len(cost_channels) < 1:
            raise ValueError("MeanCostEmbedding needs at least one cost volume")
        self.cost_channels = [int(c) for c in cost_channels]
        super().__init__(1, hidden_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, costs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        if [c.shape[1] for c in costs] != self.cost_channels:
            raise ValueError(f"{type(self).__name__} built for cost channels {self.cost_channels}, "
                             f"got {[c.shape[1] for c in costs]}")
        cost = torch.cat(list(costs), dim=1).mean(dim=1, keepdim=True)
        b, _, t, h, w = cost.shape
        return super().forward(_per_class(cost)).view(b, t, -1, h, w)


for _name, _part in (("conv", ConvCostEmbedding), ("qgff", QueryGuidedFusion),
                     ("simple_separate", QueryGuidedFusion),  # RSKT-Seg's name for QGFF (conv1, conv2, fusion_corr)
                     ("simple_concatenation", ConcatCostEmbedding), ("simple_mean", MeanCostEmbedding)):
    COST_FUSION_REGISTRY.register(_part, _name)


def build_cost_embedding(name: str, cost_channels: Sequence[int], hidden_dim: int,
                         cfg: Optional[CfgNode] = None) -> nn.Module:
    """The ``MODEL.COST.FUSION`` embedding (:data:`~ovrsis.modeling.registry.COST_FUSION_REGISTRY`) for
    cost volumes with the given channel counts; a part with ``from_config`` gets ``cfg`` (its own keys).

    Raises:
        ConfigError: no fusion of that name is registered.
    """
    part = COST_FUSION_REGISTRY.get(name)
    if cfg is not None and hasattr(part, "from_config"):
        return part.from_config(cfg, cost_channels=list(cost_channels), hidden_dim=hidden_dim)
    return part(list(cost_channels), hidden_dim)
