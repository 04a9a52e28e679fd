#!/usr/bin/env python
"""Curves of one or several runs from their ``metrics.json`` (loss, learning rate, eval metrics).

    python tools/analyze_logs.py output/quickstart [output/other_run ...] [--keys total_loss lr] \\
        [--smooth 20] [--output curves.png]

Each argument is a run folder (its ``metrics.json``) or a ``metrics.json`` file, as detectron2's
JSON writer leaves it: one JSON object per line, with ``iteration``. A resumed run logs some
iterations twice; the later line wins. Default keys: ``total_loss``, ``lr`` and every logged
``mIoU`` (e.g. ``sem_seg/mIoU``). ``--smooth N`` draws the moving mean over N logged points
(losses and timings; ``lr`` and evaluation metrics, keys with a ``/``, are drawn as logged). Prints each run's last value per key.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np

import ovrsis  # noqa: F401  (compat shims)
from ovrsis.engine import report_user_errors
from ovrsis.errors import ConfigError
from ovrsis.visualization import curves_figure, save_figure


def read_metrics(path: str) -> dict:
    """``{key: [(iteration, value), ...]}`` (sorted by iteration, later lines win) from a
    ``metrics.json`` file or a run folder holding one.

    Raises:
        ConfigError: no such file, or a line that is not a JSON object.
    """
    file = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ConfigError(f"{path}: no metrics.json (expected a run folder or a metrics.json file)")
    series: dict = defaultdict(dict)
    with open(file) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{file}, line {number}: not JSON ({err})") from None
            if not isinstance(record, dict) or "iteration" not in record:
                continue
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)) and np.isfinite(value):
                    series[key][int(record["iteration"])] = float(value)
    return {key: sorted(points.items()) for key, points in series.items()}


def smooth(points: list, window: int) -> list:
    """Moving mean over ``window`` points (shorter at the start), iterations kept."""
    if window <= 1 or len(points) < 2:
        return points
    xs, ys = zip(*points)
    cumulative = np.cumsum(np.insert(np.asarray(ys, np.float64), 0, 0.0))
    lows = np.maximum(np.arange(1, len(ys) + 1) - window, 0)
    means = (cumulative[1:] - cumulative[lows]) / (np.arange(1, len(ys) + 1) - lows)
    return list(zip(xs, means.tolist()))


def run_names(paths: list) -> list:
    """Short distinct labels: the run folder names (full paths when two share a name)."""
    names = [os.path.basename(os.path.normpath(p if os.path.isdir(p) else os.path.dirname(p) or ".")) for p in paths]
    return names if len(set(names)) == len(names) else [os.path.normpath(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders or metrics.json files")
    parser.add_argument("--keys", nargs="+", default=None, help="metric keys (default: total_loss, lr, *mIoU)")
    parser.add_argument("--smooth", type=int, default=1, metavar="N", help="moving mean over N points")
    parser.add_argument("--output", default="curves.png", help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    runs = {name: read_metrics(path) for name, path in zip(run_names(args.runs), args.runs)}
    logged = sorted({k for series in runs.values() for k in series})
    keys = args.keys or [k for k in ("total_loss", "lr") if k in logged] + [k for k in logged if k.endswith("mIoU")]
    missing = [k for k in keys if k not in logged]
    if missing:
        raise ConfigError(f"--keys {missing} are not logged by any run; logged keys: {logged}")
    if not keys:
        raise ConfigError(f"none of the default keys is logged; choose --keys from {logged}")
    for series in runs.values():
        for key in keys:
            if key in series and "/" not in key and key != "lr":  # training losses, not lr or eval metrics
                series[key] = smooth(series[key], args.smooth)
    save_figure(curves_figure(runs, keys), args.output)
    for name, series in runs.items():
        last = ", ".join(f"{k} {series[k][-1][1]:.4g} @ {series[k][-1][0]}" for k in keys if k in series)
        print(f"{name}: {last}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
