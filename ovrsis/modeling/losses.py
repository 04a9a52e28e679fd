"""Losses of the CAT-Seg family."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.mappers import NO_DATA_LABEL


def per_class_bce(logits: torch.Tensor, targets: torch.Tensor, ignore_value: int,
                  ignore_as_negative: bool = True) -> torch.Tensor:
    """Binary cross-entropy over one-hot targets of every class.

    logits: (B, T, H, W) at the target resolution; targets: (B, H, W) class ids, ``ignore_value``,
    or :data:`~ovrsis.data.mappers.NO_DATA_LABEL` (-1) at the image's no-data pixels.
    ``ignore_as_negative=True`` is the official behaviour: ignore pixels get all-zero targets and
    still count (as negatives for every class). ``False`` drops them. No-data pixels never count:
    the mean runs over the other pixels (identical to the official loss when there are none).
    """
    num_classes = logits.shape[1]
    nodata = targets == NO_DATA_LABEL
    valid = (targets != ignore_value) & ~nodata
    outside = (targets < 0) | (targets >= num_classes)
    if bool(outside[valid].any()):
        bad = torch.unique(targets[valid & outside]).tolist()
        raise ValueError(f"label ids {bad} outside the {num_classes}-class vocabulary (ignore={ignore_value})")
    onehot = F.one_hot(torch.where(valid, targets, 0).long(), num_classes).permute(0, 3, 1, 2).to(logits.dtype)
    onehot = onehot * valid.unsqueeze(1)
    if ignore_as_negative and not bool(nodata.any()):
        return F.binary_cross_entropy_with_logits(logits, onehot)
    loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    weight = (~nodata if ignore_as_negative else valid).unsqueeze(1).to(loss.dtype)
    return (loss * weight).sum() / (weight.sum() * num_classes).clamp(min=1)
