#!/usr/bin/env python
"""Pre-flight check of registered datasets: benchmark records, DATASETS.REGISTER entries of a
config, or the built-in synthetic scenes.

    python datasets/check_dataset.py synthetic_rs_train synthetic_rs_val
    python datasets/check_dataset.py v1_dlrsd_all v1_isaid_all [--root DIR]
    python datasets/check_dataset.py my_set --config-file my_config.yaml [--sample 500] [KEY VALUE ...]

Reads every image and mask (in parallel; ``--sample N`` checks N evenly spaced pairs) and
prints a histogram of mask values against the class list, then every problem found:
unreadable or unpaired files, images the raster settings cannot convert, image/mask size
mismatches, colour-coded masks, ids outside the class list, classes without pixels, a
suspicious ignore share. Exits with status 1 if any dataset has a problem.
"""
from __future__ import annotations

import argparse
import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.data import DatasetCatalog

from ovrsis.data.preflight import print_report, scan_registered
from ovrsis.data.raster import RasterSettings
from ovrsis.engine import report_user_errors, setup_cfg
from ovrsis.engine.cli import split_overrides  # noqa: E402
from ovrsis.errors import ConfigError, close_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="registered dataset names")
    parser.add_argument("--config-file", default="", help="config whose DATASETS.REGISTER / INPUT.RASTER apply")
    parser.add_argument("--root", default="", help="dataset root (default: DATASETS.ROOT, $DETECTRON2_DATASETS "
                                                   "or ./datasets)")
    parser.add_argument("--sample", type=int, default=0, help="check this many evenly spaced pairs (0 = all)")
    arguments, overrides = split_overrides(sys.argv[1:] if argv is None else argv)  # KEY VALUE pairs anywhere
    args = parser.parse_args(arguments)
    if not args.datasets:
        parser.error("name at least one dataset before the config overrides")
    opts = overrides + (["DATASETS.ROOT", args.root] if args.root else [])
    cfg = setup_cfg(args.config_file, opts)
    registered = DatasetCatalog.list()
    for name in args.datasets:
        if name not in registered:
            raise ConfigError(f"dataset {name!r} is not registered{close_names(name, registered)}")
    failed = 0
    for name in args.datasets:
        report = scan_registered(name, RasterSettings.from_config(cfg.INPUT.RASTER), sample=args.sample,
                                 use_cache=False)
        print(f"\n{name}: {report.pairs} image/mask pairs")
        print_report(report)
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
