"""Every exact rewrite listed in docs/performance.md against a plain reference formulation written
here (the official code's way: copies, materialised padding, full-length text, one call per rotation,
explicit QuickGELU, explicit masked softmax, NCHW, out-of-place activations), forward AND gradients.

Shapes: the geometries of every shipped CostAggregationSegmentor config (feature grid, Swin window,
head count, class-attention padding length, decoder guidance sources and attention, rotations,
prompt templates), read from configs/ at collection time, plus the tiny quickstart model; widths
are small so the whole module stays cheap.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.config import get_cfg

from ovrsis.config import add_ovrsis_config
from ovrsis.modeling.aggregation.class_attention import ClassAttention
from ovrsis.modeling.aggregation.spatial import SpatialAggregation, shifted_window_mask
from ovrsis.modeling.cost.rotation import fuse_rotation_costs
from ovrsis.modeling.cost.volume import cosine_cost
from ovrsis.modeling.decoders.guided_upsampling import GuidedUpsamplingDecoder
from ovrsis.modeling.encoders.clip import CLIPEncoder, run_mlp

REPO = Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-8, atol=1e-10)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_float64(one_thread):
    """Small tensors only (see conftest.py), in float64: an exact rewrite then agrees to ~1e-12,
    so a tolerance of 1e-8 separates reordered sums from a wrong formula at every shape."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def _patch(arch: str) -> int:
    if "tiny" in arch:
        return 8
    return int(re.search(r"ViT-[A-Za-z]+-(\d+)", arch).group(1))


def _shipped() -> List[Dict]:
    """One row per shipped cost-aggregation config: the geometry its rewrites run at."""
    rows = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if "sweeps" in path.parts:
            continue
        cfg = get_cfg()
        add_ovrsis_config(cfg)
        cfg.merge_from_file(str(path))
        m = cfg.MODEL
        if m.META_ARCHITECTURE != "CostAggregationSegmentor":
            continue
        rows.append({
            "config": str(path.relative_to(REPO)), "grid": m.CLIP.IMAGE_SIZE // _patch(m.CLIP.ARCH),
            "aggregator": m.AGGREGATOR.NAME, "window": m.AGGREGATOR.WINDOW_SIZE, "heads": m.AGGREGATOR.NUM_HEADS,
            "pad_len": m.AGGREGATOR.PAD_LEN, "attention": m.AGGREGATOR.CLASS_ATTENTION,
            "rotations": tuple(m.COST.ROTATIONS), "fusion": m.COST.ROTATION_FUSION,
            "templates": tuple(m.TEXT.TEMPLATES), "sources": len(m.DECODER.GUIDANCE_SOURCES),
            "guidance_attention": bool(m.DECODER.GUIDANCE_ATTENTION), "stages": len(m.DECODER.DIMS),
        })
    assert rows, "no shipped cost-aggregation config found"
    return rows


SHIPPED = _shipped()


def _distinct(*keys: str) -> List[tuple]:
    return sorted({tuple(row[k] for k in keys) for row in SHIPPED})


def _grads(loss: torch.Tensor, tensors) -> List[torch.Tensor]:
    """Gradients of ``loss``; a tensor the computation does not use (e.g. the padding token when
    the classes fill the padding length) gets zeros."""
    tensors = list(tensors)
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def _assert_same(outputs, reference, inputs) -> None:
    """Equal outputs, and equal gradients of a random projection of them w.r.t. ``inputs``."""
    assert outputs.shape == reference.shape
    torch.testing.assert_close(outputs, reference, **TOL)
    weight = torch.randn_like(reference)
    for got, want in zip(_grads((outputs * weight).sum(), inputs), _grads((reference * weight).sum(), inputs)):
        # parameter gradients sum over every location and class: float rounding grows with their scale
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10 * max(1.0, float(want.abs().max())))


def test_shipped_geometries_cover_every_method_family():
    grids = {row["grid"] for row in SHIPPED}
    assert {8, 24} <= grids  # tiny quickstart model, ViT-B/16 at 384 and ViT-L/14 at 336
    assert {1, 2, 3} <= {row["sources"] for row in SHIPPED}
    assert {(0,), (0, 1, 2, 3)} <= {row["rotations"] for row in SHIPPED}


# ---------------------------------------------------------------- per-image guidance + fused shifted windows
def _reference_swin_block(block, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
    """The official Swin block: guidance copied to every class map and concatenated, explicit
    softmax attention with the region mask broadcast over (maps, windows, heads)."""
    h, w = block.resolution
    win, shift = block.window, block.shift
    n, length, c = x.shape
    y = block.norm1(x)
    full = y if guidance is None else torch.cat([y, guidance.repeat_interleave(n // guidance.shape[0], 0)], -1)

    def windows(z: torch.Tensor) -> torch.Tensor:
        z = z.view(n, h, w, -1)
        if shift:
            z = torch.roll(z, (-shift, -shift), (1, 2))
        z = z.view(n, h // win, win, w // win, win, -1).permute(0, 1, 3, 2, 4, 5)
        return z.reshape(-1, win * win, z.shape[-1])

    attn = block.attn
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = (F.linear(windows(full), attn.q.weight, attn.q.bias), F.linear(windows(full), attn.k.weight, attn.k.bias),
               attn.v(windows(y)))
    q, k, v = (z.view(z.shape[0], -1, heads, d).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if shift:
        mask = shifted_window_mask(h, w, win, shift)
        scores = (scores.view(n, mask.shape[0], heads, win * win, win * win) + mask[None, :, None]).flatten(0, 1)
    out = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(-1, win * win, c))
    out = out.view(n, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + out.reshape(n, length, c)
    return x + block.mlp(block.norm2(x))


def _reference_spatial(module: SpatialAggregation, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
    b, t, c, h, w = x.shape
    tokens = x.permute(0, 1, 3, 4, 2).reshape(b * t, h * w, c)
    g = None if guidance is None else module.guidance_norm(guidance.flatten(2).transpose(1, 2))
    for block in module.blocks:
        tokens = _reference_swin_block(block, tokens, g)
    return tokens.view(b, t, h, w, c).permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("grid, window, heads", _distinct("grid", "window", "heads")
                         + [(12, 6, 3)])  # plus 3 heads and a shift of 3
@pytest.mark.parametrize("with_guidance", [True, False])
def test_spatial_aggregation_equals_copied_guidance_and_explicit_masked_softmax(grid, window, heads, with_guidance):
    torch.manual_seed(grid * 100 + window + heads)
    dim, gdim = 4 * heads, 6
    module = SpatialAggregation(dim, gdim if with_guidance else 0, (grid, grid), heads, window)
    x = torch.randn(2, 3, dim, grid, grid, requires_grad=True)
    guidance = torch.randn(2, gdim, grid, grid, requires_grad=True) if with_guidance else None
    inputs = [x, *([guidance] if with_guidance else []), *module.parameters()]
    _assert_same(module(x, guidance), _reference_spatial(module, x, guidance), inputs)


# ---------------------------------------------------------------- class-attention padding + in-place ReLU
def _reference_class_attention(module: ClassAttention, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
    """Official class attention: pad the class axis to ``pad_len`` with copies of the padding token
    (and its guidance), run plain linear/softmax attention over every token, drop the padding."""
    *lead, t, c = x.shape
    n = math.prod(lead)
    x = x.reshape(n, t, c)
    g = None if guidance is None else guidance.expand(*lead, t, guidance.shape[-1]).reshape(n, t, -1)
    n_pad = max(module.pad_len - t, 0) if module.padding_tokens is not None else 0
    if n_pad:
        x_all = torch.cat([x, module.padding_tokens.expand(n, n_pad, c)], 1)
        if g is not None:
            g = torch.cat([g, module.padding_guidance.expand(n, n_pad, g.shape[-1])], 1)
    else:
        x_all = x
    y = module.norm1(x_all)
    qk_in = y if g is None else torch.cat([y, g], -1)
    heads = module.num_heads
    q, k, v = (z.view(n, z.shape[1], heads, -1) for z in (module.q(qk_in), module.k(qk_in), module.v(y)))
    if module.attention == "linear":
        qf, kf = F.elu(q) + 1, F.elu(k) + 1
        kv = torch.einsum("nshd,nshv->nhdv", kf, v)
        z = 1 / (torch.einsum("nlhd,nhd->nlh", qf, kf.sum(dim=1)) + module.eps)
        out = torch.einsum("nlhd,nhdv,nlh->nlhv", qf, kv, z)
    else:
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        out = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(-1) @ v
        out = out.transpose(1, 2)
    x_all = x_all + out.reshape(n, -1, c)
    mlp = module.mlp
    x_all = x_all + mlp[2](F.relu(mlp[0](module.norm2(x_all))))  # out-of-place ReLU
    return x_all[:, :t].view(*lead, t, c)


def _padding_cases() -> List[tuple]:
    """(heads, pad_len, T): every shipped (heads, pad_len) with one class, a few, exactly pad_len
    (no padding token left) and more than pad_len (no padding); plus no padding at all."""
    cases = [(heads, pad_len, t) for heads, pad_len in _distinct("heads", "pad_len")
             for t in sorted({1, 4, pad_len, pad_len + 3} - {0})]
    return cases + [(2, 0, 4), (2, 5, 4)]


@pytest.mark.parametrize("attention", ["linear", "full"])
@pytest.mark.parametrize("heads, pad_len, num_classes", _padding_cases())
def test_class_attention_padding_equals_materialised_padding(heads, pad_len, num_classes, attention):
    torch.manual_seed(heads + pad_len + num_classes)
    dim, gdim = 4 * heads, 5
    module = ClassAttention(dim, gdim, heads, attention, pad_len)
    with torch.no_grad():  # the official zero-initialised padding would hide a wrong count
        for p in (module.padding_tokens, module.padding_guidance):
            if p is not None:
                p.normal_()
    x = torch.randn(2, 3, num_classes, dim, requires_grad=True)  # (B, locations, T, C)
    guidance = torch.randn(2, 1, num_classes, gdim, requires_grad=True)  # shared by the locations
    inputs = [x, guidance, *module.parameters()]
    _assert_same(module(x, guidance), _reference_class_attention(module, x, guidance), inputs)


# ---------------------------------------------------------------- channels-last decoder + in-place ReLU
def _reference_decoder(decoder: GuidedUpsamplingDecoder, x: torch.Tensor, guidance) -> torch.Tensor:
    """The official decoder in NCHW: guidance copied to every class map, out-of-place ReLUs."""
    b, t = x.shape[:2]
    projected = [[F.relu(F.conv2d(g, proj[0].weight, proj[0].bias, padding=1)) for proj, g in zip(projs, maps)]
                 for projs, maps in zip(decoder.guidance_proj, guidance)]
    y = x.flatten(0, 1).contiguous()
    for i, stage in enumerate(decoder.stages):
        y = F.conv_transpose2d(y, stage.up.weight, stage.up.bias, stride=2)
        maps = [p[i] for p in projected]
        if stage.guidance_attention:
            cost = y.view(b, t, *y.shape[1:]).mean(dim=1)
            channel = F.conv2d(cost.mean(dim=(2, 3), keepdim=True), stage.cconv.weight, stage.cconv.bias)
            spatial = F.conv2d(cost.mean(dim=1, keepdim=True), stage.sconv.weight, stage.sconv.bias)
            maps = [g * channel + g * spatial + g for g in maps]
        y = torch.cat([y, torch.cat(maps, 1).repeat_interleave(t, 0)], 1)
        conv0, gn0, _, conv1, gn1, _ = stage.conv
        y = F.relu(F.group_norm(F.conv2d(y, conv0.weight, padding=1), gn0.num_groups, gn0.weight, gn0.bias, gn0.eps))
        y = F.relu(F.group_norm(F.conv2d(y, conv1.weight, padding=1), gn1.num_groups, gn1.weight, gn1.bias, gn1.eps))
    out = F.conv2d(y, decoder.head.weight, decoder.head.bias, padding=1)
    return out.reshape(b, t, *out.shape[-2:])


@pytest.mark.parametrize("grid, sources, guidance_attention, stages",
                         _distinct("grid", "sources", "guidance_attention", "stages"))
def test_channels_last_decoder_equals_nchw_reference(grid, sources, guidance_attention, stages):
    torch.manual_seed(grid + sources)
    dims, gdims, pdims = [32, 16][:stages], [8, 6][:stages], [16, 8][:stages]
    decoder = GuidedUpsamplingDecoder(in_dim=24, dims=dims, guidance_dims=gdims, guidance_proj_dims=pdims,
                                      num_sources=sources, guidance_attention=guidance_attention)
    with torch.no_grad():  # GroupNorm affine away from its (1, 0) start
        for module in decoder.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.normal_(1.0, 0.2), module.bias.normal_(0.0, 0.2)
    b, t = 2, 2
    x = torch.randn(b, t, 24, grid, grid, requires_grad=True)
    guidance = [[torch.randn(b, g, grid * 2 ** (i + 1), grid * 2 ** (i + 1), requires_grad=True)
                 for i, g in enumerate(gdims)] for _ in range(sources)]
    inputs = [x, *[g for maps in guidance for g in maps], *decoder.parameters()]
    _assert_same(decoder(x, guidance), _reference_decoder(decoder, x, guidance), inputs)


# ---------------------------------------------------------------- CLIP: QuickGELU folding, text length, rotations
@pytest.fixture(scope="module")
def tiny_clip() -> CLIPEncoder:
    torch.manual_seed(0)
    clip = CLIPEncoder("ovrsis-tiny-vit", image_size=64, finetune="full", guidance_layers=(1, 2), cache_text=False)
    with torch.no_grad():  # biases and scales away from their initial zeros/ones
        for p in clip.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return clip.train()


@pytest.mark.parametrize("lead", [(5,), (2, 7), (3, 2, 4)])
def test_quickgelu_folding_equals_explicit_quickgelu(tiny_clip, lead):
    mlp = tiny_clip.transformer.resblocks[0].mlp
    x = torch.randn(*lead, mlp.c_fc.in_features, requires_grad=True)
    hidden = mlp.c_fc(x)
    reference = mlp.c_proj(hidden * torch.sigmoid(1.702 * hidden))
    _assert_same(run_mlp(mlp, x), reference, [x, *mlp.parameters()])


def _reference_text(clip: CLIPEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """All context positions (77) through every block, read at the end-of-text token."""
    x = clip.token_embedding(tokens) + clip.positional_embedding
    for block in clip.transformer.resblocks:
        x = x + block.ls_1(block.attn(block.ln_1(x), clip.causal_mask.to(x.dtype)))
        hidden = block.mlp.c_fc(block.ln_2(x))
        x = x + block.ls_2(block.mlp.c_proj(hidden * torch.sigmoid(1.702 * hidden)))
    x = clip.ln_final(x)
    return x[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ clip.text_projection


@pytest.mark.parametrize("templates", _distinct("templates"))
def test_text_tower_cut_at_the_last_end_token_equals_full_context(tiny_clip, templates):
    (templates,) = templates
    names = ["water", "bare soil", "impervious surface with parking lots and roads", "a"]
    prompts = [template.format(name) for template in templates for name in names]
    tokens = tiny_clip.tokenizer(prompts)
    params = list(tiny_clip.transformer.parameters())  # the text tower's trainable blocks
    _assert_same(tiny_clip._encode_tokens(tokens), _reference_text(tiny_clip, tokens), params)


@pytest.mark.parametrize("rotations, fusion", _distinct("rotations", "fusion") + [((0, 1, 2, 3), "mean"), ((0, 2), "stack")])
def test_batched_rotations_equal_one_call_per_rotation(tiny_clip, rotations, fusion):
    from ovrsis.modeling.cost.rotation import rotate_batch, unrotate

    torch.manual_seed(len(rotations))
    images = torch.randn(2, 3, 64, 64, requires_grad=True)
    text = F.normalize(torch.randn(5, 2, tiny_clip.embed_dim), dim=-1).requires_grad_()
    dense_all, _ = tiny_clip.encode_image(rotate_batch(images, rotations))
    batched = fuse_rotation_costs(cosine_cost(unrotate(F.normalize(dense_all, dim=1), rotations, 2), text), fusion)
    per_call = []
    for k in rotations:  # the official loop: one encoder call per rotation
        dense, _ = tiny_clip.encode_image(torch.rot90(images, k, dims=(2, 3)))
        per_call.append(cosine_cost(torch.rot90(F.normalize(dense, dim=1), -k, dims=(2, 3)), text))
    reference = torch.stack(per_call, 1)
    reference = reference.mean(1) if fusion == "mean" else reference.flatten(1, 2)
    _assert_same(batched, reference, [images, text, *tiny_clip.visual.transformer.parameters()])
