"""SAM 2 / SAM 2.1 Hiera image encoders as frozen guidance encoders (AerOSeg Table 6).

Optional: needs the ``sam2`` package (facebookresearch/sam2), which PyPI ships only as a source
archive whose default build compiles a CUDA extension and whose metadata asks for
``iopath>=0.1.10`` (detectron2 0.6 pins ``<0.1.10``). Install it as pure Python, without
touching the pinned packages::

    SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2

The network is sam2's own ``ImageEncoder`` (Hiera trunk + ``FpnNeck``, ``scalp=1``) built with
the architecture of sam2's ``configs/sam2.1/sam2.1_hiera_*.yaml`` (SAM 2 and SAM 2.1 share the
image encoder), so the released checkpoints' ``image_encoder.*`` tensors load directly. Its
outputs are the FPN levels at strides 4, 8 and 16 (256-d each; 256², 128², 64² at 1024²):
:meth:`forward` returns the levels named by ``out_indices`` and then the stride-16 level —
SAM 2's "vision features", the analogue of SAM's neck output.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ...errors import check_path
from .frozen import load_and_freeze, load_state_strictly
from .sam import (SAM2_OTHER_PARTS, SAM_PIXEL_MEAN, SAM_PIXEL_STD, read_sam_checkpoint, register_renormalisation,
                  to_encoder_input)

logger = logging.getLogger(__name__)

# sam2 configs/sam2.1/sam2.1_hiera_*.yaml (unlisted Hiera arguments keep sam2's defaults):
# embed_dim, num_heads, stages, global_att_blocks, window_pos_embed_bkg_spatial_size, window_spec
HIERA_ARCHS: Dict[str, Tuple[int, int, Tuple[int, ...], Tuple[int, ...], Tuple[int, int], Tuple[int, ...]]] = {
    "hiera_t": (96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7), (8, 4, 14, 7)),
    "hiera_s": (96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7), (8, 4, 14, 7)),
    "hiera_b+": (112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14), (8, 4, 14, 7)),
    "hiera_l": (144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), (8, 4, 16, 8)),
}
FPN_DIM = 256  # sam2 FpnNeck d_model
PATCH_STRIDE = 4  # Hiera patch embedding stride (the finest FPN level)


def _import_sam2():
    try:
        from sam2.modeling.backbones.hieradet import Hiera
        from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
        from sam2.modeling.position_encoding import PositionEmbeddingSine
    except ImportError as err:
        raise ImportError(
            "MODEL.SAM.ARCH hiera_*: the SAM 2 encoders need the optional 'sam2' package; install it with "
            "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2") from err
    return Hiera, FpnNeck, ImageEncoder, PositionEmbeddingSine


class SAMHieraEncoder(nn.Module):
    """Frozen SAM 2 Hiera image encoder returning FPN levels (B, 256, g, g).

    ``out_indices``: FPN levels for the decoder guidance, in order (0: stride 4, 1: stride 8;
    AerOSeg default (1, 0): the stride-8 level guides the coarser decoder stage). The last
    returned map is always the stride-16 level. ``input_mean``/``input_std``: the normalisation
    of the images given to :meth:`forward` (the model's); SAM 2 normalises with ImageNet
    statistics, the same numbers as SAM's on 0–255 RGB.
    """

    def __init__(self, *, arch: str = "hiera_b+", input_size: int = 1024, out_indices: Sequence[int] = (1, 0),
                 weights: str = "", frozen: bool = True, input_mean: Sequence[float] = SAM_PIXEL_MEAN,
                 input_std: Sequence[float] = SAM_PIXEL_STD, pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
                 pixel_std: Sequence[float] = SAM_PIXEL_STD) -> None:
        super().__init__()
        if arch not in HIERA_ARCHS:
            raise ValueError(f"MODEL.SAM.ARCH for SAM 2 must be one of {sorted(HIERA_ARCHS)}, got {arch!r}")
        Hiera, FpnNeck, ImageEncoder, PositionEmbeddingSine = _import_sam2()
        embed_dim, heads, stages, global_blocks, bkg, window_spec = HIERA_ARCHS[arch]
        # token grid at stride 4 must tile the 8×8 window positional embedding at every stage
        if input_size % (PATCH_STRIDE * window_spec[0]) or input_size % 32:
            raise ValueError(f"MODEL.SAM.INPUT_SIZE {input_size}: SAM 2 Hiera needs a multiple of "
                             f"{PATCH_STRIDE * window_spec[0]} (and of 32, the coarsest stride)")
        self.out_indices = [int(i) for i in out_indices]
        if any(i not in (0, 1, 2) for i in self.out_indices):
            raise ValueError(f"MODEL.SAM.GUIDANCE_LAYERS {self.out_indices}: SAM 2 FPN levels are 0 (stride 4), "
                             "1 (stride 8) and 2 (stride 16)")
        channels = [embed_dim * 2 ** i for i in range(len(stages))][::-1]
        trunk = Hiera(embed_dim=embed_dim, num_heads=heads, stages=stages, global_att_blocks=global_blocks,
                      window_pos_embed_bkg_spatial_size=bkg, window_spec=window_spec)
        neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=FPN_DIM, normalize=True, scale=None,
                                                               temperature=10000),
                       d_model=FPN_DIM, backbone_channel_list=channels, fpn_top_down_levels=[2, 3],
                       fpn_interp_model="nearest")
        self.image_encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=1)
        self.arch = arch
        self.width = FPN_DIM  # every returned map is 256-d
        self.out_chans = FPN_DIM
        self.input_size = int(input_size)
        self.frozen = frozen
        register_renormalisation(self, input_mean, input_std, pixel_mean, pixel_std)
        load_and_freeze(self, weights, frozen, self.load_checkpoint, "SAM 2 encoder", "MODEL.SAM.WEIGHTS")

    @classmethod
    def from_config(cls, cfg) -> "SAMHieraEncoder":
        s = cfg.MODEL.SAM
        return cls(arch=s.ARCH, input_size=s.INPUT_SIZE, out_indices=s.GUIDANCE_LAYERS, weights=s.WEIGHTS,
                   frozen=s.FROZEN, input_mean=cfg.MODEL.PIXEL_MEAN, input_std=cfg.MODEL.PIXEL_STD,
                   pixel_mean=s.PIXEL_MEAN, pixel_std=s.PIXEL_STD)

    def train(self, mode: bool = True) -> "SAMHieraEncoder":
        """A frozen encoder stays in eval mode."""
        return super().train(mode and not self.frozen)

    def load_checkpoint(self, path: str) -> None:
        """Load the ``image_encoder.*`` tensors of a SAM 2 / 2.1 checkpoint (``{"model": ...}``) strictly."""
        check_path(path, "MODEL.SAM.WEIGHTS", "file", "a SAM 2 checkpoint")
        state, dropped = read_sam_checkpoint(path, SAM2_OTHER_PARTS)
        load_state_strictly(self.image_encoder, state, f"{path}: SAM 2 checkpoint does not match the configured image "
                            f"encoder (MODEL.SAM.ARCH {self.arch!r})")
        logger.info("Loaded SAM 2 %s image encoder from %s: all %d tensors matched, %d memory/prompt/decoder tensors "
                    "dropped", self.arch, path, len(state), dropped)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Model-normalised images (B, 3, H, W) → SAM 2-normalised (B, 3, input_size, input_size), bilinear."""
        return to_encoder_input(images, self.scale, self.shift, self.input_size)

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Model-normalised images → [FPN level i for i in ``out_indices``] + [stride-16 level], each (B, 256, ·, ·)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            fpn = self.image_encoder(self.preprocess(images))["backbone_fpn"]  # strides 4, 8, 16
            return [fpn[i] for i in self.out_indices] + [fpn[-1]]
