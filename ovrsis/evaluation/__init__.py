"""Semantic-segmentation evaluation: numpy metrics and the Detectron2 evaluator."""
from .metrics import (
    SUMMARY_KEYS,
    class_split_indices,
    confusion_matrix,
    format_copypaste,
    segmentation_metrics,
)
from .sem_seg_evaluator import METRICS_FILE, OpenVocabSemSegEvaluator

__all__ = [
    "METRICS_FILE",
    "OpenVocabSemSegEvaluator",
    "SUMMARY_KEYS",
    "class_split_indices",
    "confusion_matrix",
    "format_copypaste",
    "segmentation_metrics",
]
