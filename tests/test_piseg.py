"""Pi-Seg: noise families, Text-SPM / Image-SPM formulas, the perturbation stage in the
segmentor (training only; evaluation bit-identical to CAT-Seg), parameter counts, checkpoint
keys, seeding, a loss that falls, and the training diagnostics hook.

Tiny models (the bundled ``ovrsis-tiny-vit`` CLIP, 64-d) for everything that runs; the full-size
models are only built for the parameter counts.
"""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

import ovrsis  # noqa: F401  (compat shims before detectron2)
import ovrsis.modeling  # noqa: F401
from detectron2.modeling import build_model

from ovrsis.checkpoint.official import CATSEG
from ovrsis.modeling.perturbation import ImageSPM, PerturbationStage, TextSPM, sample_noise_like
from ovrsis.modeling.perturbation.diagnostics import correlation_shift_sums, shift_stats
from test_modeling import CLASSES, SLIDE, count, image, make_cfg, tiny_model, to_official

PISEG = ["MODEL.PERTURBATION.TEXT.ENABLED", True, "MODEL.PERTURBATION.IMAGE.ENABLED", True]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def batch(n: int = 2, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    return [{"image": image(size, size, seed + i), "sem_seg": torch.randint(0, len(CLASSES), (size, size), generator=g)}
            for i in range(n)]


def learnable_batch(n: int = 4, size: int = 64):
    """Images whose label is the colour of a random axis-aligned split (a task the model can learn)."""
    g = torch.Generator().manual_seed(11)
    colours = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.float32)
    out = []
    for _ in range(n):
        a, b = torch.randperm(3, generator=g)[:2].tolist()
        cut = int(torch.randint(16, size - 16, (1,), generator=g))
        label = torch.full((size, size), a, dtype=torch.long)
        label[:, cut:] = b
        img = colours[label].permute(2, 0, 1) + 20 * torch.randn(3, size, size, generator=g)
        out.append({"image": img.clamp(0, 255).to(torch.uint8), "sem_seg": label})
    return out


# ============================================================================ noise families
# (family, kurtosis E[z^4]) — the variance of the sample variance is (kurtosis - 1) / n
FAMILIES = [("gaussian", 3.0), ("laplace", 6.0), ("uniform", 1.8), ("gumbel", 5.4), ("student_t", 4.0)]


@pytest.mark.parametrize("family,kurtosis", FAMILIES)
def test_noise_family_zero_mean_unit_variance(family, kurtosis):
    n = 400_000
    torch.manual_seed(0)
    z = sample_noise_like(torch.empty(n, dtype=torch.float64), family, df=10.0)  # t(10): kurtosis 3 + 6/6 = 4
    assert z.shape == (n,) and z.dtype == torch.float64
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1.0) < 5 * math.sqrt((kurtosis - 1) / n)


def test_student_t_df3_is_scaled_t():
    """df = 3 (the default) has no finite 4th moment: check the scale through the quartiles,
    t_0.75(3) = 0.764892 divided by sqrt(3 / 1)."""
    torch.manual_seed(0)
    z = sample_noise_like(torch.empty(400_000), "student_t", df=3.0)
    q = torch.quantile(z[:100_000], torch.tensor([0.25, 0.75]))
    assert q[1].item() == pytest.approx(0.764892 / math.sqrt(3.0), abs=0.01)
    assert q[0].item() == pytest.approx(-0.764892 / math.sqrt(3.0), abs=0.01)


def test_noise_shape_dtype_and_seeding():
    x = torch.empty(3, 5, 7)
    for family, _ in FAMILIES:
        torch.manual_seed(1)
        a = sample_noise_like(x, family)
        torch.manual_seed(1)
        b = sample_noise_like(x, family)
        assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
        assert not torch.equal(a, sample_noise_like(x, family))


@pytest.mark.parametrize("df", [2.0, 1.5, 0.0])
def test_student_t_df_must_exceed_two(df):
    with pytest.raises(ValueError, match="df > 2"):
        sample_noise_like(torch.empty(4), "student_t", df=df)
    with pytest.raises(ValueError, match="df > 2"):
        TextSPM(8, noise="student_t", student_t_df=df)
    with pytest.raises(ValueError, match="df > 2"):
        tiny_model("MODEL.PERTURBATION.IMAGE.ENABLED", True, "MODEL.PERTURBATION.IMAGE.NOISE", "student_t",
                   "MODEL.PERTURBATION.IMAGE.STUDENT_T_DF", df)


def test_unknown_noise_family_and_bad_reduction():
    with pytest.raises(ValueError, match="noise family"):
        tiny_model("MODEL.PERTURBATION.TEXT.ENABLED", True, "MODEL.PERTURBATION.TEXT.NOISE", "poisson")
    with pytest.raises(ValueError, match="REDUCTION"):
        ImageSPM(64, reduction=0)


# ============================================================================ Text-SPM / Image-SPM
def test_text_spm_formula_shape_and_init():
    torch.manual_seed(0)
    spm = TextSPM(512, init_std=0.02)
    assert spm.mu.shape == spm.sigma.shape == (1, 1, 1, 512)  # the official parameter shape
    for p in (spm.mu, spm.sigma):  # N(0, 0.02): sample std within 10 %
        assert abs(p.std().item() - 0.02) < 0.002 and abs(p.mean().item()) < 0.005
    text = torch.nn.functional.normalize(torch.randn(5, 2, 512), dim=-1)
    torch.manual_seed(3)
    out = spm(text)
    torch.manual_seed(3)
    z = torch.randn(5, 2, 512)
    assert out.shape == text.shape
    assert torch.equal(out, text + (spm.sigma.view(-1).abs() * z + spm.mu.view(-1)))
    with pytest.raises(ValueError, match="TextSPM expects"):
        spm(torch.randn(2, 5, 1, 512))


def test_image_spm_formula_by_hand():
    torch.manual_seed(0)
    spm = ImageSPM(16, reduction=2)
    assert spm.hidden == 8 and spm.attn.q.weight.shape == (8, 16) and spm.mu.weight.shape == (16, 8)
    dense, tokens = torch.randn(2, 16, 3, 4), torch.randn(5, 16)
    x = dense.flatten(2).transpose(1, 2)  # (B, 12, C)
    q, k, v = spm.attn.q(x), spm.attn.k(tokens), spm.attn.v(tokens)
    attn = torch.exp(q @ k.T) / torch.exp(q @ k.T).sum(-1, keepdim=True)  # softmax over classes, no 1/sqrt(d)
    h = attn @ v
    mu, sigma = spm.distribution(dense, tokens)
    assert mu.shape == sigma.shape == (2, 12, 16) and (sigma >= 0).all()
    assert torch.allclose(mu, spm.mu(h), atol=1e-6) and torch.allclose(sigma, spm.sigma(h).abs(), atol=1e-6)
    torch.manual_seed(5)
    eps = spm(dense, tokens)
    torch.manual_seed(5)
    z = torch.randn(2, 12, 16)
    assert eps.shape == dense.shape
    assert torch.allclose(eps, (sigma * z + mu).transpose(1, 2).reshape(2, 16, 3, 4), atol=1e-6)


@pytest.mark.parametrize("dim,reduction,expected", [(512, 1, 1_313_280), (768, 1, 2_952_960),
                                                    (512, 2, 657_152), (768, 2, 1_477_248)])
def test_image_spm_parameter_counts(dim, reduction, expected):
    assert count(ImageSPM(dim, reduction)) == expected  # spec P.4 / P.7
    assert count(TextSPM(dim)) == 2 * dim


def test_param_counts_full_size(skip_random_init):
    """Spec P.7: ViT-B 155,603,682 (26,430,177 trainable), ViT-L 436,681,442 (73,224,673);
    r = 2: 154,947,554 / 435,205,730."""
    b = build_model(make_cfg(*PISEG))
    assert (count(b), count(b, True)) == (155_603_682, 26_430_177)
    b2 = build_model(make_cfg(*PISEG, "MODEL.PERTURBATION.IMAGE.REDUCTION", 2))
    assert count(b2) == 154_947_554
    large = build_model(make_cfg(*PISEG, "MODEL.CLIP.ARCH", "ViT-L-14-336-quickgelu", "MODEL.CLIP.IMAGE_SIZE", 336,
                                 "MODEL.CLIP.GUIDANCE_LAYERS", [7, 15]))
    assert (count(large), count(large, True)) == (436_681_442, 73_224_673)
    assert count(large) - count(large.perturbation.image) + count(ImageSPM(768, 2)) == 435_205_730


from test_modeling import skip_random_init  # noqa: E402,F401  (fixture)


# ============================================================================ the stage in the segmentor
def _catseg_twin(piseg, *extra):
    """A CAT-Seg model carrying the Pi-Seg model's weights (the perturbation keys left out)."""
    catseg = tiny_model(*extra, seed=9)
    state = {k: v for k, v in piseg.state_dict().items() if not k.startswith("perturbation.")}
    assert set(state) == set(catseg.state_dict())
    catseg.load_state_dict(state)
    return catseg


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_eval_is_bit_identical_to_catseg(mode):
    extra = ["TEST.INFERENCE_MODE", mode, *SLIDE]
    piseg = tiny_model(*PISEG, *extra, seed=1)
    catseg = _catseg_twin(piseg, *extra)
    x = [{"image": image(72, 90, 4), "height": 72, "width": 90}]
    torch.manual_seed(0)
    a = piseg(x)[0]["sem_seg"]
    torch.manual_seed(123)  # a different random state changes nothing: no noise at evaluation
    b = piseg(x)[0]["sem_seg"]
    assert torch.equal(a, b) and torch.equal(a, catseg(x)[0]["sem_seg"])


def test_training_perturbs_and_eval_does_not():
    model = tiny_model(*PISEG, seed=1, train=True)
    clip_in = model._to_clip_input(torch.stack([model._normalize(x["image"]) for x in batch()]))
    torch.manual_seed(0)
    a = model.predict_logits(clip_in, CLASSES)
    torch.manual_seed(1)
    b = model.predict_logits(clip_in, CLASSES)
    assert not torch.allclose(a, b)  # different noise
    torch.manual_seed(0)
    assert torch.equal(a, model.predict_logits(clip_in, CLASSES))  # seeded noise is reproducible
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.predict_logits(clip_in, CLASSES), _catseg_twin(model).predict_logits(clip_in, CLASSES))


def test_text_noise_is_shared_by_the_batch():
    """Text-SPM draws Z once per step: two copies of one image get the same training logits;
    Image-SPM noise is per image, so with it they differ."""
    x = batch(1)[0]["image"]
    text_only = tiny_model("MODEL.PERTURBATION.TEXT.ENABLED", True, "MODEL.PERTURBATION.TEXT.INIT_STD", 0.5,
                           seed=1, train=True)
    clip_in = text_only._to_clip_input(text_only._normalize(x)[None]).expand(2, -1, -1, -1)
    with torch.no_grad():
        logits = text_only.predict_logits(clip_in, CLASSES)
        assert torch.equal(logits[0], logits[1])
        both = tiny_model(*PISEG, seed=1, train=True)
        logits = both.predict_logits(clip_in, CLASSES)
        assert not torch.allclose(logits[0], logits[1])


def test_aggregator_gets_clean_appearance_and_perturbed_text():
    """In training the appearance guidance is the clean CLIP map and the class guidance the
    perturbed, not re-normalised text (official P.2)."""
    model = tiny_model(*PISEG, seed=1, train=True)
    seen = {}
    handle = model.aggregator.register_forward_pre_hook(lambda m, args: seen.update(appearance=args[1], text=args[2]))
    clip_in = model._to_clip_input(torch.stack([model._normalize(x["image"]) for x in batch()]))
    with torch.no_grad():
        model.predict_logits(clip_in, CLASSES)
        clean = model.clip.encode_image(clip_in)[0]
        clean_text = model.clip.encode_text(CLASSES)
    handle.remove()
    assert torch.equal(seen["appearance"], clean)
    assert seen["text"].shape == (2, len(CLASSES), 1, clean_text.shape[-1])
    assert torch.equal(seen["text"][0], seen["text"][1])  # one draw for the batch
    norms = seen["text"].norm(dim=-1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)  # perturbed, not re-normalised
    assert torch.allclose(clean_text.norm(dim=-1), torch.ones(len(CLASSES), 1), atol=1e-5)


def test_guidance_stays_clean_and_image_spm_inputs_are_detached():
    stage = PerturbationStage(TextSPM(8), ImageSPM(8)).train()
    dense = torch.randn(2, 8, 3, 3, requires_grad=True)
    text = torch.randn(4, 1, 8, requires_grad=True)
    out = stage.perturb_image(dense, text)
    out.sum().backward()
    assert torch.equal(dense.grad, torch.ones_like(dense))  # x + eps: eps does not depend on x
    assert text.grad is None
    assert stage.image.mu.weight.grad is not None
    stage.eval()
    assert stage.perturb_image(dense, text) is dense and stage.perturb_text(text) is text


def test_gradients_reach_spm_in_training_not_in_eval():
    model = tiny_model(*PISEG, seed=2, train=True)
    model(batch())["loss_sem_seg"].backward()
    spm = dict(model.perturbation.named_parameters())
    assert set(spm) == {"text.mu", "text.sigma", "image.attn.q.weight", "image.attn.q.bias", "image.attn.k.weight",
                        "image.attn.k.bias", "image.attn.v.weight", "image.attn.v.bias", "image.mu.weight",
                        "image.mu.bias", "image.sigma.weight", "image.sigma.bias"}
    for name, p in spm.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.zero_grad(set_to_none=True)
    model.eval()
    clip_in = model._to_clip_input(torch.stack([model._normalize(x["image"]) for x in batch()]))
    model.predict_logits(clip_in, CLASSES).sum().backward()  # eval mode, autograd on
    assert all(p.grad is None for p in model.perturbation.parameters())
    assert model.aggregator.cost_embed is not None and any(
        p.grad is not None for p in model.aggregator.parameters())


def test_catseg_models_have_an_empty_stage():
    model = tiny_model(seed=0)
    assert count(model.perturbation) == 0 and not any(k.startswith("perturbation") for k in model.state_dict())


def test_seeded_training_is_reproducible_and_loss_falls():
    def run(seed: int, steps: int):
        model = tiny_model(*PISEG, seed=0, train=True)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        data = learnable_batch()
        torch.manual_seed(seed)
        losses = []
        for _ in range(steps):
            loss = model(data)["loss_sem_seg"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    a = run(0, 25)
    assert a[:4] == run(0, 4)  # same seed, same noise, same losses
    assert run(1, 3) != a[:3]
    assert sum(a[-5:]) / 5 < 0.7 * sum(a[:5]) / 5, a


# ============================================================================ official checkpoint keys
def test_official_piseg_keys_convert():
    model = tiny_model(*PISEG, seed=3)
    ours = model.state_dict()
    official = {
        "sem_seg_head.predictor.text_vpn.mu": ours["perturbation.text.mu"],
        "sem_seg_head.predictor.text_vpn.var": ours["perturbation.text.sigma"],
        **{f"sem_seg_head.predictor.image_vpn.cross_attn.fc_{n}.{t}": ours[f"perturbation.image.attn.{n}.{t}"]
           for n in "qkv" for t in ("weight", "bias")},
        **{f"sem_seg_head.predictor.image_vpn.fc_{o}.{t}": ours[f"perturbation.image.{n}.{t}"]
           for o, n in (("mean", "mu"), ("variance", "sigma")) for t in ("weight", "bias")},
    }
    converted, unmatched = CATSEG.convert(official)
    assert not unmatched
    assert set(converted) == {k for k in ours if k.startswith("perturbation.")}
    for k, v in converted.items():
        assert v.shape == ours[k].shape and torch.equal(v, ours[k])


def to_official_piseg(state):
    """ovrsis names → the official Pi-Seg checkpoint names (CAT-Seg's, with the aggregation layer parts
    called ``sptial_agg`` / ``class_agg`` and the SPMs ``image_vpn`` / ``text_vpn``)."""
    spm = {k: v for k, v in state.items() if k.startswith("perturbation.")}
    out = {}
    for k, v in to_official({k: v for k, v in state.items() if k not in spm}).items():
        k = re.sub(r"(transformer\.layers\.\d+)\.swin_block\.", r"\1.sptial_agg.", k)
        out[re.sub(r"(transformer\.layers\.\d+)\.attention\.", r"\1.class_agg.", k)] = v
    p = "sem_seg_head.predictor."
    names = {"text.mu": "text_vpn.mu", "text.sigma": "text_vpn.var", "image.mu": "image_vpn.fc_mean",
             "image.sigma": "image_vpn.fc_variance", "image.attn.q": "image_vpn.cross_attn.fc_q",
             "image.attn.k": "image_vpn.cross_attn.fc_k", "image.attn.v": "image_vpn.cross_attn.fc_v"}
    for k, v in spm.items():
        rest = k[len("perturbation."):]
        for ours, theirs in sorted(names.items(), key=lambda kv: -len(kv[0])):
            if rest == ours or rest.startswith(ours + "."):
                out[p + theirs + rest[len(ours):]] = v
                break
    return out


def test_official_piseg_checkpoint_loads(tmp_path, caplog):
    import logging
    from ovrsis.checkpoint import OVRSISCheckpointer
    source = tiny_model(*PISEG, seed=4)
    official = to_official_piseg(source.state_dict())
    assert len(official) == len(source.state_dict())
    assert any(".sptial_agg.block_1." in k for k in official) and any(".class_agg.attention.q." in k for k in official)
    official["sem_seg_head.predictor.transformer.layers.0.sptial_agg.block_2.attn_mask"] = torch.zeros(4, 16, 16)
    path = tmp_path / "piseg_official.pth"
    torch.save({"model": official}, path)
    target = tiny_model(*PISEG, seed=5)
    with caplog.at_level(logging.INFO, logger="ovrsis"):
        OVRSISCheckpointer(target).load(str(path))
    assert any("every model key loaded" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.name.startswith("ovrsis") and r.levelno >= logging.WARNING]
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k]), k
    x = [{"image": image(50, 70), "height": 50, "width": 70}]
    assert torch.equal(source(x)[0]["sem_seg"], target(x)[0]["sem_seg"])


# ============================================================================ diagnostics
def test_shift_stats_hand_computed():
    clean = torch.zeros(1, 2, 1, 2)
    clean[0, 0] = 1.0  # both pixels along e0
    perturbed = clean.clone()
    perturbed[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # pixel 1 turned to e1
    text = torch.eye(2)[:, None, :]  # class 0 = e0, class 1 = e1
    targets = torch.tensor([[[0, 1]]])
    s = shift_stats(correlation_shift_sums(clean, perturbed, text, targets, 255))
    # before: class0 [1, 1], class1 [0, 0]; after: class0 [1, 0], class1 [0, 1]; delta c0 [0, -1], c1 [0, 1]
    assert s["corr_clean"] == pytest.approx(0.5) and s["corr_perturbed"] == pytest.approx(0.5)
    assert s["delta_abs"] == pytest.approx(0.5)
    # GT pixels: (c0, px0) delta 0, (c1, px1) delta 1 → 0.5; off-GT: (c0, px1) -1, (c1, px0) 0 → -0.5
    assert s["gt_in_mean"] == pytest.approx(0.5) and s["non_gt_mean"] == pytest.approx(-0.5)
    assert s["gap"] == pytest.approx(1.0)
    ignored = shift_stats(correlation_shift_sums(clean, perturbed, text, torch.tensor([[[0, 255]]]), 255))
    assert ignored["gt_in_mean"] == pytest.approx(0.0) and ignored["non_gt_mean"] == pytest.approx(0.0)


def test_diagnostics_hook_writes_metrics(tmp_path, monkeypatch):
    from test_engine import QUICKSTART, tiny_opts
    from ovrsis.engine import Trainer, setup_cfg
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))
    opts = tiny_opts(tmp_path, 4, **{"MODEL.PERTURBATION.DIAGNOSTICS_PERIOD": 2, "SOLVER.IMS_PER_BATCH": 2})
    cfg = setup_cfg(QUICKSTART, opts + [str(x) for x in PISEG])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(tmp_path / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    logged = [r for r in records if "perturbation/gap" in r]
    assert logged, records
    keys = {k for r in logged for k in r if k.startswith("perturbation/")}
    assert keys == {f"perturbation/{k}" for k in ("corr_clean", "corr_perturbed", "delta_abs", "delta_ratio",
                                                  "gt_in_mean", "non_gt_mean", "gap", "align_ratio")}
    assert all(math.isfinite(r["perturbation/gap"]) and r["perturbation/delta_abs"] > 0 for r in logged)


# ============================================================================ cost (tools/model_stats.py)
def test_eval_gflops_equal_catseg():
    """The model-stats tool's eval-mode FLOP count is CAT-Seg's: the stage adds no operation."""
    import importlib
    import sys
    from pathlib import Path
    tools = str(Path(__file__).resolve().parents[1] / "tools")
    sys.path.insert(0, tools)
    try:
        model_stats = importlib.import_module("model_stats")
    finally:
        sys.path.remove(tools)
    piseg = tiny_model(*PISEG, seed=1)
    catseg = _catseg_twin(piseg)
    names = ["a", "b", "c"]
    f_piseg = model_stats.flop_stats(piseg, (64, 64), names)
    f_catseg = model_stats.flop_stats(catseg, (64, 64), names)
    assert f_piseg["per_image_gflops"] > 0
    assert f_piseg["per_image_gflops"] == f_catseg["per_image_gflops"]
    assert f_piseg["per_image_by_part_gflops"].get("perturbation", 0) == 0
