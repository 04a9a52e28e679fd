"""The CLIP image–text cost volume and the top-k class rule for large vocabularies."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def cosine_cost(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarity, no temperature.

    image: (B, C, h, w), or (B, R, C, h, w) for R views (e.g. rotations); text: (T, P, C)
    shared by the batch or (B, T, P, C) per image. Returns (B, P, T, h, w) or (B, R, P, T, h, w).
    """
    image = F.normalize(image, dim=-3)
    text = F.normalize(text, dim=-1)
    views = "r" if image.dim() == 5 else ""
    per_image = "b" if text.dim() == 4 else ""
    return torch.einsum(f"b{views}chw,{per_image}tpc->b{views}pthw", image, text)


def select_top_classes(cost: torch.Tensor, text: torch.Tensor, max_classes: int
                       ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Keep, per image, the ``max_classes`` classes with the highest max-over-pixels cost.

    Returns (cost (B, P, K, h, w), text (B, K, P, C), indices (B, K) or None when T ≤ K).
    The official aggregator does this above 256 classes; the rest get logit −100.
    """
    b, p, t, h, w = cost.shape
    if max_classes <= 0 or t <= max_classes:
        return cost, text.expand(b, -1, -1, -1) if text.dim() == 3 else text, None
    score = cost.permute(0, 2, 1, 3, 4).flatten(2).amax(dim=-1)  # (B, T)
    idx = score.topk(max_classes, dim=-1, sorted=False).indices
    text = text.expand(b, -1, -1, -1) if text.dim() == 3 else text
    text = torch.gather(text, 1, idx[..., None, None].expand(-1, -1, *text.shape[2:]))
    cost = torch.gather(cost, 2, idx[:, None, :, None, None].expand(-1, p, -1, h, w))
    return cost, text, idx


def scatter_selected(logits: torch.Tensor, idx: Optional[torch.Tensor], num_classes: int,
                     fill: float = -100.0) -> torch.Tensor:
    """Put (B, K, H, W) logits of the selected classes back into a (B, T, H, W) map."""
    if idx is None:
        return logits
    out = logits.new_full((logits.shape[0], num_classes, *logits.shape[2:]), fill)
    return out.scatter(1, idx[..., None, None].expand(-1, -1, *logits.shape[2:]), logits)
