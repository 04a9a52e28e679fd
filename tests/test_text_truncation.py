"""The text tower stops at the latest end-of-text token: same embeddings and gradients as the
full 77-position forward the official code runs."""
from __future__ import annotations

import pytest
import torch

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.modeling.encoders.clip import CLIPEncoder, _run_block


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Single-threaded (see conftest.py)."""


def _full_length(clip: CLIPEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """Reference: every one of the context positions, as the official CLIP encode_text."""
    x = clip.token_embedding(tokens) + clip.positional_embedding
    mask = clip.causal_mask[: tokens.shape[1], : tokens.shape[1]].to(x.dtype)
    for block in clip.transformer.resblocks:
        x = _run_block(block, x, mask)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip.text_projection


def test_truncated_text_tower_equals_full_context():
    torch.manual_seed(0)
    clip = CLIPEncoder("ovrsis-tiny-vit", image_size=64, guidance_layers=(1, 2), finetune="attention").double()
    names = ["water", "a very long class name with many words in it", "car"]
    tokens = clip.tokenizer([f"A photo of a {n} in the scene" for n in names])
    assert tokens.shape[1] == 77 and int(tokens.argmax(-1).max()) < 30  # most positions are padding
    got = clip._encode_tokens(tokens)
    want = _full_length(clip, tokens)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # gradients reach the fine-tuned q/v weights identically
    got.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in clip.named_parameters() if p.grad is not None}
    clip.zero_grad()
    want.detach_()
    _full_length(clip, tokens).square().sum().backward()
    assert grads and grads.keys() == {n for n, p in clip.named_parameters() if p.grad is not None}
    for name, p in clip.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=1e-10, msg=name)


def test_truncation_keeps_a_full_length_prompt():
    torch.manual_seed(0)
    clip = CLIPEncoder("ovrsis-tiny-vit", image_size=64, guidance_layers=(1, 2)).double()
    tokens = clip.tokenizer(["word " * 100])  # truncated by the tokenizer: end-of-text at the last position
    assert int(tokens.argmax(-1)) == tokens.shape[1] - 1
    torch.testing.assert_close(clip._encode_tokens(tokens), _full_length(clip, tokens), rtol=0, atol=1e-12)
