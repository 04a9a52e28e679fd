"""Training-free segmentor (SegEarth-OV and its CLIP baselines): SimFeatUp, last blocks,
post-processing, P-C windows, batching, configs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ovrsis  # noqa: F401
from detectron2.modeling import build_model

import ovrsis.modeling  # noqa: F401
from ovrsis.engine import setup_cfg
from ovrsis.errors import ConfigError
from ovrsis.modeling.tiling import TilingSettings, window_average
from ovrsis.training_free import (LAST_BLOCK_ATTENTION, SimFeatUp, class_probabilities, expand_queries,
                                  load_simfeatup_checkpoint, run_last_block, simfeatup_checkpoint,
                                  threshold_to_background)
from ovrsis.training_free.segmentor import centred_padding
from ovrsis.training_free.simfeatup import JBULearnedRange, adaptive_filter, upsampling_steps

REPO = Path(__file__).resolve().parents[1]
TINY = ["MODEL.CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.IMAGE_SIZE", 64,
        "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", "", "MODEL.DEVICE", "cpu",
        "MODEL.TEXT.TEMPLATES", ["a photo of a {}.", "a satellite image of the {}."],
        "TEST.TILED.TILE", 32, "TEST.TILED.STRIDE", 16, "TEST.TILED.LONG_SIDE", 64]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


def tiny_segmentor(*opts):
    torch.manual_seed(0)
    cfg = setup_cfg(str(REPO / "configs/segearth_ov/base.yaml"), [*TINY, *opts])
    model = build_model(cfg)
    with torch.no_grad():  # random, non-trivial SimFeatUp and CLIP biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def raw_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g) * 255


# ---------------------------------------------------------------------------------------- SimFeatUp
def test_simfeatup_parameter_count_and_names():
    module = SimFeatUp(512)
    assert sum(p.numel() for p in module.parameters()) == 293_729
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes["up.fixup_proj.0.weight"] == (121, 124, 1, 1)
    assert shapes["up.range_proj.3.weight"] == (32, 32, 1, 1)
    assert shapes["fixup_proj.1.weight"] == (512, 512, 1, 1)
    assert module.up.range_temp.item() == 0.0 and module.up.sigma_spatial.item() == 1.0
    assert upsampling_steps(16) == 4 and upsampling_steps(32) == 5
    with pytest.raises(ValueError, match="power of two"):
        upsampling_steps(14)


def test_adaptive_filter_matches_direct_loops():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    filters = torch.randn(2, 4, 5, 3, 3, generator=g, dtype=torch.float64)
    expected = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            for y in range(4):
                for x in range(5):
                    for i in range(3):
                        for j in range(3):
                            expected[b, c, y, x] += filters[b, y, x, i, j] * source[b, c, y + i, x + j]
    assert torch.allclose(adaptive_filter(source, filters), expected, atol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        adaptive_filter(source, filters[:, :3])


def _reference_jbu(up: JBULearnedRange, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """The JBU step written out with an unfold over the whole window (the official formulation)."""
    b, _, h, w = guidance.shape
    d, r = up.diameter, up.radius
    keys = up.range_proj(guidance)
    windows = F.unfold(F.pad(keys, [r] * 4, mode="reflect"), d).view(b, keys.shape[1], d * d, h, w)
    rng = F.softmax(up.range_temp.exp() * (windows * keys[:, :, None]).sum(1), dim=1)
    spatial = torch.empty(d * d, dtype=source.dtype)
    for i in range(d):
        for j in range(d):
            di, dj = -1 + 2 * i / (d - 1), -1 + 2 * j / (d - 1)
            spatial[i * d + j] = math.exp(-(di * di + dj * dj) / (2 * up.sigma_spatial.item() ** 2))
    kernel = rng * spatial.view(1, -1, 1, 1)
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel = kernel + 0.1 * up.fixup_proj(torch.cat([kernel, guidance], 1))
    hr = F.pad(F.interpolate(source, (h, w), mode="bicubic", align_corners=False), [r] * 4, mode="reflect")
    patches = F.unfold(hr, d).view(b, source.shape[1], d * d, h, w)
    return (patches * kernel[:, None]).sum(2)


def test_jbu_step_matches_unfold_reference():
    torch.manual_seed(0)
    up = JBULearnedRange(3, 4, 8, radius=2).double().eval()
    with torch.no_grad():
        up.range_temp.fill_(0.7)
        up.sigma_spatial.fill_(0.6)
    source = torch.randn(1, 4, 4, 5, dtype=torch.float64)
    guidance = torch.randn(1, 3, 8, 10, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(up(source, guidance), _reference_jbu(up, source, guidance), atol=1e-10)


def test_simfeatup_output_size_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    module = SimFeatUp(8, steps=3).eval()
    out = module(torch.randn(2, 8, 3, 4), torch.randn(2, 3, 24, 32))
    assert out.shape == (2, 8, 24, 32)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "simfeatup.ckpt"
    torch.save({**simfeatup_checkpoint(module, epoch=0, global_step=5), "optimizer_states": []}, path)
    assert all(k.startswith("upsampler.") for k in torch.load(path)["state_dict"])
    fresh = SimFeatUp(8, steps=3)
    report = load_simfeatup_checkpoint(fresh, str(path))
    assert len(report) == 12 and report[0].startswith("loaded upsampler.")
    for (k, a), b in zip(module.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="shape mismatches"):
        load_simfeatup_checkpoint(SimFeatUp(16, steps=3), str(path))
    state = torch.load(path)["state_dict"]
    state.pop("upsampler.up.range_temp")
    torch.save({"state_dict": state}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="missing \\['up.range_temp'\\]"):
        load_simfeatup_checkpoint(fresh, str(tmp_path / "partial.ckpt"))
    with pytest.raises(ConfigError, match="SIMFEATUP_WEIGHTS.*does not exist"):
        load_simfeatup_checkpoint(fresh, str(tmp_path / "absent.ckpt"))


# ---------------------------------------------------------------------------------------- last blocks
def _naive_last_block(block, x, attention, residual, ffn):
    """Per head and per token, with explicit softmaxes: the formulas of each method's paper/code."""
    attn = block.attn
    h = block.ln_1(x)
    d_model, heads = x.shape[-1], attn.num_heads
    d = d_model // heads
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    q, k, v = h @ attn.q_proj_weight.T + bq, h @ attn.k_proj_weight.T + bk, h @ attn.v_proj_weight.T + bv
    out = torch.zeros_like(x)
    s = d ** -0.5
    for n in range(x.shape[0]):
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            qh, kh, vh = q[n, :, sl], k[n, :, sl], v[n, :, sl]
            sm = lambda a, b: torch.exp(s * a @ b.T) / torch.exp(s * a @ b.T).sum(1, keepdim=True)  # noqa: E731
            weights = {"vanilla": sm(qh, kh), "maskclip": torch.eye(x.shape[1], dtype=x.dtype),
                       "sclip": sm(qh, qh) + sm(kh, kh), "clearclip": sm(qh, qh),
                       "segearth": sm(qh, qh) + sm(kh, kh) + sm(vh, vh)}[attention]
            out[n, :, sl] = weights @ vh
    out = out @ attn.out_proj.weight.T + attn.out_proj.bias
    if residual:
        out = x + out
    if ffn:
        out = out + block.mlp(block.ln_2(out))
    return out


@pytest.mark.parametrize("attention", sorted(LAST_BLOCK_ATTENTION))
@pytest.mark.parametrize("residual, ffn", [(False, False), (True, True), (True, False)])
def test_last_block_variants_match_naive_formulas(attention, residual, ffn):
    model = tiny_segmentor()
    block = model.clip.visual.transformer.resblocks[-1].double()
    x = torch.randn(2, 5, model.clip.width, dtype=torch.float64)
    with torch.no_grad():
        got = run_last_block(block, x, attention, residual, ffn)
        assert torch.allclose(got, _naive_last_block(block, x, attention, residual, ffn), atol=1e-10)
    with pytest.raises(ValueError, match="ATTENTION"):
        run_last_block(block, x, "gem", False, False)


def test_vanilla_last_block_is_the_unchanged_clip_block():
    from ovrsis.modeling.encoders.clip import _run_block
    model = tiny_segmentor()
    block = model.clip.visual.transformer.resblocks[-1]
    x = torch.randn(2, 9, model.clip.width)
    with torch.no_grad():
        assert torch.allclose(run_last_block(block, x, "vanilla", True, True), _run_block(block, x), atol=1e-5)


# ---------------------------------------------------------------------------------------- post-processing
def test_sub_prompts_take_the_max_probability():
    queries, owner = expand_queries(["road,parking lot", "building", "tree, forest"])
    assert queries == ["road", "parking lot", "building", "tree", "forest"]
    assert owner.tolist() == [0, 0, 1, 2, 2]
    logits = torch.tensor([0.10, 0.12, 0.05, 0.02, 0.11]).view(5, 1, 1)
    probs = class_probabilities(logits, owner, 3, 50.0)
    soft = torch.softmax(logits.view(-1) * 50, 0)
    assert torch.allclose(probs.view(-1), torch.stack([soft[:2].max(), soft[2], soft[3:].max()]))
    assert probs.view(-1).sum() < 1  # the max rule does not renormalise
    with pytest.raises(ValueError, match="empty vocabulary"):
        expand_queries([])


def test_probability_threshold_gives_background():
    probs = torch.tensor([[0.5, 0.2], [0.3, 0.35], [0.2, 0.45]]).view(3, 1, 2)
    out = threshold_to_background(probs, 0.4, bg_idx=1)
    assert out.argmax(0).view(-1).tolist() == [0, 2]
    out = threshold_to_background(probs, 0.5, bg_idx=1)
    assert out.argmax(0).view(-1).tolist() == [0, 1]  # 0.5 is not below 0.5; 0.45 is
    assert torch.equal(threshold_to_background(probs, 0.0, bg_idx=2), probs)
    with pytest.raises(ValueError, match="BG_IDX"):
        threshold_to_background(probs, 0.4, bg_idx=3)


def test_centred_padding_as_official():
    assert centred_padding(224, 224, 16) == (0, 0, 0, 0)
    assert centred_padding(201, 224, 16) == (0, 0, 3, 4)  # 7 rows: 3 on top, 4 below
    assert centred_padding(224, 190, 16) == (1, 1, 0, 0)


# ---------------------------------------------------------------------------------------- segmentor
def test_global_bias_removal_subtracts_lambda_times_cls_logits():
    model = tiny_segmentor("MODEL.TRAINING_FREE.BIAS_LAMBDA", 0.0)
    model.set_vocabulary(["water", "road", "building"])
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        text = model.text_features()
        plain = model.window_logits(images, text)
        model.bias_lambda = 0.3
        removed = model.window_logits(images, text)
        x, _ = model.clip.last_block_input(images)
        tokens = model.clip.project_tokens(run_last_block(model.clip.visual.transformer.resblocks[-1], x,
                                                          "segearth", False, False))
        cls_logits = F.normalize(tokens[:, 0], dim=-1) @ text.T
    assert torch.allclose(plain - removed, 0.3 * cls_logits[:, :, None, None].expand_as(plain), atol=1e-5)
    assert plain.shape == (2, 3, 32, 40)


def test_window_average_matches_mmseg_slide_loop():
    image = raw_image(50, 70)
    settings = TilingSettings(32, 16, 3, 0, 0)

    def score(tiles, names):  # position-dependent, nonlinear scores
        return torch.stack([tiles.mean(1) ** 2 / 255, tiles[:, 0] - tiles[:, 2]], 1)

    got = window_average(image, score, ["a", "b"], settings)
    preds, count = torch.zeros(2, 50, 70), torch.zeros(1, 50, 70)
    for hi in range(max(50 - 32 + 15, 0) // 16 + 1):  # mmseg/SegEarth-OV forward_slide
        for wi in range(max(70 - 32 + 15, 0) // 16 + 1):
            y2, x2 = min(hi * 16 + 32, 50), min(wi * 16 + 32, 70)
            y1, x1 = max(y2 - 32, 0), max(x2 - 32, 0)
            preds[:, y1:y2, x1:x2] += score(image[None, :, y1:y2, x1:x2], None)[0]
            count[:, y1:y2, x1:x2] += 1
    assert torch.allclose(got, preds / count, atol=1e-4)


def test_batch_of_images_equals_one_by_one_and_window_batching_is_exact():
    model = tiny_segmentor("MODEL.TRAINING_FREE.PROB_THD", 0.4, "MODEL.TRAINING_FREE.BG_IDX", 2)
    model.set_vocabulary(["water,river", "road", "background"])
    a, b = raw_image(48, 64, 1), raw_image(40, 30, 2)
    inputs = [{"image": a, "height": 60, "width": 80}, {"image": b}]
    both = model(inputs)
    one = [model([x])[0]["sem_seg"] for x in inputs]
    model.tiling = TilingSettings(32, 16, 1, 0, 64)
    single_windows = model([inputs[0]])[0]["sem_seg"]
    assert both[0]["sem_seg"].shape == (3, 60, 80) and both[1]["sem_seg"].shape == (3, 40, 30)
    for out, ref in zip(both, one):
        assert torch.allclose(out["sem_seg"], ref, atol=1e-6)
    assert torch.allclose(single_windows, one[0], atol=1e-5)
    probs = both[0]["sem_seg"]
    low = probs.max(0).values == 1  # one-hot pixels: below the threshold
    assert torch.all(probs.argmax(0)[low & (probs[2] == 1)] == 2)


def test_class_file_replaces_dataset_names_by_id(tmp_path):
    path = tmp_path / "cls.txt"
    path.write_text("road,parking lot\nbuilding\n")
    model = tiny_segmentor("MODEL.TRAINING_FREE.CLASS_FILE", str(path))
    model.set_vocabulary(["Impervious surfaces", "Building"])
    assert model.queries == ["road", "parking lot", "building"]
    with pytest.raises(ValueError, match="holds 2 classes but the dataset has 3"):
        model.set_vocabulary(["a", "b", "c"])


def test_segearth_configs_hold_the_official_settings():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    cfg = setup_cfg(str(REPO / "configs/segearth_ov/base.yaml"), ["MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", ""])
    assert list(cfg.MODEL.TEXT.TEMPLATES) == [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    assert cfg.MODEL.TRAINING_FREE.BIAS_LAMBDA == 0.3 and cfg.MODEL.TRAINING_FREE.LOGIT_SCALE == 50
    assert (cfg.TEST.TILED.TILE, cfg.TEST.TILED.STRIDE, cfg.TEST.TILED.LONG_SIDE) == (224, 112, 448)


# ---------------------------------------------------------------------------------------- SimFeatUp training
def test_simfeatup_training_loss_falls_and_checkpoint_loads(tmp_path):
    import numpy as np
    from PIL import Image

    from ovrsis.modeling.encoders.clip import CLIPEncoder
    from ovrsis.training_free.simfeatup_train import SimFeatUpTraining, build_optimizer, gaussian_blur, normalise

    assert torch.allclose(gaussian_blur(torch.full((1, 2, 7, 9), 3.0)), torch.full((1, 2, 7, 9), 3.0))  # normalised
    impulse = gaussian_blur(F.pad(torch.ones(1, 1, 1, 1), [4] * 4))[0, 0]
    assert torch.allclose(impulse[4, 2:7], torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 2) ** 1 * impulse[4, 4], atol=1e-6)
    torch.manual_seed(0)
    clip = CLIPEncoder("ovrsis-tiny-vit", image_size=64, finetune="none", guidance_layers=())
    model = SimFeatUpTraining(clip, n_jitters=1, max_pad=4, seed=0).train()
    optimizer = build_optimizer(model, 32, lr=3e-3)
    g = torch.Generator().manual_seed(0)
    images = normalise(torch.rand(2, 3, 32, 32, generator=g))
    losses = []
    for _ in range(16):  # the same jitters, projections and dropout every step: a fixed objective
        model.rng.seed(0)
        torch.manual_seed(0)
        losses.append(model.step(images, optimizer)["total"])
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.03 and losses[-1] < losses[0] - 0.05, losses
    assert next(clip.parameters()).grad is None  # CLIP stays frozen

    import importlib.util  # the command-line entry point, on generated images
    spec = importlib.util.spec_from_file_location("train_simfeatup", REPO / "tools" / "train_simfeatup.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 28, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "simfeatup.ckpt"
    steps = script.train(str(folder), str(out), opts=TINY[:6] + ["MODEL.DEVICE", "cpu"], steps=1, batch=2, size=32, workers=0)
    assert len(steps) == 1
    assert load_simfeatup_checkpoint(SimFeatUp(64, steps=3), str(out))


# methods-part2.md §S.1: dataset → (class file, prob_thd, bg_idx, λ) of SegEarth-OV's configs
OFFICIAL_SETTINGS = {
    "openearthmap": ("cls_openearthmap", 0.1, 0, 0.3), "loveda": ("cls_loveda", 0.3, 0, 0.3),
    "isaid": ("cls_isaid", 0.4, 0, 0.3), "potsdam": ("cls_potsdam", 0.1, 5, 0.3),
    "vaihingen": ("cls_vaihingen", 0.1, 5, 0.3), "uavid": ("cls_uavid", 0.3, 0, 0.3),
    "udd5": ("cls_udd5", 0.4, 4, 0.3), "vdd": ("cls_vdd", 0.3, 0, 0.3),
    "whu_aerial": ("cls_building", 0.6, 0, 0.3), "whu_sat2": ("cls_building", 0.7, 0, 0.3),
    "inria": ("cls_building", 0.6, 0, 0.3), "xbd_pre": ("cls_building", 0.0, 0, 0.0),
    "chn6cug": ("cls_road", 0.8, 0, 0.3), "deepglobe_road": ("cls_road", 0.7, 0, 0.3),
    "massachusetts_road": ("cls_road", 0.7, 0, 0.3), "spacenet_road": ("cls_road", 0.7, 0, 0.3),
    "wbssi": ("cls_water", 0.6, 0, 0.3),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_SETTINGS))
def test_dataset_configs_hold_the_official_settings(name):
    from ovrsis.data.benchmarks import RECORDS
    from ovrsis.data.vocabulary import load_class_names
    class_file, thd, bg, lam = OFFICIAL_SETTINGS[name]
    cfg = setup_cfg(str(REPO / f"configs/segearth_ov/{name}.yaml"), ["MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", ""])
    t = cfg.MODEL.TRAINING_FREE
    assert (t.PROB_THD, t.BG_IDX, t.BIAS_LAMBDA) == (thd, bg, lam)
    record = RECORDS[cfg.DATASETS.TEST[0]]
    lines = load_class_names(str(REPO / f"configs/segearth_ov/classes/{class_file}.txt"))
    assert list(record.prompt_classes) == lines  # the record prompts exactly the class file's lines
    assert record.protocol == "P-C" or record.foreground


def test_half_precision_autocast_stays_close_to_fp32():
    reference = tiny_segmentor()
    reference.set_vocabulary(["water", "road", "building"])
    image = raw_image(40, 48)
    expected = reference.query_logits(image, (40, 48))
    for precision in ("bf16", "fp16"):
        model = tiny_segmentor("MODEL.PRECISION", precision)
        model.set_vocabulary(["water", "road", "building"])
        got = model.query_logits(image, (40, 48))
        assert got.dtype == torch.float32
        assert (got - expected).abs().max() < 0.1 * expected.abs().max()
    with pytest.raises(ValueError, match="PRECISION"):
        tiny_segmentor("MODEL.PRECISION", "fp8")
