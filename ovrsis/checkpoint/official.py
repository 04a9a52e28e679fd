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


CATSEG = OfficialLayout(
    name="CAT-Seg layout (cvlab-kaist/CAT-Seg; also OVRS, caoql98/OVRS)",
    marker="sem_seg_head.predictor.",
    rules=(
        (_P + r"clip_model\.(.*)", r"clip.\1"),
        (r"upsample1\.(weight|bias)", r"tap_pyramid.ups.0.\1"),
        (r"upsample2\.(weight|bias)", r"tap_pyramid.ups.1.\1"),
        (_A + r"conv1\.(.*)", r"aggregator.cost_embed.\1"),
        (_A + r"guidance_projection\.(.*)", r"aggregator.appearance_proj.\1"),
        (_A + r"text_guidance_projection\.(.*)", r"aggregator.text_proj.\1"),
        (_A + r"layers\.(\d+)\.swin_block\.block_1\.(.*)", r"aggregator.layers.\1.spatial.blocks.0.\2"),
        (_A + r"layers\.(\d+)\.swin_block\.block_2\.(.*)", r"aggregator.layers.\1.spatial.blocks.1.\2"),
        (_A + r"layers\.(\d+)\.swin_block\.guidance_norm\.(.*)", r"aggregator.layers.\1.spatial.guidance_norm.\2"),
        (_A + r"layers\.(\d+)\.attention\.attention\.(q|k|v)\.(.*)", r"aggregator.layers.\1.classes.attn.\2.\3"),
        (_A + r"layers\.(\d+)\.attention\.MLP\.(.*)", r"aggregator.layers.\1.classes.attn.mlp.\2"),
        (_A + r"layers\.(\d+)\.attention\.(norm1|norm2|padding_tokens|padding_guidance)(.*)",
         r"aggregator.layers.\1.classes.attn.\2\3"),
        (_A + r"decoder_guidance_projection\.(.*)", r"decoder.guidance_proj.0.\1"),
        (_A + r"decoder(\d)\.up\.(.*)", lambda m: f"decoder.stages.{int(m.group(1)) - 1}.up.{m.group(2)}"),
        (_A + r"decoder(\d)\.conv\.double_conv\.(.*)", lambda m: f"decoder.stages.{int(m.group(1)) - 1}.conv.{m.group(2)}"),
        (_A + r"decoder(\d)\.(cconv|sconv)\.(.*)", lambda m: f"decoder.stages.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"),
        (_A + r"head\.(.*)", r"decoder.head.\1"),
    ),
    dropped=(_A + r"layers\.\d+\.swin_block\.block_\d\.attn_mask",),
)

def _stage(name: str, part: str, target: str):
    """``<name>N.<part>.*`` (1-based stage N) → ``decoder.stages.(N-1).<target>.*``."""
    return (_A + name + r"(\d)\." + part + r"\.(.*)",
            lambda m: f"decoder.stages.{int(m.group(1)) - 1}.{target}.{m.group(2)}")


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

LAYOUTS: Tuple[OfficialLayout, ...] = (GSNET, CATSEG)  # most specific marker first


def detect_layout(state: Dict[str, torch.Tensor]) -> Optional[OfficialLayout]:
    """The official layout a state dict is saved in, or None for ovrsis' own."""
    for layout in LAYOUTS:
        if any(k.startswith(layout.marker) for k in state):
            return layout
    return None
