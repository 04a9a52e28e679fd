#!/usr/bin/env python
"""UDD5 (datasets.md §2.6) → UDD5/all/{src,gt} (V1 and V2 share it; only the names differ).

Release layout (``MarcWong/UDD``, the UDD5 folder of its Google-Drive download; SegEarth-OV
reads ``UDD/UDD/UDD5/val``), zipped or extracted under --raw: ``{train,val}/src/*.JPG`` and
``{train,val}/gt/*.png`` index labels (ids 0-4 used directly, checked against the five
classes, as SegEarth-OV's ``UDD5Dataset`` reads them; UDD-6 uses another order, do not mix).
Whether the benchmark's ``all`` holds train + val or val only is UNCERTAIN; the default is both.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, add_splits_option, open_raw, parse_args, prepare, split_folder_pairs
from ovrsis.engine import report_user_errors

EXPECTED = "UDD5/{train,val}/src/*.JPG with UDD5/{train,val}/gt/*.png (index labels 0-4), zipped or extracted"
SPLITS = ("train", "val")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, SPLITS, SPLITS))
    raw = open_raw(args, EXPECTED)
    prepare(split_folder_pairs(raw, args.splits, "src", "gt"), [Target("v1_udd5_all")], args.root, recipe="udd5",
            raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
