#!/usr/bin/env python
"""VDD (datasets.md §2.8) → VDD/{src,gt} (V1 and V2 share it; only the names differ).

Raw download (``RussRobin/VDD``): ``train/``, ``val/``, ``test/`` each with ``src/*.JPG``
(4000x3000) and ``gt/*.png`` index labels (ids 0-6 used directly, checked). Whether the
benchmark's single set is all 400 images is UNCERTAIN; the default takes all three splits.
"""
from __future__ import annotations

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, add_splits_option, parse_args, prepare, split_folder_pairs

SPLITS = ("train", "val", "test")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, SPLITS, SPLITS))
    prepare(split_folder_pairs(args.raw, args.splits, "src", "gt"), [Target("v1_vdd_all")], args.root, recipe="vdd")


if __name__ == "__main__":
    main()
