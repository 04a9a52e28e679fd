#!/usr/bin/env python
"""UDD5 (datasets.md §2.6) → UDD5/all/{src,gt} (V1 and V2 share it; only the names differ).

Raw download (``MarcWong/UDD``, the UDD-5 folder): ``train/{src,gt}`` and ``val/{src,gt}``
with ``.JPG`` images and index-PNG labels (ids used directly, checked against the five
classes; UDD-6 uses another order, do not mix). Whether the benchmark's ``all`` holds
train + val or val only is UNCERTAIN; the default is both.
"""
from __future__ import annotations

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, add_splits_option, parse_args, prepare, split_folder_pairs

SPLITS = ("train", "val")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, SPLITS, SPLITS))
    prepare(split_folder_pairs(args.raw, args.splits, "src", "gt"), [Target("v1_udd5_all")], args.root, recipe="udd5")


if __name__ == "__main__":
    main()
