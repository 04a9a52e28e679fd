"""Class aggregation: attention across the classes at every (pooled) location.

CAT-Seg pads the class axis to ``pad_len`` (256) tokens with one learned padding token
(and padding text guidance) so the attention always sees the same number of tokens. All
padding tokens are identical, so their contribution is a count times one token's: we
handle it algebraically instead of materialising 256 − T extra tokens —

* linear attention: Σ_s φ(k_s) v_sᵀ and Σ_s φ(k_s) gain n_pad · φ(k_p) v_pᵀ and n_pad · φ(k_p);
* softmax attention: one padding key with an additive log(n_pad) bias.

Outputs at padded positions are discarded by the official code, so they are never computed.
The text guidance of a class is the same at every location, so its share of Q and K is
computed once per image and class and broadcast over locations
(:mod:`ovrsis.modeling.guided_layers`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..guided_layers import guided_linear


def _elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


class ClassAttention(nn.Module):
    """Pre-LN attention + MLP over the class axis with text guidance on Q and K."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, attention: str = "linear",
                 pad_len: int = 256, eps: float = 1e-6) -> None:
        super().__init__()
        if attention not in ("linear", "full"):
            raise ValueError(f"class attention must be 'linear' or 'full', got {attention!r}")
        self.num_heads = num_heads
        self.attention = attention
        self.eps = eps
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.ReLU(inplace=True), nn.Linear(dim * 4, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.pad_len = pad_len
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, dim)) if pad_len > 0 else None
        self.padding_guidance = nn.Parameter(torch.zeros(1, 1, guidance_dim)) if pad_len > 0 and guidance_dim > 0 else None

    def _qkv(self, x: torch.Tensor, guidance: Optional[torch.Tensor]):
        y = self.norm1(x)
        return guided_linear(self.q, y, guidance), guided_linear(self.k, y, guidance), self.v(y)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, -1))  # (..., L, H, D)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (..., T, C) tokens, e.g. (B, locations, T, C); guidance: (..., T, G) broadcastable
        to x's leading dimensions, e.g. (B, 1, T, G), or None → same shape as x."""
        *lead, t, c = x.shape
        q, k, v = (self._heads(z.reshape(-1, t, c)) for z in self._qkv(x, guidance))
        n = q.shape[0]
        x = x.reshape(n, t, c)
        n_pad = max(self.pad_len - t, 0) if self.padding_tokens is not None else 0
        if n_pad:
            g_pad = self.padding_guidance.view(1, 1, -1) if self.padding_guidance is not None else None
            _, k_pad, v_pad = (self._heads(z) for z in self._qkv(self.padding_tokens.view(1, 1, -1), g_pad))
        if self.attention == "linear":
            qf, kf = _elu_feature_map(q), _elu_feature_map(k)
            kv = torch.einsum("nshd,nshv->nhdv", kf, v)
            k_sum = kf.sum(dim=1)
            if n_pad:
                kf_pad = _elu_feature_map(k_pad)[0, 0]  # (H, D)
                kv = kv + n_pad * torch.einsum("hd,hv->hdv", kf_pad, v_pad[0, 0])
                k_sum = k_sum + n_pad * kf_pad
            z = 1.0 / (torch.einsum("nlhd,nhd->nlh", qf, k_sum) + self.eps)
            out = torch.einsum("nlhd,nhdv->nlhv", qf, kv) * z.unsqueeze(-1)
        else:
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (N, H, L, D)
            mask = None
            if n_pad:
                k = torch.cat([k, k_pad.transpose(1, 2).expand(n, -1, -1, -1)], dim=2)
                v = torch.cat([v, v_pad.transpose(1, 2).expand(n, -1, -1, -1)], dim=2)
                mask = torch.zeros(1, t + 1, dtype=q.dtype, device=q.device)  # (L=1 → t, S) broadcast
                mask[:, -1] = math.log(n_pad)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        x = x + out.reshape(n, t, c)
        return (x + self.mlp(self.norm2(x))).view(*lead, t, c)


class ClassAggregation(nn.Module):
    """Pool each class map, attend across classes, upsample the result and add it back.

    Reproduces the official double residual: out = x + up(pool(x) + Δ).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, attention: str = "linear",
                 pad_len: int = 256, pooling_train: Sequence[int] = (2, 2), pooling_test: Sequence[int] = (1, 1)) -> None:
        super().__init__()
        self.attn = ClassAttention(dim, guidance_dim, num_heads, attention, pad_len)
        self.pooling_train = tuple(pooling_train)
        self.pooling_test = tuple(pooling_test)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, T, C, H, W); guidance: (B, T, G) or None."""
        b, t, c, h, w = x.shape
        pool = self.pooling_train if self.training else self.pooling_test
        pooled = F.avg_pool2d(x.flatten(0, 1), pool) if pool != (1, 1) else x.flatten(0, 1)
        hp, wp = pooled.shape[-2:]
        tokens = pooled.view(b, t, c, hp * wp).permute(0, 3, 1, 2).reshape(b, hp * wp, t, c)
        if guidance is not None:
            guidance = guidance.unsqueeze(1)  # (B, 1, T, G): broadcast over locations, never copied
        tokens = self.attn(tokens, guidance)
        out = tokens.view(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
        if (hp, wp) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return x + out.view(b, t, c, h, w)
