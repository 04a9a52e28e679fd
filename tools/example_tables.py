#!/usr/bin/env python
"""The README's example tables, measured: each example trained over its seeds, mean ± std.

    python tools/example_tables.py                      # run both examples' sweeps, print the tables
    python tools/example_tables.py --write-readme       # ... and replace the tables in README.md
    python tools/example_tables.py --table-only         # tables from finished runs, train nothing
    python tools/example_tables.py --examples quickstart --output /tmp/examples

An example is a sweep file ``configs/sweeps/example_<name>.yaml`` (the example's config over
seeds); ``eval_scripts/sweep.py`` trains and scores its runs (finished runs are skipped on a
rerun) in ``<output>/example_<name>/``. The table gives, per test dataset and metric, the mean ±
sample standard deviation over the seeds, the per-seed values, the mean over test datasets
(m-mIoU) with several, and the measured wall-clock time of one run (training and scoring, on
this machine's CPU count). ``--write-readme`` replaces the text between
``<!-- example-table: <name> -->`` and ``<!-- /example-table: <name> -->`` in README.md, so
the README's numbers always come from this script.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovrsis.engine import report_user_errors  # noqa: E402
from ovrsis.errors import ConfigError  # noqa: E402
from ovrsis.sweep import spec as sweep_spec  # noqa: E402
from ovrsis.sweep.state import read_state  # noqa: E402
from ovrsis.sweep.table import mean_std, run_cells  # noqa: E402

EXAMPLES = ("quickstart", "real_imagery")
README = REPO / "README.md"


def sweep_file(example: str) -> Path:
    return REPO / "configs" / "sweeps" / f"example_{example}.yaml"


def run_sweep(example: str, output: Path, table_only: bool) -> None:
    """Train and score the example's runs through eval_scripts/sweep.py (its own checks and resume)."""
    command = [sys.executable, str(REPO / "eval_scripts" / "sweep.py"), str(sweep_file(example)),
               "--output", str(output)] + (["--table-only"] if table_only else [])
    if subprocess.call(command, cwd=REPO) != 0 and not table_only:
        raise ConfigError(f"example {example!r}: some runs failed; see {output}/*/sweep.log")


def collect(example: str, output: Path) -> tuple:
    """Per finished seed: its cells {dataset/metric: value} and its seconds; plus the metrics."""
    spec = sweep_spec.load_sweep(str(sweep_file(example)))
    per_seed: Dict[int, Dict[str, float]] = {}
    seconds: List[float] = []
    for run in spec.expand():
        state = read_state(str(output / run.name))
        if not state or state.get("status") != "finished":
            continue
        per_seed[run.seed] = run_cells(state["results"], spec.metrics)
        seconds.append(float(state.get("seconds") or 0.0))
    if not per_seed:
        raise ConfigError(f"example {example!r}: no finished run in {output} (run without --table-only first)")
    return spec, per_seed, seconds


def render(example: str, spec, per_seed: Dict[int, Dict[str, float]], seconds: Sequence[float]) -> str:
    """Markdown: one row per dataset (and the mean over datasets), mean ± std, then per-seed values."""
    seeds = sorted(per_seed)
    columns = list(next(iter(per_seed.values())))
    datasets = list(dict.fromkeys(c.rsplit("/", 1)[0] for c in columns))
    lines = [f"| dataset | {' | '.join(spec.metrics)} | per seed ({', '.join(map(str, seeds))}): {spec.metrics[0]} |",
             "|---|" + "---|" * (len(spec.metrics) + 1)]
    for dataset in datasets:
        cells = []
        for metric in spec.metrics:
            mean, std, n = mean_std([per_seed[s].get(f"{dataset}/{metric}", float("nan")) for s in seeds])
            cells.append("–" if n == 0 else (f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"))
        first = " / ".join(f"{per_seed[s].get(f'{dataset}/{spec.metrics[0]}', float('nan')):.2f}" for s in seeds)
        name = "mean over test datasets (m-mIoU)" if dataset == "mean" else f"`{dataset}`"
        lines.append(f"| {name} | {' | '.join(cells)} | {first} |")
    minutes = statistics.median(seconds) / 60 if seconds else float("nan")
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else float("nan")
    lines += ["", f"{len(seeds)} seeds, mean ± sample standard deviation; one run (training and scoring) took "
                  f"{minutes:.1f} min (median) on {os.cpu_count()} CPU cores (5-minute load average "
                  f"{load:.1f} when the table was written: a busier machine is slower), measured by "
                  "`tools/example_tables.py`."]
    return "\n".join(lines)


def write_readme(blocks: Dict[str, str], readme: Path = README) -> None:
    """Replace each ``<!-- example-table: NAME -->`` … ``<!-- /example-table: NAME -->`` block."""
    text = readme.read_text()
    for name, table in blocks.items():
        pattern = re.compile(rf"(<!-- example-table: {name} -->\n).*?(\n<!-- /example-table: {name} -->)", re.S)
        if not pattern.search(text):
            raise ConfigError(f"{readme}: no <!-- example-table: {name} --> ... <!-- /example-table: {name} --> block")
        text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
    readme.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", nargs="+", choices=EXAMPLES, default=list(EXAMPLES))
    parser.add_argument("--output", default=str(REPO / "output" / "examples"),
                        help="folder of the examples' sweeps (default: %(default)s)")
    parser.add_argument("--table-only", action="store_true", help="train nothing; tables from finished runs")
    parser.add_argument("--write-readme", action="store_true", help="replace the tables in README.md")
    args = parser.parse_args(argv)
    blocks = {}
    for example in args.examples:
        folder = Path(args.output) / f"example_{example}"
        run_sweep(example, folder, args.table_only)
        blocks[example] = render(example, *collect(example, folder))
        print(f"\n{example}:\n{blocks[example]}\n", flush=True)
    if args.write_readme:
        write_readme(blocks)
        print(f"wrote {', '.join(blocks)} to {README}")
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
