"""Semantic-segmentation metrics from a dataset-level confusion matrix (pure numpy).

Why our own: detectron2 0.6's ``SemSegEvaluator`` uses ``np.int``/``np.float`` and fails on
numpy 2, and we also need seen/unseen (s-/u-/h-mIoU) scores.

Convention reproduced: the detectron2 ``SemSegEvaluator`` that the CAT-Seg-family
references install (detectron2 from git ``main``, pinned in their requirements.txt). One
confusion matrix is accumulated over all images of a split; pixels whose ground truth is
the ignore value are dropped. Per class c, with TP_c, GT_c (ground-truth pixels) and
Pred_c (predicted pixels):

- IoU_c = TP_c / (GT_c + Pred_c - TP_c) and ACC_c = TP_c / GT_c are defined only when
  GT_c > 0; otherwise they are NaN (``null`` in JSON).
- Absent-class rule: mIoU and mACC are means over the classes with GT_c > 0 only. A class
  absent from the ground truth of the whole split is excluded even if it is predicted;
  its false-positive pixels still lower the IoU of the classes they belong to.
  (detectron2 v0.6, the PyPI release, divided the IoU sum by the number of classes present
  in ground truth *or* prediction; detectron2 ``main`` switched to the rule above in July
  2022, commit f3c1bc19, before the CAT-Seg-family code was released.)
- fwIoU = sum_c (GT_c / sum_k GT_k) * IoU_c over classes with GT_c > 0.
- pACC = sum_c TP_c / sum_c GT_c.
- s-mIoU / u-mIoU apply the mIoU rule within the seen / unseen classes (NaN when no class
  of the subset has ground truth); h-mIoU = 2*s*u / (s + u), 0 when s + u == 0, NaN when
  s or u is NaN.

All scores are percentages (x100), as detectron2 reports them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SUMMARY_KEYS = ("mIoU", "fwIoU", "mACC", "pACC", "s-mIoU", "u-mIoU", "h-mIoU")


def _check_ids(values: np.ndarray, valid: np.ndarray, what: str, num_classes: int) -> None:
    if not valid.all():
        bad = np.unique(values[~valid])
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(
            f"{what} holds ids outside 0..{num_classes - 1}: {shown} "
            f"({int((~valid).sum())} pixels)"
        )


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_value: int | None
) -> np.ndarray:
    """Count pixels per (ground truth, prediction) pair.

    Returns a K x K int64 matrix whose **rows are ground-truth ids and columns are predicted
    ids**. Pixels whose ground truth equals ``ignore_value`` are dropped (whatever their
    prediction). Out-of-range ids raise ``ValueError`` instead of silently corrupting the
    counts, as a bincount over flattened pairs would.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    pred = pred.astype(np.int64, copy=False).ravel()
    gt = gt.astype(np.int64, copy=False).ravel()

    _check_ids(pred, (pred >= 0) & (pred < num_classes), "prediction", num_classes)
    keep = np.ones_like(gt, dtype=bool) if ignore_value is None else gt != ignore_value
    _check_ids(
        gt, ~keep | ((gt >= 0) & (gt < num_classes)),
        f"ground truth (ignore value {ignore_value})", num_classes,
    )
    counts = np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def class_split_indices(
    class_names: Sequence[str],
    seen_classes: Sequence[str] | None,
    unseen_classes: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Map seen/unseen class names to indices; ``None`` when no split is given.

    Raises ``ValueError`` for a one-sided split, unknown names or overlapping subsets, so a
    misconfigured dataset fails before evaluation rather than after it.
    """
    if not seen_classes and not unseen_classes:
        return None
    if not seen_classes or not unseen_classes:
        raise ValueError("seen_classes and unseen_classes must both be given, or neither")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [n for n in (*seen_classes, *unseen_classes) if n not in index]
    if unknown:
        raise ValueError(f"seen/unseen classes not in class_names: {unknown}")
    overlap = sorted(set(seen_classes) & set(unseen_classes))
    if overlap:
        raise ValueError(f"classes both seen and unseen: {overlap}")
    return (
        np.array([index[n] for n in seen_classes], dtype=np.int64),
        np.array([index[n] for n in unseen_classes], dtype=np.int64),
    )


def _mean_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def segmentation_metrics(
    conf: np.ndarray,
    class_names: Sequence[str],
    seen_classes: Sequence[str] | None = None,
    unseen_classes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Scores (percent) from a confusion matrix with rows = ground truth, cols = prediction.

    Keys: "mIoU", "fwIoU", "mACC", "pACC", then "s-mIoU", "u-mIoU", "h-mIoU" when a seen/unseen
    split is given, then "IoU-<class>" and "ACC-<class>" (NaN for classes without ground
    truth). See the module docstring for the absent-class rule.
    """
    conf = np.asarray(conf, dtype=np.int64)
    num_classes = len(class_names)
    if conf.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix {conf.shape} does not fit {num_classes} classes")
    split = class_split_indices(class_names, seen_classes, unseen_classes)

    tp = np.diag(conf).astype(np.float64)
    gt_pixels = conf.sum(axis=1).astype(np.float64)
    pred_pixels = conf.sum(axis=0).astype(np.float64)
    has_gt = gt_pixels > 0
    iou = np.full(num_classes, np.nan)
    acc = np.full(num_classes, np.nan)
    iou[has_gt] = tp[has_gt] / (gt_pixels + pred_pixels - tp)[has_gt]
    acc[has_gt] = tp[has_gt] / gt_pixels[has_gt]
    total_gt = gt_pixels.sum()

    res: dict[str, float] = {
        "mIoU": 100 * _mean_defined(iou),
        "fwIoU": 100 * float(np.sum(gt_pixels[has_gt] * iou[has_gt]) / total_gt)
        if total_gt else float("nan"),
        "mACC": 100 * _mean_defined(acc),
        "pACC": 100 * float(tp.sum() / total_gt) if total_gt else float("nan"),
    }
    if split is not None:
        seen = 100 * _mean_defined(iou[split[0]])
        unseen = 100 * _mean_defined(iou[split[1]])
        res["s-mIoU"] = seen
        res["u-mIoU"] = unseen
        res["h-mIoU"] = 2 * seen * unseen / (seen + unseen) if seen + unseen else 0.0
    res.update({f"IoU-{name}": 100 * float(v) for name, v in zip(class_names, iou)})
    res.update({f"ACC-{name}": 100 * float(v) for name, v in zip(class_names, acc)})
    return res


def format_copypaste(
    results: Mapping[str, float], keys: Sequence[str] | None = None
) -> list[str]:
    """detectron2-style "copypaste:" lines (names, then values with 4 decimals).

    Why: detectron2's ``print_csv_format`` drops every key containing "-", which would hide
    s-/u-/h-mIoU. ``keys`` defaults to the summary metrics present in ``results``.
    """
    if keys is None:
        keys = [k for k in SUMMARY_KEYS if k in results]
    return [
        "copypaste: " + ",".join(keys),
        "copypaste: " + ",".join(f"{results[k]:.4f}" for k in keys),
    ]
