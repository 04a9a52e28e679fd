"""Official checkpoints → ovrsis parameter names.

Each method's official layout is a list of (regex, replacement) rules; a checkpoint is
recognised by a marker key prefix and converted on load. Keys the rules drop on purpose
(buffers ovrsis recomputes, e.g. Swin shift masks) are listed so the load report shows
only real surprises.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

_P = r"sem_seg_head\.predictor\."
_A = _P + r"transformer\."
_SPATIAL = r"layers\.(\d+)\.(?:swin_block|sptial_agg)\."  # group 1: the layer index
_CLASS = r"layers\.(\d+)\.(?:attention|class_agg)\."


@dataclass(frozen=True)
class OfficialLayout:
    name: str
    marker: str  # a key prefix only this layout has
    rules: Sequence[Tuple[str, str]]
    dropped: Sequence[str] = field(default_factory=tuple)  # regexes of keys ignored on purpose

    def convert(self, state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """Rename keys; returns (converted, keys no rule matched)."""
        out, unmatched = {}, []
        for key, value in state.items():
            if any(re.fullmatch(d, key) for d in self.dropped):
                continue
            for pattern, repl in self.rules:
                new, n = re.subn(f"^{pattern}$", repl, key)
                if n:
                    out[new] = value
                    break
            else:
                unmatched.append(key)
        return out, unmatched


def _stage(name: str, part: str, target: str):
    """``<name>N.<part>.*`` (1-based stage N) → ``decoder.stages.(N-1).<target>.*``."""
    return (_A + name + r"(\d)\." + part + r"\.(.*)",
            lambda m: f"decoder.stages.{int(m.group(1)) - 1}.{target}.{m.group(2)}")


CATSEG = OfficialLayout(
    name="CAT-Seg layout (cvlab-kaist/CAT-Seg; also OVRS, caoql98/OVRS; Pi-Seg, LiBingyu01/Pi-Seg)",
    marker="sem_seg_head.predictor.",
    rules=(
        (_P + r"clip_model\.(.*)", r"clip.\1"),
        (r"upsample1\.(weight|bias)", r"tap_pyramid.ups.0.\1"),
        (r"upsample2\.(weight|bias)", r"tap_pyramid.ups.1.\1"),
        (_A + r"conv1\.(.*)", r"aggregator.cost_embed.\1"),
        (_A + r"guidance_projection\.(.*)", r"aggregator.appearance_proj.\1"),
        (_A + r"text_guidance_projection\.(.*)", r"aggregator.text_proj.\1"),
        # the layer parts are swin_block / attention in CAT-Seg, sptial_agg / class_agg in Pi-Seg
        # (Decoder/Cost_Aggregation.py): one rule each for both names
        (_A + _SPATIAL + r"block_1\.(.*)", r"aggregator.layers.\1.spatial.blocks.0.\2"),
        (_A + _SPATIAL + r"block_2\.(.*)", r"aggregator.layers.\1.spatial.blocks.1.\2"),
        (_A + _SPATIAL + r"guidance_norm\.(.*)", r"aggregator.layers.\1.spatial.guidance_norm.\2"),
        (_A + _CLASS + r"attention\.(q|k|v)\.(.*)", r"aggregator.layers.\1.classes.attn.\2.\3"),
        (_A + _CLASS + r"MLP\.(.*)", r"aggregator.layers.\1.classes.attn.mlp.\2"),
        (_A + _CLASS + r"(norm1|norm2|padding_tokens|padding_guidance)(.*)", r"aggregator.layers.\1.classes.attn.\2\3"),
        (_A + r"decoder_guidance_projection\.(.*)", r"decoder.guidance_proj.0.\1"),
        _stage("decoder", "up", "up"),
        _stage("decoder", r"conv\.double_conv", "conv"),
        _stage("decoder", "cconv", "cconv"),  # OVRS's attention-aware upsampling
        _stage("decoder", "sconv", "sconv"),
        (_A + r"head\.(.*)", r"decoder.head.\1"),
        # Pi-Seg's perturbation modules (cat_seg/pini_vpn.py): Image-SPM, Text-SPM
        (_P + r"image_vpn\.cross_attn\.fc_(q|k|v)\.(weight|bias)", r"perturbation.image.attn.\1.\2"),
        (_P + r"image_vpn\.fc_mean\.(weight|bias)", r"perturbation.image.mu.\1"),
        (_P + r"image_vpn\.fc_variance\.(weight|bias)", r"perturbation.image.sigma.\1"),
        (_P + r"text_vpn\.mu", r"perturbation.text.mu"),
        (_P + r"text_vpn\.var", r"perturbation.text.sigma"),
    ),
    dropped=(_A + _SPATIAL + r"block_\d\.attn_mask",),
)

GSNET = OfficialLayout(
    name="GSNet (yecy749/CAT-Seg, model Ver09c)",
    marker="dino_model.",
    rules=(
        (r"dino_model\.(.*)", r"specialists.dino.encoder.\1"),
        (r"dino_down_sample\.(weight|bias)", r"specialists.dino.cost.proj.\1"),
        (r"dino_decod_proj1\.(weight|bias)", r"specialists.dino.taps.ups.0.\1"),
        (r"dino_decod_proj2\.(weight|bias)", r"specialists.dino.taps.ups.1.\1"),
        (_A + r"conv1\.(weight|bias)", r"aggregator.cost_embed.embeds.0.\1"),  # QGFF: CLIP cost embedding
        (_A + r"conv2\.(weight|bias)", r"aggregator.cost_embed.embeds.1.\1"),  # DINO cost embedding
        (_A + r"fusion_corr\.(weight|bias)", r"aggregator.cost_embed.fuse.\1"),
        (_A + r"CLIP_decoder_guidance_projection\.(.*)", r"decoder.guidance_proj.0.\1"),
        (_A + r"DINO_decoder_guidance_projection\.(.*)", r"decoder.guidance_proj.1.\1"),
        _stage("Fusiondecoder", "up", "up"),
        _stage("Fusiondecoder", r"conv\.double_conv", "conv"),
        *CATSEG.rules,  # CLIP, upsample1/2, guidance projections, aggregation layers, head
    ),
    dropped=CATSEG.dropped,
)


class _RSKTLayout(OfficialLayout):
    """RSKT-Seg's layout. The official ``conv1`` is QGFF's CLIP embedding under ``FUSION_TYPE``
    simple_separate (the checkpoint then also has ``conv2``) and the whole cost embedding under
    simple_concatenation / simple_mean: read off the checkpoint's keys."""

    def convert(self, state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        out, unmatched = super().convert(state)
        if not any(k.startswith("sem_seg_head.predictor.transformer.conv2.") for k in state):
            old, new = "aggregator.cost_embed.embeds.0.", "aggregator.cost_embed."
            out = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in out.items()}
        return out, unmatched


def _efficient(block: str, target: str):
    """Official efficient-aggregator block ``layers.N.<block>.sa.*`` → ``aggregator.layers.N.<target>.*``
    (``attention.`` → ``attn.``, ``mlp.dwconv.dwconv.`` → ``mlp.dwconv.``)."""
    def repl(m):
        rest = m.group(2).replace("attention.", "attn.", 1).replace("mlp.dwconv.dwconv.", "mlp.dwconv.")
        return f"aggregator.layers.{m.group(1)}.{target}.{rest}"
    return (_A + r"layers\.(\d+)\." + block + r"\.sa\.(.*)", repl)


RSKTSEG = _RSKTLayout(
    name="RSKT-Seg (LiBingyu01/RSKT-Seg)",
    marker="upsample1_remote.",
    rules=(
        (_P + r"clip_model_remote\.(.*)", r"specialists.rs_clip.encoder.\1"),
        (r"upsample1_remote\.(weight|bias)", r"specialists.rs_clip.taps.ups.0.\1"),
        (r"upsample2_remote\.(weight|bias)", r"specialists.rs_clip.taps.ups.1.\1"),
        (_A + r"CLIP_decoder_guidance_projection_remote\.(.*)", r"decoder.guidance_proj.1.\1"),
        (_A + r"DINO_decoder_guidance_projection\.(.*)", r"decoder.guidance_proj.2.\1"),
        _efficient("spatial_fusion", "spatial"),
        _efficient("class_fusion", "classes"),
        *GSNET.rules,  # DINO stream, conv1/conv2/fusion_corr, CLIP decoder projections, Fusiondecoder1/2, CAT-Seg rules
    ),
    dropped=GSNET.dropped,
)

LAYOUTS: Tuple[OfficialLayout, ...] = (RSKTSEG, GSNET, CATSEG)  # most specific marker first


def register_layout(layout: OfficialLayout) -> OfficialLayout:
    """Add a project's official layout (``docs/extending.md``): tried before the built-in ones, so its
    ``marker`` must be a key prefix only its checkpoints have. Returns it (usable at module level)."""
    global LAYOUTS
    if layout not in LAYOUTS:
        LAYOUTS = (layout, *LAYOUTS)
    return layout


def detect_layout(state: Dict[str, torch.Tensor]) -> Optional[OfficialLayout]:
    """The official layout a state dict is saved in, or None for ovrsis' own."""
    for layout in LAYOUTS:
        if any(k.startswith(layout.marker) for k in state):
            return layout
    return None
