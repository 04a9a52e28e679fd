"""Last-block variants of the training-free CLIP segmentors (SegEarth-OV and its baselines).

Blocks 1…N−1 of the CLIP image tower run unchanged (``CLIPEncoder.last_block_input``); the
last block is replaced by ``out_proj(A · v)`` computed from its own q/k/v (after ``ln_1``),
with the attention A chosen by name, then optionally the residual and the FFN. Each
method's official definition (``configs/segearth_ov/*.yaml`` sets the three keys):

==============  =====================================  ========  =====  ============================================
name            attention A (per head, s = d^-1/2)     residual  FFN    source
==============  =====================================  ========  =====  ============================================
``vanilla``     softmax(s·q kᵀ)                        yes       yes    CLIP (Radford et al. 2021): the unchanged block
``maskclip``    identity (A = I: each token its own v)  yes       yes    chongzhou96/MaskCLIP ``backbones/vit.py``
                                                                        (``v += x; v = ffn(norm2(v), identity=v)``)
``sclip``       softmax(s·q qᵀ) + softmax(s·k kᵀ)      yes       yes    wangf3014/SCLIP ``clip/model.py`` (csa=True)
``clearclip``   softmax(s·q qᵀ)                        no        no     mc-lan/ClearCLIP (``ignore_residual=True``)
``segearth``    softmax(s·q qᵀ) + softmax(s·k kᵀ)      no        no     likyoo/SegEarth-OV ``open_clip/transformer.py``
                + softmax(s·v vᵀ)                                       (``model_type='SegEarth'``, ignore_residual)
==============  =====================================  ========  =====  ============================================

SegEarth-OV's own code runs every variant with its ``ignore_residual=True`` default (no
residual, no FFN); set ``RESIDUAL False, FFN False`` to reproduce that.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def _self_softmax(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.softmax(torch.matmul(x, x.transpose(-1, -2)) * scale, dim=-1)


def _vanilla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.matmul(F.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1), v)


def _maskclip(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return v


def _sclip(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.matmul(_self_softmax(q, scale) + _self_softmax(k, scale), v)


def _clearclip(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.matmul(_self_softmax(q, scale), v)


def _segearth(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.matmul(_self_softmax(q, scale) + _self_softmax(k, scale) + _self_softmax(v, scale), v)


LAST_BLOCK_ATTENTION: Dict[str, AttentionFn] = {
    "vanilla": _vanilla, "maskclip": _maskclip, "sclip": _sclip, "clearclip": _clearclip, "segearth": _segearth,
}


def run_last_block(block: nn.Module, x: torch.Tensor, attention: str, residual: bool, ffn: bool) -> torch.Tensor:
    """Apply a last-block variant to the tokens entering the last block.

    Args:
        block: the open_clip residual block (``ln_1``, ``attn`` with ``heads()``/``out_proj``,
            ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``) — see ``ovrsis.modeling.encoders.clip``.
        x: (B, L, width) residual stream, CLS token first.
        attention: a key of :data:`LAST_BLOCK_ATTENTION`.
        residual, ffn: keep the residual connection / the MLP sub-block.
    Returns:
        (B, L, width), every token including CLS (the global-bias removal reads the CLS token).
    Raises:
        ValueError: unknown attention name.
    """
    if attention not in LAST_BLOCK_ATTENTION:
        raise ValueError(f"MODEL.TRAINING_FREE.ATTENTION must be one of {sorted(LAST_BLOCK_ATTENTION)}, "
                         f"got {attention!r}")
    b, length, width = x.shape
    q, k, v = block.attn.heads(block.ln_1(x))  # (B, heads, L, d)
    mixed = LAST_BLOCK_ATTENTION[attention](q, k, v, q.shape[-1] ** -0.5)
    out = block.ls_1(block.attn.out_proj(mixed.transpose(1, 2).reshape(b, length, width)))
    if residual:
        out = x + out
    if ffn:
        out = out + block.ls_2(block.mlp(block.ln_2(out)))
    return out
