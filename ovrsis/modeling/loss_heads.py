"""Training-only loss heads: extra losses a config adds next to the per-class BCE.

A head is built from the config (``MODEL.LOSS.HEADS`` lists registered names) and called by
the meta-architecture during training only, with the intermediate state of the forward pass:

* ``embedding``: the aggregated cost embedding (B, T, C, h, w) over the training vocabulary;
* ``features``: dense feature maps by source — ``clip`` (the CLIP dense map, (B, 512, h, w) for
  ViT-B/16) and each stream's ``features`` (SAM: the neck output at its own grid);
* ``images``: the CLIP input (B, 3, S, S), model-normalised.

It returns a dict of named losses (already weighted). Heads are never run at inference, so they
add no cost there and do not constrain the evaluation vocabulary.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders.specialist import resample_to_grid
from .registry import LOSS_HEAD_REGISTRY

BACK_PROJECTION_TARGETS = ("sam", "clip", "rgb")


@LOSS_HEAD_REGISTRY.register()
class SemanticBackProjection(nn.Module):
    """AerOSeg's semantic back-projection (Eq. 7, 13): reconstruct the guidance features from the
    refined class-wise embedding.

    At every location of the embedding grid the T·C features of the training classes
    (class-major: class t occupies channels t·C … t·C + C − 1) go through
    Linear(T·C → H) · GELU · Linear(H → H) · GELU · Linear(H → D) and are compared with the
    target features resampled (area) to the same grid and detached (stop-gradient):
    ``L_sem = mean((ψ − sg(F))²)`` over pixels and channels, returned as ``weight · L_sem``
    under ``loss_sem_back_projection``. Targets (Table 5): ``sam`` (SAM neck, the paper's),
    ``clip`` (CLIP dense map), ``rgb`` (the CLIP input image).
    """

    def __init__(self, *, num_classes: int, in_dim: int, target: str, target_dim: int, hidden_dim: int = 256,
                 weight: float = 1.0) -> None:
        super().__init__()
        if target not in BACK_PROJECTION_TARGETS:
            raise ValueError(f"MODEL.BACK_PROJECTION.TARGET must be one of {BACK_PROJECTION_TARGETS}, got {target!r}")
        if num_classes <= 0:
            raise ValueError("MODEL.BACK_PROJECTION needs the training vocabulary size: register DATASETS.TRAIN[0] "
                             "or set MODEL.BACK_PROJECTION.NUM_CLASSES")
        self.num_classes = int(num_classes)
        self.target = target
        self.weight = float(weight)
        self.mlp = nn.Sequential(
            nn.Linear(num_classes * in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, target_dim))

    @classmethod
    def from_config(cls, cfg, *, in_dim: int, feature_dims: Mapping[str, int],
                    train_classes: Sequence[str]) -> "SemanticBackProjection":
        b = cfg.MODEL.BACK_PROJECTION
        dims = {"rgb": 3, **feature_dims}
        if b.TARGET not in dims:
            raise ValueError(f"MODEL.BACK_PROJECTION.TARGET {b.TARGET!r}: no such feature source; available: "
                             f"{sorted(dims)} (the 'sam' target needs MODEL.SAM.ENABLED)")
        return cls(num_classes=b.NUM_CLASSES or len(train_classes), in_dim=in_dim, target=b.TARGET,
                   target_dim=dims[b.TARGET], hidden_dim=b.HIDDEN_DIM, weight=b.WEIGHT)

    def reconstruct(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) refined embedding → ψ (B, D, h, w)."""
        b, t, c, h, w = embedding.shape
        if t != self.num_classes:
            raise ValueError(f"semantic back-projection was built for {self.num_classes} training classes "
                             f"(MODEL.BACK_PROJECTION.NUM_CLASSES / DATASETS.TRAIN), got a {t}-class embedding")
        x = embedding.permute(0, 3, 4, 1, 2).reshape(b, h, w, t * c)
        return self.mlp(x).permute(0, 3, 1, 2)

    def forward(self, state: Mapping[str, object]) -> Dict[str, torch.Tensor]:
        """``state``: the meta-architecture's training state (module docstring) → {loss name: loss}."""
        embedding = state["embedding"]
        grid = embedding.shape[-2:]
        if self.target == "rgb":
            source = state["images"]
        else:
            features = state["features"]
            if self.target not in features:
                raise ValueError(f"back-projection target {self.target!r} is not computed by this model "
                                 f"(available: {sorted(features)})")
            source = features[self.target]
        target = resample_to_grid(source.detach(), grid)  # sg(F): no gradient to the target encoder
        loss = F.mse_loss(self.reconstruct(embedding), target.to(embedding.dtype))
        return {"loss_sem_back_projection": self.weight * loss}
