"""OVRS: batched multi-rotation cost, rotation equivariance, attention-aware upsampling, configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ovrsis  # noqa: F401
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import ovrsis.modeling  # noqa: F401
from ovrsis.checkpoint import OVRSISCheckpointer
from ovrsis.config import add_ovrsis_config
from ovrsis.engine import Trainer, setup_cfg
from ovrsis.modeling.cost.rotation import check_rotations, fuse_rotation_costs, rotate_batch, unrotate
from ovrsis.modeling.cost.volume import cosine_cost
from test_modeling import image, tiny_model, to_official

REPO = Path(__file__).resolve().parents[1]
ROTATIONS = ["MODEL.COST.ROTATIONS", [0, 1, 2, 3]]
OVRS = [*ROTATIONS, "MODEL.DECODER.GUIDANCE_ATTENTION", True]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


def clip_input(model, seed: int = 0) -> torch.Tensor:
    size = model.clip.image_size
    return model._normalize(image(size, size, seed)).unsqueeze(0)


@pytest.mark.parametrize("config, total", [
    ("configs/ovrs/vitb16_384.yaml", 154_312_086),
    ("configs/ovrs/vitb16_384_rotation_only.yaml", 154_308_194),
    ("configs/ovrs/vitb16_384_attention_only.yaml", 154_293_270),
])
def test_official_parameter_counts(config, total, monkeypatch):
    monkeypatch.setattr(torch.Tensor, "normal_", lambda self, *a, **k: self)  # counts need no init
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda self, *a, **k: self)
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_file(str(REPO / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CLIP.PRETRAINED", ""])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == total


def test_batched_rotations_equal_sequential_encoding():
    model = tiny_model(*OVRS).eval()
    x = clip_input(model)
    text = model.clip.encode_text(["water", "road", "building"])
    with torch.no_grad():
        cost, dense, taps = model.cost_volume(x, text)
        per_rotation = []
        for k in (0, 1, 2, 3):  # the official way: one encoder call per rotation
            d, _ = model.clip.encode_image(torch.rot90(x, k, dims=(2, 3)))
            per_rotation.append(torch.rot90(F.normalize(d, dim=1), -k, dims=(2, 3)))
        reference = torch.cat([cosine_cost(d, text) for d in per_rotation], dim=1)  # rotation-major channels
        d0, taps0 = model.clip.encode_image(x)
    assert cost.shape == (1, 4, 3, 8, 8)
    torch.testing.assert_close(cost, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense, d0, atol=1e-5, rtol=1e-5)  # guidance from the unrotated pass
    for a, b in zip(taps, taps0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_mean_fusion_is_rotation_equivariant():
    """Rotating the input by 90° rotates the mean-fused cost map by 90° (the rotation group
    is closed, so the fused cost only permutes its terms)."""
    model = tiny_model(*ROTATIONS, "MODEL.COST.ROTATION_FUSION", "mean").eval()
    x = clip_input(model, seed=3)
    text = model.clip.encode_text(["water", "road", "building"])
    with torch.no_grad():
        cost, _, _ = model.cost_volume(x, text)
        cost_rot, _, _ = model.cost_volume(torch.rot90(x, 1, dims=(2, 3)), text)
    assert cost.shape == (1, 1, 3, 8, 8)
    torch.testing.assert_close(cost_rot, torch.rot90(cost, 1, dims=(-2, -1)), atol=1e-5, rtol=1e-5)
    # the stacked (official) fusion is not equivariant: its channels are tied to rotations
    assert model.aggregator.cost_embed.in_channels == 1


def test_rotation_helpers():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    batch = rotate_batch(x, (0, 1, 2, 3))
    assert batch.shape == (8, 1, 3, 3)
    back = unrotate(batch, (0, 1, 2, 3), 2)
    assert all(torch.equal(back[:, r], x) for r in range(4))
    cost = torch.randn(2, 4, 3, 5, 6, 6)
    assert fuse_rotation_costs(cost, "stack").shape == (2, 12, 5, 6, 6)
    assert torch.equal(fuse_rotation_costs(cost, "stack")[:, 3:6], cost[:, 1])  # rotation-major
    assert fuse_rotation_costs(cost, "mean").shape == (2, 3, 5, 6, 6)
    for bad in ([1, 0], [0, 0], [0, 4], []):
        with pytest.raises(ValueError, match="ROTATIONS"):
            check_rotations(bad, "stack")
    with pytest.raises(ValueError, match="ROTATION_FUSION"):
        check_rotations([0, 1], "max")


def test_attention_aware_upsampling_matches_formula():
    model = tiny_model(*OVRS)
    stage = model.decoder.stages[0]
    torch.manual_seed(0)
    for p in stage.parameters():
        p.data.normal_(0, 0.2)
    x = torch.randn(2 * 3, 32, 8, 8)  # B=2 images, T=3 classes
    g = torch.randn(2, 16, 16, 16)
    up = stage.up(x)
    mean_cost = up.view(2, 3, *up.shape[1:]).mean(1)
    ca = F.conv2d(mean_cost.mean((2, 3), keepdim=True), stage.cconv.weight, stage.cconv.bias)
    sa = F.conv2d(mean_cost.mean(1, keepdim=True), stage.sconv.weight, stage.sconv.bias)
    g_att = g * ca + g * sa + g  # no sigmoid, residual guidance (official)
    expected = stage.conv(torch.cat([up, g_att.repeat_interleave(3, 0)], 1))
    torch.testing.assert_close(stage(x, [g]), expected)


def test_eval_deterministic_and_official_checkpoint_roundtrip(tmp_path):
    source = tiny_model(*OVRS, seed=1).eval()
    path = tmp_path / "ovrs_official.pth"
    torch.save({"model": to_official(source.state_dict())}, path)
    target = tiny_model(*OVRS, seed=2).eval()
    OVRSISCheckpointer(target).load(str(path))
    inp = [{"image": image(80, 64, 5), "height": 80, "width": 64}]
    with torch.no_grad():
        a = source(inp)[0]["sem_seg"]
        b = target(inp)[0]["sem_seg"]
        c = target(inp)[0]["sem_seg"]
    assert a.shape == (3, 80, 64)
    assert torch.equal(b, c)
    torch.testing.assert_close(a, b)


def test_short_training_run_loss_falls(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))
    opts = ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", 150, "SOLVER.IMS_PER_BATCH", 8,
            "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.STEPS", (), "SOLVER.BASE_LR", 0.001,
            "SOLVER.CHECKPOINT_PERIOD", 10 ** 6, "TEST.EVAL_PERIOD", 0, "DATALOADER.NUM_WORKERS", 0,
            "DATASETS.SYNTHETIC.NUM_TRAIN", 16, "DATASETS.SYNTHETIC.NUM_VAL", 2, "INPUT.CROP.SIZE", (96, 96), *OVRS]
    trainer = Trainer(setup_cfg(str(REPO / "configs/quickstart.yaml"), [str(o) for o in opts]))
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(tmp_path / "metrics.json") as f:
        losses = [r["total_loss"] for r in map(json.loads, f) if "total_loss" in r]
    assert losses[-1] < 0.8 * losses[0], losses
