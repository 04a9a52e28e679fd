#!/usr/bin/env python
"""Confusion-matrix plot from the ``sem_seg_metrics.json`` the evaluator writes.

    python tools/confusion_matrix.py output/quickstart/inference/synthetic_rs_val/sem_seg_metrics.json \\
        [--normalize true|pred|none] [--output confusion.png]

Rows are ground truth, columns predictions (the evaluator's ``confusion_matrix_gt_rows``,
pixel counts over the whole split). ``true`` normalises rows (recall per class, the default),
``pred`` columns (precision), ``none`` plots counts. Unseen classes are marked (red, ``*``);
the title names the dataset and its mIoU (and seen/unseen mIoU where the split declares them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import ovrsis  # noqa: F401  (compat shims)
from ovrsis.engine import report_user_errors
from ovrsis.errors import ConfigError
from ovrsis.visualization import confusion_figure, save_figure


def load_metrics(path: str) -> dict:
    """The evaluator's JSON (a file, or a folder holding ``sem_seg_metrics.json``).

    Raises:
        ConfigError: missing file, not JSON, or no confusion matrix in it.
    """
    file = os.path.join(path, "sem_seg_metrics.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ConfigError(f"{path}: no sem_seg_metrics.json (written by the evaluator into its output folder)")
    try:
        with open(file) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file}: not JSON ({err})") from None
    if "confusion_matrix_gt_rows" not in data or "class_names" not in data:
        raise ConfigError(f"{file}: holds no confusion_matrix_gt_rows/class_names (not an ovrsis evaluator file?)")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="sem_seg_metrics.json or the folder holding it")
    parser.add_argument("--normalize", choices=("true", "pred", "none"), default="true",
                        help="row (recall), column (precision) or no normalisation (default: %(default)s)")
    parser.add_argument("--output", default="confusion.png", help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    data = load_metrics(args.metrics)
    metrics = data.get("metrics", {})
    parts = [f"{k} {metrics[k]:.2f}" for k in ("mIoU", "s-mIoU", "u-mIoU", "h-mIoU")
             if isinstance(metrics.get(k), (int, float))]
    title = f"{data.get('dataset', '')}" + (f" ({', '.join(parts)})" if parts else "")
    fig = confusion_figure(np.asarray(data["confusion_matrix_gt_rows"]), data["class_names"],
                           data.get("seen_classes") or [], data.get("unseen_classes") or [], args.normalize, title)
    save_figure(fig, args.output)
    print(f"wrote {args.output} ({len(data['class_names'])} classes, normalize={args.normalize})")
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
