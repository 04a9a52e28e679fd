"""Scene evaluation: a label raster on the scene's grid scored window by window.

The ground truth of each written chunk is read from the label raster (band 1, same size and,
when both are georeferenced, same transform as the scene) and added to one confusion matrix with
:func:`ovrsis.evaluation.metrics.confusion_matrix` (rows = ground truth; pixels whose ground truth
is the ignore value, and pixels where the scene holds no data, are dropped). The metrics and
tables are those of the evaluator (:func:`ovrsis.evaluation.metrics.segmentation_metrics`:
mIoU, fwIoU, mACC, pACC, and s-/u-/h-mIoU when seen/unseen classes are named), for one scene and
for all scenes of a run together.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from ..data.raster import RasterError, RasterInfo
from ..evaluation.metrics import confusion_matrix, segmentation_metrics
from ..evaluation.sem_seg_evaluator import json_safe, metrics_tables
from ..export import write_json

logger = logging.getLogger(__name__)


class SceneEvaluation:
    """Confusion matrix of one scene against ``labels`` (a raster path), filled chunk by chunk."""

    def __init__(self, labels: str, scene: RasterInfo, class_names: Sequence[str], ignore_value: Optional[int]) -> None:
        from .source import open_scene

        self.path, self.class_names, self.ignore_value = labels, list(class_names), ignore_value
        self._src = open_scene(labels)
        if (self._src.height, self._src.width) != (scene.height, scene.width):
            raise RasterError(f"label raster {labels} is {self._src.width}x{self._src.height} but scene "
                              f"{scene.path} is {scene.width}x{scene.height}: they must share one grid")
        if scene.crs is not None and self._src.crs is not None and self._src.transform != scene.transform:
            raise RasterError(f"label raster {labels} has transform {tuple(self._src.transform)[:6]} but scene "
                              f"{scene.path} has {tuple(scene.transform)[:6]}: they must share one grid")
        self.confusion = np.zeros((len(self.class_names),) * 2, np.int64)

    def add(self, row: int, col: int, labels: np.ndarray, nodata: int) -> None:
        """Score the chunk ``labels`` (h, w) at ``(row, col)``; ``nodata`` marks no-data pixels."""
        from rasterio.windows import Window

        gt = self._src.read(1, window=Window(col, row, labels.shape[1], labels.shape[0])).astype(np.int64)
        keep = labels != nodata
        if not keep.all():
            gt, labels = gt[keep], labels[keep]
        try:
            self.confusion += confusion_matrix(labels, gt, len(self.class_names), self.ignore_value)
        except ValueError as err:
            raise RasterError(f"label raster {self.path}: {err}") from None

    def add_raster(self, labels: str, window: int = 2048) -> None:
        """Score a finished label raster (the scene's ``STEM_labels.tif``) window by window."""
        from rasterio.windows import Window

        from .source import open_scene

        with open_scene(labels) as src:
            nodata = int(src.nodata)
            for row in range(0, src.height, window):
                for col in range(0, src.width, window):
                    size = Window(col, row, min(window, src.width - col), min(window, src.height - row))
                    self.add(row, col, src.read(1, window=size), nodata)

    def close(self) -> None:
        self._src.close()


def write_metrics(path: str, confusion: np.ndarray, class_names: Sequence[str], title: str,
                  seen: Sequence[str] = (), unseen: Sequence[str] = (), ignore_value: Optional[int] = None) -> dict:
    """Metrics of ``confusion`` (the evaluator's, :mod:`ovrsis.evaluation.metrics`) logged as the
    evaluator's tables and written to ``path`` as JSON (with the confusion matrix); returns them."""
    res = segmentation_metrics(confusion, list(class_names), list(seen) or None, list(unseen) or None)
    logger.info("Semantic segmentation of %s:\n%s", title,
                metrics_tables(res, class_names, seen, unseen, "scene",
                               "streamed at the stored resolution, TEST.TILED tiles blended as the tiled protocol"))
    write_json(path, json_safe({"scene": title, "metrics": res, "class_names": list(class_names),
                                "seen_classes": list(seen), "unseen_classes": list(unseen),
                                "ignore_label": ignore_value, "confusion_matrix_gt_rows": confusion.tolist()}))
    return res
