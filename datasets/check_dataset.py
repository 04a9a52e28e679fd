#!/usr/bin/env python
"""Label sanity check of registered benchmark datasets (e.g. after extracting a benchmark package).

    python datasets/check_dataset.py v1_dlrsd_all v1_isaid_all [--root DIR]

Pairs images with masks and prints a histogram of mask values against the class list;
fails on any id that is neither a class nor the ignore value.
"""
from __future__ import annotations

import argparse

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.catalog import RECORDS
from ovrsis.data.folder_dataset import dataset_root
from ovrsis.data.prepare import check_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", choices=sorted(RECORDS), metavar="DATASET")
    parser.add_argument("--root", default=dataset_root(), help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)")
    args = parser.parse_args(argv)
    for name in args.datasets:
        check_dataset(RECORDS[name], args.root)


if __name__ == "__main__":
    main()
