"""A frozen CLIP image tower used only for decoder guidance (RSKT-Seg's RemoteCLIP stream).

RSKT-Seg (LiBingyu01/RSKT-Seg ``RSKT_Seg.py``, ``RSKT_Seg_Predictor.py``) adds a remote-sensing
CLIP — RemoteCLIP ViT-B/32 — fed the CLIP-normalised image resized to 768² (24² tokens); the raw
residual stream after blocks 3 and 7 (768-d, no ln_post/proj) becomes decoder guidance. Its
text tower is built and loaded by the official code but never run, and no RemoteCLIP cost is
computed. Any open_clip vision tower can play this role: ``MODEL.RS_CLIP.ARCH`` names the
open_clip architecture and ``MODEL.RS_CLIP.WEIGHTS`` the local file (RemoteCLIP ViT-B-32 /
ViT-L-14, GeoRSCLIP and SkyCLIP ViT-L-14 are open_clip state dicts; OpenAI's TorchScript
archives load too: :mod:`.clip_files`), so a config picks it.

Only the blocks up to the deepest tap run (the official code runs all 12 plus ln_post/proj and
discards them). The text tower is held only when asked (``MODEL.RS_CLIP.TEXT_TOWER``), to
reproduce the official parameter count and load every key of an official checkpoint; it is
never run either way.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .clip import SplitQKVAttention, _register_bundled_configs, _run_block, _split_attention
from .clip_files import check_activation, describe_vit, read_clip_file
from .dino import resize_pos_embed
from .frozen import load_and_freeze, load_state_strictly

logger = logging.getLogger(__name__)

TEXT_TOWER_NAMES = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection",
                    "logit_scale")


def split_qkv(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """open_clip / OpenAI layout → the split layout: every ``…attn.in_proj_weight`` (3D, D) becomes
    ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` (D, D) — the official RSKT-Seg loading
    step; ``in_proj_bias`` stays fused. Already split state dicts pass through unchanged."""
    out = {}
    for name, value in state.items():
        if name.endswith("attn.in_proj_weight"):
            base = name[: -len("in_proj_weight")]
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{base}{part}_proj_weight"] = chunk
        else:
            out[name] = value
    return out


class GuidanceCLIPEncoder(nn.Module):
    """Frozen open_clip ViT image tower → raw residual stream of chosen blocks as maps.

    ``arch``: open_clip model name (RemoteCLIP as RSKT-Seg builds it: ``ViT-B-32-quickgelu``);
    ``weights``: local state dict file ("" = random, to be filled by a full checkpoint);
    ``image_size``: input side (768 for RemoteCLIP ViT-B/32 → 24² tokens); ``out_indices``:
    0-based blocks returned, in order; ``text_tower``: also hold the (never run) text tower;
    ``round_fp16``: round the weights the official fp16 CLIP build stores in half precision
    (conv, linear and attention weights and biases, ``proj``/``text_projection``) when loading
    ``weights``, as RSKT-Seg's loading does.
    """

    def __init__(self, arch: str, *, weights: str = "", image_size: int = 768, out_indices: Sequence[int] = (3, 7),
                 text_tower: bool = False, round_fp16: bool = False) -> None:
        super().__init__()
        import open_clip

        _register_bundled_configs()
        model = open_clip.create_model(arch, pretrained=None)
        visual = model.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ValueError(f"MODEL.RS_CLIP.ARCH {arch!r} is not a ViT image tower (open_clip {type(visual).__name__})")
        _split_attention(visual.transformer)
        self.visual = visual
        if text_tower:
            _split_attention(model.transformer)
            for name in TEXT_TOWER_NAMES:
                setattr(self, name, getattr(model, name))
        self.arch = arch
        self.text_tower = bool(text_tower)
        self.patch_size = visual.conv1.kernel_size[0]
        self.width = visual.conv1.out_channels
        self.image_size = int(image_size)
        if self.image_size % self.patch_size:
            raise ValueError(f"MODEL.RS_CLIP.IMAGE_SIZE {image_size} is not a multiple of the patch size {self.patch_size}")
        self.grid_size = self.image_size // self.patch_size
        num_blocks = len(visual.transformer.resblocks)
        self.out_indices = [int(i) for i in out_indices]
        if not self.out_indices or any(i < 0 or i >= num_blocks for i in self.out_indices):
            raise ValueError(f"MODEL.RS_CLIP.GUIDANCE_LAYERS {self.out_indices} out of range for {num_blocks} blocks")
        self._pos_cache: Dict[tuple, torch.Tensor] = {}
        load_and_freeze(self, weights, True, lambda path: self.load_weights(path, round_fp16=round_fp16),
                        f"guidance CLIP {arch}", "MODEL.RS_CLIP.WEIGHTS")

    def train(self, mode: bool = True) -> "GuidanceCLIPEncoder":
        """Frozen: always in eval mode."""
        return super().train(False)

    # ------------------------------------------------------------------ weights
    def _fp16_names(self) -> List[str]:
        """Parameters an fp16 OpenAI-CLIP build stores in half precision (``convert_weights``)."""
        names = []
        for mod_name, module in self.named_modules():
            prefix = mod_name + "." if mod_name else ""
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                names += [prefix + p for p, v in module.named_parameters(recurse=False) if v is not None]
            elif isinstance(module, SplitQKVAttention):
                names += [prefix + p for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias")]
        return names + [n for n in ("visual.proj", "text_projection") if n in dict(self.named_parameters())]

    def load_weights(self, path: str, round_fp16: bool = False) -> None:
        """Load a CLIP state dict strictly (open_clip fused-qkv or split-q/k/v layout).

        Text-tower tensors are skipped unless the text tower is held. Raises an error naming
        the file, the counts and examples of missing, unexpected and mis-shaped keys and both
        image towers' shapes when the file holds another architecture (a CheckpointError).
        """
        clip_file = read_clip_file(path, "MODEL.RS_CLIP.WEIGHTS")
        check_activation(self, self.arch, "MODEL.RS_CLIP.ARCH", path, "MODEL.RS_CLIP.WEIGHTS",
                         openai_archive=clip_file.openai_archive)
        state = split_qkv(clip_file.state)
        skipped = 0
        if not self.text_tower:
            kept = {k: v for k, v in state.items() if k.startswith("visual.")}
            skipped, state = len(state) - len(kept), kept
        rounded = set(self._fp16_names()) if round_fp16 else set()
        state = {k: (v.half() if k in rounded else v) for k, v in state.items()}
        loaded = load_state_strictly(
            self, state, f"{path}: not a {self.arch} CLIP checkpoint (MODEL.RS_CLIP.ARCH). File image tower: "
            f"{describe_vit(state)}; model: {describe_vit(self.state_dict())}", shown=6)
        logger.info("Loaded guidance CLIP %s from %s: all %d tensors matched%s%s", self.arch, path, loaded,
                    f", {skipped} text-tower tensors skipped (MODEL.RS_CLIP.TEXT_TOWER False)" if skipped else "",
                    f", {len(rounded)} rounded to fp16 as the official build" if rounded else "")

    # ------------------------------------------------------------------ forward
    def _pos(self, grid: int) -> torch.Tensor:
        pos = self.visual.positional_embedding
        key = (grid, pos.device, pos.dtype, pos._version, pos.data_ptr())
        if key not in self._pos_cache:
            with torch.no_grad():  # bicubic to the token grid, as the official resized_pos_embed
                self._pos_cache = {key: resize_pos_embed(pos[None], (grid, grid), "size")[0]}
        return self._pos_cache[key]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """CLIP-normalised images (B, 3, H, W), resized bilinearly to ``image_size`` → the raw
        residual stream after each ``out_indices`` block, [(B, width, g, g)]. Runs blocks only up
        to the deepest one requested; no gradients (frozen)."""
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        v = self.visual
        b, g = images.shape[0], self.grid_size
        x = v.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(b, 1, -1), x], dim=1) + self._pos(g).to(x.dtype)
        x = v.ln_pre(x)
        wanted: Dict[int, torch.Tensor] = {}
        for i, block in enumerate(v.transformer.resblocks[: max(self.out_indices) + 1]):
            x = _run_block(block, x)
            if i in self.out_indices:
                wanted[i] = x[:, 1:].transpose(1, 2).reshape(b, -1, g, g)
        return [wanted[i] for i in self.out_indices]
