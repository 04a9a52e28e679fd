"""RSKT-Seg: efficient aggregation blocks (shapes, formula against a naive official-style
reference, per-layer parameter count), the three cost fusions, the guidance-CLIP stream
(RemoteCLIP loading in both layouts, strict key report, wrong-architecture error, fp16 rounding,
frozen), the wired model (official parameter counts, each stream at its own input size,
official-checkpoint conversion, eval determinism) and a short training run whose loss falls.

Tiny dims: the tiny CLIP of test_modeling (64², patch 8 → 8² grid), the same tiny open_clip
ViT as the guidance CLIP (64², blocks 1, 2), the tiny DINO of test_gsnet (64², patch 4 → 16²).
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import ovrsis.modeling  # noqa: F401
from ovrsis.checkpoint import RSKTSEG, OVRSISCheckpointer, detect_layout
from ovrsis.config import add_ovrsis_config
from ovrsis.errors import ConfigError
from ovrsis.modeling.aggregation.efficient import (EfficientAggregationLayer, EfficientAggregator,
                                                   EfficientClassBlock, EfficientSpatialBlock)
from ovrsis.modeling.cost.fusion import (ConcatCostEmbedding, MeanCostEmbedding, QueryGuidedFusion,
                                         build_cost_embedding)
from ovrsis.modeling.encoders.guidance_clip import GuidanceCLIPEncoder, split_qkv
from test_gsnet import GSNET_TINY, _GSNET_TO_OFFICIAL, trainer_losses_on_one_batch
from test_modeling import image, tiny_model, to_official

REPO = Path(__file__).resolve().parents[1]
_A = "sem_seg_head.predictor.transformer."
RSKT_TINY = [
    *GSNET_TINY,
    "MODEL.COST.ROTATIONS", [0, 1, 2, 3], "MODEL.COST.FUSION", "simple_separate",
    "MODEL.AGGREGATOR.NAME", "EfficientAggregator", "MODEL.AGGREGATOR.NUM_HEADS", 4,
    "MODEL.AGGREGATOR.SPATIAL_REDUCTION", 2, "MODEL.AGGREGATOR.POOLING_SIZE_TEST", [2, 2],
    "MODEL.RS_CLIP.ENABLED", True, "MODEL.RS_CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.RS_CLIP.IMAGE_SIZE", 64,
    "MODEL.RS_CLIP.GUIDANCE_LAYERS", [1, 2],
    "MODEL.DECODER.GUIDANCE_SOURCES", ["clip", "rs_clip", "dino"],
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _n(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ============================================================================ efficient blocks
def _naive_attention(att, x_cat, kv_x, k_in):
    """softmax(q kᵀ / √d) v with 'heads' split the official way; inputs already concatenated."""
    b, n, c = kv_x.shape[0], x_cat.shape[1], att.dim
    h = att.num_heads
    q = att.q(x_cat).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
    k = att.k(k_in).reshape(b, -1, h, c // h).permute(0, 2, 1, 3)
    v = att.v(kv_x).reshape(b, -1, h, c // h).permute(0, 2, 1, 3)
    a = (q @ k.transpose(-2, -1) * (c // h) ** -0.5).softmax(-1)
    return att.proj((a @ v).transpose(1, 2).reshape(b, n, c))


def _reference_spatial(block: EfficientSpatialBlock, x, guidance):
    """The official SptialFusionBlock: guidance repeated per class, concatenated, sr on the concat."""
    b, t, c, h, w = x.shape
    r = block.attn.reduction
    xs = x.flatten(0, 1).flatten(2).transpose(1, 2)  # (B·T, hw, C)
    g = guidance.repeat_interleave(t, 0).flatten(2).transpose(1, 2)
    y = block.norm1(xs)
    cat = torch.cat([y, g], -1)
    k_in = block.attn.norm_k(block.attn.sr_k(cat.transpose(1, 2).reshape(b * t, -1, h, w)).flatten(2).transpose(1, 2))
    v_in = block.attn.norm_v(block.attn.sr_v(y.transpose(1, 2).reshape(b * t, c, h, w)).flatten(2).transpose(1, 2))
    assert k_in.shape[1] == (h // r) * (w // r)
    xs = xs + _naive_attention(block.attn, cat, v_in, k_in)
    z = block.norm2(xs)
    m = block.mlp.fc3(F.relu6(block.mlp.fc1(z)) * block.mlp.fc2(z))
    m = block.mlp.dwconv(m.transpose(1, 2).reshape(b * t, c, h, w)).flatten(2).transpose(1, 2)
    xs = xs + m
    return xs.transpose(1, 2).reshape(b, t, c, h, w)


def _reference_class(block: EfficientClassBlock, x, text):
    """The official ClassFusionBlock: 2×2 pool, attention over classes, ReLU6 MLP, upsample, add."""
    b, t, c, h, w = x.shape
    pooled = F.avg_pool2d(x.flatten(0, 1), 2)
    hp, wp = pooled.shape[-2:]
    tok = pooled.view(b, t, c, hp * wp).permute(0, 3, 1, 2).reshape(b * hp * wp, t, c)
    g = text.repeat_interleave(hp * wp, 0)
    y = block.norm1(tok)
    cat = torch.cat([y, g], -1)
    tok = tok + _naive_attention(block.attn, cat, y, cat)
    z = block.norm2(tok)
    tok = tok + F.relu6(block.mlp.fc3(F.relu6(block.mlp.fc1(z)) * block.mlp.fc2(z)))
    out = tok.view(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
    return x + out.view(b, t, c, h, w)


def test_efficient_layer_parameter_count():
    """Official hidden 128: spatial 582,912 + class 247,680 = 830,592 per layer."""
    layer = EfficientAggregationLayer(128, 128, 128, num_heads=8, reduction=2)
    assert _n(layer.spatial) == 582_912 and _n(layer.classes) == 247_680 and _n(layer) == 830_592
    assert tuple(layer.spatial.attn.sr_k.weight.shape) == (256, 256, 2, 2)
    assert tuple(layer.spatial.mlp.dwconv.weight.shape) == (128, 1, 7, 7)


def test_efficient_spatial_block_matches_naive_reference():
    torch.manual_seed(0)
    block = EfficientSpatialBlock(16, 8, num_heads=4, reduction=2)
    _randomise(block, 1)
    x, g = torch.randn(2, 3, 16, 8, 8), torch.randn(2, 8, 8, 8)
    out = block(x, g)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _reference_spatial(block, x, g), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_efficient_class_block_matches_naive_reference(train):
    torch.manual_seed(0)
    block = EfficientClassBlock(16, 8, num_heads=4).train(train)  # 2×2 pooling in both modes (official)
    _randomise(block, 2)
    x, text = torch.randn(2, 5, 16, 8, 8), torch.randn(2, 5, 8)
    out = block(x, text)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _reference_class(block, x, text), rtol=1e-5, atol=1e-5)


def test_efficient_class_block_is_class_permutation_equivariant():
    block = EfficientClassBlock(16, 8, num_heads=4)
    _randomise(block, 3)
    x, text = torch.randn(1, 4, 16, 4, 4), torch.randn(1, 4, 8)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(block(x, text)[:, perm], block(x[:, perm], text[:, perm]), rtol=1e-5, atol=1e-5)


def test_efficient_aggregator_rejects_bad_grids():
    with pytest.raises(ValueError, match="SPATIAL_REDUCTION"):
        EfficientAggregator(cost_channels=1, clip_dim=16, resolution=(7, 7), hidden_dim=16, num_heads=4)
    with pytest.raises(ValueError, match="divisible"):
        EfficientAggregator(cost_channels=1, clip_dim=16, resolution=(8, 8), hidden_dim=18, num_heads=4)


# ============================================================================ fusions
def _costs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 3, 6, 6, generator=g), torch.randn(2, 1, 3, 6, 6, generator=g)]


def test_simple_separate_is_qgff():
    fusion = build_cost_embedding("simple_separate", [4, 1], 8)
    assert isinstance(fusion, QueryGuidedFusion) and [e.in_channels for e in fusion.embeds] == [4, 1]
    _randomise(fusion, 4)
    clip, dino = _costs()
    per_class = [c.transpose(1, 2).flatten(0, 1) for c in (clip, dino)]
    e0 = torch.sigmoid(fusion.embeds[0](per_class[0]))
    e1 = torch.sigmoid(fusion.embeds[1](per_class[1]))
    expected = torch.sigmoid(fusion.fuse(torch.cat([e0, e1], 1))) + e0
    torch.testing.assert_close(fusion([clip, dino]), expected.view(2, 3, 8, 6, 6))


def test_simple_concatenation_formula():
    fusion = build_cost_embedding("simple_concatenation", [4, 1], 8)
    assert isinstance(fusion, ConcatCostEmbedding) and tuple(fusion.weight.shape) == (8, 5, 7, 7)
    clip, dino = _costs(1)
    cat = torch.cat([clip, dino], 1).transpose(1, 2).flatten(0, 1)  # rotations 0..3 then DINO, per class
    expected = F.conv2d(cat, fusion.weight, fusion.bias, padding=3).view(2, 3, 8, 6, 6)
    torch.testing.assert_close(fusion([clip, dino]), expected)
    with pytest.raises(ValueError, match="5 cost channels"):
        fusion([clip])


def test_simple_mean_formula():
    fusion = build_cost_embedding("simple_mean", [4, 1], 8)
    assert isinstance(fusion, MeanCostEmbedding) and tuple(fusion.weight.shape) == (8, 1, 7, 7)
    clip, dino = _costs(2)
    mean = (clip.sum(1, keepdim=True) + dino) / 5
    expected = F.conv2d(mean.transpose(1, 2).flatten(0, 1), fusion.weight, fusion.bias, padding=3).view(2, 3, 8, 6, 6)
    torch.testing.assert_close(fusion([clip, dino]), expected)
    with pytest.raises(ValueError, match="cost channels"):
        fusion([clip, clip])
    with pytest.raises(ValueError, match="MODEL.COST.FUSION"):
        build_cost_embedding("simple_sum", [4, 1], 8)


# ============================================================================ guidance CLIP
def _tiny_clip_state(seed=0, arch="ovrsis-tiny-vit"):
    import open_clip
    from ovrsis.modeling.encoders.clip import _register_bundled_configs
    _register_bundled_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(arch, pretrained=None).state_dict()


def test_guidance_clip_loads_both_layouts_strictly(tmp_path, caplog):
    state = _tiny_clip_state(1)
    fused, split = tmp_path / "open_clip.pt", tmp_path / "split.pt"
    torch.save(state, fused)
    torch.save({"state_dict": {"module." + k: v for k, v in split_qkv(state).items()}}, split)
    with caplog.at_level(logging.INFO):
        a = GuidanceCLIPEncoder("ovrsis-tiny-vit", weights=str(fused), image_size=64, out_indices=(1, 2))
    assert "text-tower tensors skipped" in caplog.text
    b = GuidanceCLIPEncoder("ovrsis-tiny-vit", weights=str(split), image_size=64, out_indices=(1, 2), text_tower=True)
    q, k, v = state["visual.transformer.resblocks.2.attn.in_proj_weight"].chunk(3)
    for enc in (a, b):
        blk = enc.visual.transformer.resblocks[2].attn
        assert torch.equal(blk.q_proj_weight, q) and torch.equal(blk.k_proj_weight, k) and torch.equal(blk.v_proj_weight, v)
    assert not any(n.startswith("transformer.") for n in a.state_dict())
    assert _n(b) - _n(a) == sum(t.numel() for n, t in state.items() if not n.startswith("visual.") and n != "attn_mask")
    x = torch.randn(2, 3, 48, 40)  # resized to 64² inside
    for fa, fb in zip(a(x), b(x)):
        assert fa.shape == (2, 64, 8, 8) and torch.equal(fa, fb)


def test_guidance_clip_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "vit_b16.pt"
    other = _tiny_clip_state(0)
    other["visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)  # another patch size
    del other["visual.transformer.resblocks.3.ln_1.weight"]
    torch.save(other, path)
    with pytest.raises(ValueError) as err:
        GuidanceCLIPEncoder("ovrsis-tiny-vit", weights=str(path), image_size=64, out_indices=(1, 2))
    msg = str(err.value)
    assert str(path) in msg and "patch 16" in msg and "patch 8" in msg and "1 missing" in msg and "another shape" in msg
    with pytest.raises(ConfigError, match="MODEL.RS_CLIP.WEIGHTS"):
        GuidanceCLIPEncoder("ovrsis-tiny-vit", weights=str(tmp_path / "nope.pt"), out_indices=(1,))
    with pytest.raises(ValueError, match="out of range"):
        GuidanceCLIPEncoder("ovrsis-tiny-vit", out_indices=(4,))


def test_guidance_clip_fp16_rounding_matches_the_official_build(tmp_path):
    state = _tiny_clip_state(2)
    state = {k: v + 1e-4 * torch.randn(v.shape) if v.dtype.is_floating_point else v for k, v in state.items()}
    path = tmp_path / "rclip.pt"
    torch.save(state, path)
    enc = GuidanceCLIPEncoder("ovrsis-tiny-vit", weights=str(path), image_size=64, out_indices=(1,), round_fp16=True,
                              text_tower=True)
    sd = enc.state_dict()
    fc = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.equal(sd[fc], state[fc].half().float()) and not torch.equal(sd[fc], state[fc])
    assert torch.equal(sd["visual.proj"], state["visual.proj"].half().float())
    assert torch.equal(sd["text_projection"], state["text_projection"].half().float())
    for kept in ("visual.ln_pre.weight", "visual.positional_embedding", "visual.class_embedding",
                 "token_embedding.weight", "logit_scale"):  # fp32 in the official build
        assert torch.equal(sd[kept], state[kept]), kept


def test_guidance_clip_is_frozen_and_runs_only_needed_blocks():
    enc = GuidanceCLIPEncoder("ovrsis-tiny-vit", image_size=64, out_indices=(1,))
    enc.train()
    assert not enc.training and _n(enc, True) == 0
    calls = []
    for i, blk in enumerate(enc.visual.transformer.resblocks):
        blk.ln_2.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    with torch.enable_grad():
        (out,) = enc(torch.randn(1, 3, 64, 64, requires_grad=True))
    assert calls == [0, 1]  # blocks 2 and 3 are never run
    assert not out.requires_grad


# ============================================================================ the wired model
def _full_cfg(path, *opts):
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_file(str(REPO / path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CLIP.PRETRAINED", "", *opts])
    return cfg


@pytest.mark.parametrize("config, total, trainable", [
    ("configs/rsktseg/vitb16_384_isaid.yaml", 398_066_243, 31_807_553),
    ("configs/rsktseg/vitl14_336_isaid.yaml", 678_290_499, 77_748_545),
])
def test_official_parameter_counts(monkeypatch, config, total, trainable):
    """The official build (random weights), 2 aggregation layers; it holds RemoteCLIP's text tower
    (63,428,097, never run: MODEL.RS_CLIP.TEXT_TOWER). 3 and 5 layers: 398,896,835 and 400,558,019."""
    monkeypatch.setattr(torch.Tensor, "normal_", lambda self, *a, **k: self)  # counts need no init
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda self, *a, **k: self)
    cfg = _full_cfg(config, "MODEL.AGGREGATOR.NUM_LAYERS", 2)
    model = build_model(cfg)
    assert _n(model) == total and _n(model, True) == trainable
    rs = model.specialists.rs_clip
    assert _n(rs.encoder, True) == 0 and _n(model.specialists.dino.encoder, True) == 0
    assert _n(rs.encoder.visual) == 87_849_216 and _n(rs.encoder) - _n(rs.encoder.visual) == 63_428_097
    assert _n(rs.taps) == 786_688 + 1_572_992  # upsample1_remote, upsample2_remote
    if "vitb16" in config:  # the released 3- and 5-layer ViT-B models
        a = cfg.MODEL.AGGREGATOR
        for layers, expected in ((3, 398_896_835), (5, 400_558_019)):
            agg = EfficientAggregator(cost_channels=[4, 1], clip_dim=512, resolution=(24, 24), num_layers=layers,
                                      cost_fusion="simple_separate", pooling_train=a.POOLING_SIZE_TRAIN)
            assert _n(model) - _n(model.aggregator) + _n(agg) == expected


def rskt_tiny(*extra, **kw):
    return tiny_model(*RSKT_TINY, *extra, **kw)


@pytest.fixture(scope="module")
def rskt_eval():
    return rskt_tiny().eval()


def test_tiny_rskt_structure_and_eval_determinism(rskt_eval):
    model = rskt_eval
    assert isinstance(model.aggregator, EfficientAggregator)
    assert isinstance(model.aggregator.cost_embed, QueryGuidedFusion)
    assert [e.in_channels for e in model.aggregator.cost_embed.embeds] == [4, 1]  # 4 rotations, DINO
    assert model.guidance_sources == ["clip", "rs_clip", "dino"] and model.decoder.num_sources == 3
    assert model.decoder.stages[0].conv[0].in_channels == 32 + 2 * 16  # [x, CLIP, RS-CLIP, DINO]
    x = [{"image": image(80, 72), "height": 40, "width": 36}]
    a, b = model(x)[0]["sem_seg"], model(x)[0]["sem_seg"]
    assert a.shape == (3, 40, 36) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1


def test_each_stream_sees_the_images_at_its_own_size(monkeypatch):
    """Streams resize the CLIP-normalised images themselves (RSKT-Seg ViT-L: CLIP 336², DINO 384²)."""
    model = rskt_tiny("MODEL.DINO.IMAGE_SIZE", 32, "MODEL.DINO.PRETRAIN_SIZE", 16, "MODEL.DINO.PATCH_SIZE", 2,
                      "MODEL.RS_CLIP.IMAGE_SIZE", 128, "MODEL.RS_CLIP.ARCH", "ovrsis-tiny-vit").eval()
    seen = {}
    for name in ("rs_clip", "dino"):
        enc = model.specialists[name].encoder
        enc.register_forward_pre_hook(lambda m, args, name=name: seen.update({name: tuple(args[0].shape[-2:])}))
    with pytest.raises(ValueError, match="MODEL.RS_CLIP grid"):  # 12² tokens cannot reach the 16², 32² stages
        rskt_tiny("MODEL.RS_CLIP.IMAGE_SIZE", 96)
    model.predict_logits(torch.randn(1, 3, 100, 90), ["a", "b"])
    assert seen == {"rs_clip": (128, 128), "dino": (32, 32)}


def test_frozen_streams_stay_frozen_in_training():
    model = rskt_tiny(train=True)
    rs, dino = model.specialists.rs_clip.encoder, model.specialists.dino.encoder
    assert not rs.training and not dino.training and _n(rs, True) == 0 and _n(dino, True) == 0
    before = {k: v.clone() for k, v in {**rs.state_dict(), **dino.state_dict()}.items()}
    batch = [{"image": image(64, 64, s), "sem_seg": torch.randint(0, 3, (64, 64))} for s in (0, 1)]
    model(batch)["loss_sem_seg"].backward()
    assert all(p.grad is None for p in [*rs.parameters(), *dino.parameters()])
    assert model.specialists.rs_clip.taps.ups[0].weight.grad is not None  # its projections train
    after = {**rs.state_dict(), **dino.state_dict()}
    assert all(torch.equal(after[k], v) for k, v in before.items())


_RSKT_TO_OFFICIAL = [
    (r"specialists\.rs_clip\.encoder\.(.*)", r"sem_seg_head.predictor.clip_model_remote.\1"),
    (r"specialists\.rs_clip\.taps\.ups\.(\d)\.(.*)", lambda m: f"upsample{int(m.group(1)) + 1}_remote.{m.group(2)}"),
    (r"decoder\.guidance_proj\.1\.(.*)", _A + r"CLIP_decoder_guidance_projection_remote.\1"),
    (r"decoder\.guidance_proj\.2\.(.*)", _A + r"DINO_decoder_guidance_projection.\1"),
    (r"aggregator\.cost_embed\.(weight|bias)", _A + r"conv1.\1"),
    (r"aggregator\.layers\.(\d+)\.(spatial|classes)\.(.*)",
     lambda m: f"{_A}layers.{m.group(1)}.{'spatial_fusion' if m.group(2) == 'spatial' else 'class_fusion'}.sa."
               + m.group(3).replace("attn.", "attention.", 1).replace("mlp.dwconv.", "mlp.dwconv.dwconv.")),
]


def rskt_to_official(state):
    """Official RSKT-Seg names for an ovrsis RSKT-Seg state dict."""
    specific, rest = {}, {}
    for key, value in state.items():
        for pattern, repl in [*_RSKT_TO_OFFICIAL, *_GSNET_TO_OFFICIAL]:
            new, n = re.subn(f"^{pattern}$", repl, key)
            if n:
                specific[new] = value
                break
        else:
            rest[key] = value
    return {**specific, **to_official(rest)}


@pytest.mark.parametrize("fusion", ["simple_separate", "simple_mean"])
def test_official_rskt_checkpoint_roundtrip(tmp_path, caplog, fusion):
    opts = ("MODEL.COST.FUSION", fusion, "MODEL.RS_CLIP.TEXT_TOWER", True)
    source = rskt_tiny(*opts, seed=1).eval()
    official = rskt_to_official(source.state_dict())
    assert len(official) == len(source.state_dict())
    for key in ("upsample2_remote.weight", "sem_seg_head.predictor.clip_model_remote.transformer.resblocks.0.attn.q_proj_weight",
                f"{_A}layers.0.spatial_fusion.sa.attention.sr_k.weight", f"{_A}layers.0.spatial_fusion.sa.mlp.dwconv.dwconv.bias",
                f"{_A}layers.1.class_fusion.sa.mlp.fc3.weight", f"{_A}conv1.weight",
                f"{_A}DINO_decoder_guidance_projection.1.0.weight", f"{_A}CLIP_decoder_guidance_projection_remote.0.0.bias"):
        assert key in official, key
    assert (f"{_A}conv2.weight" in official) == (fusion == "simple_separate")
    assert detect_layout(official) is RSKTSEG
    path = tmp_path / "rskt_official.pth"
    torch.save({"model": official}, path)
    target = rskt_tiny(*opts, seed=2).eval()
    with caplog.at_level(logging.INFO):
        OVRSISCheckpointer(target).load(str(path))
    assert "RSKT-Seg" in caplog.text and "every model key loaded" in caplog.text
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    x = [{"image": image(64, 64)}]
    assert torch.equal(target(x)[0]["sem_seg"], source(x)[0]["sem_seg"])


# ============================================================================ training
def test_short_training_run_loss_falls(tmp_path, monkeypatch):
    """120 steps on one synthetic batch (quickstart data, tiny RSKT-Seg) with the Trainer's model,
    optimizer and data loader; the check is against the class-prior plateau (see test_gsnet)."""
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))
    losses = trainer_losses_on_one_batch(tmp_path, RSKT_TINY, crop=64, steps=120)
    assert all(math.isfinite(v) for v in losses)
    plateau, final = losses[20], sum(losses[-5:]) / 5
    assert losses[0] > plateau and final < 0.75 * plateau, [round(v, 3) for v in losses[::10]]
