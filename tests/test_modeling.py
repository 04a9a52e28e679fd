"""ovrsis.modeling and ovrsis.checkpoint: parameter counts, shapes, exact rewrites, text cache,
cost volume, loss, official checkpoint conversion.

Tiny models use the bundled ``ovrsis-tiny-vit`` CLIP (64-d, patch 8, 4 blocks) at 64 px (8×8 grid)
so every forward pass takes milliseconds on a CPU. The full-size models are only built (never run)
for the parameter counts.
"""
from __future__ import annotations

import logging
import math
import re

import pytest
import torch
import torch.nn.functional as F

import ovrsis  # noqa: F401  (compat shims before detectron2)
import ovrsis.modeling  # noqa: F401  (registers the meta-architecture)
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from ovrsis.checkpoint import OVRSISCheckpointer
from ovrsis.config import add_ovrsis_config
from ovrsis.modeling.aggregation.class_attention import ClassAttention
from ovrsis.modeling.aggregation.spatial import (
    GuidedSwinBlock,
    shifted_window_mask,
    window_merge,
    window_partition,
)
from ovrsis.modeling.cost.volume import cosine_cost, scatter_selected, select_top_classes
from ovrsis.modeling.encoders.clip import expand_prompts
from ovrsis.modeling.losses import per_class_bce

CLASSES = ["water", "road", "building"]

TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.CLIP.ARCH", "ovrsis-tiny-vit",
    "MODEL.CLIP.IMAGE_SIZE", 64,
    "MODEL.CLIP.GUIDANCE_LAYERS", [1, 2],
    "MODEL.AGGREGATOR.WINDOW_SIZE", 4,
    "MODEL.AGGREGATOR.HIDDEN_DIM", 32,
    "MODEL.AGGREGATOR.NUM_HEADS", 2,
    "MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_PROJ_DIM", 32,
    "MODEL.AGGREGATOR.TEXT_GUIDANCE_PROJ_DIM", 32,
    "MODEL.DECODER.DIMS", [32, 16],
    "MODEL.DECODER.GUIDANCE_DIMS", [32, 16],
    "MODEL.DECODER.GUIDANCE_PROJ_DIMS", [16, 8],
]


def make_cfg(*extra):
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *extra])
    return cfg


def tiny_model(*extra, seed: int = 0, classes=CLASSES, train: bool = False):
    """A randomly initialised tiny model (deterministic for a given seed) with a vocabulary."""
    torch.manual_seed(seed)
    model = build_model(make_cfg(*TINY, *extra))
    model.set_vocabulary(classes)
    model.set_vocabulary(classes, train=True)
    model.train(train)
    return model


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


SLIDE = ["TEST.SLIDE.WINDOW", 64, "TEST.SLIDE.OVERLAP", 0.5, "TEST.SLIDE.CANVAS", [96, 96]]  # stride 32: 2×2 tiles


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


@pytest.fixture(scope="module")
def shared_model():
    """One tiny eval model for the tests that only run inference (built in slide mode from the
    config; tests switch ``inference_mode`` / ``stretch_padding`` and restore them)."""
    model = tiny_model("TEST.INFERENCE_MODE", "slide", *SLIDE)
    assert model.inference_mode == "slide" and model.slide_canvas == (96, 96)
    return model


@pytest.fixture(params=["whole", "slide"])
def eval_model(shared_model, request):
    shared_model.eval()
    shared_model.inference_mode = request.param
    yield shared_model
    shared_model.inference_mode = "slide"
    shared_model.stretch_padding = False


@pytest.fixture
def skip_random_init(monkeypatch):
    """Parameter counts do not need random values: skip the (seconds-long) initialisation."""
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "normal_", lambda self, *a, **k: self)


def count(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def clip_trainable(model):
    return {n for n, p in model.clip.named_parameters() if p.requires_grad}


# ============================================================================ 1. parameter counts
def test_param_counts_vit_b_all_finetune_modes(skip_random_init):
    model = build_model(make_cfg())
    assert count(model) == 154_289_378
    assert count(model, True) == 25_115_873
    names = clip_trainable(model)
    assert names and all(re.search(r"\.attn\.(q|v)_proj_weight$", n) for n in names)
    # 12 visual + 12 text blocks, q and v each
    assert len(names) == 2 * (12 + 12)
    non_clip = count(model, True) - sum(p.numel() for n, p in model.clip.named_parameters() if p.requires_grad)

    full = build_model(make_cfg("MODEL.CLIP.FINETUNE", "full"))
    assert count(full) == 154_289_378
    assert count(full, True) == 127_551_713
    assert all(n.startswith(("visual.transformer.", "transformer.")) for n in clip_trainable(full))

    frozen = build_model(make_cfg("MODEL.CLIP.FINETUNE", "none"))
    assert count(frozen) == 154_289_378
    assert clip_trainable(frozen) == set()
    assert count(frozen, True) == non_clip  # everything outside CLIP stays trainable


def test_param_counts_vit_l(skip_random_init):
    model = build_model(make_cfg("MODEL.CLIP.ARCH", "ViT-L-14-336-quickgelu", "MODEL.CLIP.IMAGE_SIZE", 336,
                                 "MODEL.CLIP.GUIDANCE_LAYERS", [7, 15]))
    assert count(model) == 433_726_946
    assert count(model, True) == 70_270_177
    names = clip_trainable(model)
    assert all(re.search(r"\.attn\.(q|v)_proj_weight$", n) for n in names)
    assert len(names) == 2 * (24 + 12)


def test_invalid_finetune_mode_raises():
    with pytest.raises(ValueError, match="FINETUNE"):
        build_model(make_cfg(*TINY, "MODEL.CLIP.FINETUNE", "prompt"))


# ============================================================================ 2. shapes
def test_train_forward_returns_scalar_loss_and_backpropagates():
    model = tiny_model(train=True)
    g = torch.Generator().manual_seed(1)
    batch = []
    for seed in (0, 1):
        target = torch.randint(0, len(CLASSES), (48, 48), generator=g)
        target[:4] = 255
        batch.append({"image": image(48, 48, seed), "sem_seg": target})
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg"}
    loss = losses["loss_sem_seg"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    q = model.clip.visual.transformer.resblocks[0].attn.q_proj_weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert model.decoder.head.weight.grad is not None


def test_eval_output_size_and_range(eval_model):
    model = eval_model
    # detectron2 convention: the mapper may resize; "height"/"width" are the original size
    out = model([{"image": image(40, 56), "height": 80, "width": 112}])
    assert len(out) == 1
    seg = out[0]["sem_seg"]
    assert seg.shape == (len(CLASSES), 80, 112)
    assert torch.isfinite(seg).all()
    assert seg.min() >= 0 and seg.max() <= 1


def test_eval_output_defaults_to_image_size(eval_model):
    """Without "height"/"width" the prediction is at the input image's own size."""
    seg = eval_model([{"image": image(50, 70)}])[0]["sem_seg"]
    assert seg.shape == (len(CLASSES), 50, 70)


def test_eval_batch_of_two_sizes(eval_model):
    model = eval_model
    out = model([{"image": image(50, 70, 0), "height": 50, "width": 70},
                 {"image": image(64, 40, 1), "height": 64, "width": 40}])
    assert [o["sem_seg"].shape for o in out] == [(3, 50, 70), (3, 64, 40)]
    for o in out:
        assert torch.isfinite(o["sem_seg"]).all()
        assert 0 <= o["sem_seg"].min() and o["sem_seg"].max() <= 1
    # each image is processed on its own: batching does not change a result
    alone = model([{"image": image(64, 40, 1), "height": 64, "width": 40}])[0]["sem_seg"]
    torch.testing.assert_close(alone, out[1]["sem_seg"], rtol=0, atol=1e-6)


def test_slide_window_must_cover_canvas():
    """Window 64 with overlap 0.333 (stride 42) cannot tile a 96 canvas: the fold would leave
    uncovered pixels (0/0 = NaN). The configuration is rejected instead."""
    with pytest.raises(ValueError, match="SLIDE"):
        tiny_model("TEST.INFERENCE_MODE", "slide", "TEST.SLIDE.WINDOW", 64, "TEST.SLIDE.CANVAS", [96, 96])


def test_eval_empty_vocabulary_raises(shared_model):
    model = shared_model
    with pytest.raises(ValueError, match="empty vocabulary"):
        model.set_vocabulary([])
    with pytest.raises(ValueError, match="empty vocabulary"):
        model.set_vocabulary([], train=True)


# ============================================================================ 3. determinism
def test_eval_is_deterministic(eval_model):
    model = eval_model
    batch = [{"image": image(50, 70), "height": 50, "width": 70}]
    a = model(batch)[0]["sem_seg"]
    b = model(batch)[0]["sem_seg"]
    assert torch.equal(a, b)


# ============================================================================ 4. text
def test_encode_text_shape_and_normalised():
    model = tiny_model("MODEL.TEXT.TEMPLATES", ["a {}", "a photo of a {}", "an aerial image of {}"])
    emb = model.clip.encode_text(CLASSES)
    assert emb.shape == (3, 3, model.clip.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3, 3))


def test_multiple_templates_end_to_end():
    templates = ["a {}", "a photo of a {}", "an aerial image of {}"]
    model = tiny_model("MODEL.TEXT.TEMPLATES", templates)
    assert model.aggregator.cost_embed.in_channels == len(templates)
    seg = model([{"image": image(50, 70), "height": 50, "width": 70}])[0]["sem_seg"]
    assert seg.shape == (3, 50, 70) and torch.isfinite(seg).all()
    model.train()
    loss = model([{"image": image(64, 64), "sem_seg": torch.zeros(64, 64, dtype=torch.long)}])["loss_sem_seg"]
    loss.backward()
    assert model.aggregator.cost_embed.weight.grad.shape[1] == len(templates)


def test_synonyms_first_and_mean():
    model = tiny_model()
    clip = model.clip
    first_only = clip.encode_text(["water"])
    assert torch.equal(clip.encode_text(["water, lake"]), first_only)

    clip.synonyms = "mean"  # part of the cache key, so no stale "first" result can come back
    mean = clip.encode_text(["water, lake"])
    torch.testing.assert_close(mean.norm(dim=-1), torch.ones(1, 1))
    assert not torch.allclose(mean, first_only)
    lake = clip.encode_text(["lake"])
    expected = F.normalize(F.normalize(first_only, dim=-1) + F.normalize(lake, dim=-1), dim=-1)
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-6)


def test_expand_prompts_slots():
    texts, slots = expand_prompts(["a, b", "c"], ["x {}", "y {}"], "mean")
    assert texts == ["x a", "x b", "y a", "y b", "x c", "y c"]
    assert slots.tolist() == [0, 0, 1, 1, 2, 3]
    texts, slots = expand_prompts(["a, b", "c"], ["x {}", "y {}"], "first")
    assert texts == ["x a", "y a", "x c", "y c"] and slots.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        expand_prompts(["a"], ["{}"], "max")


def test_text_cache_hit_and_vocabulary_change():
    model = tiny_model()
    clip = model.clip
    clip.encode_text(CLASSES)
    cached = clip.encode_text(CLASSES)
    assert clip.encode_text(CLASSES) is cached  # same object: served from the cache
    other = clip.encode_text(["forest", "farmland"])
    assert other.shape[0] == 2
    assert not torch.allclose(other, cached[:2])
    bigger = clip.encode_text([*CLASSES, "forest"])
    assert bigger.shape[0] == 4
    torch.testing.assert_close(bigger[:3], cached, rtol=1e-5, atol=1e-6)


def _modify_in_place(p):
    # not a constant: ln_final scaled uniformly would leave the normalised embedding unchanged
    with torch.no_grad():
        p.add_(torch.rand(p.shape, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("which", ["block", "token_embedding", "text_projection", "ln_final",
                                   "positional_embedding"])
def test_text_cache_invalidated_by_in_place_weight_change(which):
    model = tiny_model()
    clip = model.clip
    clip.encode_text(CLASSES)
    before = clip.encode_text(CLASSES)
    param = {
        "block": lambda: clip.transformer.resblocks[0].mlp.c_fc.weight,
        "token_embedding": lambda: clip.token_embedding.weight,
        "text_projection": lambda: clip.text_projection,
        "ln_final": lambda: clip.ln_final.weight,
        "positional_embedding": lambda: clip.positional_embedding,
    }[which]()
    _modify_in_place(param)
    after = clip.encode_text(CLASSES)
    assert after is not before
    assert not torch.allclose(after, before)
    # and the result is what an uncached encoder gives
    clip.cache_text = False
    torch.testing.assert_close(clip.encode_text(CLASSES), after, rtol=0, atol=0)


def test_text_cache_follows_dtype_conversion():
    model = tiny_model()
    model.clip.encode_text(CLASSES)
    model.double()
    assert model.clip.encode_text(CLASSES).dtype == torch.float64


def test_text_embeddings_carry_gradients_when_finetuning():
    model = tiny_model(train=True)  # FINETUNE attention
    emb = model.clip.encode_text(CLASSES)
    assert emb.requires_grad
    emb.sum().backward()
    assert model.clip.transformer.resblocks[0].attn.v_proj_weight.grad is not None
    # frozen tower: cached, no graph
    frozen = tiny_model("MODEL.CLIP.FINETUNE", "none", train=True)
    assert not frozen.clip.encode_text(CLASSES).requires_grad


def test_text_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="empty vocabulary"):
        model.clip.encode_text([])
    with pytest.raises(ValueError, match="placeholder"):
        build_model(make_cfg(*TINY, "MODEL.TEXT.TEMPLATES", ["a photo of a thing"]))
    with pytest.raises(ValueError):
        build_model(make_cfg(*TINY, "MODEL.TEXT.TEMPLATES", []))


# ============================================================================ 5. exact rewrites
def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _reference_class_attention(attn: ClassAttention, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """The official ClassTransformerLayer body: materialise (pad_len − T) padding tokens and
    padding guidance, attend over all of them, keep the first T outputs."""
    n, t, c = x.shape
    n_pad = max(attn.pad_len - t, 0)
    xs = torch.cat([x, attn.padding_tokens.expand(n, n_pad, c)], 1)
    gs = torch.cat([guidance, attn.padding_guidance.expand(n, n_pad, -1)], 1)
    length, heads = xs.shape[1], attn.num_heads
    y = attn.norm1(xs)
    q = attn.q(torch.cat([y, gs], -1)).view(n, length, heads, -1)
    k = attn.k(torch.cat([y, gs], -1)).view(n, length, heads, -1)
    v = attn.v(y).view(n, length, heads, -1)
    if attn.attention == "linear":
        qf, kf = F.elu(q) + 1, F.elu(k) + 1
        s = v.shape[1]
        v = v / s
        kv = torch.einsum("nshd,nshv->nhdv", kf, v)
        z = 1 / (torch.einsum("nlhd,nhd->nlh", qf, kf.sum(dim=1)) + 1e-6)
        out = torch.einsum("nlhd,nhdv,nlh->nlhv", qf, kv, z) * s
    else:
        qk = torch.einsum("nlhd,nshd->nlsh", q, k)
        a = torch.softmax(qk / q.shape[-1] ** 0.5, dim=2)
        out = torch.einsum("nlsh,nshd->nlhd", a, v)
    xs = xs + out.reshape(n, length, c)
    xs = xs + attn.mlp(attn.norm2(xs))
    return xs[:, :t]


@pytest.mark.parametrize("attention", ["linear", "full"])
@pytest.mark.parametrize("num_classes,pad_len", [(5, 256), (3, 17), (17, 17), (20, 17)])
def test_class_attention_padding_matches_materialised_reference(attention, num_classes, pad_len):
    attn = ClassAttention(dim=16, guidance_dim=8, num_heads=2, attention=attention, pad_len=pad_len)
    _randomise(attn)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, num_classes, 16, generator=g)
    guidance = torch.randn(6, num_classes, 8, generator=g)
    with torch.no_grad():
        # float32: equal up to rounding (outputs are O(10) here)
        torch.testing.assert_close(attn(x, guidance), _reference_class_attention(attn, x, guidance),
                                   rtol=1e-5, atol=1e-4)
        # float64: the rewrite is exact algebra, so only rounding noise remains
        attn.double()
        x, guidance = x.double(), guidance.double()
        torch.testing.assert_close(attn(x, guidance), _reference_class_attention(attn, x, guidance),
                                   rtol=0, atol=1e-10)


def test_shifted_window_mask_matches_region_labels():
    h = w = 8
    window, shift = 4, 2
    mask = shifted_window_mask(h, w, window, shift)
    # brute force: region label of each pixel of the (already rolled) grid
    def band(i, n):
        return 0 if i < n - window else (1 if i < n - shift else 2)

    labels = torch.tensor([[3 * band(i, h) + band(j, w) for j in range(w)] for i in range(h)])
    wins = []
    for wi in range(h // window):
        for wj in range(w // window):
            wins.append(labels[wi * window:(wi + 1) * window, wj * window:(wj + 1) * window].reshape(-1))
    expected = torch.stack([torch.where(l[:, None] == l[None, :], 0.0, -100.0) for l in wins])
    assert mask.shape == (4, 16, 16)
    assert torch.equal(mask, expected)


def test_window_partition_roundtrip():
    x = torch.randn(2, 8, 12, 5)
    parts = window_partition(x, 4)
    assert parts.shape == (2 * 2 * 3, 16, 5)
    assert torch.equal(parts[1].view(4, 4, 5), x[0, 0:4, 4:8])
    assert torch.equal(window_merge(parts, 4, 8, 12), x)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_matches_naive_window_attention(shift):
    h = w = 8
    window, dim, gdim, heads = 4, 16, 8, 2
    block = GuidedSwinBlock(dim, gdim, (h, w), heads, window, shift)
    _randomise(block)
    g = torch.Generator().manual_seed(2)
    n = 3
    x = torch.randn(n, h * w, dim, generator=g)
    guidance = torch.randn(n, h * w, gdim, generator=g)
    with torch.no_grad():
        got = block(x, guidance)

        # naive: roll, then per window and per head an explicit masked softmax attention
        y = torch.cat([block.norm1(x), guidance], -1).view(n, h, w, -1)
        y = torch.roll(y, (-shift, -shift), (1, 2))
        labels = torch.zeros(h, w, dtype=torch.long)
        if shift:
            for i in range(h):
                for j in range(w):
                    bi = 0 if i < h - window else (1 if i < h - shift else 2)
                    bj = 0 if j < w - window else (1 if j < w - shift else 2)
                    labels[i, j] = 3 * bi + bj
        out = torch.zeros(n, h, w, dim)
        a = block.attn
        hd = dim // heads
        for b in range(n):
            for wi in range(0, h, window):
                for wj in range(0, w, window):
                    tok = y[b, wi:wi + window, wj:wj + window].reshape(-1, y.shape[-1])
                    lab = labels[wi:wi + window, wj:wj + window].reshape(-1)
                    q, k, v = a.q(tok), a.k(tok), a.v(tok[:, :dim])
                    heads_out = []
                    for hh in range(heads):
                        sl = slice(hh * hd, (hh + 1) * hd)
                        logits = (q[:, sl] * hd ** -0.5) @ k[:, sl].T
                        logits = logits + torch.where(lab[:, None] == lab[None, :], 0.0, -100.0)
                        heads_out.append(torch.softmax(logits, -1) @ v[:, sl])
                    o = a.proj(torch.cat(heads_out, -1))
                    out[b, wi:wi + window, wj:wj + window] = o.view(window, window, dim)
        out = torch.roll(out, (shift, shift), (1, 2)).reshape(n, h * w, dim)
        want = x + out
        want = want + block.mlp(block.norm2(want))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ============================================================================ 6. cost volume
def test_cosine_cost_is_normalised_dot_product():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 8, 3, 4, generator=g) * 3
    text = torch.randn(5, 2, 8, generator=g) * 2
    cost = cosine_cost(img, text)
    assert cost.shape == (2, 2, 5, 3, 4)
    for b, p, t, i, j in [(0, 0, 0, 0, 0), (1, 1, 4, 2, 3), (0, 1, 2, 1, 2), (1, 0, 3, 2, 0)]:
        u, v = img[b, :, i, j], text[t, p]
        assert cost[b, p, t, i, j].item() == pytest.approx((u @ v / (u.norm() * v.norm())).item(), abs=1e-6)
    want = torch.einsum("bchw,tpc->bpthw", img / img.norm(dim=1, keepdim=True), text / text.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(cost, want)
    # per-image text (B, T, P, C)
    per_image = torch.stack([text, text.flip(0)])
    cost2 = cosine_cost(img, per_image)
    torch.testing.assert_close(cost2[0], cost[0])
    torch.testing.assert_close(cost2[1], cost[1].flip(1))
    assert cost.abs().max() <= 1 + 1e-6


def test_select_top_classes_and_scatter():
    b, p, t, h, w, c = 2, 2, 6, 3, 3, 4
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(b, p, t, h, w, generator=g) * 0.5
    # give known classes the highest peaks (max over prompts and pixels)
    cost[0, 1, 4, 2, 2] = 0.9
    cost[0, 0, 1, 0, 0] = 0.8
    cost[0, 1, 5, 1, 0] = 0.7
    cost[1, 0, 0, 1, 1] = 0.95
    cost[1, 1, 3, 0, 2] = 0.85
    cost[1, 0, 2, 2, 1] = 0.75
    text = torch.randn(t, p, c, generator=g)
    sel_cost, sel_text, idx = select_top_classes(cost, text, 3)
    assert idx.shape == (2, 3)
    assert set(idx[0].tolist()) == {1, 4, 5} and set(idx[1].tolist()) == {0, 2, 3}
    assert sel_cost.shape == (b, p, 3, h, w) and sel_text.shape == (b, 3, p, c)
    for bi in range(b):
        for k, cls in enumerate(idx[bi].tolist()):
            assert torch.equal(sel_cost[bi, :, k], cost[bi, :, cls])
            assert torch.equal(sel_text[bi, k], text[cls])

    logits = torch.randn(b, 3, 5, 5, generator=g)
    full = scatter_selected(logits, idx, t)
    assert full.shape == (b, t, 5, 5)
    for bi in range(b):
        for k, cls in enumerate(idx[bi].tolist()):
            assert torch.equal(full[bi, cls], logits[bi, k])
        rest = sorted(set(range(t)) - set(idx[bi].tolist()))
        assert (full[bi, rest] == -100).all()


def test_select_top_classes_noop_when_few_classes():
    cost = torch.rand(2, 1, 4, 3, 3)
    text = torch.randn(4, 1, 8)
    sel_cost, sel_text, idx = select_top_classes(cost, text, 4)
    assert idx is None and sel_cost is cost and sel_text.shape == (2, 4, 1, 8)
    logits = torch.randn(2, 4, 5, 5)
    assert scatter_selected(logits, None, 4) is logits


def test_max_classes_end_to_end():
    classes = ["water", "road", "building", "forest", "farmland"]
    model = tiny_model("MODEL.COST.MAX_CLASSES", 3, classes=classes)
    img = image(64, 64)  # the CLIP size: no resize, so the cost below is the model's own
    seg = model([{"image": img}])[0]["sem_seg"]
    assert seg.shape == (5, 64, 64)
    dead = [i for i in range(5) if seg[i].max() < 1e-30]  # sigmoid(−100) ≈ 3.7e−44
    assert len(dead) == 2
    assert all(seg[i].max() > 1e-6 for i in range(5) if i not in dead)
    # the dropped classes are those with the lowest peak cosine similarity
    with torch.no_grad():
        dense, _ = model.clip.encode_image(model._normalize(img).unsqueeze(0))
        cost = cosine_cost(dense, model.clip.encode_text(classes))
    peak = cost[0].amax(dim=(0, 2, 3))
    assert set(dead) == set(peak.argsort()[:2].tolist())


# ============================================================================ 7. loss
def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_per_class_bce_hand_computed():
    # B=1, T=2, H=1, W=2; pixel 0 is class 0, pixel 1 is ignored
    a0, a1, b0, b1 = 0.3, -1.2, 2.0, 0.5  # class 0 at pixels 0/1, class 1 at pixels 0/1
    logits = torch.tensor([[[[a0, a1]], [[b0, b1]]]], dtype=torch.float64)
    targets = torch.tensor([[[0, 255]]])
    # BCE(x, 1) = softplus(−x), BCE(x, 0) = softplus(x)
    official = (_softplus(-a0) + _softplus(b0) + _softplus(a1) + _softplus(b1)) / 4
    dropped = (_softplus(-a0) + _softplus(b0)) / 2
    assert per_class_bce(logits, targets, 255, True).item() == pytest.approx(official, rel=1e-12)
    assert per_class_bce(logits, targets, 255, False).item() == pytest.approx(dropped, rel=1e-12)
    # no ignore pixel: both modes agree
    full = torch.tensor([[[0, 1]]])
    both = (_softplus(-a0) + _softplus(b0) + _softplus(a1) + _softplus(-b1)) / 4
    assert per_class_bce(logits, full, 255, True).item() == pytest.approx(both, rel=1e-12)
    assert per_class_bce(logits, full, 255, False).item() == pytest.approx(both, rel=1e-12)


def test_per_class_bce_rejects_labels_outside_vocabulary():
    logits = torch.zeros(1, 2, 1, 2)
    with pytest.raises(ValueError, match="outside"):
        per_class_bce(logits, torch.tensor([[[0, 2]]]), 255)
    with pytest.raises(ValueError, match="outside"):
        per_class_bce(logits, torch.tensor([[[-2, 0]]]), 255)  # -1 is the image's no-data (NO_DATA_LABEL)


def test_train_forward_rejects_labels_outside_vocabulary():
    model = tiny_model(train=True)
    target = torch.full((64, 64), 7, dtype=torch.long)
    with pytest.raises(ValueError, match="outside"):
        model([{"image": image(64, 64), "sem_seg": target}])


# ============================================================================ 8. checkpoints
_A = "sem_seg_head.predictor.transformer."
_TO_OFFICIAL = [
    (r"clip\.(.*)", r"sem_seg_head.predictor.clip_model.\1"),
    (r"tap_pyramid\.ups\.0\.(.*)", r"upsample1.\1"),
    (r"tap_pyramid\.ups\.1\.(.*)", r"upsample2.\1"),
    (r"aggregator\.cost_embed\.(.*)", _A + r"conv1.\1"),
    (r"aggregator\.appearance_proj\.(.*)", _A + r"guidance_projection.\1"),
    (r"aggregator\.text_proj\.(.*)", _A + r"text_guidance_projection.\1"),
    (r"aggregator\.layers\.(\d+)\.spatial\.blocks\.0\.(.*)", _A + r"layers.\1.swin_block.block_1.\2"),
    (r"aggregator\.layers\.(\d+)\.spatial\.blocks\.1\.(.*)", _A + r"layers.\1.swin_block.block_2.\2"),
    (r"aggregator\.layers\.(\d+)\.spatial\.guidance_norm\.(.*)", _A + r"layers.\1.swin_block.guidance_norm.\2"),
    (r"aggregator\.layers\.(\d+)\.classes\.attn\.(q|k|v)\.(.*)", _A + r"layers.\1.attention.attention.\2.\3"),
    (r"aggregator\.layers\.(\d+)\.classes\.attn\.mlp\.(.*)", _A + r"layers.\1.attention.MLP.\2"),
    (r"aggregator\.layers\.(\d+)\.classes\.attn\.(norm1|norm2|padding_tokens|padding_guidance)(.*)",
     _A + r"layers.\1.attention.\2\3"),
    (r"decoder\.guidance_proj\.0\.(.*)", _A + r"decoder_guidance_projection.\1"),
    (r"decoder\.stages\.(\d)\.up\.(.*)", lambda m: f"{_A}decoder{int(m.group(1)) + 1}.up.{m.group(2)}"),
    (r"decoder\.stages\.(\d)\.conv\.(.*)", lambda m: f"{_A}decoder{int(m.group(1)) + 1}.conv.double_conv.{m.group(2)}"),
    (r"decoder\.stages\.(\d)\.(cconv|sconv)\.(.*)", lambda m: f"{_A}decoder{int(m.group(1)) + 1}.{m.group(2)}.{m.group(3)}"),
    (r"decoder\.head\.(.*)", _A + r"head.\1"),
]


def to_official(state):
    out = {}
    for key, value in state.items():
        for pattern, repl in _TO_OFFICIAL:
            new, n = re.subn(f"^{pattern}$", repl, key)
            if n:
                out[new] = value
                break
        else:
            raise AssertionError(f"test mapping has no rule for {key}")
    return out


def test_official_checkpoint_roundtrip(tmp_path, caplog):
    source = tiny_model(seed=1)
    official = to_official(source.state_dict())
    assert len(official) == len(source.state_dict())
    # the official names really are official-looking
    assert f"{_A}layers.0.swin_block.block_2.attn.q.weight" in official
    assert f"{_A}decoder2.conv.double_conv.4.weight" in official
    assert "upsample1.weight" in official
    assert "sem_seg_head.predictor.clip_model.visual.transformer.resblocks.0.attn.q_proj_weight" in official
    official[f"{_A}layers.0.swin_block.block_2.attn_mask"] = torch.zeros(4, 16, 16)  # official buffer: dropped
    path = tmp_path / "catseg_official.pth"
    torch.save({"model": official}, path)

    target = tiny_model(seed=2)
    assert not torch.equal(target.decoder.head.weight, source.decoder.head.weight)
    with caplog.at_level(logging.INFO, logger="ovrsis"):
        OVRSISCheckpointer(target).load(str(path))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ovrsis")]
    assert any("CAT-Seg" in m and "detected" in m for m in messages)
    assert any("every model key loaded" in m for m in messages)
    assert not [r for r in caplog.records if r.name.startswith("ovrsis") and r.levelno >= logging.WARNING]
    src, dst = source.state_dict(), target.state_dict()
    assert src.keys() == dst.keys()
    for k in src:
        assert torch.equal(src[k], dst[k]), k
    batch = [{"image": image(50, 70), "height": 50, "width": 70}]
    assert torch.equal(source(batch)[0]["sem_seg"], target(batch)[0]["sem_seg"])


def test_official_conversion_drops_attn_mask_silently():
    from ovrsis.checkpoint import CATSEG, detect_layout

    state = to_official(tiny_model().state_dict())
    state[f"{_A}layers.1.swin_block.block_2.attn_mask"] = torch.zeros(1)
    assert detect_layout(state) is CATSEG
    converted, unmatched = CATSEG.convert(state)
    assert unmatched == []
    assert not any("attn_mask" in k for k in converted)
    assert set(converted) == set(tiny_model().state_dict())


def test_own_checkpoint_roundtrip(tmp_path):
    source = tiny_model(seed=1)
    torch.save({"model": source.state_dict()}, tmp_path / "own.pth")
    target = tiny_model(seed=2)
    OVRSISCheckpointer(target).load(str(tmp_path / "own.pth"))
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k]), k


def test_checkpoint_config_mismatch_raises(tmp_path):
    other = tiny_model("MODEL.AGGREGATOR.HIDDEN_DIM", 48)
    path = tmp_path / "other.pth"
    torch.save({"model": to_official(other.state_dict())}, path)
    with pytest.raises(ValueError, match="mismatch"):
        OVRSISCheckpointer(tiny_model()).load(str(path))


# ============================================================================ 9. whole-image padding
def _whole(model, img, stretch: bool) -> torch.Tensor:
    model.inference_mode, model.stretch_padding = "whole", stretch
    try:
        return model([{"image": img}])[0]["sem_seg"]
    finally:
        model.inference_mode, model.stretch_padding = "slide", False


def test_stretch_padding_config():
    model = build_model(make_cfg(*TINY, "TEST.WHOLE.STRETCH_PADDING", True, "TEST.WHOLE.SIZE_DIVISIBILITY", 16))
    assert model.stretch_padding is True and model.size_divisibility == 16


def test_stretch_padding_is_noop_for_divisible_clip_sized_image(shared_model):
    img = image(64, 64)  # the CLIP size and a multiple of SIZE_DIVISIBILITY (32)
    assert shared_model.size_divisibility == 32
    assert torch.equal(_whole(shared_model, img, True), _whole(shared_model, img, False))


def test_stretch_padding_changes_non_divisible_image(shared_model):
    img = image(50, 70)  # padded to 64×96 before the squash: the official misalignment
    a, b = _whole(shared_model, img, True), _whole(shared_model, img, False)
    assert a.shape == b.shape == (3, 50, 70)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("size", [(80, 120), (50, 70), (13, 200), (1, 1), (64, 64), (130, 97)])
def test_stretch_padding_matches_official_postprocess(shared_model, size):
    """Official P-A: pad to SIZE_DIVISIBILITY, squash to CLIP, sigmoid, then detectron2's
    sem_seg_postprocess (crop the output map to the unpadded size, resize to the output)."""
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    img = image(*size)
    ours = _whole(shared_model, img, True)
    normed = shared_model._normalize(img)
    padded = ImageList.from_tensors([normed], shared_model.size_divisibility)
    probs = shared_model.predict_logits(padded.tensor, shared_model.test_classes).sigmoid()
    reference = sem_seg_postprocess(probs[0], padded.image_sizes[0], *size)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_run_mlp_equals_open_clip_mlp(activation):
    """The QuickGELU folding (alpha/beta of the two GEMMs + SiLU) equals open_clip's module:
    outputs, input gradients and (full fine-tuning) weight gradients, to float rounding."""
    import open_clip
    from open_clip.transformer import QuickGELU

    from ovrsis.modeling.encoders.clip import _register_bundled_configs, run_mlp

    _register_bundled_configs()
    torch.manual_seed(0)
    mlp = open_clip.create_model("ovrsis-tiny-vit").visual.transformer.resblocks[0].mlp
    if activation == "gelu":
        mlp.gelu = torch.nn.GELU()
    assert isinstance(mlp.gelu, QuickGELU) == (activation == "quick_gelu")
    with torch.no_grad():  # non-zero biases so the folded bias scaling is exercised
        mlp.c_fc.bias.normal_()
        mlp.c_proj.bias.normal_()
    x = torch.randn(3, 5, mlp.c_fc.in_features, requires_grad=True)
    weights = [mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight, mlp.c_proj.bias]
    grad = torch.randn(3, 5, mlp.c_proj.out_features)
    results = []
    for fn in (lambda: mlp(x), lambda: run_mlp(mlp, x)):
        out = fn()
        results.append((out, *torch.autograd.grad(out, [x, *weights], grad)))
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_clip_text_tower_equals_open_clip():
    """The text tower run by CLIPEncoder (split q/k/v, fused MLP, sequence cut after the latest
    end-of-text token) gives open_clip's own normalised text embeddings."""
    model = tiny_model("MODEL.TEXT.TEMPLATES", ["a {}", "an aerial image of many {} next to a river"])
    clip = model.clip
    import open_clip

    reference = open_clip.create_model("ovrsis-tiny-vit")
    state = {k: v for k, v in reference.state_dict().items()}
    for i, block in enumerate(clip.transformer.resblocks):  # copy ovrsis' weights into the fused layout
        prefix = f"transformer.resblocks.{i}.attn."
        state[prefix + "in_proj_weight"] = torch.cat(
            [block.attn.q_proj_weight, block.attn.k_proj_weight, block.attn.v_proj_weight]).detach()
        state[prefix + "in_proj_bias"] = block.attn.in_proj_bias.detach()
        for key in ("out_proj.weight", "out_proj.bias"):
            state[prefix + key] = dict(block.attn.named_parameters())[key].detach()
        for key, value in block.named_parameters():
            if not key.startswith("attn."):
                state[f"transformer.resblocks.{i}.{key}"] = value.detach()
    for key in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
                "text_projection"):
        state[key] = clip.state_dict()[key]
    reference.load_state_dict(state)
    reference.eval()
    texts, _ = expand_prompts(CLASSES, clip.templates, "first")
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(clip.tokenizer(texts)), dim=-1)
    torch.testing.assert_close(clip.encode_text(CLASSES).flatten(0, 1), expected, rtol=1e-5, atol=1e-5)
