"""Multi-rotation cost volume (OVRS, RSKT-Seg, AerOSeg).

Remote-sensing scenes have no canonical "up". The CLIP input is rotated by k·90°, all
rotations go through the encoder as **one batch** (the official code makes one call per
rotation), each dense map is L2-normalised and rotated back, and the per-rotation costs are
fused: ``stack`` puts them on the channel axis (rotation-major, then prompt template: the
official OVRS layout feeding a 7×7 conv with R·P inputs) and ``mean`` averages them, which
makes the fused cost rotation-equivariant when the rotations form the full group.
"""
from __future__ import annotations

from typing import Sequence

import torch

ROTATION_FUSIONS = ("stack", "mean")


def check_rotations(rotations: Sequence[int], fusion: str) -> tuple:
    """Validate quarter-turn counts; the unrotated pass (0) must come first (it gives guidance)."""
    rotations = tuple(int(k) for k in rotations)
    if not rotations or rotations[0] != 0 or len(set(rotations)) != len(rotations) or any(not 0 <= k < 4 for k in rotations):
        raise ValueError(f"MODEL.COST.ROTATIONS must be distinct quarter turns in 0..3 starting with 0, got {list(rotations)}")
    if fusion not in ROTATION_FUSIONS:
        raise ValueError(f"MODEL.COST.ROTATION_FUSION must be one of {ROTATION_FUSIONS}, got {fusion!r}")
    return rotations


def rotate_batch(images: torch.Tensor, rotations: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) → (R·B, C, H, W), rotation-major: one encoder call for all rotations."""
    if len(rotations) == 1 and rotations[0] == 0:
        return images
    return torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in rotations], dim=0)


def unrotate(features: torch.Tensor, rotations: Sequence[int], batch: int) -> torch.Tensor:
    """(R·B, C, h, w) rotation-major → (B, R, C, h, w), each map rotated back to the input frame."""
    chunks = features.split(batch, dim=0)
    return torch.stack([torch.rot90(c, -k, dims=(2, 3)) for c, k in zip(chunks, rotations)], dim=1)


def fuse_rotation_costs(cost: torch.Tensor, fusion: str) -> torch.Tensor:
    """(B, R, P, T, h, w) → (B, R·P, T, h, w) for ``stack`` or (B, P, T, h, w) for ``mean``."""
    if fusion == "mean":
        return cost.mean(dim=1)
    return cost.flatten(1, 2)


def fused_channels(num_rotations: int, num_templates: int, fusion: str) -> int:
    """Input channels of the cost embedding for a rotation fusion."""
    return num_rotations * num_templates if fusion == "stack" else num_templates
