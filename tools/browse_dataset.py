#!/usr/bin/env python
"""Look at a prepared dataset: images, ground-truth masks coloured by class, overlays, legend.

    python tools/browse_dataset.py synthetic_rs_val [--num 6] [--output browse.png]
    python tools/browse_dataset.py my_set --config-file my_config.yaml [--start 100] [KEY VALUE ...]

Works for every registered dataset: the benchmark names (after ``datasets/prepare_*.py``), the
built-in synthetic scenes, and datasets a config declares under ``DATASETS.REGISTER``. Images
are read through the same raster path as training (each dataset's bands and scaling), masks
through the same mask reader; the ignore value is drawn black. ``--num`` pairs evenly spaced
over the dataset (or consecutive from ``--start``) are drawn as rows of
image | mask | overlay, with the dataset's class legend (seen/unseen marked where declared),
into one PNG.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog

from ovrsis.data import read_mask
from ovrsis.data.raster import RasterSettings, dataset_percentiles, read_raster, to_rgb8
from ovrsis.engine import report_user_errors, setup_cfg
from ovrsis.engine.cli import split_overrides  # noqa: E402
from ovrsis.errors import ConfigError, close_names
from ovrsis.visualization import class_colors, colorize, figure_with_legend, overlay, save_figure


def record_settings(records: list, default: RasterSettings) -> dict:
    """Raster settings per record (a record's own ``raster`` entry wins), with ``percentile_dataset``
    statistics computed over the records that share the settings, as the mappers do."""
    out, stats = {}, {}
    for i, record in enumerate(records):
        settings = RasterSettings.from_dict(record["raster"]) if "raster" in record else default
        if settings.scaling == "percentile_dataset" and settings.dataset_stats is None:
            if settings not in stats:
                files = [r["file_name"] for r in records
                         if (RasterSettings.from_dict(r["raster"]) if "raster" in r else default) == settings]
                stats[settings] = dataset_percentiles(files, settings)
            settings = dataclasses.replace(settings, dataset_stats=stats[settings])
        out[i] = settings
    return out


def main(argv: list[str] | None = None) -> int:
    arguments, overrides = split_overrides(sys.argv[1:] if argv is None else argv)  # KEY VALUE pairs anywhere
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Config overrides go last, as KEY VALUE pairs.")
    parser.add_argument("dataset", help="a registered dataset name")
    parser.add_argument("--config-file", default="", help="config whose DATASETS.REGISTER / INPUT.RASTER apply")
    parser.add_argument("--num", type=int, default=6, help="number of image/mask pairs (default: %(default)s)")
    parser.add_argument("--start", type=int, default=None, help="first record index (default: evenly spaced)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    parser.add_argument("--output", default="", help="PNG to write (default: browse_<dataset>.png)")
    args = parser.parse_args(arguments)
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1, got {args.num}")
    cfg = setup_cfg(args.config_file, overrides)
    registered = DatasetCatalog.list()
    if args.dataset not in registered:
        raise ConfigError(f"dataset {args.dataset!r} is not registered{close_names(args.dataset, registered)}; "
                          "datasets a config declares need --config-file")
    records = DatasetCatalog.get(args.dataset)
    if not records:
        raise ConfigError(f"dataset {args.dataset!r} has no records")
    meta = MetadataCatalog.get(args.dataset)
    names = list(meta.stuff_classes)
    ignore = int(meta.get("ignore_label", 255))
    if args.start is None:
        picked = sorted({int(i) for i in np.linspace(0, len(records) - 1, min(args.num, len(records)))})
    else:
        picked = list(range(args.start, min(args.start + args.num, len(records))))
        if not picked:
            raise ConfigError(f"--start {args.start} is past the dataset's {len(records)} records")
    chosen = [records[i] for i in picked]
    settings = record_settings(chosen, RasterSettings.from_config(cfg.INPUT.RASTER))
    colors = class_colors(names)
    images, titles = [], []
    for j, (index, record) in enumerate(zip(picked, chosen)):
        array, info = read_raster(record["file_name"])
        rgb = to_rgb8(array, info, settings[j])
        mask = read_mask(record["sem_seg_file_name"]).astype(np.int64)
        shown = np.where((mask >= 0) & (mask < len(names)), mask, ignore)  # out-of-range ids drawn as ignore
        stem = record["file_name"].replace("\\", "/").rsplit("/", 1)[-1]
        images += [rgb, colorize(shown, colors, ignore), overlay(rgb, shown, colors, args.alpha, ignore)]
        titles += [f"#{index} {stem}", "mask", "overlay"]
    splits = {n: "unseen" for n in (meta.get("unseen_classes", None) or [])}
    fig = figure_with_legend(images, titles, names, colors, columns=3, tile_inches=2.8, splits=splits)
    output = args.output or f"browse_{args.dataset}.png"
    save_figure(fig, output)
    print(f"{args.dataset}: {len(records)} records, {len(names)} classes; drew {len(picked)} → {output}")
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
