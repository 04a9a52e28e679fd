"""Pi-Seg's training diagnostics: how the perturbation moves the cost volume.

Official code LiBingyu01/Pi-Seg ``Decoder_Head.py`` (``corr_before``, ``corr_after``,
``delta_corr``: cosine cost of the clean / perturbed image features against the perturbed
text) and ``cat_seg_model.py::_compute_delta_corr_stats`` (Δ averaged over prompts, resized
bilinearly to the label map; mean Δ on each present ground-truth class's pixels vs. on the
other valid pixels of that class's map; ``gap`` and ``align_ratio``). Paper 002 Fig. 10.
All inputs are detached; nothing here touches the loss.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ..cost.volume import cosine_cost


def correlation_shift_sums(clean: torch.Tensor, perturbed: torch.Tensor, text: torch.Tensor,
                           targets: torch.Tensor, ignore_value: int) -> torch.Tensor:
    """Sums over a batch, to be added across processes, then turned into means by :func:`shift_stats`.

    clean, perturbed: dense features (B, C, h, w); text (T, P, C); targets (B, H, W) class
    indices of the T classes (``ignore_value`` ignored; other labels ≥ T count as negatives,
    as official). Returns float64 (9,): [Σ corr_clean, Σ corr_noisy, Σ|Δ|, Σ|corr_clean|,
    n_corr, Σ Δ on GT, n GT, Σ Δ off GT, n off GT].
    """
    if clean.shape != perturbed.shape or clean.dim() != 4 or targets.dim() != 3 or targets.shape[0] != clean.shape[0]:
        raise ValueError(f"correlation_shift_sums: clean/perturbed (B, C, h, w) and targets (B, H, W) expected, "
                         f"got {tuple(clean.shape)}, {tuple(perturbed.shape)}, {tuple(targets.shape)}")
    before = cosine_cost(clean.float(), text.float())  # (B, P, T, h, w)
    after = cosine_cost(perturbed.float(), text.float())
    delta = after - before
    t = delta.shape[2]
    delta_map = F.interpolate(delta.mean(dim=1), size=targets.shape[-2:], mode="bilinear", align_corners=False)
    valid = (targets != ignore_value) & (targets >= 0)  # -1: the image's no-data pixels (NO_DATA_LABEL)
    labels = torch.where(valid, targets.long(), torch.full_like(targets.long(), t)).clamp(0, t)
    on_gt = F.one_hot(labels, t + 1)[..., :t].permute(0, 3, 1, 2).bool()  # (B, T, H, W)
    present = on_gt.flatten(2).any(dim=-1)[..., None, None]  # (B, T, 1, 1)
    off_gt = valid[:, None] & ~on_gt & present
    return torch.stack([x.double() for x in (
        before.sum(), after.sum(), delta.abs().sum(), before.abs().sum(), before.new_tensor(float(before.numel())),
        delta_map[on_gt].sum(), on_gt.sum(), delta_map[off_gt].sum(), off_gt.sum())])


def shift_stats(sums: torch.Tensor) -> Dict[str, float]:
    """Means from :func:`correlation_shift_sums`: ``corr_clean``, ``corr_perturbed`` (mean cost
    without / with the image perturbation), ``delta_abs`` (mean |Δ|), ``delta_ratio`` (mean |Δ|
    / mean |corr_clean|, official), ``gt_in_mean``, ``non_gt_mean``, ``gap`` (their difference),
    ``align_ratio`` (gt_in_mean / (|non_gt_mean| + 1e-6), official)."""
    s = [float(x) for x in sums]
    n = max(s[4], 1.0)
    gt_in = s[5] / max(s[6], 1.0)
    non_gt = s[7] / max(s[8], 1.0)
    return {
        "corr_clean": s[0] / n, "corr_perturbed": s[1] / n, "delta_abs": s[2] / n,
        "delta_ratio": (s[2] / n) / (s[3] / n + 1e-6),
        "gt_in_mean": gt_in, "non_gt_mean": non_gt, "gap": gt_in - non_gt,
        "align_ratio": gt_in / (abs(non_gt) + 1e-6),
    }
