"""SimFeatUp training (SegEarth-OV §3.2; likyoo/SimFeatUp ``featup/train_upsampler.py``, config
``upsampler_aid.yaml``): learn the JBU upsampler of a frozen CLIP from unlabelled images.

Per batch and for each of ``n_jitters`` random views (reflect pad 20, zoom up to 2×, flip):
upsample the frozen features of the image, jitter the upsampled map like the image, downsample it
back with the attention downsampler and compare with the frozen features of the jittered image
after a random projection to ``random_projection`` dims (a fresh Gaussian projection each time),
weighted by a predicted uncertainty (``mse / 2s² + log s``; hence negative losses); plus
``rec_img_weight`` × MSE between the jittered image and the content-retention net's image
reconstructed from the jittered upsampled features. NAdam, lr 1e-3; the gradient norm is clipped
to 1e-4 during the first 10 steps, as the official trainer does. Frozen features: proj(ln_post(X))
with X the input of CLIP's last block ("X-CLIP" in SimFeatUp).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.encoders.clip import CLIPEncoder
from .simfeatup import SimFeatUp, upsampling_steps

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SimFeatUp's ``featup.util.norm``: CLIP input and JBU guidance
IMAGENET_STD = (0.229, 0.224, 0.225)


def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders (kornia ``gaussian_blur2d(x, 5, (1, 1))``)."""
    coords = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, [size // 2] * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, kernel.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


class AttentionDownsampler(nn.Module):
    """Learned attention pooling of k×k patches (k = patch size) back to the feature grid
    (FeatUp ``downsamplers.AttentionDownsampler``, blurred input): per patch, logits from a
    linear map of each pixel's feature (Dropout 0.2), pixel dropout 0.2 in training, affine
    per-position re-weighting (w, b), softmax over the patch's pixels, weighted sum."""

    def __init__(self, dim: int, kernel_size: int, final_size: int, blur: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.final_size, self.dim, self.blur = kernel_size, final_size, dim, blur
        self.attention_net = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(dim, 1))
        self.w = nn.Parameter(torch.ones(kernel_size, kernel_size) + 0.01 * torch.randn(kernel_size, kernel_size))
        self.b = nn.Parameter(torch.zeros(kernel_size, kernel_size) + 0.01 * torch.randn(kernel_size, kernel_size))

    def forward(self, hr_feats: torch.Tensor) -> torch.Tensor:
        """(B, C, H, H) → (B, C, final, final)."""
        b, c, h, w = hr_feats.shape
        inputs = gaussian_blur(hr_feats) if self.blur else hr_feats
        k = self.kernel_size
        stride = (h - k) // (self.final_size - 1)
        patches = F.unfold(inputs, k, stride=stride).reshape(b, c, k * k, self.final_size, -1).permute(0, 3, 4, 2, 1)
        logits = self.attention_net(patches).squeeze(-1)  # (B, h', w', k²)
        if self.training:
            logits = logits * (torch.rand(*logits.shape[:3], 1, device=logits.device) > 0.2)
        attention = F.softmax(logits * self.w.flatten() + self.b.flatten(), dim=-1)
        return torch.einsum("bhwpc,bhwp->bchw", patches, attention)


class ScaleNet(nn.Module):
    """Predicted uncertainty s = exp(conv1×1(x) + 0.1), ≥ 1e-4 (weights initialised × 0.1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Conv2d(dim, 1, 1)
        with torch.no_grad():
            self.net.weight.mul_(0.1)
            self.net.bias.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net(x) + 0.1).clamp_min(1e-4)


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of (B, C, H, W), eps 1e-6."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - mean) / torch.sqrt(var + self.eps) + self.bias[:, None, None]


def content_retention_net(dim: int) -> nn.Sequential:
    """Content Retention Net: features → image (1×1 C→C, LayerNorm2d, GELU, 1×1 C→3, Tanh)."""
    return nn.Sequential(nn.Conv2d(dim, dim, 1), LayerNorm2d(dim), nn.GELU(), nn.Conv2d(dim, 3, 1), nn.Tanh())


@dataclass(frozen=True)
class Jitter:
    """One random view: reflect pad, optional zoom ≥ 1, crop at (top, left), optional flip."""

    top: int
    left: int
    zoom: float
    flip: bool

    @classmethod
    def sample(cls, rng: random.Random, max_pad: int, max_zoom: float, h: int, w: int) -> "Jitter":
        """As SimFeatUp's ``sample_transform(use_flips=True, ...)``."""
        flip = rng.random() > 0.5
        zoom = rng.random() * (max_zoom - 1) + 1 if rng.random() > 0.5 else 1.0
        top = rng.randrange(int((h + 2 * max_pad) * zoom) - h + 1)
        left = rng.randrange(int((w + 2 * max_pad) * zoom) - w + 1)
        return cls(top, left, zoom, flip)

    def apply(self, x: torch.Tensor, max_pad: int) -> torch.Tensor:
        """(B, C, H, W) → the same view of it, (B, C, H, W)."""
        h, w = x.shape[-2:]
        x = F.pad(x, [max_pad] * 4, mode="reflect")
        if self.zoom > 1.0:
            x = F.interpolate(x, scale_factor=self.zoom, mode="bilinear", align_corners=False)
        x = x[:, :, self.top:self.top + h, self.left:self.left + w]
        return torch.flip(x, [3]) if self.flip else x


class SimFeatUpTraining(nn.Module):
    """Frozen CLIP + the trained parts (upsampler, downsampler, uncertainty net, content
    retention net). :meth:`step` runs one optimisation step on a batch of normalised images."""

    def __init__(self, clip: CLIPEncoder, n_jitters: int = 5, max_pad: int = 20, max_zoom: float = 2.0,
                 random_projection: int = 30, rec_img_weight: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.clip = clip.eval()
        for p in self.clip.parameters():
            p.requires_grad_(False)
        dim, patch = clip.embed_dim, clip.patch_size
        self.upsampler = SimFeatUp(dim, steps=upsampling_steps(patch))
        self.downsampler: Optional[AttentionDownsampler] = None
        self.scale_net = ScaleNet(dim)
        self.projection_img = content_retention_net(dim)
        self.n_jitters, self.max_pad, self.max_zoom = n_jitters, max_pad, max_zoom
        self.random_projection, self.rec_img_weight = random_projection, rec_img_weight
        self.rng = random.Random(seed)
        self.global_step = 0

    def train(self, mode: bool = True) -> "SimFeatUpTraining":
        super().train(mode)
        self.clip.eval()  # frozen featurizer
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen proj(ln_post(X)) of the last block's input X: (B, 3, H, W) → (B, C, H/p, W/p)."""
        x, (gh, gw) = self.clip.last_block_input(images)
        tokens = self.clip.project_tokens(x)[:, 1:]
        return tokens.transpose(1, 2).reshape(images.shape[0], -1, gh, gw).float()

    def ensure_downsampler(self, image_size: int) -> AttentionDownsampler:
        """The attention downsampler for square crops of ``image_size`` (built on first use)."""
        if self.downsampler is None:
            p = self.clip.patch_size
            self.downsampler = AttentionDownsampler(self.clip.embed_dim, p, image_size // p).to(
                self.scale_net.net.weight.device)
        return self.downsampler

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("clip.")]

    def step(self, images: torch.Tensor, optimizer: torch.optim.Optimizer) -> Dict[str, float]:
        """One optimisation step on square normalised images (B, 3, S, S); losses summed over jitters."""
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"SimFeatUp training takes square crops, got {tuple(images.shape[-2:])}")
        optimizer.zero_grad(set_to_none=True)
        lr_feats = self.features(images)
        totals = {"rec": 0.0, "rec_img": 0.0, "total": 0.0}
        for _ in range(self.n_jitters):
            hr_feats = self.upsampler(lr_feats, images)
            if hr_feats.shape[-2:] != images.shape[-2:]:
                hr_feats = F.interpolate(hr_feats, images.shape[-2:], mode="bilinear", align_corners=False)
            jitter = Jitter.sample(self.rng, self.max_pad, self.max_zoom, *images.shape[-2:])
            with torch.no_grad():
                jit_img = jitter.apply(images, self.max_pad)
                lr_jit_feats = self.features(jit_img)
            proj = torch.randn(lr_feats.shape[0], lr_feats.shape[1], self.random_projection, device=images.device)
            proj = proj / proj.square().sum(1, keepdim=True).sqrt()
            hr_jit_feats = jitter.apply(hr_feats, self.max_pad)
            down = torch.einsum("bchw,bcd->bdhw", self.ensure_downsampler(images.shape[-1])(hr_jit_feats), proj)
            target = torch.einsum("bchw,bcd->bdhw", lr_jit_feats, proj)
            scales = self.scale_net(lr_jit_feats)
            rec = ((down - target).square() / (2 * scales ** 2) + scales.log()).mean() / self.n_jitters
            rec_img = (jit_img - self.projection_img(hr_jit_feats)).square().mean() / self.n_jitters
            loss = rec + self.rec_img_weight * rec_img
            loss.backward()
            totals["rec"] += rec.item()
            totals["rec_img"] += rec_img.item()
            totals["total"] += loss.item()
        if self.global_step < 10:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), 1e-4)
        optimizer.step()
        self.global_step += 1
        return totals


def build_optimizer(model: SimFeatUpTraining, image_size: int, lr: float = 1e-3) -> torch.optim.Optimizer:
    """NAdam over every trained part (official ``configure_optimizers``)."""
    model.ensure_downsampler(image_size)
    return torch.optim.NAdam(model.trainable_parameters(), lr=lr)


def normalise(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → normalised (ImageNet statistics by default, as SimFeatUp)."""
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


__all__ = ["AttentionDownsampler", "Jitter", "ScaleNet", "SimFeatUpTraining", "build_optimizer",
           "content_retention_net", "gaussian_blur", "normalise"]
