"""Per-image guidance: the split [cost ; guidance] layers equal the concatenated computation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ovrsis.modeling.aggregation.class_attention import ClassAggregation
from ovrsis.modeling.aggregation.spatial import SpatialAggregation
from ovrsis.modeling.decoders.guided_upsampling import GuidedUpStage
from ovrsis.modeling.guided_layers import guided_conv2d, guided_linear, linear_cost_term, linear_guidance_term


def _randomise(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def _grads(module: nn.Module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_guided_linear_equals_concatenation_with_broadcast_guidance():
    layer = nn.Linear(6 + 4, 5).double()
    _randomise(layer)
    x = torch.randn(2, 7, 3, 6, dtype=torch.float64)  # (B, L, T, C)
    g = torch.randn(2, 1, 3, 4, dtype=torch.float64)  # shared by the L locations
    got = guided_linear(layer, x, g)
    want = layer(torch.cat([x, g.expand(2, 7, 3, 4)], -1))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # the two halves add up to the same thing, and the bias is counted once
    torch.testing.assert_close(linear_cost_term(layer, x) + linear_guidance_term(layer, g), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(linear_guidance_term(layer, torch.zeros(1, 4, dtype=torch.float64)),
                               torch.zeros(1, 5, dtype=torch.float64), rtol=0, atol=0)
    plain = torch.randn(4, 10, dtype=torch.float64)
    assert torch.equal(guided_linear(layer, plain, None), layer(plain))  # no guidance: the plain layer


def test_guided_linear_gradients_equal_concatenation():
    layer = nn.Linear(6 + 4, 5).double()
    _randomise(layer)
    x = torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    guided_linear(layer, x, g).square().sum().backward()
    got = (_grads(layer), x.grad.clone(), g.grad.clone())
    layer.zero_grad()
    x.grad = g.grad = None
    layer(torch.cat([x, g.expand(4, 3, 4)], -1)).square().sum().backward()
    for a, b in zip(got[0].values(), _grads(layer).values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.testing.assert_close(got[1], x.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(got[2], g.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kernel,padding,bias", [(3, 1, False), (1, 0, True), (3, 0, True)])
def test_guided_conv2d_equals_concatenation_repeated_per_class(kernel, padding, bias):
    conv = nn.Conv2d(5 + 3, 4, kernel, padding=padding, bias=bias).double()
    _randomise(conv)
    b, t = 2, 3
    x = torch.randn(b * t, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(b, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    got = guided_conv2d(conv, x, g)
    got.square().sum().backward()
    got_grads = (_grads(conv), x.grad.clone(), g.grad.clone())
    conv.zero_grad()
    x.grad = g.grad = None
    want = conv(torch.cat([x, g.repeat_interleave(t, dim=0)], 1))
    want.square().sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, c in zip(got_grads[0].values(), _grads(conv).values()):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-9)
    torch.testing.assert_close(got_grads[1], x.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_grads[2], g.grad, rtol=0, atol=1e-10)


def test_guided_layers_reject_mismatches():
    layer = nn.Linear(10, 5)
    with pytest.raises(ValueError, match="10 input channels, got 6 cost \\+ 3 guidance"):
        guided_linear(layer, torch.randn(2, 6), torch.randn(2, 3))
    conv = nn.Conv2d(8, 4, 3, padding=1)
    with pytest.raises(ValueError, match="input channels"):
        guided_conv2d(conv, torch.randn(6, 5, 4, 4), torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match="whole number per image"):
        guided_conv2d(conv, torch.randn(5, 5, 4, 4), torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="groups=1"):
        guided_conv2d(nn.Conv2d(8, 4, 3, padding="same"), torch.randn(2, 5, 4, 4), torch.randn(2, 3, 4, 4))


def test_spatial_aggregation_per_image_guidance_equals_per_class_copies():
    """Guidance given once per image (B maps) = the old path, the same map copied for each class."""
    b, t, c, gd, h = 2, 3, 16, 8, 8
    agg = SpatialAggregation(c, gd, (h, h), num_heads=2, window=4).double()
    _randomise(agg)
    x = torch.randn(b, t, c, h, h, dtype=torch.float64)
    guidance = torch.randn(b, gd, h, h, dtype=torch.float64)
    got = agg(x, guidance)
    tokens = x.permute(0, 1, 3, 4, 2).reshape(b * t, h * h, c)
    g = agg.guidance_norm(guidance.flatten(2).transpose(1, 2))
    copies = g.repeat_interleave(t, dim=0)  # (B·T, HW, G): one copy per class map
    for block in agg.blocks:  # each copy is its own "image" of one class
        tokens = block(tokens, copies)
    want = tokens.view(b, t, h, h, c).permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("attention", ["linear", "full"])
def test_class_aggregation_broadcast_guidance_equals_per_location_copies(attention):
    b, t, c, gd, h = 2, 5, 16, 8, 4
    agg = ClassAggregation(c, gd, num_heads=2, attention=attention, pad_len=9).double().eval()
    _randomise(agg)
    x = torch.randn(b, t, c, h, h, dtype=torch.float64)
    text = torch.randn(b, t, gd, dtype=torch.float64)
    got = agg(x, text)
    tokens = x.view(b, t, c, h * h).permute(0, 3, 1, 2).reshape(b * h * h, t, c)
    copies = text.unsqueeze(1).expand(b, h * h, t, gd).reshape(b * h * h, t, gd)
    out = agg.attn(tokens, copies)  # (N, T, C) with a guidance row per location: the old call
    want = x + out.view(b, h, h, t, c).permute(0, 3, 4, 1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("num_sources,attention", [(1, False), (2, False), (3, True)])
def test_decoder_stage_equals_repeated_concatenation(num_sources, attention):
    b, t = 2, 3
    stage = GuidedUpStage(32, 16, guidance_ch=8, num_sources=num_sources, guidance_attention=attention).double()
    _randomise(stage)
    x = torch.randn(b * t, 32, 5, 5, dtype=torch.float64)
    guidance = [torch.randn(b, 8, 10, 10, dtype=torch.float64) for _ in range(num_sources)]
    got = stage(x, guidance)
    up = stage.up(x)
    if attention:
        cost = up.view(b, t, *up.shape[1:]).mean(dim=1)
        channel = stage.cconv(cost.mean(dim=(2, 3), keepdim=True))
        spatial = stage.sconv(cost.mean(dim=1, keepdim=True))
        guidance = [g * channel + g * spatial + g for g in guidance]
    want = stage.conv(torch.cat([up, torch.cat(guidance, 1).repeat_interleave(t, dim=0)], 1))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert got.shape == (b * t, 16, 10, 10)
