"""Activation checkpointing (MODEL.{CLIP,AGGREGATOR,DECODER}.CHECKPOINT_ACTIVATIONS): same loss and
gradients, fewer activations kept by autograd."""
from __future__ import annotations

import pytest
import torch

import ovrsis  # noqa: F401  (compat shims before detectron2)
import ovrsis.modeling  # noqa: F401
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from ovrsis.config import add_ovrsis_config
from ovrsis.modeling.checkpointing import checkpointed
from test_modeling import TINY

SWITCHES = ["MODEL.CLIP.CHECKPOINT_ACTIVATIONS", True, "MODEL.AGGREGATOR.CHECKPOINT_ACTIVATIONS", True,
            "MODEL.DECODER.CHECKPOINT_ACTIVATIONS", True]
OVRS = ["MODEL.COST.ROTATIONS", [0, 1, 2, 3], "MODEL.DECODER.GUIDANCE_ATTENTION", True]
CLASSES = ["water", "road", "building", "tree", "car"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs single-threaded (see conftest.py)."""


def _model(*extra):
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_list([*TINY, *extra])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.set_vocabulary(CLASSES, train=True)
    model.set_vocabulary(CLASSES)
    return model.train()


def _batch():
    g = torch.Generator().manual_seed(3)
    return [{"image": torch.randint(0, 256, (3, 64, 64), generator=g).float(),
             "sem_seg": torch.randint(0, len(CLASSES), (64, 64), generator=g)} for _ in range(2)]


def _loss_and_grads(model):
    loss = model(_batch())["loss_sem_seg"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _saved_bytes(model) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one training forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(_batch())
    return total


RSKT = ["MODEL.AGGREGATOR.NAME", "EfficientAggregator", "MODEL.AGGREGATOR.SPATIAL_REDUCTION", 2]


@pytest.mark.parametrize("method", [[], OVRS, RSKT], ids=["catseg", "ovrs", "rskt_efficient_aggregator"])
@pytest.mark.parametrize("finetune", ["attention", "full"])
def test_checkpointing_keeps_loss_and_gradients(method, finetune):
    extra = [*method, "MODEL.CLIP.FINETUNE", finetune]
    loss, grads = _loss_and_grads(_model(*extra))
    model = _model(*extra, *SWITCHES)
    assert model.clip.checkpoint_activations and model.aggregator.checkpoint_activations
    assert model.decoder.checkpoint_activations
    loss_ckpt, grads_ckpt = _loss_and_grads(model)
    assert torch.equal(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys()
    assert any(n.startswith("clip.visual.") for n in grads) and any(n.startswith("clip.transformer.") for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_keeps_fewer_activations_and_leaves_inference_alone():
    plain, ckpt = _model(), _model(*SWITCHES)
    assert _saved_bytes(ckpt) < 0.7 * _saved_bytes(plain)
    for name in ("CLIP", "AGGREGATOR", "DECODER"):  # each switch on its own saves something
        assert _saved_bytes(_model(f"MODEL.{name}.CHECKPOINT_ACTIVATIONS", True)) < _saved_bytes(plain)
    rskt = _saved_bytes(_model(*RSKT))  # the RSKT-Seg aggregator inherits the switch
    assert _saved_bytes(_model(*RSKT, "MODEL.AGGREGATOR.CHECKPOINT_ACTIVATIONS", True)) < rskt
    plain.eval(), ckpt.eval()
    x = [{"image": _batch()[0]["image"]}]
    with torch.no_grad():
        assert torch.equal(plain(x)[0]["sem_seg"], ckpt(x)[0]["sem_seg"])


def test_checkpointed_is_plain_call_without_autograd():
    calls = []

    def fn(a, b):
        calls.append(torch.is_grad_enabled())
        return (a * b).sin()

    a = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(checkpointed(fn, a, 2.0, enabled=True), (a.detach() * 2).sin())
    assert calls == [False]  # ran once: nothing to recompute without a backward pass
    out = checkpointed(fn, a, 2.0, enabled=True)
    out.sum().backward()
    assert len(calls) == 3  # forward, then the recomputation in backward
    torch.testing.assert_close(a.grad, 2 * (2 * a.detach()).cos())
    calls.clear()
    checkpointed(fn, a, 2.0, enabled=False).sum().backward()
    assert len(calls) == 1  # switched off: no recomputation
