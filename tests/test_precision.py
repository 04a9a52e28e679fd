"""MODEL.PRECISION (fp32 | bf16 | fp16) for every method, on the CPU: the key, training under
each precision, whole-image scores and labels against fp32, the fp16 step's gradient scaler.

Every method config in its tiny test form (the TINY lists of the method test modules) is first
trained for a few dozen fp32 steps on a seeded colour-stripe scene (random tiny models score
every class alike, so their labels are ties that say nothing about precision); the same
initialisation is trained in bf16 and must lose like fp32. The fp32-trained weights then score
a seeded scene under bf16 and fp16: scores within TOLERANCE of fp32, labels equal on ≥ 99 % of
the pixels the fp32 model decides (top-two margin above the format's resolution; at least
MIN_DECIDED of the image).
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, List

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.engine import Trainer, setup_cfg
from ovrsis.engine.trainer import PrecisionTrainer, with_full_model_clipping
from ovrsis.errors import ConfigError
from ovrsis.modeling.precision import precision_from_config
from test_aeroseg import AEROSEG
from test_gsnet import GSNET_TINY
from test_modeling import TINY, make_cfg, tiny_model
from test_ovrs import OVRS
from test_piseg import PISEG
from test_rsktseg import RSKT_TINY
from test_training_free import tiny_segmentor

# max |score − fp32 score| (sigmoid / softmax scores in [0, 1]) of the trained tiny models;
# measured maxima are about a third of these (docs/performance.md, "Precision")
TOLERANCE = {"bf16": 0.03, "fp16": 0.005}
RESOLUTION = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}  # unit roundoff: smaller fp32 margins are ties
MIN_DECIDED = 0.3
# per method: (options, learning rate, CLIP lr multiplier) that make the tiny model decisive in 30 steps
METHODS = {
    "catseg": ([], 2e-3, 1.0),
    "ovrs": (OVRS, 2e-3, 1.0),
    "piseg": (PISEG, 2e-3, 1.0),
    "gsnet": (GSNET_TINY, 2e-3, 1.0),
    "rsktseg": (RSKT_TINY, 2e-3, 1.0),
    "aeroseg": (AEROSEG, 1e-3, 0.01),
}
STEPS = 30
COLOURS = torch.tensor([[200.0, 40, 40], [40, 200, 40], [40, 40, 200]])


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


def stripe_scene(size: int, seed: int):
    """(3, size, size) image of 16-px cells coloured by their class (3 classes) plus noise, and its labels."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 3, (size // 16, size // 16), generator=g)
    labels = cells.repeat_interleave(16, 0).repeat_interleave(16, 1)
    image = COLOURS[labels].permute(2, 0, 1) + torch.randn(3, size, size, generator=g) * 20
    return image.clamp(0, 255), labels


def train(opts: List, lr: float, clip_mult: float, precision: str) -> tuple:
    """A tiny model (seed 0) trained STEPS steps on two stripe scenes with the trainer's optimizer."""
    model = tiny_model(*opts, "MODEL.PRECISION", precision, train=True)
    cfg = make_cfg(*TINY, *opts, "SOLVER.BASE_LR", lr, "SOLVER.CLIP_MULTIPLIER", clip_mult)
    optimizer = Trainer.build_optimizer(cfg, model)
    batch = [dict(zip(("image", "sem_seg"), stripe_scene(64, seed))) for seed in (0, 1)]
    losses = []
    for _ in range(STEPS):
        loss_dict = model(batch)
        assert all(v.dtype == torch.float32 for v in loss_dict.values())
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), losses


def compare_to_fp32(model: nn.Module, inputs: List[Dict]) -> Dict[str, tuple]:
    """{precision: (max |Δ score|, agreement on decided pixels, decided fraction)} vs fp32."""
    model.precision = "fp32"
    with torch.no_grad():
        reference = model(inputs)[0]["sem_seg"]
    top2 = reference.topk(2, dim=0).values
    results = {}
    for precision in ("bf16", "fp16"):
        model.precision = precision
        with torch.no_grad():
            scores = model(inputs)[0]["sem_seg"]
        assert scores.dtype == torch.float32 and scores.shape == reference.shape
        decided = (top2[0] - top2[1]) > RESOLUTION[precision]
        agree = (scores.argmax(0) == reference.argmax(0))[decided].float().mean().item()
        results[precision] = ((scores - reference).abs().max().item(), agree, decided.float().mean().item())
    model.precision = "fp32"
    return results


def check(results: Dict[str, tuple]) -> None:
    for precision, (diff, agree, decided) in results.items():
        assert diff <= TOLERANCE[precision], (precision, results)
        assert decided >= MIN_DECIDED and agree >= 0.99, (precision, results)


@pytest.mark.parametrize("method", list(METHODS))
def test_bf16_training_and_half_precision_scores(method):
    opts, lr, clip_mult = METHODS[method]
    model, fp32_losses = train(opts, lr, clip_mult, "fp32")
    _, bf16_losses = train(opts, lr, clip_mult, "bf16")
    assert all(math.isfinite(v) for v in bf16_losses)
    fall = {name: losses[0] - sum(losses[-5:]) / 5 for name, losses in (("fp32", fp32_losses), ("bf16", bf16_losses))}
    assert abs(bf16_losses[0] - fp32_losses[0]) < 0.01 * fp32_losses[0]  # same weights, same batch
    assert fall["fp32"] > 0.03 and fall["bf16"] > 0.5 * fall["fp32"], (fall, fp32_losses[::5], bf16_losses[::5])
    check(compare_to_fp32(model, [{"image": stripe_scene(64, 99)[0]}]))


def test_training_free_half_precision_scores():
    model = tiny_segmentor()
    model.set_vocabulary(["water", "road", "building"])
    check(compare_to_fp32(model, [{"image": stripe_scene(64, 99)[0]}]))


def test_fp32_model_ignores_an_outer_autocast():
    model = tiny_model().eval()
    inputs = [{"image": stripe_scene(64, 5)[0]}]
    with torch.no_grad():
        expected = model(inputs)[0]["sem_seg"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(inputs)[0]["sem_seg"]
    assert torch.equal(got, expected)


# ------------------------------------------------------------------------------------- the keys
def test_old_precision_key_names_the_new_one():
    with pytest.raises(ConfigError, match="MODEL.TRAINING_FREE.PRECISION was renamed to MODEL.PRECISION"):
        setup_cfg("", ["MODEL.TRAINING_FREE.PRECISION", "bf16"])
    with pytest.raises(ConfigError, match=r"MODEL.PRECISION must be one of \['fp32', 'bf16', 'fp16'\], got 'fp8'"):
        setup_cfg("", ["MODEL.PRECISION", "fp8"])


@pytest.mark.parametrize("precision,expected", [("fp32", "fp16"), ("fp16", "fp16"), ("bf16", ConfigError)])
def test_solver_amp_reads_as_fp16(precision, expected):
    cfg = make_cfg("SOLVER.AMP.ENABLED", True, "MODEL.PRECISION", precision)
    context = pytest.raises(ConfigError, match="contradicts") if expected is ConfigError else contextlib.nullcontext()
    with context:
        assert precision_from_config(cfg) == expected


# ------------------------------------------------------------------------------ the fp16 step
class Linear(nn.Module):
    """loss = w · c: the gradient of w is c, known exactly."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros_like(c))
        self.register_buffer("c", c)

    def forward(self, batch) -> Dict[str, torch.Tensor]:
        return {"loss": (self.w * self.c).sum()}


@pytest.mark.parametrize("norm", [0.5, 3.0])  # gradient norm below / above the clip value 1
def test_fp16_step_clips_the_unscaled_gradient(norm):
    c = torch.tensor([3.0, 4.0]) * norm / 5
    model = Linear(c)
    optimizer = with_full_model_clipping(torch.optim.SGD, 1.0, 2.0)(model.parameters(), lr=0.1)
    trainer = PrecisionTrainer(model, [None] * 3, optimizer, "fp16", "cpu")
    assert trainer.grad_scaler.get_scale() == 2.0 ** 16
    with EventStorage(0):
        trainer.run_step()
    # clipped unscaled: −lr · c · min(1, 1/|c|); clipping the scaled gradient would give 2^16 times less
    assert torch.allclose(model.w.detach(), -0.1 * c * min(1.0, 1.0 / norm))
    assert "grad_scaler" in trainer.state_dict()


def test_fp16_trainer_step_on_a_tiny_model():
    model = tiny_model("MODEL.PRECISION", "fp16", train=True)
    optimizer = Trainer.build_optimizer(make_cfg(*TINY), model)
    batch = [dict(zip(("image", "sem_seg"), stripe_scene(64, 0)))]
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    trainer = PrecisionTrainer(model, [batch] * 2, optimizer, "fp16", "cpu")
    with EventStorage(0):
        trainer.run_step()
    after = [p for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert all(p.dtype == torch.float32 for p in after)  # weights stay fp32
