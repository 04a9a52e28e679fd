"""Combined benchmark tables (Markdown and CSV) from per-dataset results.

Conventions (datasets.md §7, §8): cross-dataset means are arithmetic means of the
per-dataset values; "Mean w/o <set>" leaves out the training set's in-domain score
(Pi-Seg Table III); s-/u-/h-mIoU means average the per-dataset values (AerOSeg: h is not
recomputed from the mean s and u). A dataset whose protocol names ``mean_classes``
reports mIoU/mACC over those classes only (Pi-Seg's UAVid "overall"); a single-class task
also reports the IoU of its foreground class (SegEarth-OV's number).
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

BASE_COLUMNS = ("mIoU", "mACC", "fwIoU")
SPLIT_COLUMNS = ("s-mIoU", "u-mIoU", "h-mIoU")
FOREGROUND_COLUMN = "fg-IoU"
MISSING = "–"


@dataclass(frozen=True)
class DatasetResult:
    """Scores of one dataset with the protocol record they were measured under."""

    name: str
    metrics: Mapping[str, float | None]
    protocol: Mapping[str, Any]

    @property
    def title(self) -> str:
        return f"{self.protocol['dataset']} ({self.protocol['split']})" if self.protocol["split"] else self.name

    def scores(self) -> dict[str, float]:
        """Table cells: the summary metrics, with the protocol's class subset and foreground applied."""
        metrics = {k: (math.nan if v is None else float(v)) for k, v in self.metrics.items()}
        cells = {key: metrics.get(key, math.nan) for key in BASE_COLUMNS + SPLIT_COLUMNS}
        subset = self.protocol.get("mean_classes") or []
        if subset:
            cells["mIoU"] = _mean([metrics.get(f"IoU-{c}", math.nan) for c in subset])
            cells["mACC"] = _mean([metrics.get(f"ACC-{c}", math.nan) for c in subset])
        foreground = self.protocol.get("foreground")
        cells[FOREGROUND_COLUMN] = metrics.get(f"IoU-{foreground}", math.nan) if foreground else math.nan
        return cells


def _mean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def table_columns(results: Sequence[DatasetResult]) -> list[str]:
    """Base columns, plus the split and foreground columns where any dataset has them."""
    scores = [r.scores() for r in results]
    columns = list(BASE_COLUMNS)
    for key in SPLIT_COLUMNS + (FOREGROUND_COLUMN,):
        if any(not math.isnan(s[key]) for s in scores):
            columns.append(key)
    return columns


def table_rows(results: Sequence[DatasetResult], training_dataset: str | None) -> list[dict[str, Any]]:
    """One row per dataset, then "Mean" and (when the training set is in the suite) "Mean w/o"."""
    columns = table_columns(results)
    rows = [{"dataset": r.name, "title": r.title, "protocol": r.protocol["label"],
             **{c: r.scores()[c] for c in columns}} for r in results]
    if len(rows) > 1:
        rows.append({"dataset": "mean", "title": f"Mean ({len(results)} sets)", "protocol": "",
                     **{c: _mean([row[c] for row in rows]) for c in columns}})
    others = [row for row in rows[: len(results)] if row["dataset"] != training_dataset]
    if training_dataset and len(others) < len(results) and others:
        title = next(r.title for r in results if r.name == training_dataset)
        rows.append({"dataset": "mean_without_training_set", "title": f"Mean w/o {title} ({len(others)} sets)",
                     "protocol": "", **{c: _mean([row[c] for row in others]) for c in columns}})
    return rows


def to_markdown(results: Sequence[DatasetResult], training_dataset: str | None, title: str,
                notes: Sequence[str] = (), method: str = "ovrsis") -> str:
    """A long table (one row per dataset) and the papers' wide layout (one row: mIoU / mACC)."""
    columns = table_columns(results)
    rows = table_rows(results, training_dataset)
    long = tabulate([[row["title"], *[_cell(row[c]) for c in columns], row["protocol"]] for row in rows],
                    headers=["Dataset", *columns, "Protocol"], tablefmt="pipe", disable_numparse=True)
    wide = tabulate([[method, *[f"{_cell(row['mIoU'])} / {_cell(row['mACC'])}" for row in rows]]],
                    headers=["mIoU / mACC", *[row["title"] for row in rows]], tablefmt="pipe", disable_numparse=True)
    lines = [f"## {title}", "", long, "", "Paper layout:", "", wide]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def to_csv(results: Sequence[DatasetResult], training_dataset: str | None) -> str:
    columns = table_columns(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "title", *columns, "protocol"])
    for row in table_rows(results, training_dataset):
        writer.writerow([row["dataset"], row["title"], *[_cell(row[c], missing="") for c in columns],
                         row["protocol"]])
    return buffer.getvalue()


def _cell(value: float, missing: str = MISSING) -> str:
    return missing if value is None or math.isnan(value) else f"{value:.2f}"
