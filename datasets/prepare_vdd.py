#!/usr/bin/env python
"""VDD (datasets.md §2.8) → VDD/{src,gt} (V1 and V2 share it; only the names differ).

Release layout (``RussRobin/VDD``; SegEarth-OV reads ``VDD/test``), zipped or extracted under
--raw: ``{train,val,test}/src/*.JPG`` (4000x3000) and ``{train,val,test}/gt/*.png`` index labels
(ids 0-6 used directly, checked; SegEarth-OV's ``VDDDataset`` reads them the same way). Whether
the benchmark's single set is all 400 images is UNCERTAIN; the default takes all three splits.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, add_splits_option, open_raw, parse_args, prepare, split_folder_pairs
from ovrsis.engine import report_user_errors

EXPECTED = "VDD/{train,val,test}/src/*.JPG with VDD/{train,val,test}/gt/*.png (index labels 0-6), zipped or extracted"
SPLITS = ("train", "val", "test")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, SPLITS, SPLITS))
    raw = open_raw(args, EXPECTED)
    prepare(split_folder_pairs(raw, args.splits, "src", "gt"), [Target("v1_vdd_all")], args.root, recipe="vdd",
            raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
