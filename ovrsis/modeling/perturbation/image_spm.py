"""Image-SPM: text-guided, location-wise stochastic perturbation of the dense CLIP features (Pi-Seg).

Paper 002 §V-B Eq. 4: a cross-attention from the image features (queries) to the perturbed
text (keys/values) predicts a mean μ_v and a scale σ_v per location; ε_v = σ_v ⊙ Z + μ_v is
added to the features that form the cost volume. Official code: LiBingyu01/Pi-Seg
``cat_seg/pini_vpn.py::ImageVpnGenerator`` / ``CrossAttention``: single head, Linear(C → C/r)
q/k/v with bias, softmax over the T class tokens **without** a 1/√d scale, ``fc_mean`` and
``fc_variance`` Linear(C/r → C), σ = |fc_variance(·)| (no softplus, no clamp), default init.
Its inputs are detached, so it learns only through the noise it adds.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .noise import check_noise, sample_noise_like


class TextGuidedAttention(nn.Module):
    """Single-head cross-attention, queries (B, N, C) over keys/values (T, C) shared by the batch."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, hidden)
        self.k = nn.Linear(dim, hidden)
        self.v = nn.Linear(dim, hidden)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """queries (B, N, C), tokens (T, C) → softmax_T(q kᵀ) v, (B, N, hidden); no 1/√d (official)."""
        attn = torch.softmax(self.q(queries) @ self.k(tokens).transpose(0, 1), dim=-1)
        return attn @ self.v(tokens)


class ImageSPM(nn.Module):
    """Dense features (B, C, h, w) + class tokens (T, C) → noise ε_v (B, C, h, w) to add to them."""

    def __init__(self, dim: int, reduction: int = 1, noise: str = "gaussian", student_t_df: float = 3.0) -> None:
        """``dim``: C, the CLIP embedding width; ``reduction``: r, attention width C // r."""
        super().__init__()
        if not 1 <= reduction <= dim:
            raise ValueError(f"MODEL.PERTURBATION.IMAGE.REDUCTION must be in [1, {dim}], got {reduction}")
        check_noise(noise, student_t_df)
        self.dim = dim
        self.hidden = dim // reduction
        self.noise = noise
        self.student_t_df = student_t_df
        self.attn = TextGuidedAttention(dim, self.hidden)
        self.mu = nn.Linear(self.hidden, dim)
        self.sigma = nn.Linear(self.hidden, dim)

    def distribution(self, dense: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """dense (B, C, h, w), tokens (T, C) → (μ_v, σ_v), each (B, h·w, C), σ_v ≥ 0.

        Raises ValueError when the widths do not match ``dim``.
        """
        if dense.dim() != 4 or dense.shape[1] != self.dim or tokens.dim() != 2 or tokens.shape[1] != self.dim:
            raise ValueError(f"ImageSPM expects dense (B, {self.dim}, h, w) and class tokens (T, {self.dim}), "
                             f"got {tuple(dense.shape)} and {tuple(tokens.shape)}")
        h = self.attn(dense.flatten(2).transpose(1, 2), tokens)
        return self.mu(h), self.sigma(h).abs()

    def forward(self, dense: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """ε_v = σ_v ⊙ Z + μ_v reshaped to (B, C, h, w); Z ~ ``noise`` per image, location, channel."""
        mu, sigma = self.distribution(dense, tokens)
        eps = sigma * sample_noise_like(sigma, self.noise, self.student_t_df) + mu
        return eps.transpose(1, 2).reshape(dense.shape)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, noise={self.noise}"
                + (f", df={self.student_t_df}" if self.noise == "student_t" else ""))
