"""The DINO ViT specialist encoder (GSNet, RSKT-Seg): a frozen self-supervised ViT whose
intermediate outputs give a second cost volume and extra decoder guidance.

The transformer is timm's ``VisionTransformer`` built with the facebookresearch/dino
architecture (ViT-B/8: 12 blocks, width 768, 12 heads, qkv bias, LayerNorm eps 1e-6,
positional embedding for 224² = 785 tokens). Its parameter names are those of DINO
checkpoints (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.*``, ``norm``),
so a "teacher" checkpoint loads directly once its wrapper prefixes are stripped.

The forward follows the official code: the CLIP-normalised image (at the CLIP input size)
goes in; the positional embedding is resized to the token grid; every returned block
output goes through the final LayerNorm (DINO's ``get_intermediate_layers``) and comes back
as a (B, width, g, g) map without the CLS token.
"""
from __future__ import annotations

import logging
import math
from functools import partial
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import check_path
from .frozen import load_and_freeze, load_state_strictly

logger = logging.getLogger(__name__)

POS_EMBED_RESIZE = ("size", "official")
_WRAPPER_PREFIXES = ("module.", "backbone.")


def resize_pos_embed(pos: torch.Tensor, grid: Tuple[int, int], mode: str = "size") -> torch.Tensor:
    """(1, 1 + n0², D) positional embedding → (1, 1 + gh·gw, D), bicubic.

    ``size``: resize to the target grid (align_corners=False), as CLIP/timm-style code does.
    ``official``: DINO's rule, a fixed scale factor ((g + 0.1) / n0) — the bicubic sampling
    positions then differ slightly from a resize to the target size (GSNet and RSKT-Seg use it;
    at 384² with patch 8 the factor is 48.1 / 28 = 1.717857).
    """
    if mode not in POS_EMBED_RESIZE:
        raise ValueError(f"MODEL.DINO.POS_EMBED_RESIZE must be one of {POS_EMBED_RESIZE}, got {mode!r}")
    n0 = math.isqrt(pos.shape[1] - 1)
    if n0 * n0 != pos.shape[1] - 1:
        raise ValueError(f"positional embedding of {pos.shape[1] - 1} patch tokens is not a square grid")
    gh, gw = int(grid[0]), int(grid[1])  # plain ints also under jit tracing (the scale factor must be a float)
    if (gh, gw) == (n0, n0):
        return pos
    cls_pos, patch = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    patch = patch.reshape(1, n0, n0, dim).permute(0, 3, 1, 2)
    if mode == "size":
        patch = F.interpolate(patch, size=(gh, gw), mode="bicubic", align_corners=False)
    else:
        patch = F.interpolate(patch, scale_factor=((gh + 0.1) / n0, (gw + 0.1) / n0), mode="bicubic",
                              align_corners=False)
        if tuple(patch.shape[-2:]) != (gh, gw):  # cannot happen for n0 ≥ 1, kept as DINO's own assert
            raise RuntimeError(f"official pos-embed rule produced {tuple(patch.shape[-2:])}, expected {(gh, gw)}")
    return torch.cat([cls_pos, patch.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)], dim=1)


def read_dino_checkpoint(path: str, checkpoint_key: str = "teacher") -> Dict[str, torch.Tensor]:
    """Backbone state dict from a facebookresearch/dino checkpoint.

    Accepts a full training checkpoint (``{"teacher": ..., "student": ..., ...}``: the
    ``checkpoint_key`` entry is used), a dict with ``model``/``state_dict``, or a bare state
    dict. Wrapper prefixes ``module.`` and ``backbone.`` are stripped and the projection head
    (``head.*``: DINOHead MLP and last layer) is dropped.

    The file is unpickled with ``weights_only=False`` (DINO checkpoints store their argparse
    namespace): only load files you trust.
    """
    check_path(path, "MODEL.DINO.WEIGHTS", "file", "a facebookresearch/dino checkpoint")
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: not a DINO checkpoint (expected a dict, got {type(loaded).__name__})")
    for key in (checkpoint_key, "model", "state_dict"):
        if key and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
            break
    state = {}
    for name, value in loaded.items():
        if not torch.is_tensor(value):
            continue
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name.startswith("head."):
            continue
        state[name] = value
    return state


class DINOEncoder(nn.Module):
    """Frozen DINO ViT returning LayerNorm'd intermediate block outputs as maps.

    ``out_indices``: 0-based block indices to return, in the order given (GSNet: 3, 7 → decoder
    guidance, 11 → cost). Only blocks up to the deepest requested one run.
    """

    def __init__(self, *, patch_size: int = 8, width: int = 768, depth: int = 12, num_heads: int = 12,
                 pretrain_size: int = 224, out_indices: Sequence[int] = (3, 7, 11), weights: str = "",
                 checkpoint_key: str = "teacher", pos_embed_resize: str = "size", frozen: bool = True) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if pos_embed_resize not in POS_EMBED_RESIZE:
            raise ValueError(f"MODEL.DINO.POS_EMBED_RESIZE must be one of {POS_EMBED_RESIZE}, got {pos_embed_resize!r}")
        self.out_indices = [int(i) for i in out_indices]
        if not self.out_indices or any(i < 0 or i >= depth for i in self.out_indices):
            raise ValueError(f"DINO block indices {self.out_indices} out of range for {depth} blocks")
        vit = VisionTransformer(img_size=pretrain_size, patch_size=patch_size, embed_dim=width, depth=depth,
                                num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True, num_classes=0,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6))
        # DINO checkpoint names: cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*
        self.cls_token = vit.cls_token
        self.pos_embed = vit.pos_embed
        self.patch_embed = vit.patch_embed
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.patch_size = patch_size
        self.width = width
        self.pos_embed_resize = pos_embed_resize
        self.frozen = frozen
        self._pos_cache: Dict[tuple, torch.Tensor] = {}
        load_and_freeze(self, weights, frozen, lambda path: self.load_checkpoint(path, checkpoint_key),
                        "DINO encoder", "MODEL.DINO.WEIGHTS")

    @classmethod
    def from_config(cls, cfg, out_indices: Sequence[int]) -> "DINOEncoder":
        d = cfg.MODEL.DINO
        return cls(patch_size=d.PATCH_SIZE, width=d.WIDTH, depth=d.DEPTH, num_heads=d.NUM_HEADS,
                   pretrain_size=d.PRETRAIN_SIZE, out_indices=out_indices, weights=d.WEIGHTS,
                   checkpoint_key=d.CHECKPOINT_KEY, pos_embed_resize=d.POS_EMBED_RESIZE, frozen=d.FROZEN)

    def train(self, mode: bool = True) -> "DINOEncoder":
        """A frozen encoder stays in eval mode (it has no dropout; this keeps that true)."""
        return super().train(mode and not self.frozen)

    # ------------------------------------------------------------------ weights
    def load_checkpoint(self, path: str, checkpoint_key: str = "teacher") -> None:
        """Load a DINO checkpoint strictly; the error lists what is missing or unexpected."""
        state = read_dino_checkpoint(path, checkpoint_key)
        own = self.state_dict()
        matched = [k for k in state if k in own]
        if not matched:
            shown = ", ".join(list(state)[:8]) or "(no tensors)"
            raise ValueError(f"{path}: no key matches the DINO ViT (after stripping module./backbone. and dropping "
                             f"head.*); checkpoint keys start with: {shown}")
        load_state_strictly(self, state, f"{path}: DINO checkpoint does not match the configured ViT (MODEL.DINO.*)",
                            shown=10)
        logger.info("Loaded DINO weights from %s: all %d tensors matched (head.* dropped)", path, len(matched))

    # ------------------------------------------------------------------ forward
    def _pos(self, grid: Tuple[int, int]) -> torch.Tensor:
        pos = self.pos_embed
        if pos.requires_grad and torch.is_grad_enabled():
            return resize_pos_embed(pos, grid, self.pos_embed_resize)
        key = (grid, self.pos_embed_resize, pos.device, pos.dtype, pos._version, pos.data_ptr())
        if key not in self._pos_cache:
            with torch.no_grad():
                self._pos_cache = {key: resize_pos_embed(pos, grid, self.pos_embed_resize)}
        return self._pos_cache[key]

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """CLIP-normalised images (B, 3, H, W) → [(B, width, H/p, W/p)] for each ``out_indices``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            b, _, h, w = images.shape
            if h % self.patch_size or w % self.patch_size:
                raise ValueError(f"DINO input {h}×{w} is not a multiple of the patch size {self.patch_size}")
            grid = (h // self.patch_size, w // self.patch_size)
            x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self._pos(grid)
            wanted = {i: None for i in self.out_indices}
            for i, block in enumerate(self.blocks[: max(self.out_indices) + 1]):
                x = block(x)
                if i in wanted:
                    wanted[i] = self.norm(x)[:, 1:].transpose(1, 2).reshape(b, self.width, *grid)
            return [wanted[i] for i in self.out_indices]
