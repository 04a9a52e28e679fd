"""The SAM image encoder as a frozen guidance encoder (AerOSeg).

The network is ``segment_anything``'s own ``ImageEncoderViT`` built with the architecture of
``segment_anything/build_sam.py`` (patch 16, pre-training input 1024² → 64×64 tokens,
absolute positional embedding (1, 64, 64, C), decomposed relative positions, window 14 with
global attention in four blocks, neck Conv1×1 C→256 + LayerNorm2d + Conv3×3 256→256 +
LayerNorm2d). Its parameter names are those of the SAM checkpoints' ``image_encoder.*``, so
``sam_vit_{b,l,h}_*.pth`` load directly (prompt encoder and mask decoder dropped).

The forward takes the CLIP-normalised image the rest of the model sees, undoes that
normalisation, applies SAM's (``pixel_mean``/``pixel_std`` on 0–255 RGB), resizes it
bilinearly to ``input_size`` and returns the outputs of the requested blocks as (B, C, g, g)
maps followed by the neck output (B, 256, g, g) — SAM's "image embedding", what
``ImageEncoderViT.forward`` returns. ``input_size`` below 1024 interpolates the absolute
positional embedding bicubically to the smaller grid (the relative positions of the
global-attention blocks are interpolated by segment_anything itself); 1024 is SAM's own path.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import check_path
from .frozen import load_and_freeze, load_state_strictly

logger = logging.getLogger(__name__)

# segment_anything/build_sam.py: (width, depth, heads, global-attention blocks (0-based))
SAM_ARCHS: Dict[str, Tuple[int, int, int, Tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # segment_anything Sam.pixel_mean (0-255 RGB)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
# Top-level parts of the released full-model checkpoints besides ``image_encoder``: dropped and
# counted. segment_anything ``Sam``; sam2 ``SAM2Base`` (SAM 2 / 2.1).
SAM_OTHER_PARTS = ("prompt_encoder", "mask_decoder")
SAM2_OTHER_PARTS = ("sam_prompt_encoder", "sam_mask_decoder", "memory_attention", "memory_encoder", "mask_downsample",
                    "obj_ptr_proj", "obj_ptr_tpos_proj", "maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc",
                    "no_obj_ptr", "no_obj_embed_spatial")


def resize_abs_pos(pos: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """SAM's absolute positional embedding (1, n, n, C) → (1, gh, gw, C), bicubic
    (align_corners=False), as ViTDet/SAM-derived code resizes it; unchanged at the native grid."""
    if tuple(pos.shape[1:3]) == tuple(grid):
        return pos
    resized = F.interpolate(pos.permute(0, 3, 1, 2), size=tuple(int(g) for g in grid), mode="bicubic",
                            align_corners=False)
    return resized.permute(0, 2, 3, 1)


def read_sam_checkpoint(path: str, other_parts: Sequence[str] = SAM_OTHER_PARTS) -> Tuple[Dict[str, torch.Tensor], int]:
    """Image-encoder state dict (names without ``image_encoder.``) from a SAM checkpoint.

    Accepts the released full-model files (``image_encoder.*`` plus the ``other_parts``: prompt
    encoder and mask decoder for SAM, :data:`SAM2_OTHER_PARTS` for SAM 2; those are dropped and
    counted), a bare image-encoder state dict (the other parts' tensors dropped likewise; anything
    else is left for the strict loader to report as unexpected), or either wrapped in
    ``model``/``state_dict`` with ``module.`` prefixes. Loaded with ``weights_only=True``.
    Tensors of a full-model file under any other top-level name are not loaded and are reported
    as unknown in a warning naming them. Returns (state dict, number of dropped tensors).
    """
    path = check_path(path, "MODEL.SAM.WEIGHTS", "file", "a segment_anything SAM checkpoint")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: not a SAM checkpoint (expected a dict, got {type(loaded).__name__})")
    for wrapper in ("model", "state_dict"):
        if wrapper in loaded and isinstance(loaded[wrapper], Mapping):
            loaded = loaded[wrapper]
            break
    names = {k[len("module."):] if k.startswith("module.") else k: v for k, v in loaded.items() if torch.is_tensor(v)}
    full_model = any(k.startswith("image_encoder.") for k in names)
    state, dropped, unknown = {}, 0, []
    for name, value in names.items():
        if name.split(".")[0] in other_parts:
            dropped += 1
        elif not full_model:
            state[name] = value
        elif name.startswith("image_encoder."):
            state[name[len("image_encoder."):]] = value
        else:
            unknown.append(name)
    if unknown:
        logger.warning("%s: %d tensors under unknown top-level names not loaded (%s): %s%s", path, len(unknown),
                       f"known: image_encoder, {', '.join(other_parts)}", ", ".join(unknown[:8]),
                       " ..." if len(unknown) > 8 else "")
    return state, dropped


def register_renormalisation(module: nn.Module, input_mean: Sequence[float], input_std: Sequence[float],
                             pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
    """Register non-persistent buffers ``scale``, ``shift`` (each (1, 3, 1, 1)) on ``module`` such
    that ``x · scale + shift`` turns images normalised with (input_mean, input_std) into images
    normalised with (pixel_mean, pixel_std) (0–255 units)."""
    in_mean, in_std = torch.tensor(input_mean, dtype=torch.float32), torch.tensor(input_std, dtype=torch.float32)
    mean, std = torch.tensor(pixel_mean, dtype=torch.float32), torch.tensor(pixel_std, dtype=torch.float32)
    module.register_buffer("scale", (in_std / std).view(1, 3, 1, 1), persistent=False)
    module.register_buffer("shift", ((in_mean - mean) / std).view(1, 3, 1, 1), persistent=False)


def to_encoder_input(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, size: int) -> torch.Tensor:
    """Re-normalise (B, 3, H, W) images and resize them bilinearly to (size, size) (the affine map
    commutes with the bilinear resize)."""
    x = images * scale + shift
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


class SAMEncoder(nn.Module):
    """Frozen SAM ViT image encoder returning intermediate block outputs and the neck output.

    ``out_indices``: 0-based blocks whose outputs are returned, in order (AerOSeg with ViT-L:
    7 and 15, the 8th and 16th blocks), then the neck output. ``input_mean``/``input_std``: the
    normalisation of the images given to :meth:`forward` (the model's, CLIP's statistics).
    """

    def __init__(self, *, arch: str = "vit_l", width: int = 0, depth: int = 0, num_heads: int = 0,
                 global_attn_blocks: Sequence[int] = (), window_size: int = 14, patch_size: int = 16,
                 pretrain_size: int = 1024, out_chans: int = 256, input_size: int = 1024,
                 out_indices: Sequence[int] = (7, 15), weights: str = "", frozen: bool = True,
                 input_mean: Sequence[float] = SAM_PIXEL_MEAN, input_std: Sequence[float] = SAM_PIXEL_STD,
                 pixel_mean: Sequence[float] = SAM_PIXEL_MEAN, pixel_std: Sequence[float] = SAM_PIXEL_STD) -> None:
        super().__init__()
        from segment_anything.modeling import ImageEncoderViT

        if arch in SAM_ARCHS:
            width, depth, num_heads, global_attn_blocks = SAM_ARCHS[arch]
        elif arch != "custom":
            raise ValueError(f"MODEL.SAM.ARCH must be one of {sorted(SAM_ARCHS)} or 'custom', got {arch!r}")
        elif min(width, depth, num_heads) <= 0:
            raise ValueError("MODEL.SAM.ARCH 'custom' needs MODEL.SAM.CUSTOM.WIDTH, DEPTH and NUM_HEADS > 0")
        if pretrain_size % patch_size or input_size % patch_size:
            raise ValueError(f"SAM sizes {pretrain_size} (pre-training) and {input_size} (MODEL.SAM.INPUT_SIZE) "
                             f"must be multiples of the patch size {patch_size}")
        self.out_indices = [int(i) for i in out_indices]
        if any(i < 0 or i >= depth for i in self.out_indices):
            raise ValueError(f"MODEL.SAM.GUIDANCE_LAYERS {self.out_indices} out of range for {depth} SAM blocks "
                             f"(0-based; MODEL.SAM.ARCH {arch!r})")
        self.arch = arch
        self.width = width
        self.out_chans = out_chans
        self.patch_size = patch_size
        self.input_size = int(input_size)
        self.frozen = frozen
        self.image_encoder = ImageEncoderViT(
            img_size=pretrain_size, patch_size=patch_size, embed_dim=width, depth=depth, num_heads=num_heads,
            mlp_ratio=4, out_chans=out_chans, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_abs_pos=True, use_rel_pos=True, window_size=window_size,
            global_attn_indexes=tuple(int(i) for i in global_attn_blocks))
        register_renormalisation(self, input_mean, input_std, pixel_mean, pixel_std)
        load_and_freeze(self, weights, frozen, self.load_checkpoint, "SAM encoder", "MODEL.SAM.WEIGHTS")

    @classmethod
    def from_config(cls, cfg, out_indices: Optional[Sequence[int]] = None) -> "SAMEncoder":
        s = cfg.MODEL.SAM
        return cls(arch=s.ARCH, width=s.CUSTOM.WIDTH, depth=s.CUSTOM.DEPTH, num_heads=s.CUSTOM.NUM_HEADS,
                   global_attn_blocks=s.CUSTOM.GLOBAL_ATTN_BLOCKS, window_size=s.CUSTOM.WINDOW_SIZE,
                   pretrain_size=s.CUSTOM.PRETRAIN_SIZE if s.ARCH == "custom" else 1024,
                   input_size=s.INPUT_SIZE,
                   out_indices=s.GUIDANCE_LAYERS if out_indices is None else out_indices,
                   weights=s.WEIGHTS, frozen=s.FROZEN, input_mean=cfg.MODEL.PIXEL_MEAN, input_std=cfg.MODEL.PIXEL_STD,
                   pixel_mean=s.PIXEL_MEAN, pixel_std=s.PIXEL_STD)

    def train(self, mode: bool = True) -> "SAMEncoder":
        """A frozen encoder stays in eval mode."""
        return super().train(mode and not self.frozen)

    @property
    def grid(self) -> int:
        """Token grid side at ``input_size`` (64 at SAM's native 1024²)."""
        return self.input_size // self.patch_size

    # ------------------------------------------------------------------ weights
    def load_checkpoint(self, path: str) -> None:
        """Load SAM image-encoder weights strictly; the error lists missing, unexpected and
        mis-shaped tensors (a checkpoint of another SAM size shows up as shape mismatches)."""
        state, dropped = read_sam_checkpoint(path)
        load_state_strictly(self.image_encoder, state, f"{path}: SAM checkpoint does not match the configured image "
                            f"encoder (MODEL.SAM.ARCH {self.arch!r})")
        logger.info("Loaded SAM %s image encoder from %s: all %d tensors matched, %d prompt-encoder/mask-decoder "
                    "tensors dropped", self.arch, path, len(state), dropped)

    # ------------------------------------------------------------------ forward
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Model-normalised images (B, 3, H, W) → SAM-normalised (B, 3, input_size, input_size), bilinear."""
        return to_encoder_input(images, self.scale, self.shift, self.input_size)

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Model-normalised images (B, 3, H, W) → [(B, width, g, g) per ``out_indices``] + [neck (B, 256, g, g)],
        g = input_size / 16. Frozen: no autograd graph is built."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            enc = self.image_encoder
            x = enc.patch_embed(self.preprocess(images))  # (B, g, g, C)
            if enc.pos_embed is not None:
                x = x + resize_abs_pos(enc.pos_embed, x.shape[1:3])
            wanted = {i: None for i in self.out_indices}
            for i, block in enumerate(enc.blocks):
                x = block(x)
                if i in wanted:
                    wanted[i] = x.permute(0, 3, 1, 2)
            neck = enc.neck(x.permute(0, 3, 1, 2))
            return [wanted[i] for i in self.out_indices] + [neck]
