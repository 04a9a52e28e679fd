"""Text-SPM: learnable stochastic perturbation of the class text embeddings (Pi-Seg).

Paper 002 §V-B Eq. 3: ε_t = |σ_t| ⊙ Z + μ_t, T̂ = T + ε_t, with learnable μ_t, σ_t ∈ R^C.
Official code: LiBingyu01/Pi-Seg ``cat_seg/pini_vpn.py::TextVpnGenerator`` (parameters ``mu``,
``var``, shape (1, 1, 1, C), both initialised N(0, TEXT_NOISE_STD)), applied in
``Decoder_Head.py::CATSegPredictor.forward`` to the (T, P, C) text before it is repeated over
the batch: Z is drawn once per step and shared by every image of the batch.
"""
from __future__ import annotations

import torch
from torch import nn

from .noise import check_noise, sample_noise_like


class TextSPM(nn.Module):
    """T (T, P, C) → T + |σ| ⊙ Z + μ, Z ~ ``noise`` of shape (T, P, C), i.i.d., unit variance.

    The result is not re-normalised: the cost volume's cosine and the aggregator's text
    guidance (prompt mean, then L2 normalisation) normalise it, as in the official code.
    ``mu``/``sigma`` keep the official (1, 1, 1, C) shape so official checkpoints load as is.
    """

    def __init__(self, dim: int, init_std: float = 0.02, noise: str = "gaussian", student_t_df: float = 3.0) -> None:
        """``dim``: text embedding width C; ``init_std``: σ_t, the std of μ's and σ's normal init."""
        super().__init__()
        if dim < 1:
            raise ValueError(f"TextSPM: embedding width must be >= 1, got {dim}")
        if init_std < 0:
            raise ValueError(f"MODEL.PERTURBATION.TEXT.INIT_STD must be >= 0, got {init_std}")
        check_noise(noise, student_t_df)
        self.dim = dim
        self.noise = noise
        self.student_t_df = student_t_df
        self.mu = nn.Parameter(torch.empty(1, 1, 1, dim))
        self.sigma = nn.Parameter(torch.empty(1, 1, 1, dim))
        nn.init.normal_(self.mu, std=init_std)
        nn.init.normal_(self.sigma, std=init_std)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text (T, P, C) → perturbed text (T, P, C). Raises ValueError on a wrong shape."""
        if text.dim() != 3 or text.shape[-1] != self.dim:
            raise ValueError(f"TextSPM expects text embeddings (T, P, {self.dim}), got {tuple(text.shape)}")
        z = sample_noise_like(text, self.noise, self.student_t_df)
        return text + (self.sigma.view(self.dim).abs() * z + self.mu.view(self.dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, noise={self.noise}" + (f", df={self.student_t_df}" if self.noise == "student_t" else "")
