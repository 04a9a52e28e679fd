"""AerOSeg: the SAM guidance encoder (parity with segment_anything, smaller input, strict loading),
SAM guidance geometry, the 16-channel RS-prompt × rotation cost, SAM-guided spatial aggregation,
the training-only semantic back-projection head, seen-only training and a seen/unseen evaluation.

Tiny models: the ``ovrsis-tiny-vit`` CLIP at 64 px (8×8 grid) and a tiny SAM of the same
architecture family (segment_anything's ImageEncoderViT: width 32, 4 blocks, global attention
in blocks 1 and 3, window 4, input 128 → 8×8 tokens). Full-size models are only built for the
parameter counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ovrsis  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

import ovrsis.modeling  # noqa: F401
from ovrsis.config import add_ovrsis_config
from ovrsis.data.benchmarks.classes import AEROSEG_ISAID_UNSEEN
from ovrsis.engine import Trainer, setup_cfg
from ovrsis.modeling.cost.volume import cosine_cost
from ovrsis.modeling.encoders.sam import (SAM2_OTHER_PARTS, SAM_OTHER_PARTS, SAM_PIXEL_MEAN, SAM_PIXEL_STD, SAMEncoder,
                                         read_sam_checkpoint, resize_abs_pos)
from ovrsis.modeling.encoders.specialist import ResampledTaps, resample_to_grid
from ovrsis.modeling.meta_arch import vocabulary_of
from test_modeling import TINY, image, tiny_model

REPO = Path(__file__).resolve().parents[1]
RS_TEMPLATES = ["A satellite image of a {}", "A land use image of a {}", "A remote sensing image of a {}",
                "An aerial image of a {}"]
TINY_SAM_ARCH = dict(arch="custom", width=32, depth=4, num_heads=2, global_attn_blocks=(1, 3), window_size=4,
                     pretrain_size=128)
TINY_SAM = [
    "MODEL.SAM.ENABLED", True, "MODEL.SAM.ARCH", "custom", "MODEL.SAM.CUSTOM.WIDTH", 32,
    "MODEL.SAM.CUSTOM.DEPTH", 4, "MODEL.SAM.CUSTOM.NUM_HEADS", 2, "MODEL.SAM.CUSTOM.GLOBAL_ATTN_BLOCKS", [1, 3],
    "MODEL.SAM.CUSTOM.WINDOW_SIZE", 4, "MODEL.SAM.CUSTOM.PRETRAIN_SIZE", 128, "MODEL.SAM.INPUT_SIZE", 128,
    "MODEL.SAM.GUIDANCE_LAYERS", [1, 2],
]
AEROSEG = [
    *TINY_SAM, "MODEL.TEXT.TEMPLATES", RS_TEMPLATES, "MODEL.COST.ROTATIONS", [0, 1, 2, 3],
    "MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE", "sam", "MODEL.DECODER.GUIDANCE_SOURCES", ["sam"],
    "MODEL.DECODER.GUIDANCE_DIMS", [32, 32], "MODEL.DECODER.GUIDANCE_ATTENTION", True,
    "MODEL.LOSS.HEADS", ["SemanticBackProjection"], "MODEL.BACK_PROJECTION.NUM_CLASSES", 3,
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


def tiny_sam(**kw) -> SAMEncoder:
    torch.manual_seed(0)
    enc = SAMEncoder(**{**TINY_SAM_ARCH, "input_size": 128, "out_indices": (1, 2), **kw})
    with torch.no_grad():  # segment_anything zero-initialises the positional terms: make them matter
        for name, p in enc.image_encoder.named_parameters():
            if "pos" in name:
                p.normal_(0, 0.5)
    return enc


def aeroseg_tiny(*extra, **kw):
    return tiny_model(*AEROSEG, *extra, **kw)


# ----------------------------------------------------------------------------- SAM encoder
def test_sam_taps_equal_segment_anything_forward_and_hooks():
    enc = tiny_sam()
    x = torch.randn(2, 3, 128, 128)
    hooked = {}
    handles = [enc.image_encoder.blocks[i].register_forward_hook(
        lambda m, a, out, i=i: hooked.__setitem__(i, out.permute(0, 3, 1, 2))) for i in (1, 2)]
    with torch.no_grad():
        reference = enc.image_encoder(enc.preprocess(x))  # segment_anything's own forward: the neck
    for h in handles:
        h.remove()
    tap1, tap2, neck = enc(x)
    assert neck.shape == (2, 256, 8, 8) and tap1.shape == (2, 32, 8, 8)
    torch.testing.assert_close(neck, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tap1, hooked[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tap2, hooked[2], atol=1e-6, rtol=1e-6)


def test_sam_preprocess_is_sams_normalisation():
    """Model (CLIP) normalised input → SAM's (x − pixel_mean) / pixel_std on 0–255 RGB, resized."""
    clip_mean, clip_std = (122.77, 116.75, 104.09), (68.5, 66.63, 70.32)
    enc = tiny_sam(input_mean=clip_mean, input_std=clip_std)
    raw = image(64, 64, 1).float().unsqueeze(0)
    model_in = (raw - torch.tensor(clip_mean).view(1, 3, 1, 1)) / torch.tensor(clip_std).view(1, 3, 1, 1)
    expected = F.interpolate((raw - torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1))
                             / torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), size=(128, 128), mode="bilinear",
                             align_corners=False)
    torch.testing.assert_close(enc.preprocess(model_in), expected, atol=1e-5, rtol=1e-5)


def test_smaller_sam_input_interpolates_positions():
    """At input 64 (4×4 tokens) the encoder equals a segment_anything encoder built for 64² with the
    absolute pos-embed resized bicubically and the global blocks' relative positions resized
    linearly (what segment_anything's get_rel_pos does on the fly)."""
    from segment_anything.modeling import ImageEncoderViT
    from functools import partial

    enc = tiny_sam(input_size=64)
    small = ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2, mlp_ratio=4,
                            out_chans=256, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                            use_rel_pos=True, window_size=4, global_attn_indexes=(1, 3))
    state = {}
    for k, v in enc.image_encoder.state_dict().items():
        if k == "pos_embed":
            v = resize_abs_pos(v, (4, 4))
        elif "rel_pos" in k and v.shape[0] != small.state_dict()[k].shape[0]:
            v = F.interpolate(v.T.unsqueeze(0), size=small.state_dict()[k].shape[0], mode="linear")[0].T
        state[k] = v
    small.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = small(enc.preprocess(x))
    neck = enc(x)[-1]
    assert neck.shape == (1, 256, 4, 4)
    torch.testing.assert_close(neck, reference, atol=1e-5, rtol=1e-5)


def test_sam_checkpoint_loads_strictly_with_key_report(tmp_path, caplog):
    source = tiny_sam()
    full = {f"image_encoder.{k}": v for k, v in source.image_encoder.state_dict().items()}
    full.update({"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.zeros(2, 128),
                 "mask_decoder.iou_token.weight": torch.zeros(1, 256)})
    torch.save(full, tmp_path / "sam_tiny.pth")
    with caplog.at_level("INFO"):
        enc = SAMEncoder(**TINY_SAM_ARCH, input_size=128, out_indices=(1, 2), weights=str(tmp_path / "sam_tiny.pth"))
    assert "2 prompt-encoder/mask-decoder tensors dropped" in caplog.text
    for k, v in source.image_encoder.state_dict().items():
        assert torch.equal(enc.image_encoder.state_dict()[k], v)
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.train().training

    del full["image_encoder.neck.0.weight"]
    torch.save(full, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"1 missing \[neck.0.weight\]"):
        SAMEncoder(**TINY_SAM_ARCH, input_size=128, out_indices=(1, 2), weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="with another shape"):  # a checkpoint of another SAM size
        SAMEncoder(**{**TINY_SAM_ARCH, "width": 64}, input_size=128, out_indices=(1, 2),
                   weights=str(tmp_path / "sam_tiny.pth"))
    with pytest.raises(ValueError, match="MODEL.SAM.WEIGHTS"):  # ovrsis.errors.ConfigError
        SAMEncoder(**TINY_SAM_ARCH, out_indices=(1, 2), weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("parts", [SAM_OTHER_PARTS, SAM2_OTHER_PARTS], ids=["sam", "sam2"])
def test_sam_checkpoint_reports_unknown_top_level_keys(parts, tmp_path, caplog):
    """Other parts of the family's full model are dropped and counted; tensors under any other
    top-level name are reported as unknown, never counted as prompt-encoder/decoder tensors."""
    full = {"image_encoder.patch_embed.proj.weight": torch.ones(2), f"{parts[0]}.a.weight": torch.zeros(1),
            f"{parts[-1]}": torch.zeros(1), "optimizer_state.step": torch.zeros(1), "ema.weight": torch.zeros(1)}
    torch.save({"model": full}, tmp_path / "full.pth")
    with caplog.at_level("WARNING"):
        state, dropped = read_sam_checkpoint(str(tmp_path / "full.pth"), parts)
    assert list(state) == ["patch_embed.proj.weight"] and dropped == 2
    assert "2 tensors under unknown top-level names not loaded" in caplog.text
    assert "optimizer_state.step, ema.weight" in caplog.text


def test_sam_configuration_errors_name_the_key():
    with pytest.raises(ValueError, match="MODEL.SAM.ARCH"):
        SAMEncoder(arch="vit_x")
    with pytest.raises(ValueError, match="MODEL.SAM.GUIDANCE_LAYERS"):
        SAMEncoder(**TINY_SAM_ARCH, out_indices=(7, 15))
    with pytest.raises(ValueError, match="MODEL.DECODER.GUIDANCE_DIMS"):
        aeroseg_tiny("MODEL.DECODER.GUIDANCE_DIMS", [32, 16])
    with pytest.raises(ValueError, match="APPEARANCE_GUIDANCE_SOURCE"):
        tiny_model("MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE", "sam")


@pytest.mark.parametrize("sam_grid", [64, 24])
def test_sam_guidance_shapes_at_24_48_96(sam_grid):
    """SAM at 1024² (64×64) or 384² (24×24) under a 24×24 cost grid: appearance 24², decoder
    guidance 48² and 96², each a nearest ×2 upsampling of an area-resampled tap (Eq. 10)."""
    taps = [torch.randn(1, 1024, sam_grid, sam_grid) for _ in range(2)]
    neck = torch.randn(1, 256, sam_grid, sam_grid)
    g48, g96 = ResampledTaps([48, 96])(taps)
    assert g48.shape == (1, 1024, 48, 48) and g96.shape == (1, 1024, 96, 96)
    assert resample_to_grid(neck, (24, 24)).shape == (1, 256, 24, 24)
    for g in (g48, g96):  # nearest ×2: every 2×2 block is constant
        assert torch.equal(g[..., ::2, ::2], g[..., 1::2, 1::2]) and torch.equal(g[..., ::2, ::2], g[..., 1::2, ::2])
    torch.testing.assert_close(g48[..., ::2, ::2], F.adaptive_avg_pool2d(taps[0], 24))
    torch.testing.assert_close(g96[..., ::2, ::2], F.adaptive_avg_pool2d(taps[1], 48))


@pytest.mark.parametrize("sam_input", [1024, 384])
def test_sam_stream_geometry_under_a_24_grid(sam_input):
    """The built stream (tiny SAM, pre-trained for 1024²) under a 24×24 cost grid (CLIP 384/16):
    guidance 48² and 96², features at SAM's own grid (64² or 24²), resampled to 24² for Eq. 5/13."""
    from ovrsis.modeling.encoders.specialist import build_sam_stream

    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_list([*TINY_SAM, "MODEL.SAM.CUSTOM.PRETRAIN_SIZE", 1024, "MODEL.SAM.INPUT_SIZE", sam_input,
                         "MODEL.DECODER.GUIDANCE_DIMS", [32, 32]])
    stream = build_sam_stream(cfg, clip_grid=24)
    with torch.no_grad():
        out = stream(torch.randn(1, 3, 384, 384), torch.randn(3, 1, 64))
    grid = sam_input // 16
    assert out.cost is None and [tuple(g.shape) for g in out.guidance] == [(1, 32, 48, 48), (1, 32, 96, 96)]
    assert out.features.shape == (1, 256, grid, grid) and stream.feature_dim == 256
    assert resample_to_grid(out.features, (24, 24)).shape == (1, 256, 24, 24)


# ----------------------------------------------------------------------------- model wiring
@pytest.fixture(scope="module")
def aeroseg_eval():
    return aeroseg_tiny().eval()


def test_sixteen_cost_channels_are_rotation_major(aeroseg_eval):
    """P = 4 prompts × R = 4 rotations: cost channel r·4 + p is prompt p on rotation r (rotated back)."""
    model = aeroseg_eval
    assert model.aggregator.cost_embed.in_channels == 16
    x = model._normalize(image(64, 64, 2)).unsqueeze(0)
    text = model.clip.encode_text(["water", "road", "building"])
    with torch.no_grad():
        cost, _, _ = model.cost_volume(x, text)
        assert cost.shape == (1, 16, 3, 8, 8)
        for r in range(4):
            dense, _ = model.clip.encode_image(torch.rot90(x, r, dims=(2, 3)))
            back = torch.rot90(dense, -r, dims=(2, 3))
            for p in range(4):
                torch.testing.assert_close(cost[:, 4 * r + p], cosine_cost(back, text[:, p:p + 1])[:, 0],
                                           atol=1e-5, rtol=1e-5)


def test_sam_is_the_appearance_and_decoder_guidance(aeroseg_eval):
    """No CLIP taps in the decoder; perturbing only the SAM encoder or the SAM appearance projection
    changes the output; CLIP's appearance path is not built."""
    model = aeroseg_eval
    assert model.tap_pyramid is None and model.guidance_sources == ["sam"] and model.appearance_source == "sam"
    assert model.aggregator.appearance_proj[0].in_channels == 256
    x = [{"image": image(64, 64, 1)}]
    with torch.no_grad():
        ref = model(x)[0]["sem_seg"].clone()
        for module in (model.aggregator.appearance_proj[0], model.specialists.sam.encoder.image_encoder.neck[0],
                       model.specialists.sam.encoder.image_encoder.blocks[1].mlp.lin2):
            saved = module.weight.clone()
            module.weight.mul_(-1)
            assert (model(x)[0]["sem_seg"] - ref).abs().max() > 1e-6
            module.weight.copy_(saved)
        assert torch.equal(model(x)[0]["sem_seg"], ref)


def test_eval_is_deterministic_and_back_projection_is_absent(aeroseg_eval):
    """At eval the head never runs (no cost) and a vocabulary of another size than N_s = 3 works."""
    model = aeroseg_eval
    calls = []
    handle = model.loss_heads.SemanticBackProjection.register_forward_hook(lambda *a: calls.append(1))
    model.set_vocabulary(["water", "road", "building", "tree", "vehicle"])
    try:
        x = [{"image": image(50, 70, 3), "height": 50, "width": 70}]
        a, b = model(x)[0]["sem_seg"], model(x)[0]["sem_seg"]
        assert a.shape == (5, 50, 70) and torch.equal(a, b)
        with torch.no_grad():
            model.loss_heads.SemanticBackProjection.mlp[0].weight.mul_(-1)
        assert torch.equal(model(x)[0]["sem_seg"], a)
    finally:
        handle.remove()
        model.set_vocabulary(["water", "road", "building"])
    assert calls == []


def _batch(seed: int = 0, num_classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [{"image": image(64, 64, s), "sem_seg": torch.randint(0, num_classes, (64, 64), generator=g)}
            for s in (0, 1)]


def test_back_projection_gradient_reaches_only_head_and_aggregation():
    model = aeroseg_tiny(train=True)
    assert not model.specialists.sam.encoder.training
    losses = model(_batch())
    assert set(losses) == {"loss_sem_seg", "loss_sem_back_projection"}
    losses["loss_sem_back_projection"].backward()
    head = model.loss_heads.SemanticBackProjection
    assert head.mlp[0].in_features == 3 * 32 and head.mlp[-1].out_features == 256
    for p in (head.mlp[0].weight, head.mlp[-1].weight, model.aggregator.layers[-1].classes.attn.v.weight,
              model.aggregator.appearance_proj[0].weight, model.aggregator.cost_embed.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())
    assert all(p.grad is None for p in model.specialists.parameters())  # sg(F_SAM), frozen SAM


def test_back_projection_targets_and_vocabulary_check():
    for target, dim in (("rgb", 3), ("clip", 64), ("sam", 256)):
        model = aeroseg_tiny("MODEL.BACK_PROJECTION.TARGET", target, train=True)
        assert model.loss_heads.SemanticBackProjection.mlp[-1].out_features == dim
        assert torch.isfinite(model(_batch())["loss_sem_back_projection"])
    model = aeroseg_tiny(train=True, classes=["water", "road"])
    with pytest.raises(ValueError, match="built for 3 training classes"):
        model(_batch(num_classes=2))


def test_short_training_lowers_total_and_back_projection_losses():
    model = aeroseg_tiny(train=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = _batch(1)
    totals, sems = [], []
    for _ in range(30):
        losses = model(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
        sems.append(losses["loss_sem_back_projection"].item())
    assert sum(totals[-5:]) < 0.85 * sum(totals[:5]), totals
    assert sum(sems[-5:]) < 0.8 * sum(sems[:5]), sems


# ----------------------------------------------------------------------------- data, configs, counts
def test_seen_only_training_vocabulary_of_the_aeroseg_configs():
    """Training uses the seen-class split (unseen pixels 255: datasets/prepare_aeroseg.py, tested in
    test_benchmarks.py) and its vocabulary holds no unseen name; evaluation scores all classes."""
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_file(str(REPO / "configs/aeroseg/vitb16_isaid.yaml"))
    train = vocabulary_of(cfg.DATASETS.TRAIN[0])
    val = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    assert len(train) == 9 and not set(train) & set(AEROSEG_ISAID_UNSEEN)
    assert sorted(val.unseen_classes) == sorted(AEROSEG_ISAID_UNSEEN) and sorted(val.seen_classes) == sorted(train)
    assert len(val.stuff_classes) == 15


def test_seen_unseen_training_and_evaluation(tmp_path, monkeypatch):
    """A short run on the synthetic scenes (unseen pixels ignored in training, seen-only vocabulary):
    both losses are logged and fall, and the evaluation reports s-, u- and h-mIoU."""
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))
    opts = {"OUTPUT_DIR": str(tmp_path), "SOLVER.MAX_ITER": 40, "SOLVER.IMS_PER_BATCH": 4,
            "SOLVER.CHECKPOINT_PERIOD": 10 ** 6, "TEST.EVAL_PERIOD": 0, "DATALOADER.NUM_WORKERS": 0,
            "DATASETS.SYNTHETIC.NUM_TRAIN": 8, "DATASETS.SYNTHETIC.NUM_VAL": 2, "INPUT.CROP.SIZE": (64, 64),
            "INPUT.MIN_SIZE_TRAIN": (64,), "INPUT.MIN_SIZE_TEST": 64, "SOLVER.WARMUP_ITERS": 0,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0, "MODEL.BACK_PROJECTION.NUM_CLASSES": 0}
    aeroseg = dict(zip(AEROSEG[::2], AEROSEG[1::2]))
    aeroseg["MODEL.BACK_PROJECTION.NUM_CLASSES"] = 0  # the training set's vocabulary size
    flat = [str(x) for kv in {**aeroseg, **opts}.items() for x in kv]
    cfg = setup_cfg(str(REPO / "configs/quickstart.yaml"), flat)
    trainer = Trainer(cfg)
    model = trainer.model
    assert model.train_classes == vocabulary_of("synthetic_rs_train")
    assert not set(model.train_classes) & set(MetadataCatalog.get("synthetic_rs_val").unseen_classes)
    assert model.loss_heads.SemanticBackProjection.num_classes == len(model.train_classes)
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    total = [r["total_loss"] for r in rows if "total_loss" in r]
    sem = [r["loss_sem_back_projection"] for r in rows if "loss_sem_back_projection" in r]
    assert len(total) >= 2 and total[-1] < total[0] and sem[-1] < sem[0], (total, sem)
    metrics = Trainer.test(cfg, model)["sem_seg"]
    for key in ("s-mIoU", "u-mIoU", "h-mIoU"):
        assert key in metrics and 0 <= metrics[key] <= 100


def test_sam_vit_l_and_default_aeroseg_parameter_counts(monkeypatch):
    """SAM ViT-L image encoder 308,278,272; AerOSeg ViT-B / SAM ViT-L with 9 seen iSAID classes
    460,787,990 (methods-part2.md §A.2)."""
    with torch.device("meta"):
        assert sum(p.numel() for p in SAMEncoder(arch="vit_l").parameters()) == 308_278_272
    monkeypatch.setattr(torch.Tensor, "normal_", lambda self, *a, **k: self)  # counts need no init
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.nn.init, "trunc_normal_", lambda t, *a, **k: t)
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_file(str(REPO / "configs/aeroseg/vitb16_isaid.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CLIP.PRETRAINED", ""])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == 460_787_990
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 23_336_213


# ----------------------------------------------------------------------------- SAM 2 (optional sam2 package)
def test_sam2_hiera_encoder_equals_sam2_and_loads_checkpoints(tmp_path):
    pytest.importorskip("sam2", reason="optional: SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2")
    from ovrsis.modeling.encoders.sam_hiera import SAMHieraEncoder

    torch.manual_seed(0)
    enc = SAMHieraEncoder(arch="hiera_t", input_size=128, out_indices=(1, 0))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = enc.image_encoder(enc.preprocess(x))  # sam2's own ImageEncoder forward
    stride8, stride4, features = enc(x)
    assert stride8.shape == (1, 256, 16, 16) and stride4.shape == (1, 256, 32, 32) and features.shape == (1, 256, 8, 8)
    assert torch.equal(features, reference["vision_features"]) and torch.equal(stride8, reference["backbone_fpn"][1])
    state = {f"image_encoder.{k}": v for k, v in enc.image_encoder.state_dict().items()}
    state["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    torch.save({"model": state}, tmp_path / "sam2_tiny.pt")
    torch.manual_seed(1)
    loaded = SAMHieraEncoder(arch="hiera_t", input_size=128, weights=str(tmp_path / "sam2_tiny.pt"))
    assert torch.equal(loaded(x)[-1], features) and loaded.pretrained_from_file
    with pytest.raises(ValueError, match="with another shape"):
        SAMHieraEncoder(arch="hiera_b+", input_size=128, weights=str(tmp_path / "sam2_tiny.pt"))


def test_aeroseg_with_a_sam2_stream_trains_and_evaluates():
    pytest.importorskip("sam2", reason="optional: SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2")
    model = aeroseg_tiny("MODEL.SAM.ARCH", "hiera_t", "MODEL.SAM.GUIDANCE_LAYERS", [1, 0],
                         "MODEL.DECODER.GUIDANCE_DIMS", [256, 256], train=True)
    losses = model(_batch())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.specialists.parameters())
    model.eval()
    seg = model([{"image": image(50, 70), "height": 50, "width": 70}])[0]["sem_seg"]
    assert seg.shape == (3, 50, 70) and torch.isfinite(seg).all()


# ----------------------------------------------------------------------------- configs and the Table 4 variant
@pytest.mark.parametrize("name, checks", [
    ("vitb16_isaid", {"MODEL.SAM.ENABLED": True, "MODEL.SAM.ARCH": "vit_l", "SOLVER.MAX_ITER": 10000,
                      "MODEL.LOSS.HEADS": ["SemanticBackProjection"], "MODEL.COST.ROTATIONS": [0, 1, 2, 3]}),
    ("vitb16_dlrsd", {"SOLVER.MAX_ITER": 5000, "DATASETS.TRAIN": ("aeroseg_dlrsd_train_seen",)}),
    ("vitb16_oem", {"SOLVER.MAX_ITER": 15000, "DATASETS.TEST": ("aeroseg_oem_val",)}),
    ("ablations/t3_baseline_isaid", {"MODEL.SAM.ENABLED": False, "MODEL.LOSS.HEADS": [],
                                     "MODEL.DECODER.GUIDANCE_SOURCES": ["clip"]}),
    ("ablations/t3_a_sam_guidance_isaid", {"MODEL.LOSS.HEADS": [], "MODEL.SAM.ENABLED": True}),
    ("ablations/t3_b_sem_loss_isaid", {"MODEL.LOSS.HEADS": ["SemanticBackProjection"]}),
    ("ablations/t4_sam_finetuned_isaid", {"MODEL.SAM.FROZEN": False, "SOLVER.SAM_MULTIPLIER": 0.1}),
    ("ablations/t5_target_rgb_isaid", {"MODEL.BACK_PROJECTION.TARGET": "rgb"}),
    ("ablations/t5_target_clip_isaid", {"MODEL.BACK_PROJECTION.TARGET": "clip"}),
    ("ablations/t6_sam_vit_h_isaid", {"MODEL.SAM.ARCH": "vit_h", "MODEL.DECODER.GUIDANCE_DIMS": [1280, 1280]}),
    ("ablations/t6_sam2_hiera_bplus_isaid", {"MODEL.SAM.ARCH": "hiera_b+", "MODEL.SAM.GUIDANCE_LAYERS": [1, 0]}),
    ("ablations/sam_vit_b_isaid", {"MODEL.SAM.ARCH": "vit_b", "MODEL.SAM.GUIDANCE_LAYERS": [3, 7]}),
    ("ablations/sam_input384_isaid", {"MODEL.SAM.INPUT_SIZE": 384}),
])
def test_aeroseg_configs_resolve(name, checks):
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_file(str(REPO / f"configs/aeroseg/{name}.yaml"))
    for key, value in checks.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert (list(node) if isinstance(value, list) else node) == value, key
    assert len(cfg.MODEL.TEXT.TEMPLATES) in (1, 4) and cfg.SOLVER.IMS_PER_BATCH == 4


def test_fine_tuned_sam_trains_at_its_own_learning_rate():
    """Table 4: MODEL.SAM.FROZEN False makes SAM trainable (train mode, gradients) at BASE_LR × SAM_MULTIPLIER."""
    from ovrsis.engine.trainer import build_param_groups

    model = aeroseg_tiny("MODEL.SAM.FROZEN", False, train=True)
    encoder = model.specialists.sam.encoder
    assert encoder.training and all(p.requires_grad for p in encoder.parameters())
    model(_batch())["loss_sem_seg"].backward()
    assert encoder.image_encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_list(["SOLVER.BASE_LR", 2e-4, "SOLVER.SAM_MULTIPLIER", 0.1])
    sam_ids = {id(p) for p in encoder.parameters()}
    for group in build_param_groups(cfg, model):
        in_sam = [id(p) in sam_ids for p in group["params"]]
        assert all(in_sam) or not any(in_sam)
        if any(in_sam):
            assert group["lr"] == pytest.approx(2e-5)


def test_aeroseg_checkpoint_round_trip(tmp_path):
    """A saved AerOSeg model (SAM and back-projection head included) reloads key for key."""
    from ovrsis.checkpoint import OVRSISCheckpointer

    source = aeroseg_tiny(seed=3).eval()
    OVRSISCheckpointer(source, str(tmp_path)).save("aeroseg_tiny")
    target = aeroseg_tiny(seed=4).eval()
    OVRSISCheckpointer(target).load(str(tmp_path / "aeroseg_tiny.pth"))
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    x = [{"image": image(64, 64)}]
    assert torch.equal(target(x)[0]["sem_seg"], source(x)[0]["sem_seg"])
