#!/usr/bin/env python
"""SegEarth-OV's Table 1 (mIoU, 8 semantic sets) and Table 2 (foreground IoU, 9 single-class sets)
with one command, each dataset under its own settings (``configs/segearth_ov/<dataset>.yaml``:
class prompts, PROB_THD, BG_IDX, BIAS_LAMBDA), training-free.

    python eval_scripts/segearth_tables.py --table 1
    python eval_scripts/segearth_tables.py --table 2 --method clearclip     # a baseline instead
    python eval_scripts/segearth_tables.py --table 1 --backbone remoteclip_b32
    python eval_scripts/segearth_tables.py --table synthetic MODEL.DEVICE cpu  # pipeline check, tiny random CLIP

``--method`` merges ``configs/segearth_ov/baselines/<method>.yaml`` and ``--backbone``
``configs/segearth_ov/backbones/<backbone>.yaml`` over each dataset's config; trailing ``KEY VALUE``
pairs override last. Results go to ``output/segearth_ov/<table>_<method>[_<backbone>]/``
(``results/<dataset>.json`` per dataset, resumable as ``run_benchmark.py``; ``table.md``/``.csv``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.config import flatten_config
from ovrsis.data.benchmarks import Suite
from ovrsis.engine import setup_cfg
from ovrsis.engine.cli import parse_args_with_overrides  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_benchmark  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segearth_ov"
TABLES = {
    "1": ("SegEarth-OV Table 1 (mIoU)", "mIoU", ["openearthmap", "loveda", "isaid", "potsdam", "vaihingen", "uavid",
                                                 "udd5", "vdd"]),
    "2": ("SegEarth-OV Table 2 (foreground IoU)", "fg-IoU", ["whu_aerial", "whu_sat2", "inria", "xbd_pre", "chn6cug",
                                                            "deepglobe_road", "massachusetts_road", "spacenet_road",
                                                            "wbssi"]),
    "synthetic": ("Training-free segmentor on the synthetic scenes (pipeline check)", "mIoU", ["synthetic"]),
}
METHODS = ["segearth", "clip", "maskclip", "sclip", "clearclip"]
BACKBONES = sorted(p.stem for p in (CONFIGS / "backbones").glob("*.yaml"))


def dataset_config(name: str, method: str, backbone: str | None, opts: list, output: str):
    """Config of one dataset: its yaml, then the method and backbone overlays, then ``opts``."""
    overlays = []
    if method != "segearth":
        overlays.append(str(CONFIGS / "baselines" / f"{method}.yaml"))
    if backbone:
        overlays.append(str(CONFIGS / "backbones" / f"{backbone}.yaml"))
    overlay_opts = [item for overlay in overlays for item in _as_opts(overlay)]
    # overlays and opts merged before setup_cfg's checks (e.g. a backbone turning SimFeatUp off
    # needs no SimFeatUp weights file)
    return setup_cfg(str(CONFIGS / f"{name}.yaml"), overlay_opts + list(opts) + ["OUTPUT_DIR", output])


def _as_opts(overlay: str) -> list:
    """An overlay file (no ``_BASE_``) as KEY VALUE overrides."""
    import yaml

    with open(overlay) as f:
        return [item for pair in flatten_config(yaml.safe_load(f) or {}).items() for item in pair]


def paper_row(markdown_rows: list[dict], metric: str, method: str) -> str:
    """The paper's layout: one row, one column per dataset and the average."""
    cells = [r for r in markdown_rows if r["dataset"] != "mean_without_training_set"]
    header = "| " + " | ".join(["method"] + [r["title"] for r in cells]) + " |"
    rule = "|" + "---|" * (len(cells) + 1)
    values = "| " + " | ".join([method] + [f"{r[metric]:.1f}" for r in cells]) + " |"
    return "\n".join([header, rule, values])


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=sorted(TABLES), required=True)
    parser.add_argument("--method", choices=METHODS, default="segearth")
    parser.add_argument("--backbone", choices=BACKBONES, default=None)
    parser.add_argument("--output", help="output folder")
    parser.add_argument("--force", action="store_true", help="re-evaluate datasets that already have results")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_args_with_overrides(parser, argv)  # KEY VALUE pairs may precede options
    title, metric, names = TABLES[args.table]
    tag = f"{args.table}_{args.method}" + (f"_{args.backbone}" if args.backbone else "")
    output = args.output or os.path.join("output", "segearth_ov", tag)
    datasets = []
    for name in names:
        cfg = dataset_config(name, args.method, args.backbone, args.opts, output)
        dataset = cfg.DATASETS.TEST[0]
        datasets.append(dataset)
        run_benchmark.evaluate_suite(cfg, Suite(tag, title, (dataset,)), output, run_benchmark.CONFIG_PROTOCOL,
                                     args.force)
    suite = Suite(tag, title, tuple(datasets))
    markdown = run_benchmark.write_tables(suite, output, args.method)
    from ovrsis.evaluation.benchmark_table import DatasetResult, table_rows
    results = [DatasetResult(d, run_benchmark.load_result(run_benchmark.result_path(output, d))["metrics"],
                             run_benchmark.load_result(run_benchmark.result_path(output, d))["protocol"])
               for d in datasets]
    row = paper_row(table_rows(results, None), metric, args.method)
    with open(os.path.join(output, "table.md"), "a") as f:
        f.write(f"\nSegEarth-OV layout ({metric}):\n\n{row}\n")
    print(f"\n{markdown}\nSegEarth-OV layout ({metric}):\n\n{row}\n\nwritten: {os.path.join(output, 'table.md')}",
          flush=True)
    return row


if __name__ == "__main__":
    main()
