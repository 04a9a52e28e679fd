"""Noise families of Pi-Seg's perturbation modules, each standardised to zero mean, unit variance.

Source: Pi-Seg paper (002) Eq. 3 (Gaussian) and §VI Table IX (Gaussian, Laplace, Student-t,
Uniform); official code LiBingyu01/Pi-Seg ``cat_seg/pini_vpn.py::sample_noise_like``, which also
offers Gumbel (not in the paper). The scalings are the official ones.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

NOISE_FAMILIES: Tuple[str, ...] = ("gaussian", "laplace", "uniform", "student_t", "gumbel")

_EULER_GAMMA = 0.5772156649  # mean of the standard Gumbel
_GUMBEL_STD = 1.2825498302  # its standard deviation, π/√6 (the official literal)
_GUMBEL_EPS = 1e-6  # u is clamped to [eps, 1 - eps] before -log(-log u), as official


def check_noise(family: str, df: float) -> None:
    """Raise ValueError for an unknown family or a Student-t without finite variance (df ≤ 2)."""
    if family not in NOISE_FAMILIES:
        raise ValueError(f"noise family must be one of {NOISE_FAMILIES}, got {family!r}")
    if family == "student_t" and not df > 2.0:
        raise ValueError(f"Student-t noise needs df > 2 for a finite variance (it is scaled by "
                         f"sqrt(df / (df - 2)) to unit variance), got df={df}")


def sample_noise_like(x: torch.Tensor, family: str = "gaussian", df: float = 3.0) -> torch.Tensor:
    """Noise with the shape, dtype and device of ``x``: i.i.d., zero mean, unit variance.

    ``gaussian`` N(0, 1); ``laplace`` Laplace(0, 1/√2); ``uniform`` U(−√3, √3);
    ``student_t`` t(df)/√(df/(df−2)) (df > 2); ``gumbel`` (g − γ)/(π/√6) with g standard
    Gumbel. Draws from torch's global generator of ``x``'s device, so ``SEED`` makes it
    reproducible. Unlike the official code, Student-t is sampled on ``x``'s device (the
    official samples on the CPU and copies): same distribution, different random stream.
    """
    check_noise(family, df)
    if family == "gaussian":
        return torch.randn_like(x)
    if family == "uniform":
        return (torch.rand_like(x) * 2.0 - 1.0) * math.sqrt(3.0)
    if family == "laplace":
        # inverse CDF with torch.distributions.Laplace's draw, u ~ U(eps - 1, 1): same random stream
        u = torch.empty_like(x).uniform_(torch.finfo(x.dtype).eps - 1.0, 1.0)
        return -(1.0 / math.sqrt(2.0)) * u.sign() * torch.log1p(-u.abs())
    if family == "gumbel":
        u = torch.rand_like(x).clamp(_GUMBEL_EPS, 1.0 - _GUMBEL_EPS)
        return (-torch.log(-torch.log(u)) - _EULER_GAMMA) / _GUMBEL_STD
    t = torch.distributions.StudentT(torch.tensor(float(df), device=x.device)).sample(x.shape)
    return (t / math.sqrt(df / (df - 2.0))).to(x.dtype)
