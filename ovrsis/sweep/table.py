"""A sweep's results table: one row per table row (runs over seeds), Markdown + CSV, and plots.

Cells come from the benchmark runner's per-dataset results through
:class:`ovrsis.evaluation.benchmark_table.DatasetResult` (class subsets and foreground IoU as
in the benchmark tables), with the same cross-dataset means (``mean``; ``mean w/o`` the
training set when the suite has one). Over seeds each cell is the mean ± the sample standard
deviation (n − 1 in the denominator; no ± with one seed), with the number of seeds that finished:
the layout of Pi-Seg's Table VIII. Cross-dataset means are taken per seed first, then over seeds.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from ..evaluation.benchmark_table import DatasetResult, table_rows

MISSING = "–"


@dataclass
class RowResult:
    """One table row: its swept settings and, per finished seed, {column: value}."""

    row: str
    settings: dict[str, Any]  # label -> value of the keys that vary across rows
    runs: int  # seeds planned
    per_seed: dict[int, dict[str, float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # run names


def run_cells(results: Mapping[str, Mapping[str, Any]], metrics: Sequence[str],
              training_dataset: str | None = None) -> dict[str, float]:
    """One run's cells ``{"<dataset>/<metric>": value}`` plus ``mean/<metric>`` (several datasets) and
    ``mean_without_training_set/<metric>``. ``results``: {dataset: {metrics, protocol}}."""
    datasets = [DatasetResult(name, r["metrics"], r["protocol"]) for name, r in results.items()]
    cells: dict[str, float] = {}
    for row in table_rows(datasets, training_dataset):
        for metric in metrics:
            cells[f"{row['dataset']}/{metric}"] = float(row.get(metric, math.nan))
    return cells


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n − 1; NaN for one value) and count of the non-NaN values."""
    defined = [v for v in values if not math.isnan(v)]
    n = len(defined)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(defined) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in defined) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def columns_of(rows: Sequence[RowResult]) -> list[str]:
    """Result columns in first-seen order (datasets in suite order, then the means)."""
    columns: list[str] = []
    for row in rows:
        for cells in row.per_seed.values():
            columns += [c for c in cells if c not in columns]
    datasets = [c for c in columns if not c.startswith(("mean/", "mean_without_training_set/"))]
    return datasets + [c for c in columns if c not in datasets]


def aggregate(rows: Sequence[RowResult]) -> tuple[list[str], list[dict[str, Any]]]:
    """Result columns and, per row, {column: (mean, std, n)} with the row's settings and seed count."""
    columns = columns_of(rows)
    out = []
    for row in rows:
        stats = {c: mean_std([cells.get(c, math.nan) for cells in row.per_seed.values()]) for c in columns}
        out.append({"row": row.row, "settings": row.settings, "seeds": len(row.per_seed), "runs": row.runs,
                    "failed": row.failed, "stats": stats})
    return columns, out


def _header(column: str, single_dataset: bool) -> str:
    dataset, metric = column.rsplit("/", 1)
    if single_dataset:
        return metric
    return {"mean": f"Mean {metric}", "mean_without_training_set": f"Mean w/o train {metric}"}.get(
        dataset, f"{dataset} {metric}")


def _setting(value: Any, markdown: bool) -> str:
    if isinstance(value, bool):
        return ("✓" if value else "✗") if markdown else str(value).lower()
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _cell(stat: tuple[float, float, int], markdown: bool) -> str:
    mean, std, n = stat
    if n == 0:
        return MISSING if markdown else ""
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def to_markdown(rows: Sequence[RowResult], setting_labels: Sequence[str], title: str,
                notes: Sequence[str] = ()) -> str:
    """The ablation table: run, swept settings, result columns (mean ± std), seeds finished/planned."""
    columns, aggregated = aggregate(rows)
    single = len({c.rsplit("/", 1)[0] for c in columns}) == 1
    body = [[a["row"], *[_setting(a["settings"].get(label, ""), True) for label in setting_labels],
             *[_cell(a["stats"][c], True) for c in columns], f"{a['seeds']}/{a['runs']}"] for a in aggregated]
    table = tabulate(body, headers=["run", *setting_labels, *[_header(c, single) for c in columns], "seeds"],
                     tablefmt="pipe", disable_numparse=True)
    lines = [f"## {title}", "", table]
    failed = [name for a in aggregated for name in a["failed"]]
    extra = list(notes)
    if any(a["seeds"] > 1 for a in aggregated):
        extra.append("Cells: mean ± sample standard deviation over the finished seeds "
                     "(seeds column: finished/planned).")
    if failed:
        extra.append(f"Failed runs (see their sweep_run.json / sweep.log): {', '.join(failed)}")
    if extra:
        lines += ["", *[f"- {note}" for note in extra]]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[RowResult], setting_labels: Sequence[str]) -> str:
    """Machine-readable table: settings, then ``<dataset>/<metric>`` mean and ``..._std`` per column, seeds."""
    columns, aggregated = aggregate(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", *setting_labels, *[x for c in columns for x in (c, f"{c}_std")], "seeds", "planned"])
    for a in aggregated:
        values = []
        for c in columns:
            mean, std, n = a["stats"][c]
            values += ["" if n == 0 else f"{mean:.4f}", "" if n < 2 else f"{std:.4f}"]
        writer.writerow([a["row"], *[_setting(a["settings"].get(label, ""), False) for label in setting_labels],
                         *values, a["seeds"], a["runs"]])
    return buffer.getvalue()


def plot_axis(rows: Sequence[RowResult], label: str, metric_column: str, path: str) -> bool:
    """PNG of ``metric_column`` (mean ± std over seeds) against the numeric setting ``label``, one line
    per combination of the other settings. Returns False (nothing written) without two finished points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, aggregated = aggregate(rows)
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for a in aggregated:
        x = a["settings"].get(label)
        mean, std, n = a["stats"].get(metric_column, (math.nan, math.nan, 0))
        if n == 0 or not isinstance(x, (int, float)) or isinstance(x, bool):
            continue
        others = ", ".join(f"{k}={_setting(v, False)}" for k, v in a["settings"].items() if k != label)
        lines.setdefault(others, []).append((float(x), mean, 0.0 if math.isnan(std) else std))
    if sum(len(points) for points in lines.values()) < 2:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, points in lines.items():
        points.sort()
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                    capsize=3, label=name or None)
    ax.set_xlabel(label)
    ax.set_ylabel(metric_column.replace("/", " "))
    if any(lines):
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
