"""Dataset-level semantic-segmentation evaluator with seen/unseen scores.

Replaces detectron2 0.6's ``SemSegEvaluator`` (broken on numpy 2); metric conventions are
documented in :mod:`ovrsis.evaluation.metrics`. Every score is logged and saved beside
the protocol it was measured under (:func:`ovrsis.data.benchmarks.protocol_record`).
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from typing import Any

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from ..data.benchmarks import InferenceProtocol, protocol_record
from ..data.folder_dataset import DatasetError, check_mask_values, read_mask
from .metrics import (
    SUMMARY_KEYS,
    class_split_indices,
    confusion_matrix,
    format_copypaste,
    segmentation_metrics,
)

logger = logging.getLogger(__name__)

METRICS_FILE = "sem_seg_metrics.json"


def json_safe(value: Any) -> Any:
    """NaN -> None recursively, so the file is strict JSON (``null``)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metrics_tables(res: dict[str, float], class_names: list[str], seen: list[str], unseen: list[str],
                   label: str, summary: str = "") -> str:
    """The evaluator's report of ``res`` (:func:`~ovrsis.evaluation.metrics.segmentation_metrics`):
    the per-class table (class, seen/unseen split, IoU, ACC), the summary table with the
    protocol ``label``, the protocol ``summary`` line and the "copypaste:" lines."""
    split = {n: "seen" for n in seen} | {n: "unseen" for n in unseen}
    rows = [[name, split.get(name, "-"), res[f"IoU-{name}"], res[f"ACC-{name}"]] for name in class_names]
    per_class = tabulate(rows, headers=["class", "split", "IoU", "ACC"], floatfmt=".2f", tablefmt="pipe")
    keys = [k for k in SUMMARY_KEYS if k in res]
    table = tabulate([[res[k] for k in keys] + [label]], headers=[*keys, "protocol"], floatfmt=".2f",
                     tablefmt="pipe")
    return "\n".join([per_class, "", table, f"protocol {label}: {summary or label}", *format_copypaste(res, keys)])


class OpenVocabSemSegEvaluator(DatasetEvaluator):
    """Accumulates one confusion matrix (rows = ground truth) over a split and scores it.

    Reads ``stuff_classes``, ``ignore_label`` and the optional ``seen_classes`` /
    ``unseen_classes`` from the dataset's metadata. Pixels outside an input's ``valid`` mask
    (the image's no-data, set by the test mapper) are not scored. The returned dict holds floats only,
    because detectron2's ``EvalHook`` logs every value as a scalar; the dataset name and the
    protocol are kept in :attr:`dataset_name`, :attr:`protocol` and in the JSON file.
    ``inference`` is how the predictions were made (e.g. ``inference_from_config(cfg)``);
    without it the protocol says "inference unspecified".
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        inference: InferenceProtocol | None = None,
    ) -> None:
        meta = MetadataCatalog.get(dataset_name)
        self.dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._class_names: list[str] = list(meta.stuff_classes)
        self._ignore_label: int | None = meta.get("ignore_label", None)
        self._seen = list(meta.get("seen_classes", None) or [])
        self._unseen = list(meta.get("unseen_classes", None) or [])
        class_split_indices(self._class_names, self._seen, self._unseen)  # fail early
        self.protocol = protocol_record(dataset_name, inference)
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    def reset(self) -> None:
        self._conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).cpu().numpy()
            path = inp["sem_seg_file_name"]
            gt = read_mask(path)
            check_mask_values(gt, self.num_classes, self._ignore_label, path)
            image_size = (int(inp.get("height", gt.shape[0])), int(inp.get("width", gt.shape[1])))
            if gt.shape != image_size:
                raise DatasetError(
                    f"mask {path} is {gt.shape[1]}x{gt.shape[0]} but its image {inp.get('file_name', '')} is "
                    f"{image_size[1]}x{image_size[0]}: every mask must have its image's size")
            gt = gt.astype(np.int64)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"prediction shape {pred.shape} != ground-truth shape {gt.shape} "
                    f"for {path}; predictions must be at the original mask resolution"
                )
            valid = inp.get("valid")  # the image's no-data pixels (test mapper) are left out
            if valid is not None:
                keep = valid.cpu().numpy().astype(bool) if hasattr(valid, "cpu") else np.asarray(valid, bool)
                pred, gt = pred[keep], gt[keep]
            try:
                self._conf += confusion_matrix(pred, gt, self.num_classes, self._ignore_label)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e

    def evaluate(self) -> OrderedDict | None:
        conf = self._conf
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(self._conf)
            if not comm.is_main_process():
                return None
            conf = np.sum(gathered, axis=0)
        if not conf.any():
            logger.warning("%s: no evaluated pixels; all metrics are NaN", self.dataset_name)

        res = segmentation_metrics(
            conf, self._class_names, self._seen or None, self._unseen or None
        )
        self._log_table(res)
        if self._output_dir:
            self._write_json(res, conf)
        return OrderedDict({"sem_seg": res})

    def _log_table(self, res: dict[str, float]) -> None:
        logger.info(
            "Semantic segmentation on %s:\n%s", self.dataset_name,
            metrics_tables(res, self._class_names, self._seen, self._unseen, self.protocol["label"],
                           self.protocol["inference"]["summary"] if self.protocol["inference"]
                           else "predictions made by a caller that did not name them"),
        )

    def _write_json(self, res: dict[str, float], conf: np.ndarray) -> None:
        PathManager.mkdirs(self._output_dir)
        payload = {
            "dataset": self.dataset_name,
            "metrics": res,
            "class_names": self._class_names,
            "seen_classes": self._seen,
            "unseen_classes": self._unseen,
            "ignore_label": self._ignore_label,
            "protocol": self.protocol,
            # Kept so that scores can be recomputed under another convention without rerunning.
            "confusion_matrix_gt_rows": conf.tolist(),
        }
        path = os.path.join(self._output_dir, METRICS_FILE)
        with PathManager.open(path, "w") as f:
            json.dump(json_safe(payload), f, indent=2, allow_nan=False)
