"""``CostGateFusion``: the cost embedding with a per-class channel gate.

The cost volumes (the CLIP cost and any specialist costs, (B, C_i, T, h, w)) are concatenated on
the channel axis and embedded per class by one 7×7 convolution, as RSKT-Seg's
``simple_concatenation``; a gate computed from each class map's statistics then scales the
embedding's channels::

    E = conv([M_0; M_1; ...])                                  (B·T, hidden, h, w)
    s = [max_hw M; mean_hw M]                                   (B·T, 2·C)
    F = E ⊙ σ(W_2 ReLU(W_1 s) + b)                              (B·T, hidden) broadcast over (h, w)

so a class whose cost map has a clear peak can open other embedding channels than a flat one
(squeeze-and-excitation on the cost's statistics). ``b`` starts at ``MODEL.COST_GATE.INIT_BIAS``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ovrsis.modeling.registry import COST_FUSION_REGISTRY


@COST_FUSION_REGISTRY.register(name="cost_gate")
class CostGateFusion(nn.Module):
    """Costs [(B, C_i, T, h, w)] → embedding (B, T, hidden, h, w), each class on its own.

    Args:
        cost_channels: C_i of each cost volume (the CLIP cost first).
        hidden_dim: embedding width (``MODEL.AGGREGATOR.HIDDEN_DIM``).
        gate_hidden: width of the gate's MLP (``MODEL.COST_GATE.HIDDEN``).
        init_bias: initial gate logit (``MODEL.COST_GATE.INIT_BIAS``).
    """

    def __init__(self, cost_channels: Sequence[int], hidden_dim: int, gate_hidden: int = 16,
                 init_bias: float = 2.0, kernel_size: int = 7) -> None:
        super().__init__()
        if not cost_channels or gate_hidden < 1:
            raise ValueError(f"CostGateFusion needs cost channels and MODEL.COST_GATE.HIDDEN >= 1, got "
                             f"{list(cost_channels)}, {gate_hidden}")
        self.in_channels = sum(int(c) for c in cost_channels)
        self.embed = nn.Conv2d(self.in_channels, hidden_dim, kernel_size, padding=kernel_size // 2)
        self.gate = nn.Sequential(nn.Linear(2 * self.in_channels, gate_hidden), nn.ReLU(inplace=True),
                                  nn.Linear(gate_hidden, hidden_dim))
        nn.init.zeros_(self.gate[2].weight)
        nn.init.constant_(self.gate[2].bias, init_bias)

    @classmethod
    def from_config(cls, cfg, *, cost_channels: Sequence[int], hidden_dim: int) -> "CostGateFusion":
        g = cfg.MODEL.COST_GATE
        return cls(cost_channels, hidden_dim, gate_hidden=g.HIDDEN, init_bias=g.INIT_BIAS)

    def forward(self, costs: Sequence[torch.Tensor]) -> torch.Tensor:
        cost = torch.cat(list(costs), dim=1)
        if cost.shape[1] != self.in_channels:
            raise ValueError(f"CostGateFusion built for {self.in_channels} cost channels, got {cost.shape[1]}")
        b, c, t, h, w = cost.shape
        per_class = cost.transpose(1, 2).reshape(b * t, c, h, w)
        stats = torch.cat([per_class.amax(dim=(2, 3)), per_class.mean(dim=(2, 3))], dim=1)  # (B·T, 2C)
        gated = self.embed(per_class) * torch.sigmoid(self.gate(stats))[:, :, None, None]
        return gated.view(b, t, -1, h, w)
