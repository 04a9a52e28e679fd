"""The cost gate's tests: the cost-fusion interface (shapes in, shapes out), the properties every
cost embedding has (classes embedded independently: class permutation equivariance; images
independent: batch equivariance), the gate's initial state, and the config keys through IMPORTS."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import ovrsis  # noqa: F401
from ovrsis.imports import import_modules

PROJECT = Path(__file__).resolve().parents[1]
REPO = PROJECT.parents[1]
CONFIG = PROJECT / "configs" / "cost_gate.yaml"

import_modules([str(PROJECT / "cost_gate")])  # as IMPORTS does: the package `cost_gate`
from cost_gate import CostGateFusion  # noqa: E402


def costs(channels, b=2, t=5, g=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, t, g, g, generator=gen) for c in channels]


@pytest.mark.parametrize("channels", [[1], [4], [4, 1], [2, 3, 1]])
@pytest.mark.parametrize("t", [1, 5])
def test_costs_in_embedding_out(channels, t):
    fusion = CostGateFusion(channels, hidden_dim=8)
    out = fusion(costs(channels, t=t))
    assert out.shape == (2, t, 8, 6, 6) and torch.isfinite(out).all()


@pytest.mark.parametrize("channels", [[1], [4, 1]])
def test_classes_and_images_are_embedded_independently(channels):
    """Permuting the classes (or the images) permutes the embedding the same way."""
    torch.manual_seed(0)
    fusion = CostGateFusion(channels, hidden_dim=8)
    torch.nn.init.normal_(fusion.gate[2].weight)  # a gate that depends on the cost
    inputs = costs(channels)
    out = fusion(inputs)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(fusion([c[:, :, perm] for c in inputs]), out[:, perm])
    torch.testing.assert_close(fusion([c.flip(0) for c in inputs]), out.flip(0))


def test_gates_start_at_sigmoid_of_the_initial_bias_and_learn():
    fusion = CostGateFusion([3], hidden_dim=8, init_bias=2.0)
    inputs = costs([3])
    plain = torch.nn.functional.conv2d(inputs[0].transpose(1, 2).flatten(0, 1), fusion.embed.weight,
                                       fusion.embed.bias, padding=3).view(2, 5, 8, 6, 6)
    torch.testing.assert_close(fusion(inputs), plain * torch.sigmoid(torch.tensor(2.0)))
    fusion(inputs).square().mean().backward()
    assert fusion.gate[2].weight.grad.abs().sum() > 0 and fusion.gate[0].weight.grad is not None


def test_wrong_cost_channels_are_an_error():
    with pytest.raises(ValueError, match="built for 4 cost channels, got 5"):
        CostGateFusion([4], hidden_dim=8)(costs([5]))


def test_config_keys_and_fusion_through_imports(monkeypatch, tmp_path):
    from detectron2.modeling import build_model

    from ovrsis.engine import setup_cfg

    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)  # IMPORTS in the config is relative to the repository root
    cfg = setup_cfg(str(CONFIG), ["MODEL.DEVICE", "cpu", "MODEL.COST_GATE.HIDDEN", "4"])
    assert cfg.IMPORTS == [str(PROJECT / "cost_gate")] and os.path.isabs(cfg.IMPORTS[0])
    fusion = build_model(cfg).aggregator.cost_embed
    assert isinstance(fusion, CostGateFusion) and fusion.gate[0].out_features == 4
    assert fusion.embed.out_channels == cfg.MODEL.AGGREGATOR.HIDDEN_DIM
