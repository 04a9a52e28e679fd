"""Losses of the CAT-Seg family."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def per_class_bce(logits: torch.Tensor, targets: torch.Tensor, ignore_value: int,
                  ignore_as_negative: bool = True) -> torch.Tensor:
    """Binary cross-entropy over one-hot targets of every class.

    logits: (B, T, H, W) at the target resolution; targets: (B, H, W) class ids or ignore.
    ``ignore_as_negative=True`` is the official behaviour: ignore pixels get all-zero
    targets and still count (as negatives for every class). ``False`` drops them.
    """
    num_classes = logits.shape[1]
    valid = targets != ignore_value
    if bool(((targets < 0) | (targets >= num_classes))[valid].any()):
        bad = torch.unique(targets[valid & ((targets < 0) | (targets >= num_classes))]).tolist()
        raise ValueError(f"label ids {bad} outside the {num_classes}-class vocabulary (ignore={ignore_value})")
    onehot = F.one_hot(torch.where(valid, targets, 0).long(), num_classes).permute(0, 3, 1, 2).to(logits.dtype)
    onehot = onehot * valid.unsqueeze(1)
    if ignore_as_negative:
        return F.binary_cross_entropy_with_logits(logits, onehot)
    loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    weight = valid.unsqueeze(1).to(loss.dtype)
    return (loss * weight).sum() / (weight.sum() * num_classes).clamp(min=1)
