"""SegEarth-OV's text queries and post-processing: sub-prompts, max rule, threshold to background.

Source: likyoo/SegEarth-OV ``segearth_segmentor.py`` (``get_cls_idx``, ``postprocess_result``).
Class entries follow the project's class-name rule (``ovrsis.data.vocabulary``): commas
separate sub-prompts, e.g. ``"road,parking lot"``; every sub-prompt is its own text query.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from ..data.vocabulary import split_subprompts


def expand_queries(class_names: Sequence[str]) -> Tuple[List[str], torch.Tensor]:
    """Flatten class entries into text queries: (queries Q, class index of each query (Q,)).

    ``["road,parking lot", "building"]`` → ``(["road", "parking lot", "building"], [0, 0, 1])``.
    Raises ``ValueError`` on an empty vocabulary.
    """
    if len(class_names) == 0:
        raise ValueError("empty vocabulary: no class names to segment")
    queries, owner = [], []
    for index, name in enumerate(class_names):
        parts = split_subprompts(name)
        queries += parts
        owner += [index] * len(parts)
    return queries, torch.tensor(owner, dtype=torch.long)


def class_probabilities(logits: torch.Tensor, query_class: torch.Tensor, num_classes: int,
                        logit_scale: float) -> torch.Tensor:
    """Per-class probabilities from query logits.

    Args:
        logits: (Q, H, W) cosine logits (after global-bias removal), one map per query.
        query_class: (Q,) class index of each query; num_classes: K.
        logit_scale: temperature (SegEarth-OV: 50).
    Returns:
        (K, H, W): softmax over all Q queries of ``logit_scale · logits``, then for each class
        the maximum over its sub-prompts' probabilities (the official max rule).
    """
    if logits.shape[0] != query_class.numel():
        raise ValueError(f"{logits.shape[0]} query maps for {query_class.numel()} queries")
    probs = (logits.float() * logit_scale).softmax(dim=0)
    if num_classes == probs.shape[0]:
        return probs
    index = query_class.to(probs.device).view(-1, 1, 1).expand_as(probs)
    out = probs.new_full((num_classes, *probs.shape[1:]), float("-inf"))
    return out.scatter_reduce(0, index, probs, reduce="amax", include_self=True)


def threshold_to_background(probs: torch.Tensor, prob_thd: float, bg_idx: int) -> torch.Tensor:
    """Pixels whose top class probability is below ``prob_thd`` are given to class ``bg_idx``.

    Returns (K, H, W) scores whose argmax is the official prediction: the probabilities where
    the top one reaches ``prob_thd``, a one-hot at ``bg_idx`` elsewhere. ``prob_thd = 0`` keeps
    every pixel's argmax.
    Raises ``ValueError`` if ``bg_idx`` is not a class index.
    """
    if not 0 <= bg_idx < probs.shape[0]:
        raise ValueError(f"MODEL.TRAINING_FREE.BG_IDX {bg_idx} is not a class index (0..{probs.shape[0] - 1})")
    if prob_thd <= 0:
        return probs
    low = probs.max(dim=0).values < prob_thd
    if not low.any():
        return probs
    out = probs.clone()
    out[:, low] = 0
    out[bg_idx, low] = 1
    return out
